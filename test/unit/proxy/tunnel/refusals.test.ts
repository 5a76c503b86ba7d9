/**
 * Bad input at the tunnel, each its own test: the right refusal, a log line, and the server
 * keeps serving a well-behaved client afterwards.
 */
import type { ClientHttp2Stream } from 'node:http2';
import type { Duplex } from 'node:stream';
import t, { type Test } from 'tap';
import { hasCode } from '../../../../src/errors.js';
import { TunnelPool } from '../../../../src/proxy/tunnel/tunnel-pool.js';
import { closedPort, makeCa, makeLeaf, OTHER_TRUST_DOMAIN, spiffe, TestIdentity, TRUST_DOMAIN, waitFor } from './fixtures.js';
import { type Mesh, rawSession, readAll, sendPayload, setupMesh } from './harness.js';
import { TunnelCode } from '../../../../src/proxy/codes.js';

/** After a refusal: a good client is still served end to end. */
async function stillServes(t: Test, m: Mesh): Promise<void> {
  const pool = new TunnelPool({ identity: m.clientIdentity });
  t.teardown(() => pool.close());
  const s = await pool.connect(m.clientId, m.target());
  const reading = readAll(s);
  const sent = await sendPayload(s, 4096);
  t.equal((await reading).sha256, sent, 'a well-behaved client is still served');
}

function responseStatus(req: ClientHttp2Stream): Promise<number> {
  return new Promise((resolve, reject) => {
    req.on('error', reject);
    req.once('response', (h) => resolve(Number(h[':status'])));
    req.once('close', () => reject(new Error(`closed without a response (rst ${req.rstCode})`)));
  });
}

async function refusedWith(p: Promise<Duplex>): Promise<string | undefined> {
  try {
    const s = await p;
    s.destroy();
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  }
}

function logged(m: Mesh, msg: string): Record<string, unknown>[] {
  return m.lines.filter((l) => l.msg === msg);
}

/**
 * A raw session to the tunnel server (optionally with a client certificate) and one CONNECT to
 * the app: "status N" when it was answered, else why the session or stream failed.
 */
function connectOutcome(t: Test, m: Mesh, opts?: Parameters<typeof rawSession>[2]): Promise<string> {
  return rawSession(t, m, opts).then(
    ({ session }) =>
      responseStatus(session.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${m.app.port}` })).then(
        (s) => `status ${s}`,
        (e: Error) => e.message,
      ),
    (e: Error) => e.message,
  );
}

t.test('no client certificate: TLS refused, logged', async (t) => {
  const m = await setupMesh(t);
  // TLS 1.3: the client finishes first; the server's certificate_required alert follows.
  const err = await connectOutcome(t, m);
  t.notMatch(String(err), /^status 200/, `refused: ${err}`);
  await waitFor(() => m.server.stats.tlsRefused === 1);
  t.equal(m.server.stats.tlsRefused, 1);
  t.ok(logged(m, 'tunnel TLS handshake refused').length === 1, 'logged');
  t.match(logged(m, 'tunnel TLS handshake refused')[0], { code: 'SKEIN_TUNNEL_TLS_NO_CLIENT_CERT' }, 'with the reason as a stable code');
  t.same(m.server.stats.refusals, { SKEIN_TUNNEL_TLS_NO_CLIENT_CERT: 1 }, 'counted by code');
  t.equal(m.connector.connects, 0, 'the app was never contacted');
  await stillServes(t, m);
});

t.test('client certificate from another CA / trust domain: TLS refused, named and counted', async (t) => {
  const seen: string[] = [];
  const m = await setupMesh(t, { server: { onRefusal: (code) => seen.push(code) } });
  const other = await makeCa(OTHER_TRUST_DOMAIN);
  // The client trusts the mesh CA (so it accepts the server) but holds a cert from another CA.
  const id = new TestIdentity(TRUST_DOMAIN, [m.ca.certPem]).set(await makeLeaf(other, [m.clientId]));
  const pool = new TunnelPool({ identity: id });
  t.teardown(() => pool.close());
  const code = await refusedWith(pool.connect(m.clientId, m.target()));
  t.equal(code, TunnelCode.TlsFailed, `client sees ${code}`);
  await waitFor(() => m.server.stats.tlsRefused === 1);
  t.equal(m.server.stats.tlsRefused, 1, 'server refused the handshake');
  // Node's own error here is only "socket hang up": the reason comes from the verification.
  t.match(logged(m, 'tunnel TLS handshake refused')[0], {
    refused: 'tls',
    code: 'SKEIN_TUNNEL_TLS_UNKNOWN_CA',
    verifyError: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
    peer: '127.0.0.1',
  });
  t.same(m.server.stats.refusals, { SKEIN_TUNNEL_TLS_UNKNOWN_CA: 1 }, 'counted by code');
  t.same(seen, ['SKEIN_TUNNEL_TLS_UNKNOWN_CA'], 'reported to the node-wide counter');
  t.equal(m.connector.connects, 0);
  await stillServes(t, m);
});

t.test('expired client certificate (mesh CA): TLS refused, named and counted', async (t) => {
  const m = await setupMesh(t);
  const hourAgo = new Date(Date.now() - 3600_000);
  const expired = await makeLeaf(m.ca, [m.clientId], m.clientId, { notBefore: new Date(Date.now() - 7200_000), notAfter: hourAgo });
  const outcome = await connectOutcome(t, m, { cert: expired });
  t.notMatch(String(outcome), /^status 200/, `refused: ${outcome}`);
  await waitFor(() => m.server.stats.tlsRefused === 1);
  t.match(logged(m, 'tunnel TLS handshake refused')[0], { code: 'SKEIN_TUNNEL_TLS_CERT_EXPIRED', verifyError: 'CERT_HAS_EXPIRED' });
  t.same(m.server.stats.refusals, { SKEIN_TUNNEL_TLS_CERT_EXPIRED: 1 });
  t.equal(m.connector.connects, 0, 'the app was never contacted');
  await stillServes(t, m);
});

for (const [name, uris] of [
  ['a SPIFFE ID in another trust domain', [spiffe('client-ns', 'client', OTHER_TRUST_DOMAIN)]],
  ['no SAN', []],
  ['two URI SANs', [spiffe('client-ns', 'client'), spiffe('client-ns', 'admin')]],
  ['a URI SAN that is not SPIFFE', ['https://example.test/client']],
] as const) {
  t.test(`client certificate (mesh CA) with ${name}: every stream answered 401, logged`, async (t) => {
    const m = await setupMesh(t);
    const id = new TestIdentity(TRUST_DOMAIN, [m.ca.certPem]).set(await makeLeaf(m.ca, [...uris]), m.clientId);
    const pool = new TunnelPool({ identity: id });
    t.teardown(() => pool.close());
    const code = await refusedWith(pool.connect(m.clientId, m.target()));
    t.equal(code, TunnelCode.SourceDenied);
    t.equal(m.server.stats.identityRefused, 1);
    t.ok(logged(m, 'tunnel peer identity refused').length === 1, 'identity refusal logged');
    const refusal = String(logged(m, 'tunnel peer identity refused')[0]?.code);
    t.match(refusal, /^SKEIN_IDENTITY_PEER_/, `with a stable code (${refusal})`);
    t.same(m.server.stats.refusals, { [refusal]: 1 }, 'counted by code');
    await waitFor(() => m.records.length === 1);
    t.match(m.records[0], { status: 401, reason: /peer identity refused/ });
    t.equal(m.connector.connects, 0);
    await stillServes(t, m);
  });
}

t.test('wrong server identity: the client refuses in the handshake, no CONNECT is sent', async (t) => {
  const m = await setupMesh(t);
  const err = await m.pool.connect(m.clientId, m.target(undefined, { identity: spiffe('default', 'someone-else') })).catch((e) => e);
  t.ok(hasCode(err, TunnelCode.PeerIdentityMismatch), `rejected with ${err.code}`);
  t.match(err.details, { reason: 'SKEIN_IDENTITY_PEER_UNEXPECTED_IDENTITY', expected: spiffe('default', 'someone-else') });
  t.match(err.message, m.serverId, 'the message names who answered');
  t.equal(m.connector.connects, 0, 'the app was never contacted');
  t.equal(m.records.length, 0, 'no stream reached the server');
  await stillServes(t, m);
});

t.test('server certificate from another CA: the client refuses', async (t) => {
  const other = await makeCa(TRUST_DOMAIN, 'impostor CA');
  const m = await setupMesh(t);
  m.serverIdentity.set(await makeLeaf(other, [m.serverId]));
  m.serverIdentity.bundle = [m.ca.certPem, other.certPem];
  t.ok(await m.server.refreshCredentials(), 'server now presents the impostor-signed cert');
  const code = await refusedWith(m.pool.connect(m.clientId, m.target()));
  t.equal(code, TunnelCode.TlsFailed);
  t.equal(m.connector.connects, 0);
});

t.test('CONNECT to an address that is not this pod: 403, logged', async (t) => {
  const m = await setupMesh(t);
  const code = await refusedWith(m.pool.connect(m.clientId, m.target(undefined, { address: '127.0.0.2', tunnelAddress: '127.0.0.1' })));
  t.equal(code, TunnelCode.WrongDestination);
  t.equal(m.server.stats.wrongDestination, 1);
  await waitFor(() => m.records.length === 1);
  t.match(m.records[0], { status: 403, source: m.clientId, reason: /127\.0\.0\.2.* is not this pod/ });
  t.equal(m.connector.connects, 0);
  await stillServes(t, m);
});

t.test('non-CONNECT method: 400', async (t) => {
  const m = await setupMesh(t);
  const { session } = await rawSession(t, m, { cert: await m.clientIdentity.certificateFor(m.clientId) });
  const status = await responseStatus(session.request({ ':method': 'GET', ':path': '/', ':authority': `127.0.0.1:${m.app.port}` }));
  t.equal(status, 400);
  t.equal(m.server.stats.badRequest, 1);
  await waitFor(() => m.records.length === 1);
  t.match(m.records[0], { status: 400, reason: /not CONNECT/ });
  await stillServes(t, m);
});

t.test('CONNECT with a malformed authority: 400', async (t) => {
  const m = await setupMesh(t);
  const { session } = await rawSession(t, m, { cert: await m.clientIdentity.certificateFor(m.clientId) });
  for (const authority of ['localhost:80', '127.0.0.1', '127.0.0.1:99999', '[::1:80']) {
    const status = await responseStatus(session.request({ ':method': 'CONNECT', ':authority': authority }));
    t.equal(status, 400, `authority ${authority}`);
  }
  t.equal(m.server.stats.badRequest, 4);
  t.equal(m.connector.connects, 0);
});

t.test('app port closed: 503', async (t) => {
  const m = await setupMesh(t);
  const port = await closedPort();
  const code = await refusedWith(m.pool.connect(m.clientId, m.target(port)));
  t.equal(code, TunnelCode.AppUnreachable);
  await waitFor(() => m.records.length === 1);
  t.match(m.records[0], { status: 503, port, source: m.clientId });
  t.ok(m.lines.some((l) => l.msg === 'inbound connection' && l.level === 40), 'logged at warn');
  await stillServes(t, m);
});

t.test('oversized request headers are refused by the server, which keeps serving', async (t) => {
  const m = await setupMesh(t);
  const { session } = await rawSession(t, m, { cert: await m.clientIdentity.certificateFor(m.clientId) });
  const req = session.request({ ':method': 'CONNECT', ':authority': `127.0.0.1:${m.app.port}`, 'x-big': 'a'.repeat(64 * 1024) });
  const outcome = await responseStatus(req).then(
    (s) => `status ${s}`,
    (e: Error) => e.message,
  );
  t.notMatch(outcome, /^status 200/, `not served: ${outcome}`);
  t.equal(m.connector.connects, 0);
  await stillServes(t, m);
});
