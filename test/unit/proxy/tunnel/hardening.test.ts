/**
 * The tunnel server under abuse and change: HTTP/2 rapid reset, a peer that vanishes
 * mid-stream, certificate and trust-bundle rotation while connections keep working.
 */
import { X509Certificate } from 'node:crypto';
import { constants as h2c } from 'node:http2';
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { Duplex } from 'node:stream';
import t, { type Test } from 'tap';
import { TunnelPool } from '../../../../src/proxy/tunnel/tunnel-pool.js';
import { makeCa, makeLeaf, TestIdentity, TRUST_DOMAIN, waitFor } from './fixtures.js';
import { connectHeaders, FrameType, frame, type RawH2, rawH2 } from './raw-h2.js';
import { type Mesh, rawSession, readAll, sendPayload, setupMesh } from './harness.js';
import { TunnelCode } from '../../../../src/proxy/codes.js';

/** Echo `size` bytes over an open tunnel stream without ending it. */
async function echoOnce(s: Duplex, size: number): Promise<boolean> {
  const want = Buffer.alloc(size, 0x5a);
  let got = 0;
  const done = new Promise<void>((resolve, reject) => {
    const onData = (d: Buffer): void => {
      got += d.length;
      if (got >= size) {
        s.off('data', onData);
        resolve();
      }
    };
    s.on('data', onData);
    s.once('close', () => reject(new Error('closed')));
  });
  s.write(want);
  await done;
  return got === size;
}

async function echoThroughNewPool(t: Test, m: Mesh, identity = m.clientIdentity): Promise<boolean> {
  const pool = new TunnelPool({ identity });
  t.teardown(() => pool.close());
  const s = await pool.connect(m.clientId, m.target());
  const reading = readAll(s);
  const sent = await sendPayload(s, 10_000);
  return (await reading).sha256 === sent;
}

/** Send up to `n` HEADERS(CONNECT)+RST_STREAM(CANCEL) pairs, bounded in time; stop when the server closes. */
async function flood(m: Mesh, raw: RawH2, n: number, batchPairs = 50): Promise<number> {
  const deadline = Date.now() + 5_000;
  const block = connectHeaders(`127.0.0.1:${m.app.port}`);
  const cancel = Buffer.alloc(4);
  cancel.writeUInt32BE(h2c.NGHTTP2_CANCEL);
  let sent = 0;
  let streamId = 1;
  while (sent < n && Date.now() < deadline && !raw.closed && raw.goaway === undefined) {
    const batch: Buffer[] = [];
    for (let i = 0; i < batchPairs && sent < n; i++, sent++, streamId += 2) {
      batch.push(frame(FrameType.HEADERS, 0x4 /* END_HEADERS */, streamId, block), frame(FrameType.RST_STREAM, 0, streamId, cancel));
    }
    try {
      await raw.write(Buffer.concat(batch));
    } catch {
      break;
    }
    await new Promise((r) => setImmediate(r));
  }
  return sent;
}

async function tlsTo(t: Test, m: Mesh): Promise<TLSSocket> {
  const cert = await m.clientIdentity.certificateFor(m.clientId);
  const tls = tlsConnect({
    host: '127.0.0.1',
    port: m.tunnelPort,
    ALPNProtocols: ['h2'],
    ca: m.serverIdentity.bundle,
    cert: cert.certChainPem,
    key: cert.privateKeyPem,
    checkServerIdentity: () => undefined,
  });
  tls.on('error', () => {});
  t.teardown(() => tls.destroy());
  await new Promise<void>((resolve, reject) => {
    tls.once('secureConnect', () => resolve());
    tls.once('error', reject);
  });
  return tls;
}

t.test('rapid reset flood: the flooding session gets GOAWAY(ENHANCE_YOUR_CALM) and is closed, others keep being served', async (t) => {
  const m = await setupMesh(t);
  // A well-behaved stream opened before the flood, on its own session.
  const before = await m.pool.connect(m.clientId, m.target());
  t.ok(await echoOnce(before, 1000), 'bystander stream works before the flood');

  const raw = rawH2(await tlsTo(t, m));
  const N = 5000;
  const sent = await flood(m, raw, N);
  await waitFor(() => raw.closed, 3000);
  t.comment(`flood: ${sent} HEADERS+RST_STREAM pairs sent; goaway codes ${raw.goaways.join(',')} ids ${raw.goawayLastStreamIds.join(',')}; server saw ${m.server.stats.streams} streams; app connects ${m.connector.connects}`);
  t.equal(raw.goaway, h2c.NGHTTP2_ENHANCE_YOUR_CALM, 'server sent GOAWAY(ENHANCE_YOUR_CALM)');
  const ids = raw.goawayLastStreamIds;
  t.ok(
    ids.every((id, i) => i === 0 || id <= (ids[i - 1] as number)),
    `no GOAWAY raises the last-stream-id (${ids.join(' -> ')}; RFC 9113 §6.8)`,
  );
  t.ok(raw.closed, 'and closed the connection');
  t.equal(m.server.stats.rapidResetSessionsClosed, 1, 'closed by the rapid-reset limit');
  t.ok(m.lines.some((l) => l.refused === 'rapid-reset'), 'logged');
  t.ok(sent < N, `the flood was cut short after ${sent} of ${N} pairs`);
  t.ok(m.connector.connects <= 110, `little work done for it (${m.connector.connects} app connects)`);
  t.ok(await echoOnce(before, 1000), 'the bystander stream still works');
  t.ok(await echoThroughNewPool(t, m), 'a new client is served after the flood');
  await waitFor(() => m.app.sockets.size === 1, 3000);
  t.equal(m.app.sockets.size, 1, 'only the bystander holds an app connection (nothing leaked from the flood)');
});

t.test('rapid reset without skein’s limit: what Node/nghttp2 do alone, and the server stays up', async (t) => {
  const m = await setupMesh(t, { server: { rapidResetLimit: 1_000_000 } });
  const raw = rawH2(await tlsTo(t, m));
  const N = 3000;
  const sent = await flood(m, raw, N);
  await waitFor(() => raw.closed, 1000);
  t.comment(
    `built-in only: ${sent} pairs sent; goaway=${raw.goaways.join(',')}; closed=${raw.closed}; server streams=${m.server.stats.streams}; app connects=${m.connector.connects}`,
  );
  t.equal(m.server.stats.rapidResetSessionsClosed, 0, 'skein’s own limit did not act');
  t.ok(await echoThroughNewPool(t, m), 'the server is up and serving others');
  await waitFor(() => m.app.sockets.size === 0, 3000);
  t.equal(m.app.sockets.size, 0, 'no app connection leaked from cancelled streams');
});

t.test('peer vanishes mid-stream: app connection and session cleaned up, others served', async (t) => {
  const m = await setupMesh(t);
  const { tls, session } = await rawSession(t, m, { cert: await m.clientIdentity.certificateFor(m.clientId), awaitSettings: true });
  const req = session.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${m.app.port}` });
  req.on('error', () => {});
  const status = await new Promise<number>((r) => req.once('response', (h) => r(Number(h[':status']))));
  t.equal(status, 200);
  t.ok(await echoOnce(req, 5000), 'stream works');
  t.equal(m.app.sockets.size, 1, 'one app connection open');
  t.equal(m.server.stats.sessions, 1);
  // The peer disappears without GOAWAY, END_STREAM or RST_STREAM.
  tls.destroy();
  t.ok(await waitFor(() => m.app.sockets.size === 0), 'app connection closed');
  t.ok(await waitFor(() => m.server.stats.sessions === 0), 'session gone');
  t.ok(await waitFor(() => m.records.length === 1));
  t.match(m.records[0], { end: 'reset', bytesReceived: 5000, bytesSent: 5000 });
  t.equal(m.inbound.stats.active, 0);
  t.ok(await echoThroughNewPool(t, m), 'others still served');
});

t.test('server certificate rotation via setSecureContext: open streams keep working, new handshakes get the new cert', async (t) => {
  const m = await setupMesh(t);
  const s = await m.pool.connect(m.clientId, m.target());
  t.ok(await echoOnce(s, 1000));
  const oldFp = new X509Certificate((await m.serverIdentity.certificateFor(m.serverId)).certChainPem).fingerprint256;
  const fresh = await makeLeaf(m.ca, [m.serverId]);
  m.serverIdentity.set(fresh);
  t.equal(await m.server.refreshCredentials(), true, 'new context installed');
  t.equal(await m.server.refreshCredentials(), false, 'nothing to do when unchanged');
  t.ok(await echoOnce(s, 1000), 'the stream opened before rotation still works');
  const again = await m.pool.connect(m.clientId, m.target());
  t.ok(await echoOnce(again, 1000), 'a new stream on the pooled (pre-rotation) session works');
  const { tls } = await rawSession(t, m, { cert: await m.clientIdentity.certificateFor(m.clientId), awaitSettings: true });
  const fp = tls.getPeerX509Certificate()?.fingerprint256;
  t.equal(fp, new X509Certificate(fresh.certChainPem).fingerprint256, 'a new handshake sees the rotated certificate');
  t.not(fp, oldFp);
  t.equal(tls.getProtocol(), 'TLSv1.3', 'still TLS 1.3 after setSecureContext');
  t.equal(tls.alpnProtocol, 'h2');
  t.ok(await echoThroughNewPool(t, m), 'new clients are served with the new certificate');
  t.equal(m.server.stats.credentialRotations, 1);
});

t.test('server picks up a rotated certificate by itself (credentialRefreshMs)', async (t) => {
  const m = await setupMesh(t, { server: { credentialRefreshMs: 50 } });
  const fresh = await makeLeaf(m.ca, [m.serverId]);
  m.serverIdentity.set(fresh);
  t.ok(await waitFor(() => m.server.stats.credentialRotations === 1), 'rotated without being told');
  t.ok(await echoThroughNewPool(t, m));
});

t.test('trust bundle rotation: a client from a newly trusted CA is refused before, accepted after', async (t) => {
  const m = await setupMesh(t);
  const ca2 = await makeCa(TRUST_DOMAIN, 'next root');
  const id2 = new TestIdentity(TRUST_DOMAIN, [m.ca.certPem]).set(await makeLeaf(ca2, [m.clientId]));
  const p1 = new TunnelPool({ identity: id2 });
  t.teardown(() => p1.close());
  await t.rejects(p1.connect(m.clientId, m.target()), { code: TunnelCode.TlsFailed }, 'refused while ca2 is not trusted');
  m.serverIdentity.bundle = [m.ca.certPem, ca2.certPem];
  t.ok(await m.server.refreshCredentials());
  t.ok(await echoThroughNewPool(t, m, id2), 'accepted once the bundle holds both roots');
  t.ok(await echoThroughNewPool(t, m), 'clients of the old root still accepted');
});

t.test('client certificate rotation: new streams use a new session with the new cert, the old one drains', async (t) => {
  const m = await setupMesh(t);
  const s1 = await m.pool.connect(m.clientId, m.target());
  t.ok(await echoOnce(s1, 100));
  m.clientIdentity.set(await makeLeaf(m.ca, [m.clientId]));
  const s2 = await m.pool.connect(m.clientId, m.target());
  t.ok(await echoOnce(s2, 100));
  t.equal(m.server.stats.sessions, 2, 'a second TLS session was opened for the new certificate');
  const pooled = m.pool.stats()[0]?.sessions ?? [];
  t.equal(pooled.length, 1, 'only the new session takes new streams');
  t.ok(await echoOnce(s1, 100), 'the old stream keeps working while draining');
  s1.end();
  t.ok(await waitFor(() => m.server.stats.sessions === 1), 'the drained session closed after its last stream');
  t.ok(await echoOnce(s2, 100));
});

t.test('slowloris at the TLS layer: a client that never finishes the handshake is dropped after handshakeTimeoutMs', async (t) => {
  const m = await setupMesh(t, { server: { handshakeTimeoutMs: 200 } });
  const sock = netConnect({ host: '127.0.0.1', port: m.tunnelPort });
  sock.on('error', () => {});
  t.teardown(() => sock.destroy());
  const started = Date.now();
  sock.write(Buffer.from([0x16, 0x03, 0x01])); // the first bytes of a ClientHello, then silence
  await new Promise((r) => sock.once('close', r));
  const after = Date.now() - started;
  t.ok(after >= 150 && after < 2000, `dropped after ${after} ms`);
  t.ok(await waitFor(() => m.server.stats.tlsRefused === 1), 'counted as a TLS refusal');
  t.match(m.lines.find((l) => l.msg === 'tunnel TLS handshake refused'), { refused: 'tls' }, 'logged');
  t.ok(await echoThroughNewPool(t, m), 'others served');
});

t.test('a session the server closes (idle GOAWAY) leaves the pool; the next connect opens a new one', async (t) => {
  const m = await setupMesh(t, { server: { sessionIdleTimeoutMs: 100 } });
  const s = await m.pool.connect(m.clientId, m.target());
  t.ok(await echoOnce(s, 10));
  s.end();
  t.ok(await waitFor(() => m.server.stats.sessions === 0), 'server closed the idle session');
  t.ok(await waitFor(() => m.pool.stats().length === 0), 'pool evicted it');
  const s2 = await m.pool.connect(m.clientId, m.target());
  t.ok(await echoOnce(s2, 10), 'a new session serves the next stream');
  t.equal(m.server.stats.sessions, 1);
});

t.test('server close(): GOAWAY to clients, pool evicts, connects then fail fast', async (t) => {
  const m = await setupMesh(t);
  const s = await m.pool.connect(m.clientId, m.target());
  t.ok(await echoOnce(s, 10));
  await m.server.close(200);
  t.ok(await waitFor(() => m.pool.stats().length === 0), 'pool evicted the closed session');
  const err = await m.pool.connect(m.clientId, m.target()).catch((e) => e);
  t.equal(err.code, TunnelCode.ConnectFailed, `nothing listening: ${err.message}`);
});
