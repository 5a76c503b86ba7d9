/**
 * `skein agent --max-connections N` in a real lab: a pod's tunnel listener (15008) holds N
 * connections; more are closed at once and counted by the agent with their stable code.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
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
