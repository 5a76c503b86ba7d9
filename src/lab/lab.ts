/**
 * A Linux machine as a small cluster: `up` builds nodes and pods from a scenario, `down`
 * removes all of it, `gc` removes what killed runs left behind. See network.ts for the shape.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SkeinError } from '../errors.js';
import { repoPath, skeinCommand } from '../paths.js';
import type { Logger } from '../telemetry/log.js';
import { silentLogger } from '../telemetry/log.js';
import { createCgroup, destroyCgroupTree } from './cgroups.js';
import { renderKubeState, toMultiDocYaml } from './kube-state.js';
import { createNode, createPod, createUnderlay, deleteNetns, ETC_NETNS, nodeCniOf, writeNodeConflist } from './network.js';
import { cniSocketOf, removePins, startAgent, startControlPlane, supervisorStateOf, waitAgentReady } from './mesh.js';
import { type AgentSupervisorState, readSupervisorState } from './agent-supervisor.js';
import { installCni } from '../capture/cni-install.js';
import { LAB_PREFIX, planLab, type PlannedPod } from './plan.js';
import { containerCommand, execAttached, execCaptured, podEnv, startDetached } from './processes.js';
import { labBaseDir, type LabProcess, type LabRecord, listLabIds, readRecord, writeRecord } from './registry.js';
import { loadScenario } from './scenario.js';
import { startPrometheus } from './prometheus.js';
import { startPortForward } from './port-forward.js';
import { ComponentPort } from '../config/ports.js';
import { cgroup2Root, listNetns, pidAlive, run } from './sys.js';
import { LabCode } from './codes.js';

export interface UpOptions {
  scenarioFile: string;
  /** Lab directory (default /run/skein/labs or SKEIN_LAB_DIR). */
  baseDir?: string;
  /** Tie the lab to this pid: `lab gc` removes it once that process is gone (tests). */
  ownerPid?: number;
  /** How long pods may take to start listening. */
  readyTimeoutMs?: number;
  /**
   * Run the mesh: the controller (config + CA) and one agent per node. Without it the lab is
   * a plain cluster (kube-proxy-like Services only). Default true.
   */
  mesh?: boolean;
  /** Extra flags for every agent (e.g. --cert-ttl 6 to watch rotation). */
  agentArgs?: string[];
  /** Base of the agents' restart back-off (the kubelet's 10 s; tests use ~200 ms). */
  agentRestartBackoffMs?: number;
  /**
   * With the mesh: chain skein-cni into every node's conflist once the agents run (as
   * `skein cni install` on a node), so pods created later start captured. Default true.
   */
  cni?: boolean;
  /** Extra environment for every agent (e.g. NODE_OPTIONS=--tls-keylog=FILE to decrypt captures). */
  agentEnv?: Record<string, string>;
  /** Run a Prometheus scraping every agent and the controller (needs the mesh); `port`: its host loopback port (default: a free one). */
  prometheus?: boolean | { port?: number };
  log?: Logger;
  /** Progress lines for people (the CLI prints them). */
  progress?: (line: string) => void;
}

/** Checks the machine can host a lab, before anything is created. */
export async function preflight(): Promise<void> {
  if (process.getuid?.() !== 0) throw new SkeinError(LabCode.NotRoot, 'the lab creates network namespaces and cgroups: run as root (sudo)');
  await run('ip', ['-V']);
  await run('nft', ['--version']);
  cgroup2Root();
}

export async function labUp(opts: UpOptions): Promise<LabRecord> {
  const log = opts.log ?? silentLogger();
  const progress = opts.progress ?? (() => {});
  const t0 = Date.now();
  const scenario = loadScenario(opts.scenarioFile); // refuses a bad file before anything exists
  if (opts.prometheus && opts.mesh === false) throw new SkeinError(LabCode.PrometheusFailed, 'Prometheus scrapes the mesh: --prometheus needs the mesh (drop --no-mesh)');
  await preflight();
  const base = opts.baseDir ?? labBaseDir();
  let id = randomBytes(3).toString('hex');
  while (existsSync(join(base, id))) id = randomBytes(3).toString('hex');
  const plan = planLab(scenario, id);
  const dir = join(base, id);
  const rec: LabRecord = {
    version: 1,
    id,
    scenarioFile: opts.scenarioFile,
    createdAt: new Date().toISOString(),
    ...(opts.ownerPid ? { ownerPid: opts.ownerPid } : {}),
    status: 'creating',
    dir,
    stateDir: join(dir, 'state'),
    logDir: join(dir, 'logs'),
    cgroupRoot: cgroup2Root(),
    scenario,
    plan,
    processes: [],
  };
  mkdirSync(rec.logDir, { recursive: true });
  mkdirSync(rec.stateDir, { recursive: true });
  writeRecord(rec);
  log.info({ lab: id, scenario: opts.scenarioFile }, 'lab up');
  try {
    progress(`lab ${id}: network (${plan.nodes.length} nodes, ${plan.pods.length} pods, ${plan.services.length} services)`);
    await createUnderlay(plan);
    await Promise.all(plan.nodes.map((n) => createNode(plan, n)));
    for (const n of plan.nodes) writeNodeConflist(nodeCniOf(rec.dir, n.name));
    await Promise.all(plan.pods.map((p) => createPod(plan, p, nodeCniOf(rec.dir, p.node))));
    writeKubeState(rec);
    progress(`lab ${id}: starting ${plan.pods.length} pods`);
    for (const pod of plan.pods) rec.processes.push(startPod(rec, pod));
    writeRecord(rec);
    await waitReady(rec, opts.readyTimeoutMs ?? 15000);
    if (opts.mesh ?? true) {
      progress(`lab ${id}: starting the controller and ${plan.nodes.length} agents`);
      rec.processes.push(await startControlPlane(rec));
      // The controller's graph page (on its metrics port), on the host's loopback.
      const graph = await startPortForward(rec, 'graph', rec.plan.underlayNetns, `skein.lab/${rec.id}/control-plane/graph-forward`, `${rec.plan.underlayGateway}:${ComponentPort.ControllerMetrics}`);
      rec.processes.push(graph.process);
      rec.graph = { url: `http://127.0.0.1:${graph.port}/graph`, port: graph.port };
      writeRecord(rec);
      const backoff = opts.agentRestartBackoffMs !== undefined ? { restartBackoffMs: opts.agentRestartBackoffMs } : {};
      const started = await Promise.all(plan.nodes.map(async (n) => ({ node: n, started: await startAgent(rec, n, opts.agentArgs, opts.agentEnv, backoff) })));
      const agents = started.map((a) => ({ node: a.node, proc: a.started.agent }));
      rec.processes.push(...started.flatMap((a) => [a.started.supervisor, a.started.agent]));
      writeRecord(rec);
      await Promise.all(agents.map((a) => waitAgentReady(rec, a.node, a.proc)));
      if (opts.cni ?? true) {
        // The pods above predate the mesh (the agents enrolled them without a restart); pods
        // made from now on go through skein-cni and start captured.
        for (const n of plan.nodes) installSkeinCni(rec, n.name);
        progress(`lab ${id}: skein-cni chained into ${plan.nodes.length} node conflists`);
      }
      if (opts.prometheus) {
        progress(`lab ${id}: starting Prometheus`);
        const { info, processes } = await startPrometheus(rec, typeof opts.prometheus === 'object' ? opts.prometheus : {});
        rec.processes.push(...processes);
        rec.prometheus = info;
        writeRecord(rec);
        progress(`lab ${id}: Prometheus at ${info.url}`);
      }
      progress(`lab ${id}: service graph at ${rec.graph.url}`);
    }
    rec.status = 'up';
    writeRecord(rec);
    progress(`lab ${id}: up in ${((Date.now() - t0) / 1000).toFixed(1)}s (state ${rec.stateDir})`);
    return rec;
  } catch (err) {
    log.error({ lab: id, err }, 'lab up failed; removing what was made');
    progress(`lab ${id}: failed, removing what was made`);
    await labDown(rec);
    throw err;
  }
}

/** The skein-cni built by `make build-cni` (SKEIN_CNI_BINARY elsewhere). */
export function skeinCniBinary(): string {
  return process.env.SKEIN_CNI_BINARY ?? repoPath('build', 'cni', 'skein-cni');
}

/** `skein cni install` on one lab node: the binary into the lab's CNI bin dir, chained last into the node's conflist. */
export function installSkeinCni(rec: LabRecord, node: string): void {
  const cni = nodeCniOf(rec.dir, node);
  installCni({ binDir: cni.binDir, confDir: cni.confDir, binary: skeinCniBinary(), agentSocket: cniSocketOf(rec, node), timeoutMs: 30_000 });
}

/** (Re)writes the state folder from the record: what the controller watches. */
export function writeKubeState(rec: LabRecord): void {
  const files = renderKubeState(rec.plan, rec.scenario, rec.createdAt);
  for (const [name, objects] of Object.entries(files)) {
    const file = join(rec.stateDir, name);
    // write then rename: a watcher never sees a half-written file
    writeFileSync(`${file}.tmp`, toMultiDocYaml(objects));
    renameSync(`${file}.tmp`, file);
  }
}

function readyFile(rec: LabRecord, pod: PlannedPod): string {
  return join(rec.logDir, `${pod.namespace}.${pod.name}.ready`);
}

export function startPod(rec: LabRecord, pod: PlannedPod): LabProcess {
  const cgroup = createCgroup(rec.cgroupRoot, pod.cgroup);
  const log = join(rec.logDir, `${pod.namespace}.${pod.name}.log`);
  const env = podEnv(rec.plan, pod, { SKEIN_READY_FILE: readyFile(rec, pod) });
  const pid = startDetached(cgroup, pod.netns, containerCommand(pod), env, log);
  return { kind: 'pod', name: `${pod.namespace}/${pod.name}`, pid, log, cgroup, netns: pod.netns };
}

/** Built-in workloads write their ready file once listening; other programs count once started. */
export async function waitReady(rec: LabRecord, timeoutMs: number, pods = rec.plan.pods): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const pending = new Set(pods.filter((p) => !p.container.command || p.container.command.length === 0));
  const starting = new Set(pods.map((p) => `${p.namespace}/${p.name}`));
  while (pending.size > 0) {
    for (const pod of pending) if (existsSync(readyFile(rec, pod))) pending.delete(pod);
    for (const proc of rec.processes) {
      // Only the pods being waited on: a component a test stopped on purpose is not a failed start.
      if (proc.kind !== 'pod' || !starting.has(proc.name)) continue;
      if (!pidAlive(proc.pid)) {
        // The log goes with the lab when up fails: carry its end in the error.
        const tail = existsSync(proc.log) ? readFileSync(proc.log, 'utf8').trim().split('\n').slice(-5).join('\n') : '';
        throw new SkeinError(LabCode.PodExited, `pod ${proc.name} exited during start${tail ? `:\n${tail}` : ' (no output)'}`, { log: proc.log });
      }
    }
    if (pending.size === 0) break;
    if (Date.now() > deadline) {
      const names = [...pending].map((p) => `${p.namespace}/${p.name}`);
      throw new SkeinError(LabCode.PodNotReady, `pods not ready after ${timeoutMs} ms: ${names.join(', ')}`);
    }
    await sleep(25);
  }
}

/** Removes everything a lab made: processes (by cgroup), netns, /etc/netns, cgroups, its folder. */
export async function labDown(given: LabRecord): Promise<void> {
  // The record on disk is the truth: `lab scale` and other mutations write it, and a caller
  // may hold the record as it was at `up` (a test that scaled a Deployment would otherwise
  // leave the new pods' netns behind). A lab still being made is undone from what `up` holds.
  const rec = given.status === 'creating' ? given : (readRecord(dirname(given.dir), given.id) ?? given);
  if (rec.status !== 'creating') {
    rec.status = 'deleting';
    if (existsSync(rec.dir)) writeRecord(rec);
  }
  await destroyCgroupTree(join(rec.cgroupRoot, rec.plan.cgroup));
  removePins(rec);
  removeEmptyDir(join(rec.cgroupRoot, 'skein.lab')); // shared by labs: only once the last is gone
  const names = [...rec.plan.pods.map((p) => p.netns), ...rec.plan.nodes.map((n) => n.netns), rec.plan.underlayNetns];
  const existing = new Set(await listNetns());
  await Promise.all(names.filter((n) => existing.has(n) || existsSync(join(ETC_NETNS, n))).map(deleteNetns));
  rmSync(rec.dir, { recursive: true, force: true });
}

function removeEmptyDir(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    // another lab still uses it, or it is gone
  }
}

export interface GcResult {
  labs: string[];
  netns: string[];
  cgroups: string[];
  pins: string[];
}

const ID_IN_NAME = new RegExp(`^${LAB_PREFIX}([0-9a-f]{6})-`);

/**
 * Removes what killed runs left behind: labs whose owner process is gone, and netns, /etc/netns
 * folders and cgroups of the lab naming scheme that no live lab record owns. `all` removes
 * every lab, live or not.
 */
export async function labGc(opts: { baseDir?: string; all?: boolean } = {}): Promise<GcResult> {
  const base = opts.baseDir ?? labBaseDir();
  const result: GcResult = { labs: [], netns: [], cgroups: [], pins: [] };
  const live = new Set<string>();
  for (const id of listLabIds(base)) {
    const rec = readRecord(base, id);
    const orphan = !rec || opts.all || (rec.ownerPid !== undefined && !pidAlive(rec.ownerPid));
    if (!orphan) {
      live.add(id);
      continue;
    }
    if (rec) await labDown(rec);
    rmSync(join(base, id), { recursive: true, force: true });
    result.labs.push(id);
  }
  let cgRoot: string | undefined;
  try {
    cgRoot = cgroup2Root();
  } catch {
    cgRoot = undefined;
  }
  if (cgRoot && existsSync(join(cgRoot, 'skein.lab'))) {
    // Only lab directories: a cgroup directory also holds its interface files (cgroup.procs...).
    const dirs = readdirSync(join(cgRoot, 'skein.lab'), { withFileTypes: true }).filter((e) => e.isDirectory() && /^[0-9a-f]{6}$/.test(e.name));
    for (const { name: id } of dirs) {
      if (live.has(id)) continue;
      await destroyCgroupTree(join(cgRoot, 'skein.lab', id));
      result.cgroups.push(id);
    }
  }
  const stray = new Set<string>();
  for (const n of await listNetns()) {
    const m = ID_IN_NAME.exec(n);
    if (m && !live.has(m[1]!)) stray.add(n);
  }
  if (existsSync(ETC_NETNS)) {
    for (const n of readdirSync(ETC_NETNS)) {
      const m = ID_IN_NAME.exec(n);
      if (m && !live.has(m[1]!)) stray.add(n);
    }
  }
  for (const n of stray) {
    await deleteNetns(n);
    result.netns.push(n);
  }
  if (existsSync('/sys/fs/bpf')) {
    for (const n of readdirSync('/sys/fs/bpf')) {
      const m = /^skein-lab-([0-9a-f]{6})-/.exec(n);
      if (m && !live.has(m[1]!)) {
        rmSync(join('/sys/fs/bpf', n), { recursive: true, force: true });
        result.pins.push(n);
      }
    }
  }
  return result;
}

/** Finds a pod by `namespace/name`. */
export function findPod(rec: LabRecord, ref: string): PlannedPod {
  const [ns, name] = ref.includes('/') ? ref.split('/', 2) : ['default', ref];
  const pod = rec.plan.pods.find((p) => p.namespace === ns && p.name === name);
  if (!pod) {
    const known = rec.plan.pods.map((p) => `${p.namespace}/${p.name}`).join(', ');
    throw new SkeinError(LabCode.PodNotFound, `no pod ${ref} in lab ${rec.id} (pods: ${known})`);
  }
  return pod;
}

/** `skein` as the first word means this CLI (there is no skein on the pod's PATH). */
function resolveCommand(cmd: string[]): string[] {
  return cmd[0] === 'skein' ? [...skeinCommand(), ...cmd.slice(1)] : cmd;
}

/** Runs a command in a pod's netns and cgroup, attached to this terminal. */
export function labExec(rec: LabRecord, podRef: string, cmd: string[]): Promise<number> {
  const pod = findPod(rec, podRef);
  return execAttached(join(rec.cgroupRoot, pod.cgroup), pod.netns, resolveCommand(cmd), podEnv(rec.plan, pod));
}

/** Runs a command in a pod and returns its exit code and output. */
export function labExecCaptured(rec: LabRecord, podRef: string, cmd: string[], timeoutMs?: number): Promise<{ code: number; stdout: string; stderr: string }> {
  const pod = findPod(rec, podRef);
  return execCaptured(join(rec.cgroupRoot, pod.cgroup), pod.netns, resolveCommand(cmd), podEnv(rec.plan, pod), timeoutMs);
}

export interface LabStatus {
  id: string;
  /** The lab's Prometheus on the host's loopback, when it runs one. */
  prometheus: string | null;
  /** The controller's service graph page on the host's loopback (mesh labs). */
  graph: string | null;
  status: LabRecord['status'];
  scenario: string;
  stateDir: string;
  logDir: string;
  nodes: { name: string; netns: string; address: string; podCIDR: string }[];
  namespaces: { name: string; labels: Record<string, string> }[];
  services: { namespace: string; name: string; vip: string; ports: { name: string; port: number; targetPort: number | string; appProtocol?: string }[] }[];
  pods: { namespace: string; name: string; node: string; ip: string; netns: string; cgroup: string; serviceAccount: string; pid: number | null; running: boolean; log: string | null }[];
  /** Each node's agent as its supervisor sees it: pid now, restarts (with back-off), upgrades. */
  agents: { node: string; pid: number | null; running: boolean; state: string; restarts: number; upgrades: number; failedUpgrades: number; lastExit: AgentSupervisorState['lastExit'] | null; nextStartAt: string | null }[];
  processes: (LabProcess & { running: boolean })[];
}

export function labStatus(rec: LabRecord): LabStatus {
  const procOf = (ns: string, name: string) => rec.processes.find((p) => p.kind === 'pod' && p.name === `${ns}/${name}`);
  return {
    id: rec.id,
    status: rec.status,
    scenario: rec.scenarioFile,
    stateDir: rec.stateDir,
    logDir: rec.logDir,
    nodes: rec.plan.nodes.map((n) => ({ name: n.name, netns: n.netns, address: n.address, podCIDR: n.podCIDR })),
    namespaces: rec.scenario.namespaces.map((n) => ({ name: n.name, labels: n.labels })),
    services: rec.plan.services.map((s) => ({
      namespace: s.namespace,
      name: s.name,
      vip: s.vip,
      ports: s.ports.map((p) => ({ name: p.name, port: p.port, targetPort: p.targetPort, ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}) })),
    })),
    pods: rec.plan.pods.map((p) => {
      const proc = procOf(p.namespace, p.name);
      return {
        namespace: p.namespace,
        name: p.name,
        node: p.node,
        ip: p.ip,
        netns: p.netns,
        cgroup: join(rec.cgroupRoot, p.cgroup),
        serviceAccount: p.serviceAccount,
        pid: proc?.pid ?? null,
        running: proc ? pidAlive(proc.pid) : false,
        log: proc?.log ?? null,
      };
    }),
    agents: rec.processes
      .filter((p) => p.kind === 'supervisor')
      .map((p) => {
        const st = readSupervisorState(supervisorStateOf(rec, p.name));
        const pid = st?.agentPid ?? null;
        return {
          node: p.name,
          pid,
          running: pid !== null && pidAlive(pid),
          state: pidAlive(p.pid) ? (st?.state ?? 'unknown') : 'supervisor gone',
          restarts: st?.restarts ?? 0,
          upgrades: st?.upgrades ?? 0,
          failedUpgrades: st?.failedUpgrades ?? 0,
          lastExit: st?.lastExit ?? null,
          nextStartAt: st?.nextStartAt ?? null,
        };
      }),
    // An agent's own entry shows the agent running now (it may have been restarted).
    processes: rec.processes.map((p) => {
      const pid = p.kind === 'agent' ? (readSupervisorState(supervisorStateOf(rec, p.name))?.agentPid ?? p.pid) : p.pid;
      return { ...p, pid, running: pidAlive(pid) };
    }),
    prometheus: rec.prometheus?.url ?? null,
    graph: rec.graph?.url ?? null,
  };
}
