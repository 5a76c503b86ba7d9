/**
 * connect() cost of capture: connections per second from one pod netns, with the hooks
 * detached vs attached. Root only; builds its own netns/cgroup/pins (test/e2e/capture
 * fixture) and removes them, also on failure or Ctrl-C. Bounded: ROUNDS (default 3) rounds
 * of 5 phases of PHASE_MS (default 1000) each, CONC (default 8) concurrent connect loops;
 * medians over the rounds, since the phases of a round alternate detached and attached.
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

const PHASE_MS = Number(process.env.PHASE_MS ?? 1000);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const CONC = Number(process.env.CONC ?? 8);

const DETACHED_B = 'detached, to pod B';
const DETACHED_LOCAL = 'detached, to a local listener (127.0.0.1:15001)';
const ATTACHED_NOT_ENROLLED = 'attached, pod not enrolled';
const ATTACHED_EXCLUDED = 'attached, pod enrolled, port excluded';
const ATTACHED_REDIRECTED = 'attached, redirected to 15001 + original dst read';

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
  // One destination port per phase: each phase has its own 4-tuple space.
  for (const port of [8080, 8081, 8082, 8083]) await serve(await native.openListener(lab.path.b, '0.0.0.0', port, 4096));
  execFileSync('ip', ['netns', 'exec', lab.netns.a, 'sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1']);
  const samples = new Map<string, number[]>();
  let errors = 0;
  let lookupFailures = 0;
  const phase = async (name: string, host: string, port: number) => {
    const r = await runClient(lab.netns.a, host, port);
    samples.set(name, [...(samples.get(name) ?? []), r.ok / r.seconds]);
    errors += r.errors;
  };
  const closeServer = (server: net.Server) => new Promise<void>((r) => server.close(() => r()));

  // Rounds interleave detached and attached phases, so a noisy neighbour hits both alike.
  for (let round = 0; round < ROUNDS; round++) {
    await phase(DETACHED_B, lab.ip.b, 8080);
    // The baseline listener stands where the agent's outbound listener will be.
    const local = await serve(await native.openListener(lab.path.a, '127.0.0.1', 15001, 4096));
    await phase(DETACHED_LOCAL, '127.0.0.1', 15001);
    await closeServer(local);

    const capture = new CaptureManager({ pinRoot: lab.pinRoot, cgroupPath: lab.cgroupPath });
    teardown.teardown(() => capture.uninstall());
    await capture.start();
    await phase(ATTACHED_NOT_ENROLLED, lab.ip.b, 8081);
    const a = { uid: 'bench/a', netnsPath: lab.path.a, ips: [lab.ip.a], excludeInboundPorts: [] };
    const pod = await capture.enroll({ ...a, excludeOutboundPorts: [8082] });
    const servers = [
      await serve(pod.listeners.outbound, (s) => {
        try {
          capture.originalDestination(s);
        } catch {
          lookupFailures++;
        }
      }),
      await serve(pod.listeners.inboundPlaintext),
      await serve(pod.listeners.tunnel),
    ];
    await phase(ATTACHED_EXCLUDED, lab.ip.b, 8082);
    await capture.enroll({ ...a, excludeOutboundPorts: [] });
    await phase(ATTACHED_REDIRECTED, lab.ip.b, 8083);
    await capture.release(a.uid);
    await new Promise((r) => setTimeout(r, 100)); // drain
    for (const server of servers) await closeServer(server);
    await capture.uninstall();
  }

  const median = (xs: number[]) => {
    const s = [...xs].sort((x, y) => x - y);
    return s.length % 2 ? (s[(s.length - 1) / 2] ?? 0) : ((s[s.length / 2 - 1] ?? 0) + (s[s.length / 2] ?? 0)) / 2;
  };
  const med = (name: string) => median(samples.get(name) ?? []);
  const baselineOf = (name: string) => med(name === ATTACHED_REDIRECTED || name === DETACHED_LOCAL ? DETACHED_LOCAL : DETACHED_B);
  const kernel = execFileSync('uname', ['-r']).toString().trim();
  console.log(`capture connect() benchmark: ${ROUNDS} rounds x ${PHASE_MS} ms per phase, ${CONC} concurrent connect loops, kernel ${kernel}`);
  console.log('| phase | median connections/s | min..max | ratio to its detached baseline (medians) |');
  console.log('|---|---:|---:|---:|');
  for (const [name, xs] of samples) {
    const range = `${Math.min(...xs).toFixed(0)}..${Math.max(...xs).toFixed(0)}`;
    console.log(`| ${name} | ${med(name).toFixed(0)} | ${range} | ${(med(name) / baselineOf(name)).toFixed(3)} |`);
  }
  console.log(`client errors: ${errors}; original-destination lookups failed: ${lookupFailures}`);
  if (errors || lookupFailures) process.exitCode = 1;
}

main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => cleanup());
