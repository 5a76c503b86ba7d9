/**
 * The lab's agent supervisor (the kubelet's part for a DaemonSet pod): the back-off schedule,
 * and the real supervisor process running stand-in agents (small node programs; no root, no
 * mesh): a crashing agent is restarted with growing delays, an upgrade replaces the running
 * one, and an upgrade whose new agent gives up leaves the old one in place.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { readSupervisorState, restartDelayMs } from '../../../src/lab/agent-supervisor.js';

t.test('back-off: the kubelet schedule, 10 s doubling to a 5 min cap', async (t) => {
  t.same([1, 2, 3, 4, 5, 6, 7, 8].map((n) => restartDelayMs(n, 10_000)), [10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000, 300_000]);
  t.equal(restartDelayMs(0, 10_000), 0);
  t.equal(restartDelayMs(3, 200), 800, 'scaled base for tests');
});

const supervisorModule = join(import.meta.dirname, '..', '..', '..', 'src', 'lab', 'agent-supervisor.ts');

function supervise(t: Test, agentScript: string, backoffMs: number): { state: string; child: ChildProcess; dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'skein-supervisor-'));
  const state = join(dir, 'state.json');
  const agent = join(dir, 'agent.mjs');
  writeFileSync(agent, agentScript);
  const code = `import(${JSON.stringify(supervisorModule)}).then((m) => m.runAgentSupervisor({ stateFile: ${JSON.stringify(state)}, backoffBaseMs: ${backoffMs}, command: [process.execPath, ${JSON.stringify(agent)}, ${JSON.stringify(dir)}], log: () => {} }))`;
  const child = spawn(process.execPath, ['--import', 'tsx', '-e', code], { stdio: 'ignore' });
  t.teardown(async () => {
    // The supervisor stops its agents on SIGTERM, then exits: remove the folder after.
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  });
  return { state, child, dir };
}

async function until<T>(f: () => T | undefined, ms: number): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

t.test('a crashing agent is restarted with growing delays, counted in the state', async (t) => {
  const { state } = supervise(t, 'process.exit(3);', 100);
  const t0 = Date.now();
  const s = await until(() => {
    const st = readSupervisorState(state);
    return st && st.restarts >= 3 ? st : undefined;
  }, 10_000);
  // 100 + 200 + 400 ms of back-off before the third restart.
  t.ok(Date.now() - t0 >= 700, `three restarts took ${Date.now() - t0} ms (back-off 100, 200, 400)`);
  t.equal(s.lastExit?.code, 3);
});

// A stand-in agent: runs until told; with --upgrade it tells the running one (a file) to go.
const UPGRADABLE = `
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
const dir = process.argv[2];
if (process.argv.includes('--upgrade')) {
  if (existsSync(dir + '/fail-upgrade')) process.exit(1);
  writeFileSync(dir + '/handed-over-' + Date.now(), '');
}
const startedAt = Date.now();
// The agent before an upgrade sees a handover newer than itself and leaves (drained).
setInterval(() => {
  for (const f of readdirSync(dir)) if (f.startsWith('handed-over-') && Number(f.slice(12)) > startedAt) process.exit(0);
}, 20);
`;

t.test('upgrade: SIGUSR2 starts an agent with --upgrade; the old one leaving is no crash', async (t) => {
  const { state } = supervise(t, UPGRADABLE, 100);
  const first = await until(() => readSupervisorState(state)?.agentPid ?? undefined, 5000);
  const sup = readSupervisorState(state)!.supervisorPid;
  await new Promise((r) => setTimeout(r, 300));
  process.kill(sup, 'SIGUSR2');
  const s = await until(() => {
    const st = readSupervisorState(state);
    return st && st.upgrades === 1 ? st : undefined;
  }, 5000);
  t.not(s.agentPid, first, 'a new agent runs');
  t.equal(s.restarts, 0, 'no restart counted');
  t.equal(s.state, 'running');
});

t.test('upgrade: a new agent that gives up leaves the old one as the node agent', async (t) => {
  const { state, dir } = supervise(t, UPGRADABLE, 100);
  writeFileSync(join(dir, 'fail-upgrade'), '');
  const first = await until(() => readSupervisorState(state)?.agentPid ?? undefined, 5000);
  process.kill(readSupervisorState(state)!.supervisorPid, 'SIGUSR2');
  const s = await until(() => {
    const st = readSupervisorState(state);
    return st && st.failedUpgrades === 1 ? st : undefined;
  }, 5000);
  t.equal(s.agentPid, first, 'the old agent is still the one');
  t.equal(s.restarts, 0);
  t.ok(existsSync(state));
});
