/**
 * One pod connecting to an address that drops SYNs must not delay any other pod (issue 15,
 * "Fair"). In a real lab with the real agent: shop/echo-0 (node-a) keeps 200 connections open
 * towards a port its own netns silently drops (nft), so node-a's agent holds connects from
 * that pod's netns that get no SYN-ACK; meanwhile shop/client-0 (node-a, same agent) sends
 * requests that leave the mesh (to legacy/echo-1: each a connect the agent makes from the
 * client's netns). The client's latency is measured before and during the flood in the same
 * test. Before connects ran on the event loop, each hanging connect held a libuv pool thread
 * (4 of them) for 5 s and the client's connects waited behind them.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { labExecCaptured } from '../../../src/lab/lab.js';
import { client, isRoot, startLab } from '../support/lab.js';
import { agentGet, isServing, waitUntil } from '../support/mesh.js';

const exec = promisify(execFile);
const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });

// Holds `conc` connections to host:port open for `secs` seconds (bounded), opening a new one
// 100 ms after one closes (the agent gives up on each after its connect timeout, or refuses it
// at once past the pod's queue); prints what it did.
const FLOOD = `
const net = require('node:net');
const [host, port, conc, secs] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4])];
const end = Date.now() + secs * 1000;
const live = new Set();
let opened = 0;
let closed = 0;
function one() {
  if (Date.now() >= end) return;
  const s = net.connect({ host, port });
  opened++;
  live.add(s);
  s.on('error', () => {});
  s.on('close', () => { closed++; live.delete(s); setTimeout(one, 100); });
}
for (let i = 0; i < conc; i++) one();
setTimeout(() => { for (const s of live) s.destroy(); console.log(JSON.stringify({ opened, closed })); process.exit(0); }, secs * 1000);
`;

interface PodConnects {
  inProgress: number;
  queued: number;
  refusals: Record<string, number>;
}

t.test('a pod connecting to a SYN-dropping address does not delay another pod of the same node', opts(), async (t) => {
  // A small queue so the flood also meets the per-pod refusal (counted by code).
  const rec = await startLab(t, undefined, { mesh: true, agentArgs: ['--max-pod-connects-queued', '100'] });
  const pod = (ns: string, name: string) => rec.plan.pods.find((p) => p.namespace === ns && p.name === name)!;
  const flooder = pod('shop', 'echo-0');
  const victim = pod('shop', 'client-0');
  const target = pod('legacy', 'echo-1');
  t.equal(flooder.node, 'node-a');
  t.equal(victim.node, 'node-a');
  await waitUntil(async () => (await isServing(rec, 'node-a', 'shop/echo-0')) && (await isServing(rec, 'node-a', 'shop/client-0')), 30_000);

  // The black hole: in the flooder's netns, SYNs to port 9 go nowhere (the agent's connects
  // from that netns pass its output hook; the app's own connect went to 15001 on loopback).
  const table = `skein_flood_${process.pid}`;
  const nft = (...args: string[]) => exec('ip', ['netns', 'exec', flooder.netns, 'nft', ...args]);
  await nft('add', 'table', 'inet', table);
  t.teardown(() => nft('delete', 'table', 'inet', table).catch(() => {}));
  await nft('add', 'chain', 'inet', table, 'out', '{ type filter hook output priority 0 ; }');
  await nft('add', 'rule', 'inet', table, 'out', 'tcp', 'dport', '9', 'drop');

  const victimArgs = ['--protocol', 'http1', '--target', `${target.ip}:8080`, '--count', '150', '--concurrency', '2', '--new-connection', '--timeout', '5'];
  const baseline = await client(rec, 'shop/client-0', victimArgs);
  t.equal(baseline.ok, 150, `baseline: every request served (${JSON.stringify(baseline.errors)})`);

  const flood = labExecCaptured(rec, 'shop/echo-0', [process.execPath, '-e', FLOOD, target.ip, '9', '200', '8'], 30_000);
  // The flood is in place: the pod's slots are full and connects wait behind them.
  await waitUntil(async () => (await agentGet<{ podConnects: PodConnects }>(rec, 'node-a', '/stats')).podConnects.queued >= 50, 5_000);
  const during = await client(rec, 'shop/client-0', victimArgs);
  const mid = (await agentGet<{ podConnects: PodConnects }>(rec, 'node-a', '/stats')).podConnects;
  const flooded = await flood;
  t.equal(flooded.code, 0, `the flood ran (${flooded.stdout.trim()}${flooded.stderr})`);

  t.equal(during.ok, 150, `during the flood: every request served (${JSON.stringify(during.errors)})`);
  const base = baseline.latencyMs.p99;
  const bound = Math.max(2 * base, base + 100);
  t.ok(
    during.latencyMs.p99 <= bound,
    `other pod's p99 ${during.latencyMs.p99.toFixed(1)} ms during the flood vs ${base.toFixed(1)} ms before (bound ${bound.toFixed(1)} ms; p50 ${baseline.latencyMs.p50.toFixed(1)} -> ${during.latencyMs.p50.toFixed(1)})`,
  );
  t.comment(`baseline ${JSON.stringify(baseline.latencyMs)}; during ${JSON.stringify(during.latencyMs)}; flood ${flooded.stdout.trim()}; agent mid-flood ${JSON.stringify(mid)}`);
  // The flooder's connects were held to its own allowance: 64 in progress, 100 waiting.
  t.ok(mid.inProgress <= 64 + 2, `connects in progress capped per pod (${mid.inProgress})`);
  t.ok(mid.queued <= 100, `waiting connects capped per pod (${mid.queued})`);

  const after = (await agentGet<{ podConnects: PodConnects }>(rec, 'node-a', '/stats')).podConnects;
  t.ok((after.refusals.SKEIN_CAPTURE_CONNECT_TIMEOUT ?? 0) >= 64, `black-holed connects timed out with a code (${after.refusals.SKEIN_CAPTURE_CONNECT_TIMEOUT})`);
  t.ok((after.refusals.SKEIN_CAPTURE_TOO_MANY_CONNECTS ?? 0) > 0, `connects past the pod's queue refused with a code (${after.refusals.SKEIN_CAPTURE_TOO_MANY_CONNECTS})`);
  const metrics = (await exec('ip', ['netns', 'exec', rec.plan.nodes.find((n) => n.name === 'node-a')!.netns, 'curl', '-sf', 'http://127.0.0.1:15020/metrics'], { encoding: 'utf8' })).stdout;
  t.match(metrics, /skein_pod_connect_failures_total\{code="SKEIN_CAPTURE_CONNECT_TIMEOUT"\} [1-9]/, 'and in the metrics by code');
});
