/**
 * The lab's kubelet for one node's agent: it runs the agent as its child and, when the agent
 * dies, starts it again the way the kubelet restarts a DaemonSet pod's container
 * (CrashLoopBackOff): after 10 s, then 20 s, 40 s ... capped at 5 min, the delay forgotten
 * once an agent has run 10 min. The base is configurable (tests use ~200 ms); the cap is 30x
 * the base and the reset 60x, as the kubelet's 10 s / 5 min / 10 min.
 *
 * It also plays the DaemonSet's rolling update for `skein lab upgrade-agent`: on SIGUSR2 it
 * starts a second agent with `--upgrade`, which takes over from the running one (sockets
 * handed over, the old one drains and exits on its own). The old agent's exit is then not a
 * crash. If the new agent exits instead, the old one is still the node's agent.
 *
 * What it knows is in a state file (JSON, written atomically) that `skein lab status` shows:
 * the agent's pid now, restarts, upgrades, the last exit.
 *
 * Runs as `skein lab supervise-agent --state FILE --backoff-ms N -- AGENT COMMAND...`, in the
 * node's netns and the agent's cgroup (lab/mesh.ts starts it), so `lab down` kills it with
 * its agent.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';

export interface AgentSupervisorState {
  supervisorPid: number;
  /** The node's agent now (null while none runs: between a crash and its restart). */
  agentPid: number | null;
  /** running; backoff: waiting to restart a dead agent; upgrading: two agents during a handover. */
  state: 'running' | 'backoff' | 'upgrading';
  restarts: number;
  upgrades: number;
  failedUpgrades: number;
  /** Base of the restart backoff (ms). */
  backoffBaseMs: number;
  lastExit?: { pid: number; code: number | null; signal: string | null; at: string };
  /** When the next restart happens (state backoff). */
  nextStartAt?: string;
  /** During an upgrade: the agent being replaced. */
  previousPid?: number;
}

/** The kubelet's CrashLoopBackOff: base * 2^(n-1) for the n-th restart in a row, capped at 30x base. */
export function restartDelayMs(consecutiveCrashes: number, baseMs: number): number {
  if (consecutiveCrashes <= 0) return 0;
  return Math.min(baseMs * 2 ** (consecutiveCrashes - 1), baseMs * 30);
}

export function readSupervisorState(file: string): AgentSupervisorState | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as AgentSupervisorState;
  } catch {
    return undefined;
  }
}

export interface SupervisorOptions {
  stateFile: string;
  backoffBaseMs: number;
  /** The agent's command line. */
  command: string[];
  log?: (line: string) => void;
}

export async function runAgentSupervisor(opts: SupervisorOptions): Promise<number> {
  const log = opts.log ?? ((line: string) => process.stderr.write(`supervisor: ${line}\n`));
  const state: AgentSupervisorState = { supervisorPid: process.pid, agentPid: null, state: 'running', restarts: 0, upgrades: 0, failedUpgrades: 0, backoffBaseMs: opts.backoffBaseMs };
  const write = (): void => {
    writeFileSync(`${opts.stateFile}.tmp`, `${JSON.stringify(state, null, 2)}\n`);
    renameSync(`${opts.stateFile}.tmp`, opts.stateFile);
  };
  const alive = new Map<number, { child: ChildProcess; startedAt: number }>();
  let current: number | null = null;
  let crashesInARow = 0;
  let stopping = false;
  let restartTimer: NodeJS.Timeout | undefined;

  const start = (upgrade: boolean): number | null => {
    const [cmd, ...args] = opts.command;
    const child = spawn(cmd!, upgrade ? [...args, '--upgrade'] : args, { stdio: 'inherit', env: process.env });
    if (child.pid === undefined) {
      log(`could not start the agent (${opts.command.join(' ')})`);
      return null;
    }
    const pid = child.pid;
    alive.set(pid, { child, startedAt: Date.now() });
    child.once('exit', (code, signal) => onExit(pid, code, signal));
    log(`${upgrade ? 'upgrade: started a new agent' : 'started the agent'} (pid ${pid})`);
    return pid;
  };

  const scheduleRestart = (): void => {
    crashesInARow++;
    const delay = restartDelayMs(crashesInARow, opts.backoffBaseMs);
    state.state = 'backoff';
    state.nextStartAt = new Date(Date.now() + delay).toISOString();
    write();
    log(`agent restart ${state.restarts + 1} in ${delay} ms (back-off)`);
    restartTimer = setTimeout(() => {
      restartTimer = undefined;
      if (stopping) return;
      state.restarts++;
      current = start(false);
      state.agentPid = current;
      state.state = 'running';
      delete state.nextStartAt;
      write();
      if (current === null) scheduleRestart();
    }, delay);
  };

  const onExit = (pid: number, code: number | null, signal: NodeJS.Signals | null): void => {
    const entry = alive.get(pid);
    alive.delete(pid);
    state.lastExit = { pid, code, signal, at: new Date().toISOString() };
    if (stopping) {
      write();
      if (alive.size === 0) process.exit(0);
      return;
    }
    // The kubelet forgets the back-off once a container has run 10 min (60x its 10 s base).
    if (entry && Date.now() - entry.startedAt >= opts.backoffBaseMs * 60) crashesInARow = 0;
    if (pid !== current) {
      // The agent an upgrade replaced: it drained and left, as it should.
      if (state.state === 'upgrading') {
        state.upgrades++;
        state.state = 'running';
        delete state.previousPid;
        log(`upgrade done: agent ${pid} handed over to ${current} and exited (${code ?? signal})`);
      }
      write();
      return;
    }
    if (state.state === 'upgrading' && state.previousPid !== undefined && alive.has(state.previousPid)) {
      // The new agent gave up (or died) before taking over: the old one is still serving.
      state.failedUpgrades++;
      current = state.previousPid;
      state.agentPid = current;
      state.state = 'running';
      delete state.previousPid;
      log(`upgrade failed: new agent ${pid} exited (${code ?? signal}); agent ${current} serves on`);
      write();
      return;
    }
    current = null;
    state.agentPid = null;
    log(`agent ${pid} exited (${code ?? signal})`);
    scheduleRestart();
  };

  const stop = (sig: NodeJS.Signals): void => {
    stopping = true;
    if (restartTimer) clearTimeout(restartTimer);
    if (alive.size === 0) process.exit(0);
    for (const { child } of alive.values()) child.kill(sig);
    setTimeout(() => process.exit(0), 10_000).unref();
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGTERM'));
  process.on('SIGUSR2', () => {
    if (stopping || state.state !== 'running' || current === null) {
      log(`upgrade asked while ${state.state}; ignored`);
      return;
    }
    const next = start(true);
    if (next === null) return;
    state.previousPid = current;
    state.state = 'upgrading';
    current = next;
    state.agentPid = next;
    write();
  });

  current = start(false);
  state.agentPid = current;
  write();
  if (current === null) scheduleRestart();
  await new Promise<never>(() => {});
  return 0;
}
