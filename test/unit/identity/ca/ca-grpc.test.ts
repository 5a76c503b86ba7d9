// A real CA gRPC server on loopback with CertificateStores as two agents would run them,
// and a mutual-TLS client/server pair built with the identity helpers that keeps connecting
// through certificate rotations and a root rotation.
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import { SkeinError } from '../../../../src/errors.js';
import { BootstrapTokenAuthenticator, createBootstrapTokens, readBootstrapToken } from '../../../../src/identity/ca/bootstrap-tokens.js';
import { CaClient } from '../../../../src/identity/workload/ca-client.js';
import { CaServer } from '../../../../src/identity/ca/ca-server.js';
import { CertificateStore } from '../../../../src/identity/workload/certificate-store.js';
import { IdentityCode } from '../../../../src/identity/codes.js';
import { createWorkloadCsr, generateP256KeyPair } from '../../../../src/identity/x509/keys.js';
import { StaticNodeAuthorizer } from '../../../../src/identity/ca/node-authorizer.js';
import { peerIdentityOf } from '../../../../src/identity/workload/peer-verification.js';
import { tlsOptionsFor } from '../../../../src/identity/workload/tls-options.js';
import { id, makeCa, TD, type Teardown, tempDir } from '../helpers.js';

const WEB = id('shop', 'web');
const DB = id('shop', 'db');
const OTHER = id('shop', 'admin');

async function setup(t: Teardown) {
  const ca = await makeCa({ ttl: { defaultTtlSeconds: 3600, maxTtlSeconds: 7200 } });
  const dir = tempDir(t, 'tokens');
  const files = await createBootstrapTokens(dir, ['node-a', 'node-b']);
  const authenticator = await BootstrapTokenAuthenticator.fromDirectory(dir);
  const authorizer = new StaticNodeAuthorizer({ 'node-a': [WEB], 'node-b': [DB] });
  const server = new CaServer({ ca, authenticator, authorizer, address: '127.0.0.1:0', servingSans: ['127.0.0.1'] });
  const port = await server.start();
  t.teardown(() => server.stop(100));
  const clients: CaClient[] = [];
  const stores: CertificateStore[] = [];
  t.teardown(() => {
    for (const s of stores) s.close();
    for (const c of clients) c.close();
  });
  const agent = async (node: 'node-a' | 'node-b', ttlSeconds = 0) => {
    const client = new CaClient({
      address: `127.0.0.1:${port}`,
      rootsPem: ca.trustBundlePem(),
      token: await readBootstrapToken(files[node] as string),
      deadlineMs: 5000,
    });
    clients.push(client);
    const store = new CertificateStore({
      trustDomain: TD,
      issuer: client,
      initialTrustBundlePem: ca.trustBundlePem(),
      ttlSeconds,
      waitTimeoutMs: 5000,
      renewal: { backoffInitialMs: 50, backoffMaxMs: 500 },
      bundleRefreshIntervalMs: 0,
    });
    stores.push(store);
    return { client, store };
  };
  return { ca, port, agent, files, server };
}


t.test('issuance over gRPC/TLS, refusals with precise status and skein code', async (t) => {
  const { ca, port, agent } = await setup(t);
  const a = await agent('node-a');
  a.store.acquire(WEB, 'pod-1');
  const cert = await a.store.certificateFor(WEB);
  t.equal(cert.identity, WEB);
  t.ok(cert.notAfter.getTime() - Date.now() > 3500_000 && cert.notAfter.getTime() - Date.now() <= 3601_000, 'default TTL applied');
  t.match(cert.privateKeyPem, /BEGIN PRIVATE KEY/);
  t.same(a.store.trustBundlePem(), ca.trustBundlePem());
  t.equal(a.store.status()[0]?.state, 'valid');
  t.notOk(JSON.stringify(a.store.status()).includes('PRIVATE KEY'), 'status never shows keys');

  // node-a has no pod with identity DB: PERMISSION_DENIED with the skein code, at once.
  a.store.acquire(DB, 'pod-x');
  const refused = await a.store.certificateFor(DB).catch((e: unknown) => e);
  t.type(refused, SkeinError);
  t.equal((refused as SkeinError).code, IdentityCode.NodeNotAuthorized);

  // Raw client calls: the status codes a caller sees.
  const keys = await generateP256KeyPair();
  const csr = await createWorkloadCsr(OTHER, keys);
  const e1 = await a.client.issue({ csrPem: csr, ttlSeconds: 0 }).catch((e: SkeinError) => e);
  t.equal((e1 as SkeinError).code, IdentityCode.NodeNotAuthorized);
  t.equal((e1 as SkeinError).details?.grpcStatus, grpc.status.PERMISSION_DENIED);
  const e2 = await a.client.issue({ csrPem: 'not a csr', ttlSeconds: 0 }).catch((e: SkeinError) => e);
  t.equal((e2 as SkeinError).code, IdentityCode.CsrInvalid);
  t.equal((e2 as SkeinError).details?.grpcStatus, grpc.status.INVALID_ARGUMENT);
  const bad = new CaClient({ address: `127.0.0.1:${port}`, rootsPem: ca.trustBundlePem(), token: 'wrong' });
  t.teardown(() => bad.close());
  const e3 = await bad.issue({ csrPem: csr, ttlSeconds: 0 }).catch((e: SkeinError) => e);
  t.equal((e3 as SkeinError).code, IdentityCode.Unauthenticated);
  t.equal((e3 as SkeinError).details?.grpcStatus, grpc.status.UNAUTHENTICATED);
  const e4 = await bad.fetchTrustBundle().catch((e: SkeinError) => e);
  t.equal((e4 as SkeinError).code, IdentityCode.Unauthenticated);
  t.same(await a.client.fetchTrustBundle(), ca.trustBundlePem());

  // A huge TTL is capped by the CA, not refused.
  const big = await a.client.issue({ csrPem: await createWorkloadCsr(WEB, keys), ttlSeconds: 10 ** 9 });
  t.equal(big.ttlSeconds, 7200);
  t.equal(big.certChainPem.length, 2, 'leaf + root');

  const metrics = await ca.metrics.refused.get();
  const reasons = Object.fromEntries(metrics.values.map((v) => [v.labels.reason, v.value]));
  t.ok((reasons[IdentityCode.NodeNotAuthorized] ?? 0) >= 2);
  t.ok((reasons[IdentityCode.Unauthenticated] ?? 0) >= 2);
  t.ok((reasons[IdentityCode.CsrInvalid] ?? 0) >= 1);

  // Aborting a call cancels it.
  const ac = new AbortController();
  ac.abort();
  const e5 = await a.client.issue({ csrPem: csr, ttlSeconds: 0 }, ac.signal).catch((e: SkeinError) => e);
  t.equal((e5 as SkeinError).code, IdentityCode.IssuanceAborted);
});

t.test('the CA is unreachable: the store keeps retrying and a waiter times out cleanly', async (t) => {
  const ca = await makeCa();
  const client = new CaClient({ address: '127.0.0.1:1', rootsPem: ca.trustBundlePem(), token: 'x', deadlineMs: 300 });
  const store = new CertificateStore({ trustDomain: TD, issuer: client, waitTimeoutMs: 800, renewal: { backoffInitialMs: 50, backoffMaxMs: 100 }, bundleRefreshIntervalMs: 0 });
  t.teardown(() => {
    store.close();
    client.close();
  });
  const failures: string[] = [];
  store.on('failed', (f: { code: string }) => failures.push(f.code));
  store.acquire(WEB);
  const err = await store.certificateFor(WEB).catch((e: SkeinError) => e);
  t.equal((err as SkeinError).code, IdentityCode.IssuanceTimeout);
  t.ok(failures.length >= 2, `retried (${failures.length} failures)`);
  t.ok(failures.every((c) => c === IdentityCode.CaUnavailable));
});

/** A mutual-TLS server for `serverId` that rotates its context on every store change. */
async function meshServer(t: Teardown, store: CertificateStore, serverId: string) {
  const opts = async () => tlsOptionsFor(await store.certificateFor(serverId), store.bundle, { trustDomain: TD });
  const server = tls.createServer(await opts(), (socket) => {
    try {
      const peer = peerIdentityOf(socket, store.bundle, { trustDomain: TD });
      socket.end(`ok ${peer}`);
    } catch (err) {
      socket.end(`refused ${(err as SkeinError).code}`);
    }
  });
  const rotate = () => {
    opts().then(
      (o) => server.setSecureContext(o),
      () => {},
    );
  };
  store.on('issued', rotate);
  store.on('bundleChanged', rotate);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    store.off('issued', rotate);
    store.off('bundleChanged', rotate);
    server.close();
  });
  return (server.address() as AddressInfo).port;
}

/** Connects to the server again and again until stopped; counts outcomes. */
function meshClientLoop(store: CertificateStore, clientId: string, serverId: string, port: number) {
  const result = { ok: 0, failed: 0, errors: [] as string[] };
  let stop = false;
  const one = async () => {
    const cert = await store.certificateFor(clientId);
    const o = tlsOptionsFor(cert, store.bundle, { trustDomain: TD, expectedPeer: serverId });
    return new Promise<string>((resolve, reject) => {
      const s = tls.connect({ ...o, host: '127.0.0.1', port, servername: 'mesh' });
      let data = '';
      s.setTimeout(3000, () => s.destroy(new Error('timeout')));
      s.on('data', (d) => {
        data += d;
      });
      s.on('end', () => resolve(data));
      s.on('error', reject);
    });
  };
  const done = (async () => {
    for (let i = 0; i < 5000 && !stop; i++) {
      try {
        const answer = await one();
        if (answer === `ok ${clientId}`) result.ok++;
        else {
          result.failed++;
          result.errors.push(answer);
        }
      } catch (err) {
        result.failed++;
        result.errors.push(String((err as Error).message));
      }
      await new Promise((r) => setTimeout(r, 15));
    }
  })();
  return {
    result,
    stop: async () => {
      stop = true;
      await done;
      return result;
    },
  };
}

t.test('short-TTL rotation and a root rotation with zero failed mTLS connections', async (t) => {
  const { ca, agent } = await setup(t);
  const a = await agent('node-a', 2);
  const b = await agent('node-b', 2);
  a.store.acquire(WEB, 'web-1');
  b.store.acquire(DB, 'db-1');
  const counts = { a: 0, b: 0 };
  a.store.on('issued', () => counts.a++);
  b.store.on('issued', () => counts.b++);
  const port = await meshServer(t, b.store, DB);
  const loop = meshClientLoop(a.store, WEB, DB, port);

  await new Promise((r) => setTimeout(r, 5000));
  t.ok(counts.a >= 4 && counts.b >= 4, `certificates rotated repeatedly (a=${counts.a}, b=${counts.b})`);
  const beforeRoot = { ...loop.result };
  t.ok(beforeRoot.ok > 20, `connections made during TTL rotation: ${beforeRoot.ok}`);

  // Root rotation: add the new root and let agents learn the bundle...
  const oldRoot = ca.activeAuthority().id;
  const added = await ca.addAuthority();
  await Promise.all([a.store.refreshTrustBundle(), b.store.refreshTrustBundle()]);
  t.equal(a.store.bundle.size, 2);
  await new Promise((r) => setTimeout(r, 1000));
  // ...sign with it and re-issue everywhere...
  await ca.activateAuthority(added.id);
  await Promise.all([a.store.renewNow(), b.store.renewNow()]);
  t.equal(a.store.bundle.size, 2, 'both roots trusted during the overlap');
  await new Promise((r) => setTimeout(r, 1500));
  // ...then drop the old root.
  await ca.removeAuthority(oldRoot);
  await Promise.all([a.store.refreshTrustBundle(), b.store.refreshTrustBundle()]);
  t.equal(a.store.bundle.size, 1);
  t.notOk(a.store.bundle.has(oldRoot), 'old root gone from the agent bundle');
  await new Promise((r) => setTimeout(r, 2500));

  const r = await loop.stop();
  t.equal(r.failed, 0, `zero failed connections (ok=${r.ok}; errors: ${r.errors.slice(0, 3).join(' | ')})`);
  t.ok(r.ok > beforeRoot.ok + 20, `connections made during the root rotation: ${r.ok - beforeRoot.ok}`);
  // The CA's own serving cert moved to the new root: the clients still reach it.
  await a.client.fetchTrustBundle();
  const cert = await a.store.certificateFor(WEB);
  t.ok(cert.notAfter.getTime() - cert.notBefore.getTime() < 70_000, '2 s TTL (+60 s backdate)');
});
