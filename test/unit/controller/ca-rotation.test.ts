// Root rotation in one process, with the real pieces: the controller hosting the CA (gRPC over
// TLS) and the config stream (TLS, certificate from the CA), and two agents wired as the
// agent's main wires them: a CertificateStore issuing from the CA through CaClient, and a
// ControllerConfigSource that reports the store's bundle and certificates' roots and follows
// the controller's signals. The operator's side is the same client `skein ca rotate` uses.
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import type { CaStatus } from '../../../src/api/config-wire.js';
import { identityReportOf, rootOfChain, wireIdentityReports } from '../../../src/agent/identity-report.js';
import { ControllerLink, parseDuration, planFrom, renderCaStatus } from '../../../src/cli/ca.js';
import { ControllerConfigSource } from '../../../src/config/controller-source.js';
import { ControllerCode } from '../../../src/controller/codes.js';
import { Controller } from '../../../src/controller/controller.js';
import { ConfigServingCredentials } from '../../../src/controller/serving-credentials.js';
import { fetchCaStatus, rotateCaStep } from '../../../src/controller/status-client.js';
import { BootstrapTokenAuthenticator } from '../../../src/identity/ca/bootstrap-tokens.js';
import { CertificateAuthority } from '../../../src/identity/ca/ca.js';
import { MemoryRootStore } from '../../../src/identity/ca/root-store.js';
import { CaClient } from '../../../src/identity/workload/ca-client.js';
import { CertificateStore } from '../../../src/identity/workload/certificate-store.js';
import { silentLogger } from '../../../src/telemetry/log.js';
import { baseCluster, tempDir, TOKENS, until, writeCluster } from './helpers.js';

const OPERATOR = 'operator-token-0123456789abcdef';
const SANS = ['127.0.0.1', 'localhost'];

interface TestAgent {
  node: string;
  store: CertificateStore;
  source: ControllerConfigSource;
}

async function startAgent(t: Tap.Test, node: 'node-a' | 'node-b', addr: { config: string; ca: string }, bootstrapRoots: string[]): Promise<TestAgent> {
  const log = silentLogger();
  const issuer = new CaClient({ address: addr.ca, rootsPem: bootstrapRoots, token: TOKENS[node], serverName: '127.0.0.1' });
  const store = new CertificateStore({ trustDomain: 'cluster.local', issuer, initialTrustBundlePem: bootstrapRoots, bundleRefreshIntervalMs: 0, logger: log });
  let source: ControllerConfigSource | undefined;
  const reports = wireIdentityReports(store, () => source?.reportIdentity(), log);
  source = new ControllerConfigSource({
    address: addr.config,
    node,
    token: TOKENS[node],
    rootsPem: bootstrapRoots,
    roots: () => store.trustBundlePem(),
    serverName: '127.0.0.1',
    backoff: { initialMs: 50, maxMs: 200 },
    identity: { report: () => identityReportOf(store), onControl: reports.onControl },
  });
  t.teardown(async () => {
    reports.stop();
    await source?.stop();
    store.close();
    issuer.close();
  });
  // The pod of shop/web on this node (baseCluster).
  store.acquire('spiffe://cluster.local/ns/shop/sa/web', `web-${node}`);
  await store.certificateFor('spiffe://cluster.local/ns/shop/sa/web');
  await source.start(
    () => {},
    () => {},
  );
  return { node, store, source };
}

t.test('skein ca rotate steps against a real controller, CA and agents', async (t) => {
  const dir = tempDir(t, 'carot');
  writeCluster(dir, baseCluster());
  const rootStore = new MemoryRootStore();
  const ca = await CertificateAuthority.create({ trustDomain: 'cluster.local', store: rootStore });
  const tls = new ConfigServingCredentials(ca, SANS);
  await tls.start();
  t.teardown(() => tls.stop());
  const c = new Controller({
    folder: dir,
    folderRescanMs: 0,
    authenticator: BootstrapTokenAuthenticator.fromTokens(TOKENS),
    configAddress: '127.0.0.1:0',
    configCredentials: tls.credentials,
    ca: { ca, address: '127.0.0.1:0', servingSans: SANS },
    operatorToken: () => OPERATOR,
  });
  const ports = await c.start();
  t.teardown(() => c.stop());
  const addr = { config: `127.0.0.1:${ports.configPort}`, ca: `127.0.0.1:${ports.caPort}` };
  const firstRoots = ca.trustBundlePem();
  const oldId = ca.activeAuthority().id;
  const operator = { address: addr.config, token: OPERATOR, rootsPem: firstRoots, serverName: '127.0.0.1' };
  const asNode = { ...operator, token: TOKENS['node-a'] };

  const a = await startAgent(t, 'node-a', addr, firstRoots);
  const b = await startAgent(t, 'node-b', addr, firstRoots);
  // The operator's link, as skein ca rotate holds it: it learns the bundle from each answer.
  const op = new ControllerLink(operator);
  const statusNow = () => op.status();
  await until('both agents reported', async () => (await statusNow()).agents.filter((x) => x.reported_at !== '').length === 2);

  await t.test('status before: one root, never rotated, each agent on it', async (t) => {
    const st = await statusNow();
    t.same(st.authorities.map((x) => [x.id, x.active]), [[oldId, true]]);
    t.equal(st.rotation, null);
    t.same(st.pending, []);
    for (const ag of st.agents) t.same([ag.trusted_roots, ag.certificates.map((x) => x.root)], [[oldId], [oldId]], `${ag.node} on the first root`);
    t.match(renderCaStatus(st), /never rotated/);
    t.same((await fetchCaStatus(asNode)).authorities.length, 1, 'a node token reads the CA status');
  });

  await t.test('only the operator token may run a step', async (t) => {
    await t.rejects(rotateCaStep(asNode, 'add'), { code: grpc.status.PERMISSION_DENIED, details: new RegExp(`^${ControllerCode.OperatorRefused}`) });
    await t.rejects(rotateCaStep({ ...operator, token: 'wrong' }, 'add'), { code: grpc.status.PERMISSION_DENIED });
    t.equal(ca.listAuthorities().length, 1, 'nothing changed');
  });

  await t.test('steps out of order or unknown are refused and change nothing', async (t) => {
    await t.rejects(op.step('activate'), { code: grpc.status.INVALID_ARGUMENT, details: new RegExp(ControllerCode.RotationStep) });
    await t.rejects(op.step('explode'), { code: grpc.status.INVALID_ARGUMENT });
    t.equal(ca.listAuthorities().length, 1);
  });

  let newId = '';
  await t.test('add: the agents fetch the bundle at once and report trusting the new root', async (t) => {
    const st = await op.step('add');
    newId = st.rotation?.to ?? '';
    t.equal(st.rotation?.phase, 'trusting');
    t.same(st.authorities.map((x) => [x.id, x.active]), [
      [oldId, true],
      [newId, false],
    ]);
    t.same((await op.step('add')).rotation?.to, newId, 'add again: the same rotation');
    await until('agents trust the new root', async () => (await statusNow()).pending.length === 0);
    t.ok(a.store.bundle.has(newId) && b.store.bundle.has(newId), 'both stores hold the new root');
    t.same((await rootStore.load())?.rotation?.phase, 'trusting', 'the phase is saved with the roots');
    await t.rejects(op.step('retire'), { code: grpc.status.INVALID_ARGUMENT }, 'retire before activate is refused');
  });

  await t.test('activate is refused while an agent does not trust the new root, and works once it does', async (t) => {
    // A third stream for node-b that never reports (an agent of an older version, or stuck).
    const silent = new ControllerConfigSource({ address: addr.config, node: 'node-b', token: TOKENS['node-b'], rootsPem: firstRoots, serverName: '127.0.0.1' });
    await silent.start(
      () => {},
      () => {},
    );
    const st = await statusNow();
    t.same(st.pending, ['node-b'], 'the silent stream is pending');
    await t.rejects(op.step('activate'), { code: grpc.status.FAILED_PRECONDITION, details: new RegExp(`^${ControllerCode.RotationNotConverged}: .*node-b`) });
    t.equal(ca.activeAuthority().id, oldId, 'the old root still signs');
    await silent.stop();
    await until('silent stream gone', async () => (await statusNow()).pending.length === 0);
  });

  await t.test('activate + reissue: every certificate moves to the new root', async (t) => {
    const st = await op.step('activate');
    t.equal(st.rotation?.phase, 'reissuing');
    t.equal(ca.activeAuthority().id, newId, 'the new root signs');
    await until('certificates on the new root', async () => (await statusNow()).pending.length === 0);
    for (const ag of [a, b]) {
      const cert = ag.store.status()[0]!;
      t.equal(rootOfChain(cert.certChainPem!, [new X509Certificate(ca.trustBundlePem()[0]!)]), newId, `${ag.node}'s certificate chains to the new root`);
    }
    t.same((await op.step('reissue')).rotation?.phase, 'reissuing', 'reissue again is harmless');
  });

  await t.test('retire + finish: the old root leaves every bundle', async (t) => {
    const st = await op.step('retire');
    t.equal(st.rotation?.phase, 'retiring');
    t.same(st.authorities.map((x) => x.id), [newId]);
    await until('agents dropped the old root', async () => (await statusNow()).pending.length === 0);
    for (const ag of [a, b]) t.same(ag.store.bundle.fingerprints(), [newId], `${ag.node} trusts the new root only`);
    const done = await op.step('finish');
    t.equal(done.rotation?.phase, 'done');
    t.same((await op.step('finish')).rotation?.phase, 'done', 'finish again: nothing to do');
    const saved = await rootStore.load();
    t.same([saved?.activeId, saved?.authorities.length, saved?.rotation?.phase], [newId, 1, 'done']);
    t.match(renderCaStatus(done), /last one done/);
  });

  await t.test('a client that knew only the old root still reaches the controller through what it learned', async (t) => {
    // The config stream's certificate now comes from the new root.
    await t.rejects(fetchCaStatus(operator), 'the old root alone no longer verifies the controller');
    await t.rejects(new ControllerLink(operator).status(), 'nor does a link that learned nothing');
    t.equal((await op.status()).rotation?.phase, 'done', 'the link that followed the rotation still does');
    // An agent reconnecting with bootstrap roots of the old root verifies with its current bundle.
    const fresh = new ControllerConfigSource({ address: addr.config, node: 'node-a', token: TOKENS['node-a'], rootsPem: firstRoots, roots: () => a.store.trustBundlePem(), serverName: '127.0.0.1' });
    await fresh.start(
      () => {},
      () => {},
    );
    t.ok(fresh.state().connected, 'connected with its current bundle');
    await fresh.stop();
  });
});

t.test('CLI helpers: durations, plans', async (t) => {
  t.equal(parseDuration('5m'), 300_000);
  t.equal(parseDuration('90s'), 90_000);
  t.equal(parseDuration('300'), 300_000);
  t.throws(() => parseDuration('soon'));
  t.equal(planFrom(undefined).length, 5);
  t.match(planFrom('retiring')[0]!, /dropped the old root/);
  const empty: CaStatus = { authorities: [], rotation: null, agents: [], pending: [], rotatable: false, note: 'operator files', bundle_pem: [] };
  t.match(renderCaStatus(empty), /no agent connected/);
});
