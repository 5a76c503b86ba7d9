/**
 * Connection caps per pod listener (issue 15, fairness): over the cap a new connection is
 * closed at once and counted with the listener's stable code; the connections already held
 * keep working, and a freed place is taken again.
 */
import net from 'node:net';
import t from 'tap';
import { capConnections, DEFAULT_MAX_CONNECTIONS_PER_LISTENER } from '../../../src/proxy/connection-cap.js';
import { DEFAULT_MAX_TUNNEL_STREAMS, DEFAULT_MAX_TUNNEL_STREAMS_PER_PEER } from '../../../src/proxy/tunnel/tunnel-server.js';
import { TunnelPool } from '../../../src/proxy/tunnel/tunnel-pool.js';
import { makeLeaf, spiffe, TestIdentity, TRUST_DOMAIN } from './tunnel/fixtures.js';
import { setupMesh } from './tunnel/harness.js';

/** Connects and reports whether the server closed the connection within `ms`. */
function connectAndWatch(port: number, ms = 300): Promise<{ socket: net.Socket; closedByServer: boolean }> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    socket.on('error', () => {});
    let closed = false;
    socket.once('close', () => {
      closed = true;
    });
    socket.once('end', () => {
      closed = true;
    });
    setTimeout(() => resolve({ socket, closedByServer: closed }), ms);
  });
}

t.test('a capped listener closes connections over the cap and counts them', async (t) => {
  const held: net.Socket[] = [];
  const server = net.createServer((s) => held.push(s));
  const refused: string[] = [];
  capConnections(server, 2, 'SKEIN_TEST_CONNECTION_LIMIT', (code) => refused.push(code));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of held) s.destroy();
    server.close();
  });
  const port = (server.address() as net.AddressInfo).port;
  const a = await connectAndWatch(port);
  const b = await connectAndWatch(port);
  const c = await connectAndWatch(port);
  t.notOk(a.closedByServer || b.closedByServer, 'the first two are held');
  t.ok(c.closedByServer, 'the third is closed at once');
  t.same(refused, ['SKEIN_TEST_CONNECTION_LIMIT'], 'and counted with the listener code');
  a.socket.destroy();
  await new Promise((r) => setTimeout(r, 100));
  const d = await connectAndWatch(port);
  t.notOk(d.closedByServer, 'a freed place is taken again');
  for (const x of [b, c, d]) x.socket.destroy();
  t.equal(DEFAULT_MAX_CONNECTIONS_PER_LISTENER, 16_384, 'the default is documented in the README and --help');
});

t.test("the tunnel server's cap: refused connections are counted with SKEIN_TUNNEL_CONNECTION_LIMIT", async (t) => {
  const mesh = await setupMesh(t, { server: { maxConnections: 2 } });
  // Raw TCP without a TLS handshake: each holds a place until the handshake deadline.
  const a = await connectAndWatch(mesh.tunnelPort);
  const b = await connectAndWatch(mesh.tunnelPort);
  const c = await connectAndWatch(mesh.tunnelPort);
  t.notOk(a.closedByServer || b.closedByServer, 'two connections held');
  t.ok(c.closedByServer, 'the third closed');
  t.equal(mesh.server.stats.refusals.SKEIN_TUNNEL_CONNECTION_LIMIT, 1);
  for (const x of [a, b, c]) x.socket.destroy();
});

t.test('one source identity holds at most maxSessionsPerPeer sessions at a pod', async (t) => {
  const mesh = await setupMesh(t, { server: { maxSessionsPerPeer: 1 }, pool: { maxStreamsPerSession: 1 } });
  // Two streams at once with one stream per session: the pool needs a second session.
  const first = await mesh.pool.connect(mesh.clientId, mesh.target());
  t.teardown(() => first.destroy());
  await t.rejects(mesh.pool.connect(mesh.clientId, mesh.target()), 'the second session is refused');
  t.equal(mesh.server.stats.refusals.SKEIN_TUNNEL_SESSION_LIMIT, 1, 'counted with its code');
  first.destroy();
});

t.test('stream caps at a pod tunnel port: one source identity gets at most its share, the pod at most its total', async (t) => {
  const mesh = await setupMesh(t, { server: { maxStreams: 3, maxStreamsPerPeer: 2 } });
  const otherId = spiffe('other-ns', 'other');
  const other = new TunnelPool({ identity: new TestIdentity(TRUST_DOMAIN, [mesh.ca.certPem]).set(await makeLeaf(mesh.ca, [otherId])) });
  t.teardown(() => other.close());
  const held: Array<{ destroy(): void }> = [];
  t.teardown(() => {
    for (const s of held) s.destroy();
  });
  // The client identity opens as many CONNECT streams as it may (held open: the echo app keeps them).
  held.push(await mesh.pool.connect(mesh.clientId, mesh.target()), await mesh.pool.connect(mesh.clientId, mesh.target()));
  t.equal(mesh.server.stats.openStreams, 2);
  await t.rejects(mesh.pool.connect(mesh.clientId, mesh.target()), 'a third stream of the same identity is refused');
  t.equal(mesh.server.stats.refusals.SKEIN_TUNNEL_PEER_STREAM_LIMIT, 1, 'counted with the per-identity code');
  // Another identity still has room: the first could not take the pod's whole capacity.
  held.push(await other.connect(otherId, mesh.target()));
  t.equal(mesh.server.stats.openStreams, 3);
  await t.rejects(other.connect(otherId, mesh.target()), 'past the pod total, refused whoever asks');
  t.equal(mesh.server.stats.refusals.SKEIN_TUNNEL_STREAM_LIMIT, 1, 'counted with the pod-total code');
  // A closed stream gives its place back.
  held.shift()?.destroy();
  await new Promise((r) => setTimeout(r, 100));
  t.equal(mesh.server.stats.openStreams, 2);
  held.push(await mesh.pool.connect(mesh.clientId, mesh.target()));
  t.equal(mesh.server.stats.openStreams, 3, 'the freed place is taken again');
  t.equal(DEFAULT_MAX_TUNNEL_STREAMS, 16_384);
  t.equal(DEFAULT_MAX_TUNNEL_STREAMS_PER_PEER, 12_288, 'three quarters of the pod total: one identity can hold 10,000 idle connections, and a quarter is left to the others');
});
