#!/usr/bin/env node
/**
 * skein benchmarks (`make bench`, `make bench QUICK=1`): the same workloads, in one run,
 * through four paths in a 2-node lab, so the numbers compare like with like:
 *
 *   direct           client pod ─▶ server pods (no mesh; kube-proxy-like Service DNAT)
 *   skein L4         client pod ─▶ agent A ══ mTLS HTTP/2 CONNECT ══▶ agent B ─▶ pod (appProtocol tcp)
 *   skein L7         the same, with the agents speaking HTTP/1.1 or gRPC (appProtocol http/grpc)
 *   HAProxy (peer)   client pod ─▶ HAProxy on node A ══ mTLS ══▶ HAProxy on node B ─▶ pod
 *
 * Loads: constant rate (open loop, latency from the intended send time: lib/loadgen.mjs) at
 * each rate, then closed loop for maximum throughput (wrk, h2load); for L4 also bulk TCP with
 * 1 and 16 streams (lib/bulk.mjs). Per mode: the proxies' CPU seconds per 1000 requests and
 * peak RSS from /proc. Every mode is verified to have taken its path (agents' counters moved
 * or did not, HAProxy's stats show the requests); failures are counted and shown.
 *
 *   sudo node test/bench/run.mjs [--quick] [--keep-going]      (after make build-ts)
 *
 * Environment knobs (for development; defaults are what `make bench` measures):
 *   BENCH_MODES=direct-http,skein-l4,...  run only these modes (bulk runs when its modes are chosen)
 *   BENCH_RATES=1000,5000   BENCH_OPEN_S=8   BENCH_CLOSED_S=6   BENCH_BULK_S=4   BENCH_NO_MESH=1
 *   BENCH_AGENT_NODE_OPTIONS='--cpu-prof --cpu-prof-dir=DIR'   NODE_OPTIONS of the agents (profiles)
 *   BENCH_AGENT_ARGS='--request-metrics off'   extra agent arguments (e.g. the cost of metrics: run twice)
 *   BENCH_NICE=-10   run the bench and everything it starts at this nice level (on a machine
 *                    shared with other work; off by default: it takes CPU from that work)
 *
 * Everything it makes (the lab, the HAProxy processes, a temp dir) is removed at the end,
 * also on failure and on SIGINT/SIGTERM; the lab is owned by this process, so `skein lab gc`
 * removes it should this process be killed outright.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { h2loadCommand, parseH2load, parseWrk, wrkCommand } from './lib/closed-loop.mjs';
import { checkConfig, makePeerCertificates, PEER_PORTS, renderNodeA, renderNodeB, showStat, startHaproxy } from './lib/haproxy.mjs';
import { pidsOfCgroup, processGroup, startRssSampler } from './lib/procstat.mjs';
import { renderReport } from './lib/report.mjs';

const execFileP = promisify(execFile);
const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..', '..');
const LIB = join(HERE, 'lib');

const argv = process.argv.slice(2);
const QUICK = argv.includes('--quick') || process.env.QUICK === '1';
const env = (k, d) => (process.env[k] !== undefined && process.env[k] !== '' ? process.env[k] : d);

const P = {
  rates: env('BENCH_RATES', '1000,5000').split(',').map(Number),
  openWarmupS: Number(env('BENCH_OPEN_WARMUP_S', QUICK ? 0.5 : 1)),
  openDurationS: Number(env('BENCH_OPEN_S', QUICK ? 1.5 : 8)),
  closedWarmupS: Number(env('BENCH_CLOSED_WARMUP_S', QUICK ? 0.5 : 1)),
  closedDurationS: Number(env('BENCH_CLOSED_S', QUICK ? 2 : 6)),
  bulkDurationS: Number(env('BENCH_BULK_S', QUICK ? 1.5 : 4)),
  bulkStreams: [1, 16],
  httpPath: '/bytes/64',
  requestTimeoutMs: 2000,
  http1Connections: 64,
  grpcConnections: 4,
  wrk: { threads: 1, connections: 32 },
  h2load: { clients: 4, streams: 16, threads: 1 },
  echoReplicas: 2,
};

/** Modes in run order; `baseline` is what added latency is measured against, `peer` the HAProxy equivalent. */
const MODES = [
  { id: 'direct-http', kind: 'direct', proto: 'http1', baseline: 'direct-http' },
  { id: 'skein-l4', kind: 'skein', proto: 'http1', baseline: 'direct-http', peer: 'haproxy-l4', agentProtocol: 'tcp' },
  { id: 'skein-l7-http', kind: 'skein', proto: 'http1', baseline: 'direct-http', peer: 'haproxy-l7-http', agentProtocol: 'http1' },
  // The same with 20 AuthorizationPolicies / 200 rules on the destination (none denies the
  // bench's requests; every DENY rule is evaluated, the ALLOW list matches on its last rule).
  { id: 'skein-l7-http-authz', kind: 'skein', proto: 'http1', baseline: 'direct-http', peer: 'haproxy-l7-http', agentProtocol: 'http1', policies: 20 },
  { id: 'haproxy-l4', kind: 'haproxy', proto: 'http1', baseline: 'direct-http', frontend: 'l4_http', backendB: 'in_l4', httpMode: false },
  { id: 'haproxy-l7-http', kind: 'haproxy', proto: 'http1', baseline: 'direct-http', frontend: 'l7_http', backendB: 'in_http', httpMode: true },
  { id: 'direct-grpc', kind: 'direct', proto: 'grpc', baseline: 'direct-grpc' },
  { id: 'skein-l7-grpc', kind: 'skein', proto: 'grpc', baseline: 'direct-grpc', peer: 'haproxy-l7-grpc', agentProtocol: 'http2' },
  { id: 'haproxy-l7-grpc', kind: 'haproxy', proto: 'grpc', baseline: 'direct-grpc', frontend: 'l7_grpc', backendB: 'in_grpc', httpMode: true },
];
const BULK_MODES = ['direct', 'skein-l4', 'haproxy-l4'];
const onlyModes = env('BENCH_MODES', '')
  .split(',')
  .filter(Boolean);
const selected = (id) => onlyModes.length === 0 || onlyModes.includes(id);

// ---------------------------------------------------------------------------------------------
// Cleanup that runs on every exit path.

const cleanups = [];
let cleaning = null;
function onCleanup(fn) {
  cleanups.push(fn);
}
async function cleanup() {
  cleaning ??= (async () => {
    while (cleanups.length) {
      const fn = cleanups.pop();
      try {
        await fn();
      } catch (err) {
        process.stderr.write(`bench: cleanup: ${err.message}\n`);
      }
    }
  })();
  return cleaning;
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.once(sig, () => {
    process.stderr.write(`\nbench: ${sig}: cleaning up\n`);
    cleanup().finally(() => process.exit(130));
  });
}

function log(line) {
  process.stderr.write(`bench: ${line}\n`);
}

// ---------------------------------------------------------------------------------------------

async function preflight() {
  if (process.getuid?.() !== 0) throw new Error('the bench builds a lab (netns, cgroups): run as root (sudo make bench)');
  const major = Number(process.versions.node.split('.')[0]);
  if (major < 24) throw new Error(`node ${process.version} is too old: put ${ROOT}/node_modules/.bin first on PATH (make does)`);
  for (const tool of ['haproxy', 'wrk', 'h2load', 'openssl', 'nsenter', 'curl', 'ip']) {
    try {
      await execFileP('sh', ['-c', `command -v ${tool}`]);
    } catch {
      throw new Error(`${tool} is missing: run make deps`);
    }
  }
  try {
    readFileSync(join(ROOT, 'dist', 'lab', 'lab.js'));
  } catch {
    throw new Error('dist/ is missing: run make build-ts (make bench builds first)');
  }
}

function machineInfo() {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model?.trim() ?? 'unknown',
    memGiB: Number((os.totalmem() / 2 ** 30).toFixed(1)),
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    haproxy: '',
    loadavgAtStart: os.loadavg().map((x) => Number(x.toFixed(2))),
    cpuPressureAtStart: cpuPressure(),
    nice: os.getPriority(),
  };
}

async function main() {
  const t0 = Date.now();
  await preflight();
  // Children (the lab's pods and agents, HAProxy, the load tools) inherit it.
  if (process.env.BENCH_NICE) os.setPriority(0, Number(process.env.BENCH_NICE));
  const lab = await import(join(ROOT, 'dist', 'lab', 'lab.js'));
  const startedAt = new Date().toISOString();
  const notes = [];
  const tmp = mkdtempSync(join(os.tmpdir(), 'skein-bench-'));
  onCleanup(() => rmSync(tmp, { recursive: true, force: true }));

  const scenarioFile = join(tmp, 'bench.yaml');
  writeFileSync(scenarioFile, readFileSync(join(HERE, 'bench.yaml'), 'utf8').replaceAll('__NODE__', process.execPath).replaceAll('__BENCH_LIB__', LIB));

  // The lab, with the mesh when it comes up; without it the skein modes say why they did not run.
  const anySkein = MODES.some((m) => m.kind === 'skein' && selected(m.id)) || selected('skein-l4');
  let rec;
  let meshDown = null;
  const up = async (mesh) => {
    // Profiling: BENCH_AGENT_NODE_OPTIONS='--cpu-prof --cpu-prof-dir=/tmp/prof' (written when the agents stop).
    const agentOptions = env('BENCH_AGENT_NODE_OPTIONS', '');
    const agentArgs = env('BENCH_AGENT_ARGS', '').split(/\s+/).filter(Boolean);
    const r = await lab.labUp({
      scenarioFile,
      ownerPid: process.pid,
      mesh,
      progress: (l) => log(l),
      ...(agentOptions ? { agentEnv: { NODE_OPTIONS: agentOptions } } : {}),
      ...(agentArgs.length ? { agentArgs } : {}),
    });
    onCleanup(async () => {
      if (agentOptions.includes('--cpu-prof')) {
        // Node writes a CPU profile on a clean exit only: stop the agents before the lab kills them.
        const agents = (r.processes ?? []).filter((p) => p.kind === 'agent');
        for (const p of agents) {
          try {
            process.kill(p.pid, 'SIGTERM');
          } catch {}
        }
        await sleep(4000);
        log(`agents stopped for their CPU profiles (${agents.length})`);
      }
      log(`lab ${r.id}: down`);
      await lab.labDown(r);
    });
    return r;
  };
  if (process.env.BENCH_NO_MESH === '1' || !anySkein) {
    meshDown = 'BENCH_NO_MESH=1 or no skein mode selected';
    rec = await up(false);
  } else {
    try {
      rec = await up(true);
    } catch (err) {
      meshDown = `the mesh did not come up: ${firstLine(err.message)}`;
      log(`${meshDown}; running the lab without it`);
      rec = await up(false);
    }
  }

  const nodeA = rec.plan.nodes.find((n) => n.name === 'node-a');
  const nodeB = rec.plan.nodes.find((n) => n.name === 'node-b');
  const svc = (ns, name) => rec.plan.services.find((s) => s.namespace === ns && s.name === name);
  const pods = (ns, app) => rec.plan.pods.filter((p) => p.namespace === ns && p.deployment === app);
  const meshEcho = svc('bench-mesh', 'echo');
  const plainEcho = svc('bench-plain', 'echo');
  const meshSink = svc('bench-mesh', 'sink');
  const plainSink = svc('bench-plain', 'sink');
  const meshClient = `bench-mesh/${pods('bench-mesh', 'client')[0].name}`;
  const plainClient = `bench-plain/${pods('bench-plain', 'client')[0].name}`;

  const exec = async (pod, cmd, timeoutMs) => lab.labExecCaptured(rec, pod, cmd, timeoutMs);

  // --- skein agents: their processes and counters.
  const agents = rec.processes.filter((p) => p.kind === 'agent');
  const agentGroup = processGroup('skein agents', () => agents.flatMap((a) => pidsOfCgroup(a.cgroup)));
  const agentStats = async () => {
    if (meshDown) return null;
    const out = {};
    for (const n of [nodeA, nodeB]) {
      const { stdout } = await execFileP('curl', ['-sf', '--max-time', '3', '--unix-socket', join(rec.dir, 'agents', `${n.name}.sock`), 'http://agent/stats']);
      out[n.name] = JSON.parse(stdout);
    }
    return out;
  };

  // Enrolled and configured: a mesh request really goes through agent A (its counter moves).
  if (!meshDown) {
    try {
      // Through the L4 port: an L4 stream is never pooled, so the L7 modes start with no
      // upstream connection left from the probe and must open (and count) their own.
      await waitForMeshPath(exec, meshClient, `${meshEcho.vip}:8090`, agentStats);
    } catch (err) {
      meshDown = `the mesh came up but requests do not go through it: ${firstLine(err.message)}`;
      log(meshDown);
    }
  }

  // --- HAProxy peers, in the node netns, mTLS between them.
  const haDir = join(tmp, 'haproxy');
  mkdirSync(haDir);
  const certs = makePeerCertificates(haDir, nodeB.address);
  const sockA = join(haDir, 'a.sock');
  const sockB = join(haDir, 'b.sock');
  const cfgA = join(haDir, 'node-a.cfg');
  const cfgB = join(haDir, 'node-b.cfg');
  writeFileSync(cfgA, renderNodeA({ sock: sockA, certs, nodeA: nodeA.address, nodeB: nodeB.address }));
  writeFileSync(
    cfgB,
    renderNodeB({
      sock: sockB,
      certs,
      nodeB: nodeB.address,
      echoPods: pods('bench-plain', 'echo').map((p) => p.ip),
      sinkPods: pods('bench-plain', 'sink').map((p) => p.ip),
    }),
  );
  checkConfig(cfgA);
  checkConfig(cfgB);
  const haA = await startHaproxy({ netns: nodeA.netns, config: cfgA, sock: sockA, logFile: join(haDir, 'node-a.log') });
  onCleanup(() => haA.stop());
  const haB = await startHaproxy({ netns: nodeB.netns, config: cfgB, sock: sockB, logFile: join(haDir, 'node-b.log') });
  onCleanup(() => haB.stop());
  const haGroup = processGroup('haproxy', () => [haA.pid, haB.pid]);
  const haStats = async () => ({ 'node-a': await showStat(sockA), 'node-b': await showStat(sockB) });
  log(`haproxy up: node-a pid ${haA.pid}, node-b pid ${haB.pid}`);

  const machine = machineInfo();
  machine.haproxy = (await execFileP('haproxy', ['-v'])).stdout.split('\n')[0];
  const grpcFrame = join(tmp, 'grpc-empty.bin');
  writeFileSync(grpcFrame, Buffer.from([0, 0, 0, 0, 0]));

  const targetOf = (m) => {
    const port = m.proto === 'grpc' ? 9090 : m.id === 'skein-l4' ? 8090 : 80;
    if (m.kind === 'direct') return { pod: plainClient, hostPort: `${plainEcho.vip}:${port}` };
    if (m.kind === 'skein') return { pod: meshClient, hostPort: `${meshEcho.vip}:${port}` };
    const a = PEER_PORTS.a;
    return { pod: plainClient, hostPort: `${nodeA.address}:${m.id === 'haproxy-l4' ? a.l4 : m.proto === 'grpc' ? a.grpc : a.http}` };
  };

  const snapshot = async () => ({ skein: await agentStats().catch((e) => ({ error: e.message })), haproxy: await haStats().catch((e) => ({ error: e.message })) });

  // What the proxies burn with no traffic at all (timers, config stream, GC): part of every
  // CPU-per-request figure below, shown on its own so low rates can be read correctly.
  const idle = {};
  {
    const seconds = QUICK ? 1 : 3;
    const groups = [...(meshDown ? [] : [agentGroup]), haGroup];
    const c0 = groups.map((g) => g.cpuSeconds());
    await sleep(seconds * 1000);
    groups.forEach((g, i) => {
      idle[g.name] = { cpuSecondsPerSecond: Number(((g.cpuSeconds() - c0[i]) / seconds).toFixed(4)), rssBytes: g.memory().rss };
    });
    log(`idle: ${JSON.stringify(idle)}`);
  }

  const results = [];
  for (const def of MODES) {
    if (!selected(def.id)) continue;
    const mode = { ...def };
    results.push(mode);
    if (mode.kind === 'skein' && meshDown) {
      mode.notRun = meshDown;
      log(`${mode.id}: not run (${meshDown})`);
      continue;
    }
    try {
      await runMode(mode);
    } catch (err) {
      mode.error = firstLine(err.message);
      log(`${mode.id}: failed: ${err.message}`);
    }
  }

  // The baseline once more at the end, at the first rate: how far the machine itself drifted
  // during the run (other work on it), i.e. how much of an added latency is noise.
  const firstDirect = results.find((m) => m.id === 'direct-http' && m.open);
  if (firstDirect) {
    const again = { id: 'direct-http-again', kind: 'direct', proto: 'http1', baseline: 'direct-http', rates: [P.rates[0]], skipClosed: true };
    results.push(again);
    try {
      await runMode(again);
    } catch (err) {
      again.error = firstLine(err.message);
    }
  }

  /**
   * Waits (bounded) until every proxy is quiet again: a proxy still draining the backlog of an
   * overloaded mode would otherwise slow the next mode down and bill it for that CPU.
   */
  async function settle(mode) {
    const groups = [...(meshDown ? [] : [agentGroup]), haGroup];
    const t0 = Date.now();
    let rate = 0;
    for (;;) {
      const c0 = groups.reduce((a, g) => a + g.cpuSeconds(), 0);
      await sleep(500);
      rate = (groups.reduce((a, g) => a + g.cpuSeconds(), 0) - c0) / 0.5;
      if (rate < 0.05 || Date.now() - t0 > 15_000) break;
    }
    mode.settle = { seconds: Number(((Date.now() - t0) / 1000).toFixed(1)), proxyCpuRateAtStart: Number(rate.toFixed(3)) };
    if (rate >= 0.05) log(`${mode.id}: proxies still busy (${rate.toFixed(2)} CPU-s/s) after ${mode.settle.seconds}s; starting anyway`);
  }

  /** 20 policies / 200 rules in bench-mesh for the echo pods: 10 DENY that match nothing, 10 ALLOW matching on the last rule. */
  function benchPolicies(n) {
    const objs = [];
    for (let i = 0; i < n; i++) {
      const deny = i % 2 === 0;
      const rules = [];
      for (let j = 0; j < 10; j++) {
        if (!deny && j === 9) rules.push({ from: [{ source: { principals: ['cluster.local/ns/bench-mesh/sa/*'] } }] });
        else if (j % 3 === 0) rules.push({ to: [{ operation: { paths: [`/blocked-${i}-${j}*`], methods: ['POST'] } }] });
        else if (j % 3 === 1) rules.push({ when: [{ key: `request.headers[x-block-${i}-${j}]`, values: ['1'] }] });
        else rules.push({ from: [{ source: { namespaces: [`other-${i}-${j}`] } }], to: [{ operation: { ports: ['8080'] } }] });
      }
      objs.push({ apiVersion: 'security.skein.io/v1alpha1', kind: 'AuthorizationPolicy', metadata: { name: `bench-${i}`, namespace: 'bench-mesh' }, spec: { selector: { matchLabels: { app: 'echo' } }, action: deny ? 'DENY' : 'ALLOW', rules } });
    }
    return objs;
  }

  /** Applies (or, with an empty list, removes) the bench's policies and waits until node B serves them. */
  async function setPolicies(objs, previous) {
    const mutate = await import(join(ROOT, 'dist', 'lab', 'mutate.js'));
    const text = (list) => list.map((o) => JSON.stringify(o)).join('\n---\n');
    if (previous.length) mutate.deleteObjects(rec, 'bench-policies.yaml', text(previous));
    if (objs.length) mutate.applyObjects(rec, 'bench-policies.yaml', text(objs));
    const t0 = Date.now();
    for (;;) {
      const { stdout } = await execFileP('curl', ['-sf', '--max-time', '3', '--unix-socket', join(rec.dir, 'agents', 'node-b.sock'), 'http://agent/config_dump']);
      const have = (JSON.parse(stdout).snapshot?.authorizationPolicies ?? []).length;
      if (have === objs.length) return (Date.now() - t0) / 1000;
      if (Date.now() - t0 > 20_000) throw new Error(`node-b serves ${have} policies, not ${objs.length}`);
      await sleep(100);
    }
  }

  async function runMode(mode) {
    if (mode.policies) {
      const objs = benchPolicies(mode.policies);
      const s = await setPolicies(objs, []);
      log(`${mode.id}: ${objs.length} policies with ${objs.reduce((a, o) => a + o.spec.rules.length, 0)} rules served by node B after ${s.toFixed(1)}s`);
      try {
        await runModeWith(mode);
      } finally {
        await setPolicies([], objs);
      }
      return;
    }
    await runModeWith(mode);
  }

  async function runModeWith(mode) {
    await settle(mode);
    const { pod, hostPort } = targetOf(mode);
    mode.target = hostPort;
    const group = mode.kind === 'skein' ? agentGroup : mode.kind === 'haproxy' ? haGroup : null;
    const sampler = group ? startRssSampler([group]) : null;
    const before = await snapshot();
    let requests = 0;
    mode.open = {};
    for (const rate of mode.rates ?? P.rates) {
      const cpu0 = group?.cpuSeconds();
      const cmd = [
        process.execPath,
        join(LIB, 'loadgen.mjs'),
        '--protocol',
        mode.proto,
        '--target',
        hostPort,
        '--rate',
        String(rate),
        '--duration',
        String(P.openDurationS),
        '--warmup',
        String(P.openWarmupS),
        '--path',
        P.httpPath,
        '--connections',
        String(mode.proto === 'grpc' ? P.grpcConnections : P.http1Connections),
        '--timeout',
        String(P.requestTimeoutMs),
      ];
      const budget = (P.openWarmupS + P.openDurationS) * 1000 + P.requestTimeoutMs + 15_000;
      const r = await exec(pod, cmd, budget);
      if (r.code !== 0) throw new Error(`loadgen at ${rate}/s exited ${r.code}: ${firstLine(r.stderr) || firstLine(r.stdout)}`);
      const out = JSON.parse(lastLine(r.stdout));
      if (group) {
        out.proxyCpuSeconds = Number((group.cpuSeconds() - cpu0).toFixed(3));
        out.proxyCpuPer1k = (out.proxyCpuSeconds / out.sentTotal) * 1000;
      }
      requests += out.okIncludingWarmup;
      mode.open[rate] = out;
      log(`${mode.id} @${rate}/s: p50 ${out.latencyMs.p50} p99 ${out.latencyMs.p99} p99.9 ${out.latencyMs.p999} ms, ok ${out.ok}, failed ${out.failed}${group ? `, proxy CPU ${out.proxyCpuSeconds}s` : ''}`);
    }
    if (!mode.skipClosed) requests += await runClosed(mode, pod, hostPort, group);
    const after = await snapshot();
    if (sampler) {
      const peak = sampler.stop();
      mode.peakRssBytes = peak[group.name];
      mode.hwmBytesAtEnd = group.memory().hwm;
    }
    mode.verified = verifyPath(mode, before, after, requests);
    log(`${mode.id}: path ${mode.verified.ok ? 'verified' : `NOT verified: ${mode.verified.reason}`}`);
  }

  /** Closed loop, as fast as the path goes; returns the successful requests (for verification). */
  async function runClosed(mode, pod, hostPort, group) {
    const cpu0 = group?.cpuSeconds();
    let closed;
    try {
      if (mode.proto === 'http1') {
        const cmd = wrkCommand({ url: `http://${hostPort}${P.httpPath}`, threads: P.wrk.threads, connections: P.wrk.connections, durationS: P.closedDurationS, timeoutS: P.requestTimeoutMs / 1000 });
        const r = await exec(pod, cmd, P.closedDurationS * 1000 + 20_000);
        closed = parseWrk(r.stdout + r.stderr);
      } else {
        const cmd = h2loadCommand({
          url: `http://${hostPort}/skein.lab.v1.Echo/Unary`,
          clients: P.h2load.clients,
          streams: P.h2load.streams,
          threads: P.h2load.threads,
          durationS: P.closedDurationS,
          warmupS: P.closedWarmupS,
          dataFile: grpcFrame,
          headers: ['content-type: application/grpc', 'te: trailers'],
        });
        const r = await exec(pod, cmd, (P.closedDurationS + P.closedWarmupS) * 1000 + 20_000);
        closed = parseH2load(r.stdout + r.stderr);
      }
    } catch (err) {
      mode.closedError = firstLine(err.message);
      log(`${mode.id} closed loop failed: ${err.message}`);
      return 0;
    }
    if (group) {
      closed.proxyCpuSeconds = Number((group.cpuSeconds() - cpu0).toFixed(3));
      // h2load's warmup requests cost CPU but are not in `requests`: a slight overestimate there.
      closed.proxyCpuPer1k = (closed.proxyCpuSeconds / Math.max(1, closed.requests)) * 1000;
    }
    mode.closed = closed;
    log(`${mode.id} closed loop: ${closed.rps} req/s, failed ${closed.failed}${group ? `, proxy CPU ${closed.proxyCpuSeconds}s` : ''}`);
    return closed.ok;
  }

  // --- L4 bulk throughput.
  let bulk = null;
  const bulkSelected = BULK_MODES.filter((id) => selected(id) || (id === 'direct' && selected('direct-http')));
  if (bulkSelected.length) {
    bulk = { streams: P.bulkStreams, modes: [] };
    for (const id of bulkSelected) {
      const m = { id, kind: id === 'direct' ? 'direct' : id === 'skein-l4' ? 'skein' : 'haproxy' };
      bulk.modes.push(m);
      if (m.kind === 'skein' && meshDown) {
        m.notRun = meshDown;
        continue;
      }
      try {
        await runBulk(m);
      } catch (err) {
        m.error = firstLine(err.message);
        log(`bulk ${id}: failed: ${err.message}`);
      }
    }
  }

  async function runBulk(m) {
    const pod = m.kind === 'skein' ? meshClient : plainClient;
    const hostPort = m.kind === 'direct' ? `${plainSink.vip}:5201` : m.kind === 'skein' ? `${meshSink.vip}:5201` : `${nodeA.address}:${PEER_PORTS.a.bulk}`;
    m.target = hostPort;
    const group = m.kind === 'skein' ? agentGroup : m.kind === 'haproxy' ? haGroup : null;
    const before = await snapshot();
    m.runs = {};
    let cpu = 0;
    let bytes = 0;
    let streams = 0;
    for (const s of P.bulkStreams) {
      const c0 = group?.cpuSeconds();
      const cmd = [process.execPath, join(LIB, 'bulk.mjs'), 'push', '--target', hostPort, '--streams', String(s), '--duration', String(P.bulkDurationS), '--timeout', '15'];
      const r = await exec(pod, cmd, P.bulkDurationS * 1000 + 30_000);
      if (r.code !== 0) throw new Error(`bulk push exited ${r.code}: ${firstLine(r.stderr)}`);
      const out = JSON.parse(lastLine(r.stdout));
      if (group) out.proxyCpuSeconds = Number((group.cpuSeconds() - c0).toFixed(3));
      cpu += out.proxyCpuSeconds ?? 0;
      bytes += out.bytesConfirmed;
      streams += out.ok;
      m.runs[s] = out;
      log(`bulk ${m.id} x${s}: ${out.gbps} Gbit/s, failed ${out.failed}${group ? `, proxy CPU ${out.proxyCpuSeconds}s` : ''}`);
    }
    if (group) m.cpuPerGB = cpu / (bytes / 1e9);
    const after = await snapshot();
    m.verified = verifyPath({ ...m, bulk: true, agentProtocol: 'tcp', frontend: 'l4_bulk', backendB: 'in_bulk', httpMode: false }, before, after, streams);
  }

  for (const m of results) {
    m.label = m.id;
  }
  if (meshDown) notes.push(`skein modes not run: ${meshDown}`);
  const plainL7 = results.find((m) => m.id === 'skein-l7-http');
  const authzL7 = results.find((m) => m.id === 'skein-l7-http-authz');
  if (plainL7?.closed?.rps && authzL7?.closed?.rps) {
    const cpu = (m) => m.open?.[P.rates[0]]?.proxyCpuPer1k;
    notes.push(
      `authorization cost: 20 policies / 200 rules on the destination gave ${(authzL7.closed.rps / plainL7.closed.rps).toFixed(2)}x the max req/s of skein-l7-http` +
        (cpu(plainL7) && cpu(authzL7) ? ` and ${(cpu(authzL7) / cpu(plainL7)).toFixed(2)}x its CPU per 1k requests at ${P.rates[0]}/s` : '') +
        ' (target: within 10%)',
    );
  }
  notes.push(
    `idle (no traffic): ${Object.entries(idle)
      .map(([k, v]) => `${k} ${v.cpuSecondsPerSecond.toFixed(3)} CPU-s/s, RSS ${(v.rssBytes / 2 ** 20).toFixed(0)} MiB`)
      .join('; ')} (included in the CPU per 1k requests above)`,
  );
  notes.push('proxy CPU and RSS are both nodes\' proxies together (agents A+B, or HAProxy A+B), from /proc/<pid>/stat utime+stime and sampled VmRSS');
  notes.push('skein: one Node.js process per node; HAProxy: one process per node with its default threads; all on the same machine as the load tools and servers');

  const again = results.find((m) => m.id === 'direct-http-again')?.open?.[P.rates[0]];
  if (again && firstDirect) {
    const d = (p) => (again.latencyMs[p] - firstDirect.open[P.rates[0]].latencyMs[p]).toFixed(2);
    notes.push(`noise: direct-http at ${P.rates[0]}/s repeated at the end differed from the first run by p50 ${d('p50')} / p99 ${d('p99')} / p99.9 ${d('p999')} ms; added latencies smaller than that are within the machine's noise`);
  }
  machine.loadavgAtEnd = os.loadavg().map((x) => Number(x.toFixed(2)));
  machine.cpuPressureAtEnd = cpuPressure();
  if (Math.max(machine.loadavgAtStart[0], machine.loadavgAtEnd[0]) > machine.cpus) {
    notes.push(
      `the machine was busy with other work (1-min load average ${machine.loadavgAtStart[0]} at start, ${machine.loadavgAtEnd[0]} at end, on ${machine.cpus} CPUs; CPU pressure avg60 ${machine.cpuPressureAtStart}% / ${machine.cpuPressureAtEnd}%): absolute numbers are noisy; the ratios come from one run where every mode saw the same machine`,
    );
  }
  const resultsDir = join(HERE, 'results');
  mkdirSync(resultsDir, { recursive: true });
  const jsonFile = join(resultsDir, `${startedAt.replace(/[:.]/g, '-')}.json`);
  const res = {
    startedAt,
    quick: QUICK,
    machine,
    params: P,
    lab: { id: rec.id, mesh: !meshDown, meshDown },
    idle,
    modes: results,
    bulk,
    notes,
    jsonFile,
    totalSeconds: (Date.now() - t0) / 1000,
  };
  writeFileSync(jsonFile, `${JSON.stringify(res, null, 2)}\n`);
  process.stdout.write(`\n${renderReport(res)}\n`);
  const unverified = [...results, ...(bulk?.modes ?? [])].filter((m) => !m.notRun && !m.verified?.ok);
  return unverified.length ? 1 : 0;
}

/**
 * Did the traffic take the path the mode names? Counters are read before and after the mode.
 * skein: agent A's outbound counter for the mode's protocol and agent B's inbound moved, HAProxy
 * saw nothing. HAProxy: its frontends on both nodes carried the traffic (HTTP: at least as
 * many requests as the tools sent), the agents saw nothing. direct: neither moved.
 */
function verifyPath(mode, before, after, requests) {
  const evidence = {};
  const agentsMoved = () => {
    if (!before.skein || !after.skein || before.skein.error || after.skein.error) return null;
    const sum = (s) => {
      const out = s.outbound.connections;
      const inb = s.inbound;
      const http = Object.values(inb.http?.requests ?? {}).reduce((a, b) => a + b, 0);
      return Object.values(out).reduce((a, b) => a + b, 0) + (inb.served ?? 0) + (inb.refused ?? 0) + (inb.unavailable ?? 0) + http;
    };
    return { 'node-a': sum(after.skein['node-a']) - sum(before.skein['node-a']), 'node-b': sum(after.skein['node-b']) - sum(before.skein['node-b']) };
  };
  const haMoved = () => {
    if (before.haproxy.error || after.haproxy.error) throw new Error(`haproxy stats unreadable: ${before.haproxy.error ?? after.haproxy.error}`);
    const d = {};
    for (const node of ['node-a', 'node-b']) {
      let stot = 0;
      let req = 0;
      for (const [k, row] of Object.entries(after.haproxy[node])) {
        if (!k.endsWith('/FRONTEND')) continue;
        const b = before.haproxy[node][k] ?? {};
        stot += (row.stot || 0) - (b.stot || 0);
        req += (row.req_tot || 0) - (b.req_tot || 0);
      }
      d[node] = { sessions: stot, requests: req };
    }
    return d;
  };
  try {
    const agents = agentsMoved();
    const ha = haMoved();
    evidence.agentsDelta = agents;
    evidence.haproxyDelta = ha;
    evidence.successfulRequestsOrStreams = requests;
    const haTotal = ha['node-a'].sessions + ha['node-b'].sessions;
    if (mode.kind === 'direct') {
      if (agents === null) evidence.agentsNote = 'no agents running (no mesh): nothing could capture this traffic';
      else if (agents['node-a'] !== 0 || agents['node-b'] !== 0) return { ok: false, reason: `agents' counters moved (${JSON.stringify(agents)})`, evidence };
      if (haTotal !== 0) return { ok: false, reason: `HAProxy carried ${haTotal} sessions`, evidence };
      return { ok: true, evidence };
    }
    if (mode.kind === 'skein') {
      if (agents === null) return { ok: false, reason: 'agent stats unreadable', evidence };
      const proto = mode.agentProtocol;
      const d = after.skein['node-a'].outbound.connections[proto] - before.skein['node-a'].outbound.connections[proto];
      // L4: agent B pipes connections (inbound.served); L7: agent B serves each request
      // (inbound.http.requests by what the app speaks, gRPC apart).
      const l7Key = mode.proto === 'grpc' ? 'grpc' : 'http1';
      const served =
        mode.agentProtocol === 'tcp'
          ? after.skein['node-b'].inbound.served - before.skein['node-b'].inbound.served
          : (after.skein['node-b'].inbound.http?.requests?.[l7Key] ?? 0) - (before.skein['node-b'].inbound.http?.requests?.[l7Key] ?? 0);
      evidence.agentAOutbound = { [proto]: d };
      evidence[mode.agentProtocol === 'tcp' ? 'agentBInboundServed' : 'agentBInboundRequests'] = served;
      if (!(d > 0)) return { ok: false, reason: `agent A's outbound ${proto} counter did not move`, evidence };
      if (!(served > 0)) return { ok: false, reason: `agent B's inbound ${mode.agentProtocol === 'tcp' ? 'served' : `${l7Key} request`} counter did not move`, evidence };
      if (haTotal !== 0) return { ok: false, reason: `HAProxy carried ${haTotal} sessions`, evidence };
      return { ok: true, evidence };
    }
    // haproxy
    if (agents && (agents['node-a'] !== 0 || agents['node-b'] !== 0)) return { ok: false, reason: `agents' counters moved (${JSON.stringify(agents)})`, evidence };
    const fa = after.haproxy['node-a'][`${mode.frontend}/FRONTEND`];
    const fb = after.haproxy['node-b'][`${mode.backendB}/FRONTEND`];
    const ba = before.haproxy['node-a'][`${mode.frontend}/FRONTEND`];
    const bb = before.haproxy['node-b'][`${mode.backendB}/FRONTEND`];
    if (!fa || !fb || !ba || !bb) return { ok: false, reason: `frontends ${mode.frontend}/${mode.backendB} missing from HAProxy stats`, evidence };
    const aSess = fa.stot - ba.stot;
    const bSess = fb.stot - bb.stot;
    evidence.frontendA = { name: mode.frontend, sessions: aSess, requests: (fa.req_tot || 0) - (ba.req_tot || 0), bytesIn: fa.bin - ba.bin };
    evidence.frontendB = { name: mode.backendB, sessions: bSess, requests: (fb.req_tot || 0) - (bb.req_tot || 0), bytesIn: fb.bin - bb.bin };
    if (!(aSess > 0) || !(bSess > 0)) return { ok: false, reason: `HAProxy frontends did not move (A ${aSess}, B ${bSess} sessions)`, evidence };
    if (mode.httpMode) {
      // Every answer the tools counted as a success crossed both HAProxies.
      if (evidence.frontendA.requests < requests) return { ok: false, reason: `HAProxy A counted ${evidence.frontendA.requests} requests, the tools got ${requests} answers`, evidence };
      if (evidence.frontendB.requests < requests) return { ok: false, reason: `HAProxy B counted ${evidence.frontendB.requests} requests, the tools got ${requests} answers`, evidence };
    } else if (mode.bulk && aSess < requests) {
      return { ok: false, reason: `HAProxy A counted ${aSess} sessions for ${requests} streams`, evidence };
    }
    return { ok: true, evidence };
  } catch (err) {
    return { ok: false, reason: err.message, evidence };
  }
}

async function waitForMeshPath(exec, pod, hostPort, agentStats) {
  const deadline = Date.now() + 30_000;
  let last = 'no attempt';
  while (Date.now() < deadline) {
    const before = await agentStats();
    const r = await exec(pod, [process.execPath, join(LIB, 'loadgen.mjs'), '--protocol', 'http1', '--target', hostPort, '--rate', '50', '--duration', '0.4', '--warmup', '0', '--timeout', '1000'], 15_000);
    const after = await agentStats();
    try {
      const out = JSON.parse(lastLine(r.stdout));
      const moved = after['node-a'].outbound.connections.tcp - before['node-a'].outbound.connections.tcp;
      if (out.ok > 0 && out.failed === 0 && moved > 0) return;
      last = `probe: ok ${out.ok}, failed ${out.failed} ${JSON.stringify(out.errors)}, agent A tcp connections +${moved}`;
    } catch (err) {
      last = `probe: ${err.message} ${firstLine(r.stderr)}`;
    }
    await sleep(500);
  }
  throw new Error(last);
}

/** /proc/pressure/cpu "some avg60": the share of time something waited for a CPU (%). */
function cpuPressure() {
  try {
    return Number(/some avg10=[\d.]+ avg60=([\d.]+)/.exec(readFileSync('/proc/pressure/cpu', 'utf8'))?.[1]);
  } catch {
    return null;
  }
}

function firstLine(s) {
  return String(s ?? '')
    .trim()
    .split('\n')[0]
    ?.slice(0, 300);
}
function lastLine(s) {
  const lines = String(s ?? '')
    .trim()
    .split('\n');
  return lines[lines.length - 1] ?? '';
}

let code = 1;
try {
  code = await main();
} catch (err) {
  process.stderr.write(`bench: ${err.stack ?? err.message}\n`);
  code = 1;
} finally {
  await cleanup();
}
process.exit(code);
