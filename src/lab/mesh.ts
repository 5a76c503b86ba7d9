/**
 * The mesh in a lab: the controller (config + CA) in the underlay netns, where every node
 * reaches it at the bridge address, and one agent per node in that node's netns. Both run
 * in lab cgroups, so `lab down` kills them with everything else; their BPF pins live in one
 * folder per node and go with the lab too.
 *
 * Agents enter only the node's network namespace (nsenter --net): `ip netns exec` would also
 * give them a fresh /sys without the cgroup2 and bpffs mounts they need.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SkeinError } from '../errors.js';
import { createBootstrapTokens } from '../identity/ca/bootstrap-tokens.js';
import { adminGet } from '../api/agent-admin.js';
import { skeinCommand } from '../paths.js';
import { createCgroup } from './cgroups.js';
import { kubeletRootOf, type PlannedNode } from './plan.js';
import type { LabProcess, LabRecord } from './registry.js';
import { pidAlive, run, spawnDetached } from './sys.js';
import { LabCode } from './codes.js';
import { readSupervisorState } from './agent-supervisor.js';


export const CA_PORT = 15012;
export const CONFIG_PORT = 15010;

export interface MeshPaths {
  tokensDir: string;
  caDir: string;
  /** PEM roots the controller publishes; agents trust the CA through them. */
  rootsPem: string;
  /** The operator's credential for the controller (skein ca rotate), mode 0600. */
  operatorToken: string;
}

export function meshPaths(rec: LabRecord): MeshPaths {
  return { tokensDir: join(rec.dir, 'tokens'), caDir: join(rec.dir, 'ca'), rootsPem: join(rec.dir, 'ca', 'roots.pem'), operatorToken: join(rec.dir, 'operator.token') };
}

/** Unix socket of one node's agent admin API (root only, in the lab's folder). */
export function adminSocketOf(rec: LabRecord, node: string): string {
  return join(rec.dir, 'agents', `${node}.sock`);
}

/** Where a node's agent answers skein-cni (its --cni-socket). */
export function cniSocketOf(rec: LabRecord, node: string): string {
  return join(rec.dir, 'agents', `${node}.cni.sock`);
}

/** GET on one node's agent admin API; undefined when it does not answer (yet). */
export async function agentAdminGet<T>(rec: LabRecord, node: string, path: string): Promise<T | undefined> {
  try {
    return await adminGet<T>(adminSocketOf(rec, node), path);
  } catch {
    return undefined;
  }
}

/** bpffs folder of one node's agent. */
export function pinRootOf(rec: LabRecord, node: string): string {
  return `/sys/fs/bpf/skein-lab-${rec.id}-${node}`;
}

/** Starts a lab component in `netns`, inside the lab's cgroup `cgroupRel` (so `lab down` stops it). */
export function startInNetns(
  rec: LabRecord,
  kind: LabProcess['kind'],
  name: string,
  netns: string,
  cgroupRel: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
  extraFds: number[] = [],
): LabProcess {
  const cgroup = createCgroup(rec.cgroupRoot, cgroupRel);
  const log = join(rec.logDir, `${kind}.${name}.out`);
  const fd = openSync(log, 'a');
  try {
    const script = 'cg="$1"; ns="$2"; shift 2; echo $$ > "$cg/cgroup.procs" && exec nsenter --net="$ns" "$@"';
    const pid = spawnDetached('/bin/sh', ['-c', script, 'skein-enter', cgroup, `/var/run/netns/${netns}`, ...args], { PATH: process.env.PATH, HOME: '/root', ...env }, fd, extraFds);
    return { kind, name, pid, log, cgroup, netns };
  } finally {
    closeSync(fd);
  }
}

/**
 * Starts the controller. The first start creates the nodes' bootstrap tokens; a restart
 * keeps them (and the CA root file), as a restarted controller in a cluster would.
 */
export async function startControlPlane(rec: LabRecord, opts: { restart?: boolean } = {}): Promise<LabProcess> {
  const paths = meshPaths(rec);
  if (!opts.restart) {
    await createBootstrapTokens(paths.tokensDir, rec.plan.nodes.map((n) => n.name));
    writeFileSync(paths.operatorToken, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
  }
  else rmSync(paths.rootsPem, { force: true }); // so the wait below sees the new process publish
  const gw = rec.plan.underlayGateway;
  const proc = startInNetns(rec, 'controller', 'controller', rec.plan.underlayNetns, `skein.lab/${rec.id}/control-plane/controller`, [
    ...skeinCommand(),
    'controller',
    '--folder',
    rec.stateDir,
    '--config-listen',
    `${gw}:${CONFIG_PORT}`,
    '--ca-listen',
    `${gw}:${CA_PORT}`,
    '--ca-san',
    gw,
    '--root-file',
    join(paths.caDir, 'root.json'),
    '--roots-out',
    paths.rootsPem,
    '--tokens-dir',
    paths.tokensDir,
    '--operator-token-file',
    paths.operatorToken,
    '--trust-domain',
    rec.plan.trustDomain,
    '--log-file',
    join(rec.logDir, 'controller.log'),
  ]);
  await waitFor(() => existsSync(paths.rootsPem), proc, 15_000, 'the controller to publish its roots');
  return proc;
}

/** Where a node's agent supervisor (the lab's kubelet for it) keeps its state. */
export function supervisorStateOf(rec: LabRecord, node: string): string {
  return join(rec.dir, 'agents', `${node}.supervisor.json`);
}

/** The kubelet's CrashLoopBackOff base (10 s); `lab up --agent-restart-backoff` and tests change it. */
export const DEFAULT_AGENT_RESTART_BACKOFF_MS = 10_000;

/** The agent's command line on one node. */
export function agentCommand(rec: LabRecord, node: PlannedNode, extraArgs: string[] = []): string[] {
  const paths = meshPaths(rec);
  const gw = rec.plan.underlayGateway;
  return [
    ...skeinCommand(),
    'agent',
    '--node',
    node.name,
    '--controller',
    `${gw}:${CONFIG_PORT}`,
    '--ca-address',
    `${gw}:${CA_PORT}`,
    '--ca-root-file',
    paths.rootsPem,
    '--token-file',
    join(paths.tokensDir, node.name),
    '--trust-domain',
    rec.plan.trustDomain,
    '--pin-root',
    pinRootOf(rec, node.name),
    // Each lab node has its own kubelet tree; the agent finds its pods there by UID.
    '--cgroup-root',
    rec.cgroupRoot,
    '--kubelet-cgroup-root',
    kubeletRootOf(rec.id, node.name),
    '--log-file',
    join(rec.logDir, `agent.${node.name}.log`),
    '--audit-log',
    auditLogOf(rec, node.name),
    '--admin-socket',
    adminSocketOf(rec, node.name),
    '--handover-socket',
    join(rec.dir, 'agents', `${node.name}.handover.sock`),
    '--cni-socket',
    cniSocketOf(rec, node.name),
    ...extraArgs,
  ];
}

export interface StartedAgent {
  /** The agent process (its first pid; after a restart see agentPidOf). */
  agent: LabProcess;
  /** Its supervisor, which restarts it with back-off and runs upgrades. */
  supervisor: LabProcess;
}

/**
 * Starts a node's agent under its supervisor (lab/agent-supervisor.ts): a dead agent is
 * restarted with the kubelet's back-off, as a DaemonSet pod's would be.
 */
export async function startAgent(
  rec: LabRecord,
  node: PlannedNode,
  extraArgs: string[] = [],
  env: Record<string, string> = {},
  opts: { restartBackoffMs?: number } = {},
): Promise<StartedAgent> {
  const stateFile = supervisorStateOf(rec, node.name);
  mkdirSync(dirname(stateFile), { recursive: true, mode: 0o700 });
  rmSync(stateFile, { force: true });
  const backoff = opts.restartBackoffMs ?? DEFAULT_AGENT_RESTART_BACKOFF_MS;
  const supervisor = startInNetns(
    rec,
    'supervisor',
    node.name,
    node.netns,
    `skein.lab/${rec.id}/${node.name}/agent`,
    [...skeinCommand(), 'lab', 'supervise-agent', '--state', stateFile, '--backoff-ms', String(backoff), '--', ...agentCommand(rec, node, extraArgs)],
    env,
  );
  await waitFor(() => readSupervisorState(stateFile)?.agentPid != null, supervisor, 10_000, `the supervisor of ${node.name} to start its agent`);
  const pid = readSupervisorState(stateFile)!.agentPid!;
  return { supervisor, agent: { kind: 'agent', name: node.name, pid, log: supervisor.log, cgroup: supervisor.cgroup, netns: node.netns } };
}

/** The pid of a node's agent now (undefined while none runs, e.g. in restart back-off). */
export function agentPidOf(rec: LabRecord, node: string): number | undefined {
  return readSupervisorState(supervisorStateOf(rec, node))?.agentPid ?? undefined;
}

/**
 * `skein lab upgrade-agent`: the DaemonSet's rolling update on one node. The supervisor starts
 * a new agent with --upgrade, which takes the running agent's sockets over; resolves once the
 * old one has drained and exited. Throws when the new agent gave up (the old one serves on).
 */
export async function upgradeAgent(rec: LabRecord, node: string, timeoutMs = 90_000): Promise<{ previousPid: number; agentPid: number; ms: number }> {
  const file = supervisorStateOf(rec, node);
  const before = readSupervisorState(file);
  if (!before || before.agentPid === null || before.state !== 'running') {
    throw new SkeinError(LabCode.UpgradeFailed, `the agent of ${node} is not running (state ${before?.state ?? 'unknown'}): nothing to upgrade`);
  }
  const t0 = Date.now();
  process.kill(before.supervisorPid, 'SIGUSR2');
  for (;;) {
    const s = readSupervisorState(file);
    if (s && s.upgrades > before.upgrades && s.state === 'running' && s.agentPid !== null) return { previousPid: before.agentPid, agentPid: s.agentPid, ms: Date.now() - t0 };
    if (s && s.failedUpgrades > before.failedUpgrades) throw new SkeinError(LabCode.UpgradeFailed, `the new agent of ${node} gave up; agent ${s.agentPid} serves on (see its log)`);
    if (Date.now() - t0 > timeoutMs) throw new SkeinError(LabCode.UpgradeFailed, `the agent upgrade on ${node} did not finish in ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** Ready = answers 200 on its readiness port (inside its node netns). */
export async function waitAgentReady(rec: LabRecord, node: PlannedNode, proc: LabProcess, timeoutMs = 20_000): Promise<void> {
  await waitFor(
    async () => (await run('ip', ['netns', 'exec', node.netns, 'curl', '-sf', '-o', '/dev/null', 'http://127.0.0.1:15021/healthz/ready'], { allowFailure: true })).code === 0,
    proc,
    timeoutMs,
    `the agent of ${node.name} to be ready`,
  );
}

async function waitFor(cond: () => boolean | Promise<boolean>, proc: LabProcess, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (!pidAlive(proc.pid)) throw new SkeinError(LabCode.ComponentExited, `${proc.kind} ${proc.name} exited while waiting for ${what}; see ${proc.log}`, { log: proc.log });
    if (Date.now() > deadline) throw new SkeinError(LabCode.ComponentTimeout, `timed out after ${timeoutMs} ms waiting for ${what}; see ${proc.log}`, { log: proc.log });
    await sleep(50);
  }
}

/** Pins outlive processes by design (an agent restart adopts them): the lab removes them. */
export function removePins(rec: LabRecord): void {
  for (const n of rec.plan.nodes) rmSync(pinRootOf(rec, n.name), { recursive: true, force: true });
}

/** The audit trail of a lab agent (hash-chained; `skein audit verify` checks it). */
export function auditLogOf(rec: LabRecord, node: string): string {
  return join(rec.logDir, `audit.${node}.log`);
}
