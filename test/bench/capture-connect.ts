/**
 * connect() cost of capture: connections per second from one pod netns, with the hooks
 * detached vs attached. Root only; builds its own netns/cgroup/pins (test/e2e/capture
 * fixture) and removes them, also on failure or Ctrl-C. Bounded: PHASE_MS per phase
 * (default 3000, 5 phases), concurrency CONC (default 8).
 *
 *   node --import tsx test/bench/capture-connect.ts        (after make build-bpf build-native)
 *
 * Phases (the client is a separate node process inside pod A, in the hooked cgroup):
 *   detached, to pod B            no skein programs at all (baseline, veth path)
 *   attached, A not enrolled      the hook runs and finds nothing (cost for everyone else)
 *   attached, A enrolled, excl.   the hook's full lookup, port excluded, no redirect
 *   detached, to local listener   baseline of the redirected path: A -> 127.0.0.1:15001 in A
 *   attached, A redirected        A -> B:8080 rewritten to A's 15001; the server reads the
 *                                 original destination of every connection (sock_ops + maps)
 */
import { execFileSync, spawn } from 'node:child_process';
import net from 'node:net';
import { CaptureManager } from '../../src/capture/capture-manager.js';
import { loadNative } from '../../src/capture/native.js';
import { makeCaptureLab } from '../e2e/capture/fixture.js';

const PHASE_MS = Number(process.env.PHASE_MS ?? 3000);
const CONC = Number(process.env.CONC ?? 8);

const cleanups: Array<() => unknown> = [];
const teardown = { teardown: (fn: () => unknown) => cleanups.push(fn) };
async function cleanup(): Promise<void> {
  while (cleanups.length) {
    try {
      await cleanups.pop()?.();
    } catch (err) {
      console.error('cleanup:', (err as Error).message);
    }
  }
}
process.on('SIGINT', () => {
  void cleanup().then(() => process.exit(130));
});

// The client: CONC loops of connect + close, for PHASE_MS, inside the pod netns.
const CLIENT = `
const net = require('node:net');
const [host, port, ms, conc] = process.argv.slice(1);
let ok = 0, errors = 0; const end = Date.now() + Number(ms); const t0 = process.hrtime.bigint();
function one() {
  if (Date.now() >= end) return Promise.resolve();
  return new Promise((resolve) => {
    const s = net.connect(Number(port), host);
    // The server closes first, so TIME_WAIT stays on its side and the client's ephemeral
    // ports do not run out across phases.
    s.once('connect', () => { ok++; s.resume(); });
    s.once('close', () => resolve());
    s.once('error', () => { errors++; s.destroy(); });
  }).then(one);
}
Promise.all(Array.from({ length: Number(conc) }, one)).then(() => {
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  process.stdout.write(JSON.stringify({ ok, errors, seconds }));
});`;

function runClient(netns: string, host: string, port: number): Promise<{ ok: number; errors: number; seconds: number }> {
  return new Promise((resolve, reject) => {
    const p = spawn('ip', ['netns', 'exec', netns, process.execPath, '-e', CLIENT, host, String(port), String(PHASE_MS), String(CONC)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.on('data', (d) => {
      out += d;
    });
    const timer = setTimeout(() => p.kill('SIGKILL'), PHASE_MS + 10_000);
    p.once('exit', (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`client exited ${code}`));
      else resolve(JSON.parse(out));
    });
  });
}

async function serve(fd: number, onConn?: (s: net.Socket) => void): Promise<net.Server> {
  const server = net.createServer((s) => {
    s.on('error', () => undefined);
    onConn?.(s);
    s.destroy();
  });
  await new Promise<void>((resolve) => server.listen({ fd, backlog: 4096 }, () => resolve()));
  teardown.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return server;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run as root');
  const native = loadNative();
  const lab = await makeCaptureLab(teardown);
  // One destination port per phase: each phase starts with a fresh 4-tuple space.
  for (const port of [8080, 8081, 8082, 8083]) await serve(await native.openListener(lab.path.b, '0.0.0.0', port, 4096));
  execFileSync('ip', ['netns', 'exec', lab.netns.a, 'sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1']);
  // The baseline listener stands where the agent's outbound listener will be.
  const localBaseline = await serve(await native.openListener(lab.path.a, '127.0.0.1', 15001, 4096));
  const rows: Array<{ phase: string; cps: number; errors: number }> = [];
  const phase = async (name: string, host: string, port: number) => {
    const r = await runClient(lab.netns.a, host, port);
    rows.push({ phase: name, cps: r.ok / r.seconds, errors: r.errors });
  };

  await phase('detached, to pod B', lab.ip.b, 8080);
  await phase('detached, to local listener', '127.0.0.1', 15001);
  await new Promise<void>((r) => localBaseline.close(() => r()));

  const capture = new CaptureManager({ pinRoot: lab.pinRoot, cgroupPath: lab.cgroupPath });
  teardown.teardown(() => capture.uninstall());
  await capture.start();
  await phase('attached, A not enrolled', lab.ip.b, 8081);

  const pod = await capture.enroll({ uid: 'bench/a', netnsPath: lab.path.a, ips: [lab.ip.a], excludeOutboundPorts: [8082], excludeInboundPorts: [] });
  let lookupFailures = 0;
  await serve(pod.listeners.outbound, (s) => {
    try {
      capture.originalDestination(s);
    } catch {
      lookupFailures++;
    }
  });
  for (const fd of [pod.listeners.inboundPlaintext, pod.listeners.tunnel]) await serve(fd);
  await phase('attached, A enrolled, port excluded', lab.ip.b, 8082);
  await capture.enroll({ uid: 'bench/a', netnsPath: lab.path.a, ips: [lab.ip.a], excludeOutboundPorts: [], excludeInboundPorts: [] });
  await phase('attached, A redirected to 15001', lab.ip.b, 8083);

  const base = (name: string) => rows.find((r) => r.phase === name)?.cps ?? Number.NaN;
  const baselineOf = (name: string) => (name.includes('redirected') || name.includes('local') ? base('detached, to local listener') : base('detached, to pod B'));
  console.log(`capture connect() benchmark: ${CONC} concurrent loops, ${PHASE_MS} ms per phase, kernel ${execFileSync('uname', ['-r']).toString().trim()}`);
  console.log('| phase | connections/s | errors | ratio to its detached baseline |');
  console.log('|---|---:|---:|---:|');
  for (const r of rows) console.log(`| ${r.phase} | ${r.cps.toFixed(0)} | ${r.errors} | ${(r.cps / baselineOf(r.phase)).toFixed(3)} |`);
  console.log(`original-destination lookups failed: ${lookupFailures}`);
}

main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => cleanup());
