/**
 * Connection caps per pod listener (issue 15, fairness): over the cap a new connection is
 * closed at once and counted with the listener's stable code; the connections already held
 * keep working, and a freed place is taken again.
 */
import net from 'node:net';
import t from 'tap';
import { capConnections, DEFAULT_MAX_CONNECTIONS_PER_LISTENER } from '../../../src/proxy/connection-cap.js';
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
