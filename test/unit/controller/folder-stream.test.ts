// Folder source -> controller -> two agents (real gRPC clients over loopback through
// ControllerConfigSource, each feeding a ConfigStore as the agent does): per-node filtering,
// deltas for a namespace label, a new pod and scaled endpoints, versions/nonces, ACK and
// NACK, and a controller killed and restarted while the agents keep their config.
import t from 'tap';
import { Controller } from '../../../src/controller/controller.js';
import { BootstrapTokenAuthenticator } from '../../../src/identity/ca/bootstrap-tokens.js';
import {
  baseCluster,
  FakeAgent,
  namespace,
  pod,
  slice,
  tempDir,
  TOKENS,
  until,
  writeCluster,
  writeYaml,
} from './helpers.js';

const authenticator = BootstrapTokenAuthenticator.fromTokens(TOKENS);

async function startController(t: Tap.Test, dir: string, address = '127.0.0.1:0') {
  const c = new Controller({ folder: dir, folderRescanMs: 0, authenticator, configAddress: address });
  const { configPort } = await c.start();
  t.teardown(() => c.stop());
  return { c, port: configPort };
}

async function agents(t: Tap.Test, port: number, opts: ConstructorParameters<typeof FakeAgent>[2] = {}) {
  const a = new FakeAgent('node-a', `127.0.0.1:${port}`, opts);
  const b = new FakeAgent('node-b', `127.0.0.1:${port}`);
  t.teardown(() => a.source.stop());
  t.teardown(() => b.source.stop());
  await Promise.all([a.start(), b.start()]);
  return { a, b };
}

t.test('each agent gets only its node workloads, every service, and deltas after', async (t) => {
  const dir = tempDir(t, 'stream');
  const files = baseCluster();
  writeCluster(dir, files);
  const { c, port } = await startController(t, dir);
  const { a, b } = await agents(t, port);

  t.same(a.workloadNames(), ['legacy/api-1', 'shop/web-1'], 'node-a: its two pods only');
  t.same(b.workloadNames(), ['legacy/api-2', 'shop/web-2'], 'node-b: its two pods only');
  t.same(a.snapshot().services.map((s) => s.name).sort(), ['api', 'web']);
  t.equal(a.snapshot().nodes.length, 2);
  t.ok(a.responses[0]?.full, 'first response is a full state');
  const firstNonce = a.responses[0]!.nonce;
  const firstVersion = a.responses[0]!.version;
  await until('ACK recorded', () => c.status().agents.every((s) => s.acks === 1));

  // 1. Label the legacy namespace into the mesh: both agents' legacy pods change, and the
  // api service (its endpoints become meshed). Nothing else is resent.
  files['namespaces.yaml'] = [namespace('shop', { 'skein.io/mesh': 'enabled' }), namespace('legacy', { 'skein.io/mesh': 'enabled' })];
  writeYaml(dir, 'namespaces.yaml', files['namespaces.yaml']);
  await c.rescanFolder();
  await until('node-a applied the label', () => a.snapshot().workloads.find((w) => w.name === 'api-1')?.meshEnabled === true);
  await until('node-b applied the label', () => b.snapshot().workloads.find((w) => w.name === 'api-2')?.meshEnabled === true);
  const da = a.last()!;
  t.notOk(da.full, 'a delta, not a full state');
  t.same(da.updated.sort(), ['service|legacy/api', 'workload|uid-legacy-api-1'], 'node-a delta: its legacy pod + the api service');
  t.same(da.removed, []);
  t.same(b.last()!.updated.sort(), ['service|legacy/api', 'workload|uid-legacy-api-2'], 'node-b delta: its own pod only');
  t.not(da.nonce, firstNonce, 'nonce advances');
  t.not(da.version, firstVersion, 'version advances');
  t.equal(a.snapshot().version, da.version, 'store serves the new version');

  // 2. A new pod on node-b (not yet an endpoint): node-a hears nothing.
  const aCount = a.responses.length;
  files['pods.yaml'] = [...files['pods.yaml']!, pod('shop', 'web-3', 'node-b', '10.244.2.11', { app: 'web' }, 'web')];
  writeYaml(dir, 'pods.yaml', files['pods.yaml']);
  await c.rescanFolder();
  await until('node-b has web-3', () => b.workloadNames().includes('shop/web-3'));
  t.same(b.last()!.updated, ['workload|uid-shop-web-3'], 'node-b: just the new workload');
  await new Promise((r) => setTimeout(r, 100));
  t.equal(a.responses.length, aCount, 'node-a received nothing for a pod on node-b');

  // 3. Scale endpoints: web-3 joins the web slice -> both agents get the service, only.
  files['endpointslices.yaml'] = [
    slice('shop', 'web', [
      { ip: '10.244.1.10', node: 'node-a', pod: 'web-1' },
      { ip: '10.244.2.10', node: 'node-b', pod: 'web-2' },
      { ip: '10.244.2.11', node: 'node-b', pod: 'web-3' },
    ]),
    files['endpointslices.yaml']![1]!,
  ];
  writeYaml(dir, 'endpointslices.yaml', files['endpointslices.yaml']);
  await c.rescanFolder();
  await until('node-a sees 3 web endpoints', () => a.store.service('shop', 'web')?.endpoints.length === 3);
  t.same(a.last()!.updated, ['service|shop/web'], 'node-a: the web service only');
  await until('node-b sees 3 web endpoints', () => b.store.service('shop', 'web')?.endpoints.length === 3);
  t.same(b.last()!.updated, ['service|shop/web']);

  // 4. Remove a pod: a removal by key.
  files['pods.yaml'] = files['pods.yaml']!.filter((p) => (p.metadata as { name: string }).name !== 'api-1');
  writeYaml(dir, 'pods.yaml', files['pods.yaml']);
  await c.rescanFolder();
  await until('node-a lost api-1', () => !a.workloadNames().includes('legacy/api-1'));
  t.ok(a.last()!.removed.includes('workload|uid-legacy-api-1'), 'removal sent by key');
  await until('every response ACKed', () => c.status().agents.every((s) => s.ackedVersion === c.index.version));
  t.equal(a.errors.length, 0);
});

t.test('a NACK keeps the agent on its last good config; it recovers at the next good change', async (t) => {
  const dir = tempDir(t, 'nack');
  const files = baseCluster();
  writeCluster(dir, files);
  const { c, port } = await startController(t, dir);
  // node-a's agent refuses any snapshot with a workload labelled poison=true.
  const { a, b } = await agents(t, port, { validate: (s) => (s.workloads.some((w) => w.labels.poison === 'true') ? 'poisoned workload' : undefined) });
  const good = a.snapshot().version;
  files['pods.yaml'] = [...files['pods.yaml']!, pod('shop', 'bad', 'node-a', '10.244.1.99', { poison: 'true' })];
  writeYaml(dir, 'pods.yaml', files['pods.yaml']);
  await c.rescanFolder();
  await until('NACK seen by the controller', () => c.status().agents.some((s) => s.node === 'node-a' && s.nacks === 1));
  t.equal(a.snapshot().version, good, 'node-a still serves its last good version');
  t.notOk(a.workloadNames().includes('shop/bad'), 'nothing of the refused response was applied');
  t.match(a.errors[0]?.message ?? '', /poisoned workload/);
  t.match(c.status().agents.find((s) => s.node === 'node-a')!.lastNack, /poisoned workload/);
  t.equal(b.responses.length, 1, 'node-b was sent nothing: the pod is not on its node');

  // Fix it: the pod goes away; node-a gets a delta against what it last ACKed.
  files['pods.yaml'] = files['pods.yaml']!.filter((p) => (p.metadata as { name: string }).name !== 'bad');
  files['pods.yaml'].push(pod('shop', 'web-9', 'node-a', '10.244.1.19', { app: 'web' }, 'web'));
  writeYaml(dir, 'pods.yaml', files['pods.yaml']);
  await c.rescanFolder();
  await until('node-a applied the fix', () => a.workloadNames().includes('shop/web-9'));
  t.notOk(a.workloadNames().includes('shop/bad'));
  t.notOk(a.last()!.updated.includes('workload|uid-shop-bad'), 'the refused resource is not resent once gone');
});

t.test('controller killed and restarted: agents keep serving, reconnect with backoff, resync', async (t) => {
  const dir = tempDir(t, 'restart');
  const files = baseCluster();
  writeCluster(dir, files);
  const first = new Controller({ folder: dir, folderRescanMs: 0, authenticator, configAddress: '127.0.0.1:0' });
  const { configPort: port } = await first.start();
  let firstStopped = false;
  t.teardown(() => (firstStopped ? undefined : first.stop()));
  const { a, b } = await agents(t, port);
  const before = JSON.stringify(a.snapshot().workloads);
  const firstId = a.last()!.controllerId;

  first.configServer.kill();
  await first.stop();
  firstStopped = true;
  await until('agents noticed', () => a.errors.length > 0 && b.errors.length > 0);
  t.match(a.errors[0]!.code, 'SKEIN_CONFIG_CONTROLLER_UNAVAILABLE');
  t.equal(JSON.stringify(a.snapshot().workloads), before, 'last good config still served while the controller is away');
  await new Promise((r) => setTimeout(r, 300)); // a few failed reconnects (backoff)
  t.ok(a.source.state().reconnects >= 2, `reconnect attempts while away: ${a.source.state().reconnects}`);

  // Meanwhile the cluster changed; the new controller brings it.
  files['pods.yaml'] = [...files['pods.yaml']!, pod('shop', 'web-4', 'node-a', '10.244.1.14', { app: 'web' }, 'web')];
  writeYaml(dir, 'pods.yaml', files['pods.yaml']);
  const appliedBefore = a.applied;
  const { c: second } = await startController(t, dir, `127.0.0.1:${port}`);
  await until('node-a resynced', () => a.workloadNames().includes('shop/web-4'), 8000);
  await until('node-b resynced', () => b.last()!.controllerId === second.configServer.controllerId, 8000);
  t.not(a.last()!.controllerId, firstId, 'served by the new controller');
  t.ok(a.last()!.full, 'a fresh full state on reconnect');
  t.equal(a.applied, appliedBefore + 1, 'one apply: the full state');
  t.same(b.workloadNames(), ['legacy/api-2', 'shop/web-2'], 'node-b state unchanged by the resync');
});

t.test('a node may only ask for its own config', async (t) => {
  const dir = tempDir(t, 'authn');
  writeCluster(dir, baseCluster());
  const { port } = await startController(t, dir);
  const wrongNode = new FakeAgent('node-b', `127.0.0.1:${port}`, { token: TOKENS['node-a'] });
  t.teardown(() => wrongNode.source.stop());
  await wrongNode.start();
  t.equal(wrongNode.store.snapshot(), undefined, 'nothing served');
  t.match(wrongNode.errors[0]?.message ?? '', /not node-b/);
  const noToken = new FakeAgent('node-a', `127.0.0.1:${port}`, { token: 'nope' });
  t.teardown(() => noToken.source.stop());
  await noToken.start();
  t.equal(noToken.store.snapshot(), undefined);
  t.match(noToken.errors[0]?.message ?? '', /unauthenticated/i);
});
