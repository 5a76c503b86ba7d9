/**
 * Controller at scale: 10,000 pods, 2,000 Services (each with an EndpointSlice), 100 nodes,
 * and 100 simulated agents — real gRPC clients (ControllerConfigSource + ConfigStore, as the
 * agent wires them) in this process over loopback. The controller (ObjectStore + MeshIndex
 * + ConfigServer) runs in a child process so its CPU and memory are its own.
 *
 * For each kind of change, ROUNDS times: the time from the change entering the controller's
 * store to every interested agent having applied it (p50/p99/max), the agents that received
 * something, and the bytes the controller sent for it (resource JSON + keys + envelope);
 * then the controller's CPU per change and its memory.
 *
 *   node --import tsx test/bench/controller-scale.ts          (ROUNDS=10 by default)
 *   PODS=10000 SERVICES=2000 AGENTS=100 ROUNDS=10 node --import tsx test/bench/controller-scale.ts
 *
 * Bounded: every wait has a deadline, the whole run aborts after 170 s.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ControllerConfigSource } from '../../src/config/controller-source.js';
import { ConfigStore } from '../../src/config/store.js';
import { ConfigServer } from '../../src/controller/config-server.js';
import { MeshIndex } from '../../src/controller/mesh-index.js';
import { ObjectStore } from '../../src/controller/object-store.js';
import { BootstrapTokenAuthenticator } from '../../src/identity/ca/bootstrap-tokens.js';

const PODS = Number(process.env.PODS ?? 10_000);
const SERVICES = Number(process.env.SERVICES ?? 2_000);
const AGENTS = Number(process.env.AGENTS ?? 100);
const NAMESPACES = Number(process.env.NAMESPACES ?? 100);
const ROUNDS = Number(process.env.ROUNDS ?? 10);
const HARD_LIMIT_MS = 170_000;

type Obj = Record<string, unknown>;
const node = (i: number) => `node-${i % AGENTS}`;
const tokenOf = (n: string) => `bench-token-${n}`;
const ip = (base: number, g: number) => `10.${base + Math.floor(g / 65536)}.${Math.floor(g / 256) % 256}.${g % 256}`;
const podsPerNs = Math.ceil(PODS / NAMESPACES);
const svcsPerNs = Math.ceil(SERVICES / NAMESPACES);

function podObj(ns: number, name: string, nodeName: string, addr: string, labels: Record<string, string>): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: `ns-${ns}`, uid: `uid-${ns}-${name}`, labels, creationTimestamp: '2026-01-01T00:00:00Z' },
    spec: { nodeName, serviceAccountName: `sa-${name.split('-')[0]}`, containers: [{ name: 'app', image: 'x' }] },
    status: { phase: 'Running', podIP: addr, podIPs: [{ ip: addr }], conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

function sliceObj(ns: number, s: number, eps: { addr: string; node: string; pod: string }[]): Obj {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `svc-${s}-1`, namespace: `ns-${ns}`, labels: { 'kubernetes.io/service-name': `svc-${s}` } },
    addressType: 'IPv4',
    endpoints: eps.map((e) => ({
      addresses: [e.addr],
      conditions: { ready: true },
      nodeName: e.node,
      targetRef: { kind: 'Pod', name: e.pod, uid: `uid-${ns}-${e.pod}` },
    })),
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  };
}

/** The cluster, and the endpoints of each service (to scale them later). */
function cluster(): { objects: Obj[]; endpoints: Map<string, { addr: string; node: string; pod: string }[]> } {
  const objects: Obj[] = [];
  const endpoints = new Map<string, { addr: string; node: string; pod: string }[]>();
  for (let n = 0; n < AGENTS; n++) {
    objects.push({ apiVersion: 'v1', kind: 'Node', metadata: { name: node(n) }, spec: { podCIDR: `10.${100 + n}.0.0/16` } });
  }
  let g = 0;
  for (let k = 0; k < NAMESPACES; k++) {
    objects.push({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: `ns-${k}`, labels: { 'skein.io/mesh': 'enabled' } } });
    for (let j = 0; j < podsPerNs && g < PODS; j++, g++) {
      const s = j % svcsPerNs;
      const name = `svc${s}-${j}`;
      const e = { addr: ip(64, g + 1), node: node(k + j), pod: name };
      objects.push(podObj(k, name, e.node, e.addr, { app: `svc-${s}` }));
      const key = `${k}/${s}`;
      endpoints.set(key, [...(endpoints.get(key) ?? []), e]);
    }
    for (let s = 0; s < svcsPerNs; s++) {
      const v = k * svcsPerNs + s + 1;
      objects.push({
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: `svc-${s}`, namespace: `ns-${k}` },
        spec: { clusterIP: ip(96, v), selector: { app: `svc-${s}` }, ports: [{ name: 'http', port: 80, targetPort: 8080, appProtocol: 'http' }] },
      });
      objects.push(sliceObj(k, s, endpoints.get(`${k}/${s}`) ?? []));
    }
  }
  return { objects, endpoints };
}

// ---------------------------------------------------------------- controller (child)

interface ChangeMsg {
  op: 'change';
  kind: 'pod-add' | 'scale' | 'label';
  n: number;
  round: number;
}

async function controllerChild(): Promise<void> {
  const { objects, endpoints } = cluster();
  const store = new ObjectStore();
  const index = new MeshIndex(store, {});
  const t0 = performance.now();
  store.replaceOrigin('bench', objects.map((obj) => ({ obj, doc: 0 })));
  index.flush();
  const buildMs = performance.now() - t0;
  const tokens: Record<string, string> = {};
  for (let n = 0; n < AGENTS; n++) tokens[node(n)] = tokenOf(node(n));
  const server = new ConfigServer({ index, authenticator: BootstrapTokenAuthenticator.fromTokens(tokens), address: '127.0.0.1:0' });
  const port = await server.start();
  const bytes = () => server.agents().reduce((s, a) => s + a.bytesSent, 0);
  const mem = () => {
    const m = process.memoryUsage();
    return { rss: m.rss, heapUsed: m.heapUsed };
  };
  process.send?.({ op: 'ready', port, buildMs, objects: objects.length, resources: index.entries().size, refused: index.refusals().length, mem: mem() });
  process.on('message', (m: ChangeMsg | { op: 'stats' } | { op: 'exit' }) => {
    if (m.op === 'exit') {
      void server.stop(100).then(() => process.exit(0));
      return;
    }
    if (m.op === 'stats') {
      process.send?.({ op: 'stats', cpu: process.cpuUsage(), bytes: bytes(), mem: mem() });
      return;
    }
    const before = bytes();
    const cpu0 = process.cpuUsage();
    const k = m.n % NAMESPACES;
    if (m.kind === 'pod-add') {
      store.upsert('bench', podObj(k, `extra-${m.n}`, node(m.n), ip(120, m.n + 1), { role: 'extra' }));
    } else if (m.kind === 'scale') {
      const s = m.n % svcsPerNs;
      const e = { addr: ip(121, m.n + 1), node: node(m.n * 7), pod: `scale-${m.n}` };
      store.upsert('bench', podObj(k, e.pod, e.node, e.addr, { app: `svc-${s}` }));
      const key = `${k}/${s}`;
      const list = [...(endpoints.get(key) ?? []), e];
      endpoints.set(key, list);
      store.upsert('bench', sliceObj(k, s, list));
    } else {
      // Even rounds take a namespace out of the mesh, odd rounds put it back.
      const ns = Math.floor(m.round / 2) % NAMESPACES;
      const enabled = m.round % 2 === 1;
      store.upsert('bench', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: `ns-${ns}`, labels: { 'skein.io/mesh': enabled ? 'enabled' : 'disabled' } } });
    }
    const u = index.flush();
    const cpu = process.cpuUsage(cpu0);
    // Bytes: what the sends triggered by this flush wrote (later sends after ACKs are counted by the parent's next stats).
    process.send?.({ op: 'changed', version: u?.version ?? '', changed: u?.changed.size ?? 0, cpuMs: (cpu.user + cpu.system) / 1000, bytes: bytes() - before });
  });
}

// ---------------------------------------------------------------- agents (parent)

function seqOf(version: string): number {
  return Number(version.slice(version.lastIndexOf('-') + 1));
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function main(): Promise<void> {
  const abort = setTimeout(() => {
    console.error(`controller-scale: aborted after ${HARD_LIMIT_MS / 1000} s`);
    process.exit(2);
  }, HARD_LIMIT_MS);
  abort.unref();
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ['--controller-child'], { execArgv: process.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const inbox: Record<string, unknown>[] = [];
  const waiters: ((m: Record<string, unknown>) => void)[] = [];
  child.on('message', (m: Record<string, unknown>) => {
    const w = waiters.shift();
    if (w) w(m);
    else inbox.push(m);
  });
  const next = () => new Promise<Record<string, unknown>>((resolve) => (inbox.length ? resolve(inbox.shift()!) : waiters.push(resolve)));
  const cleanup = () => {
    if (child.exitCode === null) child.kill('SIGKILL');
  };
  process.on('exit', cleanup);

  const ready = (await next()) as { port: number; buildMs: number; objects: number; resources: number; refused: number; mem: { rss: number; heapUsed: number } };
  console.log(
    `controller: ${ready.objects} objects -> ${ready.resources} resources (${ready.refused} refused), index built in ${ready.buildMs.toFixed(0)} ms, rss ${(ready.mem.rss / 2 ** 20).toFixed(0)} MiB`,
  );

  // 100 agents.
  const agents = Array.from({ length: AGENTS }, (_, n) => {
    const name = node(n);
    const store = new ConfigStore();
    const a = { name, store, appliedSeq: 0, appliedAt: 0, responses: 0, applyMs: [] as number[], source: undefined as unknown as ControllerConfigSource };
    a.source = new ControllerConfigSource({
      address: `127.0.0.1:${ready.port}`,
      node: name,
      token: tokenOf(name),
      observe: () => a.responses++,
    });
    return a;
  });
  const tSync = performance.now();
  await Promise.all(
    agents.map((a) =>
      a.source.start(
        (s) => {
          const t = performance.now();
          if (a.store.apply(s).ok) {
            a.appliedAt = performance.now();
            a.appliedSeq = seqOf(s.version);
            a.applyMs.push(a.appliedAt - t);
          }
        },
        (e) => console.error(`agent ${a.name}: ${e.message}`),
      ),
    ),
  );
  const syncMs = performance.now() - tSync;
  const perAgent = agents.map((a) => a.store.snapshot()?.workloads.length ?? 0);
  console.log(
    `initial sync: ${AGENTS} agents in ${syncMs.toFixed(0)} ms; each holds ${agents[0]!.store.snapshot()?.services.length} services and ${Math.min(...perAgent)}-${Math.max(...perAgent)} local workloads`,
  );
  child.send({ op: 'stats' });
  const s0 = (await next()) as { cpu: NodeJS.CpuUsage; bytes: number; mem: { rss: number; heapUsed: number } };
  console.log(`initial full states: ${(s0.bytes / 2 ** 20).toFixed(1)} MiB sent; controller rss ${(s0.mem.rss / 2 ** 20).toFixed(0)} MiB, heap ${(s0.mem.heapUsed / 2 ** 20).toFixed(0)} MiB`);

  const rows: string[][] = [];
  let n = 0;
  for (const kind of ['pod-add', 'scale', 'label'] as const) {
    const latencies: number[] = [];
    const firsts: number[] = [];
    const applyCost: number[] = [];
    const reached: number[] = [];
    const bytes: number[] = [];
    const cpu: number[] = [];
    for (let r = 0; r < ROUNDS; r++, n++) {
      const before = agents.map((a) => a.responses);
      child.send({ op: 'stats' });
      const sBefore = (await next()) as { bytes: number };
      const t0 = performance.now();
      child.send({ op: 'change', kind, n, round: r });
      const res = (await next()) as { version: string; cpuMs: number; changed: number };
      if (!res.version) throw new Error(`${kind} round ${r}: the change changed nothing`);
      const seq = seqOf(res.version);
      // Interested: agents the controller sent something to (checked against expectations below).
      const deadline = Date.now() + 20_000;
      await new Promise((r2) => setTimeout(r2, 0));
      let interested = agents.filter((a, i) => a.responses > before[i]! || a.appliedSeq >= seq);
      while (Date.now() < deadline) {
        interested = agents.filter((a, i) => a.responses > before[i]! || a.appliedSeq >= seq);
        const expected = kind === 'pod-add' ? 1 : AGENTS;
        if (interested.length >= expected && interested.every((a) => a.appliedSeq >= seq)) break;
        await new Promise((r2) => setTimeout(r2, 1));
      }
      const done = interested.filter((a) => a.appliedSeq >= seq);
      if (done.length !== interested.length || interested.length === 0) throw new Error(`${kind} round ${r}: ${done.length}/${interested.length} agents applied`);
      if (kind === 'pod-add' && (interested.length !== 1 || interested[0]!.name !== node(n))) {
        throw new Error(`pod-add reached ${interested.map((a) => a.name).join(',')} instead of only ${node(n)}`);
      }
      latencies.push(Math.max(...done.map((a) => a.appliedAt)) - t0);
      firsts.push(Math.min(...done.map((a) => a.appliedAt)) - t0);
      for (const a of done) applyCost.push(a.applyMs[a.applyMs.length - 1] ?? 0);
      reached.push(interested.length);
      // Settle the ACKs, then count every byte sent for this change.
      await new Promise((r2) => setTimeout(r2, 5));
      child.send({ op: 'stats' });
      const sAfter = (await next()) as { bytes: number };
      bytes.push(sAfter.bytes - sBefore.bytes);
      cpu.push(res.cpuMs);
    }
    const sorted = [...latencies].sort((a, b) => a - b);
    const firstSorted = [...firsts].sort((a, b) => a - b);
    const costSorted = [...applyCost].sort((a, b) => a - b);
    const avg = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
    rows.push([
      kind,
      String(ROUNDS),
      `${Math.min(...reached)}-${Math.max(...reached)}`,
      pct(firstSorted, 50).toFixed(1),
      pct(sorted, 50).toFixed(1),
      pct(sorted, 99).toFixed(1),
      sorted[sorted.length - 1]!.toFixed(1),
      (avg(bytes) / 1024).toFixed(1),
      (avg(bytes) / avg(reached)).toFixed(0),
      avg(cpu).toFixed(1),
      pct(costSorted, 50).toFixed(1),
    ]);
  }
  child.send({ op: 'stats' });
  const sEnd = (await next()) as { cpu: NodeJS.CpuUsage; mem: { rss: number; heapUsed: number } };

  const head = ['change', 'rounds', 'agents reached', 'first p50 ms', 'all p50 ms', 'all p99 ms', 'all max ms', 'KiB sent/change', 'B/agent', 'ctl CPU ms/change', 'agent apply ms p50'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padStart(widths[i]!)).join(' | ')} |`;
  console.log('');
  console.log(`controller-scale: ${PODS} pods, ${SERVICES} services, ${NAMESPACES} namespaces, ${AGENTS} agents (in-process gRPC clients over loopback)`);
  console.log(line(head));
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const r of rows) console.log(line(r));
  const cpuTotal = (sEnd.cpu.user + sEnd.cpu.system) / 1000;
  console.log(
    `controller process: CPU ${cpuTotal.toFixed(0)} ms total (build + initial sync + changes), rss ${(sEnd.mem.rss / 2 ** 20).toFixed(0)} MiB, heap used ${(sEnd.mem.heapUsed / 2 ** 20).toFixed(0)} MiB`,
  );
  console.log('latency: change sent to the controller process -> an interested agent has applied it (ConfigStore.apply returned);');
  console.log('  "first" = the first interested agent, "all" = the last one. The agents share this one process (one event loop on');
  console.log('  this machine), so "all" includes every agent\'s own apply work queued one after another ("agent apply ms" each);');
  console.log('  on real nodes each agent applies on its own CPU.');
  console.log('ctl CPU ms/change: controller process CPU from the change entering its store to the index rebuilt and the deltas written.');

  await Promise.all(agents.map((a) => a.source.stop()));
  child.send({ op: 'exit' });
  await new Promise((r) => child.once('exit', r));
  clearTimeout(abort);
}

if (process.argv.includes('--controller-child')) await controllerChild();
else await main();
