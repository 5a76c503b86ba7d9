/**
 * The tunnel end to end over loopback, real TLS 1.3 + HTTP/2:
 * client -> TunnelPool -> TunnelServer (:15008 of the pod 127.0.0.1) -> InboundProxy -> app.
 */
import { once } from 'node:events';
import { constants as h2c } from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import t from 'tap';
import { hasCode } from '../../../../src/errors.js';
import type { InboundRequest } from '../../../../src/proxy/inbound/inbound-proxy.js';
import { TunnelPool } from '../../../../src/proxy/tunnel/tunnel-pool.js';
import { makeLeaf, spiffe, waitFor } from './fixtures.js';
import { readAll, sendPayload, setupMesh } from './harness.js';
import { TunnelCode } from '../../../../src/proxy/codes.js';

async function echoRoundTrip(s: Duplex, size: number): Promise<{ sent: string; got: { bytes: number; sha256: string } }> {
  const reading = readAll(s);
  const sent = await sendPayload(s, size);
  const got = await reading;
  return { sent, got };
}

for (const size of [0, 1024 * 1024]) {
  t.test(`echo ${size} bytes through the tunnel, sha256 intact`, async (t) => {
    const m = await setupMesh(t);
    const s = await m.pool.connect(m.clientId, m.target());
    const { sent, got } = await echoRoundTrip(s, size);
    t.equal(got.bytes, size);
    t.equal(got.sha256, sent);
    // The inbound side logged who connected (identity from the client certificate).
    await t.resolveMatch(waitFor(() => m.records.length === 1), true);
    t.match(m.records[0], { transport: 'hbone', source: m.clientId, status: 200, bytesReceived: size, bytesSent: size, end: 'complete' });
    const line = m.lines.find((l) => l.msg === 'inbound connection');
    t.match(line, { access: { source: m.clientId, destinationIdentity: m.serverId, status: 200 } }, 'access log line names the source identity');
  });
}

t.test('echo 100 MB through the tunnel, sha256 intact', async (t) => {
  const m = await setupMesh(t);
  const size = 100 * 1024 * 1024;
  const started = performance.now();
  const s = await m.pool.connect(m.clientId, m.target());
  const { sent, got } = await echoRoundTrip(s, size);
  const secs = (performance.now() - started) / 1000;
  t.equal(got.bytes, size);
  t.equal(got.sha256, sent);
  t.comment(`100 MiB echoed (200 MiB through the tunnel) in ${secs.toFixed(2)} s = ${((2 * 100) / secs).toFixed(0)} MiB/s`);
  // Keep it fast: loopback should do this in a few seconds.
  t.ok(secs < 60, `took ${secs.toFixed(2)} s`);
});

t.test('half-close: the client ends its side, the app answers afterwards', async (t) => {
  const m = await setupMesh(t, {
    appHandler: (s: Socket) => {
      let n = 0;
      s.on('data', (d: Buffer) => {
        n += d.length;
      });
      s.on('end', () => {
        // The request side is closed; the response side is still open.
        setTimeout(() => s.end(`got ${n} bytes after your FIN`), 30);
      });
    },
  });
  const s = await m.pool.connect(m.clientId, m.target());
  const reading = readAll(s);
  s.end('0123456789');
  const got = await reading;
  t.equal(got.text, 'got 10 bytes after your FIN');
});

t.test('an app reset reaches the client as RST_STREAM(CONNECT_ERROR)', async (t) => {
  const m = await setupMesh(t, { appHandler: (s: Socket) => s.once('data', () => s.resetAndDestroy()) });
  const s = (await m.pool.connect(m.clientId, m.target())) as Duplex & { rstCode?: number };
  let ended = false;
  s.on('end', () => {
    ended = true;
  });
  s.resume();
  const closed = new Promise((r) => s.once('close', r));
  s.write('boom');
  await closed;
  // (Node ends the readable side of a reset stream too; the reset shows in rstCode.)
  t.equal(s.rstCode, h2c.NGHTTP2_CONNECT_ERROR, `stream reset with CONNECT_ERROR (ended=${ended})`);
  await waitFor(() => m.records.length === 1);
  t.match(m.records[0], { end: 'reset', reason: 'reset by app' });
});

t.test('a client reset reaches the app as a TCP reset', async (t) => {
  let appSock: Socket | undefined;
  const m = await setupMesh(t, {
    appHandler: (s: Socket) => {
      appSock = s;
      s.resume();
    },
  });
  const s = await m.pool.connect(m.clientId, m.target());
  s.write('hello');
  await waitFor(() => appSock !== undefined);
  const app = appSock as Socket;
  const err = once(app, 'error');
  // destroy() sends RST_STREAM(CANCEL) straight away, as a proxy that lost its client does
  // (Node's close(code) would first send END_STREAM, then the RST).
  s.destroy();
  const [e] = (await err) as [NodeJS.ErrnoException];
  t.equal(e.code, 'ECONNRESET', 'app saw ECONNRESET');
  await waitFor(() => m.records.length === 1);
  t.match(m.records[0], { end: 'reset', reason: 'reset by downstream' });
});

t.test('pooling: streams from one source share a session, another source gets its own', async (t) => {
  const m = await setupMesh(t);
  const otherId = spiffe('client-ns', 'other');
  m.clientIdentity.set(await makeLeaf(m.ca, [otherId]));
  const streams: Duplex[] = [];
  for (let i = 0; i < 20; i++) streams.push(await m.pool.connect(m.clientId, m.target()));
  const fromOther = await m.pool.connect(otherId, m.target());
  const stats = m.pool.stats();
  t.equal(stats.length, 2, 'two pool keys (one per source identity)');
  const mine = stats.find((s) => s.key.startsWith(`${m.clientId}|`));
  const theirs = stats.find((s) => s.key.startsWith(`${otherId}|`));
  t.equal(mine?.sessions.length, 1, '20 streams, 1 session');
  t.equal(mine?.sessions[0]?.active, 20);
  t.equal(theirs?.sessions.length, 1);
  t.equal(m.server.stats.sessions, 2, 'the server saw exactly two TLS sessions');
  // Every stream works, and the server knows which source each came from.
  const results = await Promise.all([...streams, fromOther].map((s) => echoRoundTrip(s, 1000)));
  for (const r of results) t.equal(r.got.sha256, r.sent);
  await waitFor(() => m.records.length === 21);
  t.equal(m.records.filter((r) => r.source === m.clientId).length, 20);
  t.equal(m.records.filter((r) => r.source === otherId).length, 1);
});

t.test('pooling: a full session makes the pool open another (limit from the pool and from server SETTINGS)', async (t) => {
  const m = await setupMesh(t, { server: { maxConcurrentStreams: 4 } });
  const streams: Duplex[] = [];
  for (let i = 0; i < 10; i++) streams.push(await m.pool.connect(m.clientId, m.target()));
  const [entry] = m.pool.stats();
  t.same(
    entry?.sessions.map((s) => s.active),
    [4, 4, 2],
    'server allows 4 concurrent streams: 3 sessions',
  );
  const results = await Promise.all(streams.map((s) => echoRoundTrip(s, 10)));
  for (const r of results) t.equal(r.got.sha256, r.sent);

  const limited = new TunnelPool({ identity: m.clientIdentity, maxStreamsPerSession: 2, maxSessionsPerKey: 2 });
  t.teardown(() => limited.close());
  const held: Duplex[] = [];
  for (let i = 0; i < 4; i++) held.push(await limited.connect(m.clientId, m.target()));
  await t.rejects(limited.connect(m.clientId, m.target()), { code: TunnelCode.PoolExhausted }, '2 sessions x 2 streams, the 5th is refused');
  for (const s of held) s.destroy();
});

t.test('idle sessions are closed after idleTimeoutMs; the next connect opens a new one', async (t) => {
  const m = await setupMesh(t, { pool: { idleTimeoutMs: 100 } });
  const s = await m.pool.connect(m.clientId, m.target());
  await echoRoundTrip(s, 10);
  await waitFor(() => m.pool.stats().length === 0, 3000);
  t.equal(m.pool.stats().length, 0, 'idle session left the pool');
  await waitFor(() => m.server.stats.sessions === 0, 3000);
  t.equal(m.server.stats.sessions, 0, 'and was closed on the server too');
  const s2 = await m.pool.connect(m.clientId, m.target());
  const r = await echoRoundTrip(s2, 10);
  t.equal(r.got.sha256, r.sent);
});

t.test('keepalive PINGs keep flowing on an idle session', async (t) => {
  const m = await setupMesh(t, { pool: { keepaliveIntervalMs: 50, keepaliveTimeoutMs: 1000 } });
  const s = await m.pool.connect(m.clientId, m.target());
  await new Promise((r) => setTimeout(r, 400));
  // The session survived several PING round trips; the stream still works.
  const r = await echoRoundTrip(s, 100);
  t.equal(r.got.sha256, r.sent);
  t.equal(m.pool.stats()[0]?.sessions.length, 1);
});

t.test('CONNECT headers (traceparent) reach the authorization hook; a deny answers 401', async (t) => {
  const seen: InboundRequest[] = [];
  const m = await setupMesh(t, {
    inbound: {
      authorize: (req) => {
        seen.push(req);
        return req.headers?.traceparent?.endsWith('-01') ? { allow: true } : { allow: false, reason: 'test policy' };
      },
    },
  });
  const tp = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
  const ok = await m.pool.connect(m.clientId, m.target(), { headers: { traceparent: tp, ':path': '/smuggled', connection: 'x' } });
  const r = await echoRoundTrip(ok, 5);
  t.equal(r.got.sha256, r.sent);
  t.equal(seen[0]?.headers?.traceparent, tp);
  t.equal(seen[0]?.source, m.clientId, 'the hook knows the source identity');
  const denied = await m.pool.connect(m.clientId, m.target(), { headers: { traceparent: tp.replace(/-01$/, '-00') } }).catch((e) => e);
  t.ok(hasCode(denied, TunnelCode.SourceDenied), `denied with ${denied.code}`);
  t.equal(m.connector.connects, 1, 'the app was not contacted for the denied stream');
  await waitFor(() => m.records.length === 2);
  t.match(m.records[1], { status: 401, reason: 'test policy', source: m.clientId });
});

t.test('abort signal cancels a pending connect', async (t) => {
  const m = await setupMesh(t);
  const ac = new AbortController();
  ac.abort();
  await t.rejects(m.pool.connect(m.clientId, m.target(), { signal: ac.signal }), { code: TunnelCode.Aborted });
});
