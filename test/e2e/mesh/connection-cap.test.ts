/**
 * `skein agent --max-connections N` in a real lab: a pod's tunnel listener (15008) holds N
 * connections; more are closed at once and counted by the agent with their stable code.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { labExecCaptured } from '../../../src/lab/lab.js';
import { isRoot, startLab } from '../support/lab.js';
import { agentGet, isServing, waitUntil } from '../support/mesh.js';

const exec = promisify(execFile);
const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });

// Opens N raw TCP connections (no TLS: each holds its place until the handshake deadline) and
// prints how many the server closed within 500 ms.
const HOLDER = `
const net = require('node:net');
const [host, port, n] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
let closed = 0;
const socks = [];
for (let i = 0; i < n; i++) {
  const s = net.connect({ host, port });
  s.on('error', () => {});
  s.on('close', () => closed++);
  socks.push(s);
}
setTimeout(() => { console.log(closed); for (const s of socks) s.destroy(); }, 500);
`;

t.test('--max-connections caps a pod listener and the agent counts the refusals', opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true, agentArgs: ['--max-connections', '3'] });
  const echo1 = rec.plan.pods.find((p) => p.namespace === 'shop' && p.name === 'echo-1')!; // node-b
  const nodeA = rec.plan.nodes.find((n) => n.name === 'node-a')!;
  await waitUntil(() => isServing(rec, 'node-b', 'shop/echo-1'), 30_000);
  const { stdout } = await exec('ip', ['netns', 'exec', nodeA.netns, process.execPath, '-e', HOLDER, echo1.ip, '15008', '5']);
  t.equal(Number(stdout.trim()), 2, 'of 5 connections, the 2 over the cap of 3 were closed at once');
  const stats = await agentGet<{ tunnel: { refusals: Record<string, number> } }>(rec, 'node-b', '/stats');
  t.equal(stats.tunnel.refusals.SKEIN_TUNNEL_CONNECTION_LIMIT, 2, 'counted by the agent with their code');
});

// Opens N TCP connections to host:port one after another, each sending a line the echo app
// answers; prints how many were answered within 2 s (the others were refused on the way).
const ECHOERS = `
const net = require('node:net');
const [host, port, n] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const socks = [];
let answered = 0;
(async () => {
  for (let i = 0; i < n; i++) {
    const s = net.connect({ host, port });
    s.on('error', () => {});
    socks.push(s);
    const ok = await new Promise((r) => {
      s.once('data', () => r(true));
      s.once('close', () => r(false));
      setTimeout(() => r(false), 2000);
      s.write('hello ' + i + '\\n');
    });
    if (ok) answered++;
  }
  console.log(answered);
  for (const s of socks) s.destroy();
})();
`;

t.test('--max-tunnel-streams-per-peer: one source identity holds its share of a pod\'s tunnel streams, another identity still gets in', opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true, agentArgs: ['--max-tunnel-streams-per-peer', '2', '--max-tunnel-streams', '3'] });
  const echo1 = rec.plan.pods.find((p) => p.namespace === 'shop' && p.name === 'echo-1')!; // node-b
  await waitUntil(async () => (await isServing(rec, 'node-b', 'shop/echo-1')) && (await isServing(rec, 'node-a', 'shop/client-0')) && (await isServing(rec, 'node-a', 'shop/echo-0')), 30_000);
  // Every opaque TCP connection from node-a to echo-1 is one CONNECT stream at echo-1's :15008,
  // held open while the connection is (the script keeps them all open until it ends).
  const run = async (pod: string, n: number): Promise<number> => {
    const r = await labExecCaptured(rec, pod, [process.execPath, '-e', ECHOERS, echo1.ip, '7070', String(n)], 30_000);
    return Number(r.stdout.trim());
  };
  const concurrent = Promise.all([run('shop/client-0', 4), (async () => {
    // The other identity (shop/echo) starts once the client holds its share.
    await waitUntil(async () => ((await agentGet<{ tunnel: { refusals: Record<string, number> } }>(rec, 'node-b', '/stats')).tunnel.refusals.SKEIN_TUNNEL_PEER_STREAM_LIMIT ?? 0) > 0, 15_000);
    return run('shop/echo-0', 1);
  })()]);
  const [byClient, byOther] = await concurrent;
  t.equal(byClient, 2, 'shop/client got its 2 streams; the rest of its 4 were refused');
  t.equal(byOther, 1, 'shop/echo, another identity, still got a stream while shop/client held its share');
  const stats = await agentGet<{ tunnel: { refusals: Record<string, number> } }>(rec, 'node-b', '/stats');
  t.ok((stats.tunnel.refusals.SKEIN_TUNNEL_PEER_STREAM_LIMIT ?? 0) >= 2, `per-identity refusals counted by code (${JSON.stringify(stats.tunnel.refusals)})`);
  const nodeB = rec.plan.nodes.find((n) => n.name === 'node-b')!;
  const metrics = (await exec('ip', ['netns', 'exec', nodeB.netns, 'curl', '-sf', 'http://127.0.0.1:15020/metrics'], { encoding: 'utf8' })).stdout;
  t.match(metrics, /skein_tunnel_refusals_total\{code="SKEIN_TUNNEL_PEER_STREAM_LIMIT"\} [1-9]/, 'and in the metrics');
});
