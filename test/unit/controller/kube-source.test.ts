// The Kubernetes source, tested against a STAND-IN API server (fake-apiserver.ts: an HTTPS
// server speaking list/watch with resourceVersions, bookmarks, 410 Gone and dropped
// watches), because no real API server can run here. The client is @kubernetes/client-node
// (its Watch, typed API clients and HTTP stack) with the stand-in's cluster CA and a token. The same scenarios as the folder
// tests pass through it: per-node views, deltas for a namespace label / a new pod / scaled
// endpoints, refusals (as Events and status conditions), and a controller restart.
import t from 'tap';
import { Controller } from '../../../src/controller/controller.js';
import type { KubeClient } from '../../../src/controller/kube/client.js';
import { KubeSource } from '../../../src/controller/kube/kube-source.js';
import { KubeStatusWriter, StatusReporter } from '../../../src/controller/kube/status-writer.js';
import { BootstrapTokenAuthenticator } from '../../../src/identity/ca/bootstrap-tokens.js';
import { baseCluster, FakeAgent, type Obj, pod, slice, TOKENS, until } from './helpers.js';
import { standInClient } from './stand-in-kube.js';

const authenticator = BootstrapTokenAuthenticator.fromTokens(TOKENS);

async function standIn(t: Tap.Test, bookmarkMs = 0) {
  const { api, client } = await standInClient(t, { bookmarkMs });
  for (const objs of Object.values(baseCluster())) for (const o of objs) api.apply(structuredClone(o));
  return { api, client };
}

async function controllerOver(t: Tap.Test, client: KubeClient, address = '127.0.0.1:0') {
  let source: KubeSource | undefined;
  const c = new Controller({
    authenticator,
    configAddress: address,
    sources: [
      (store) => {
        source = new KubeSource(store, { client, watchTimeoutSeconds: 30, backoffInitialMs: 20, backoffMaxMs: 200 });
        return source;
      },
    ],
  });
  const { configPort } = await c.start();
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await c.stop();
  };
  t.teardown(stop);
  return { c, port: configPort, source: source!, stop };
}

async function agents(t: Tap.Test, port: number) {
  const a = new FakeAgent('node-a', `127.0.0.1:${port}`);
  const b = new FakeAgent('node-b', `127.0.0.1:${port}`);
  t.teardown(() => a.source.stop());
  t.teardown(() => b.source.stop());
  await Promise.all([a.start(), b.start()]);
  return { a, b };
}

t.test('list/watch feeds the agents: per-node views and deltas', async (t) => {
  const { api, client } = await standIn(t);
  const { c, port } = await controllerOver(t, client);
  const { a, b } = await agents(t, port);
  t.same(a.workloadNames(), ['legacy/api-1', 'shop/web-1']);
  t.same(b.workloadNames(), ['legacy/api-2', 'shop/web-2']);
  t.equal(api.counts.lists, 12, 'one list per kind (ReferenceGrant included)');

  // kubectl label namespace legacy skein.io/mesh=enabled (a merge patch through the API).
  await client.request('PATCH', '/api/v1/namespaces/legacy', { metadata: { labels: { 'skein.io/mesh': 'enabled' } } }, 'application/merge-patch+json');
  await until('node-a meshed api-1', () => a.snapshot().workloads.find((w) => w.name === 'api-1')?.meshEnabled === true);
  t.same(a.last()!.updated.sort(), ['service|legacy/api', 'workload|uid-legacy-api-1']);
  await until('node-b meshed api-2', () => b.snapshot().workloads.find((w) => w.name === 'api-2')?.meshEnabled === true);
  t.same(b.last()!.updated.sort(), ['service|legacy/api', 'workload|uid-legacy-api-2']);

  // A new pod on node-b: node-a hears nothing.
  const aCount = a.responses.length;
  await client.request('POST', '/api/v1/namespaces/shop/pods', pod('shop', 'web-3', 'node-b', '10.244.2.11', { app: 'web' }, 'web'));
  await until('node-b has web-3', () => b.workloadNames().includes('shop/web-3'));
  t.same(b.last()!.updated, ['workload|uid-shop-web-3']);

  // Scale: the slice gains web-3 (PUT with the current resourceVersion, as controllers do).
  const cur = api.get('discovery.k8s.io/v1', 'EndpointSlice', 'shop', 'web-1')!;
  const next = slice('shop', 'web', [
    { ip: '10.244.1.10', node: 'node-a', pod: 'web-1' },
    { ip: '10.244.2.10', node: 'node-b', pod: 'web-2' },
    { ip: '10.244.2.11', node: 'node-b', pod: 'web-3' },
  ]);
  (next.metadata as Obj).resourceVersion = (cur.metadata as Obj).resourceVersion;
  await client.request('PUT', '/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices/web-1', next);
  await until('node-a sees 3 endpoints', () => a.store.service('shop', 'web')?.endpoints.length === 3);
  t.equal(a.responses.length, aCount + 1, 'node-a got exactly one response since the pod: the service');
  t.same(a.last()!.updated, ['service|shop/web']);

  // Delete a pod.
  await client.request('DELETE', '/api/v1/namespaces/legacy/pods/api-1');
  await until('node-a lost api-1', () => !a.workloadNames().includes('legacy/api-1'));
  t.same(a.last()!.removed, ['workload|uid-legacy-api-1']);
  await until('all ACKed', () => c.status().agents.every((s) => s.ackedVersion === c.index.version));
});

t.test('watch protocol: bookmarks, dropped watches, 410 Gone -> relist, failing watches', async (t) => {
  const { api, client } = await standIn(t, 40);
  const { port, source } = await controllerOver(t, client);
  const { a } = await agents(t, port);
  const podInformer = source.informers.find((i) => i.origin === 'kube:pods')!;

  await until('bookmarks received', () => podInformer.stats.bookmarks >= 2);
  t.ok(Number(podInformer.stats.resourceVersion) > 0, `bookmark resourceVersion ${podInformer.stats.resourceVersion}`);

  // Dropped watches: the informer resumes from its resourceVersion without relisting.
  const lists = podInformer.stats.lists;
  const watches = podInformer.stats.watches;
  api.dropWatches();
  await client.request('POST', '/api/v1/namespaces/shop/pods', pod('shop', 'web-5', 'node-a', '10.244.1.15', { app: 'web' }, 'web'));
  await until('change after a drop arrives', () => a.workloadNames().includes('shop/web-5'));
  t.equal(podInformer.stats.lists, lists, 'no relist after a drop');
  t.ok(podInformer.stats.watches > watches, 'rewatched');

  // Compaction while the watch is down: the resume gets 410 -> relist; the gap's change arrives.
  api.failNextWatches(1_000_000); // hold the informer off while history moves on and is compacted
  api.dropWatches();
  api.apply(pod('shop', 'web-6', 'node-a', '10.244.1.16', { app: 'web' }, 'web'));
  api.compact();
  api.failNextWatches(0);
  await until('change made during the gap arrives via relist', () => a.workloadNames().includes('shop/web-6'));
  t.ok(podInformer.stats.gones >= 1, `410 seen (${podInformer.stats.gones})`);
  t.ok(podInformer.stats.lists > lists, 'relisted');
  t.ok(api.counts.gones >= 1);

  // Watches failing with 500: backoff, then recovery.
  api.failNextWatches(4);
  api.dropWatches();
  api.apply(pod('shop', 'web-7', 'node-a', '10.244.1.17', { app: 'web' }, 'web'));
  await until('recovered after failing watches', () => a.workloadNames().includes('shop/web-7'));
  t.ok(source.informers.reduce((s, i) => s + i.stats.failures, 0) >= 1, 'failures counted');
});

t.test('refusals become Events and status conditions', async (t) => {
  const { api, client } = await standIn(t);
  const { c, port } = await controllerOver(t, client);
  const reporter = new StatusReporter(c.index, c.store, new KubeStatusWriter(client));
  reporter.start();
  t.teardown(() => reporter.stop());
  const { a } = await agents(t, port);

  const bad = pod('shop', 'broken', 'node-a', '10.244.1.99', { app: 'web' });
  (bad.status as Obj).podIP = 'not-an-ip';
  api.apply(bad);
  const policy = {
    apiVersion: 'security.skein.io/v1alpha1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'typo', namespace: 'shop', generation: 1 },
    spec: { selector: { matchLabels: { app: 'web' } }, actoin: 'DENY' },
  };
  api.apply(policy);
  // A good pod created after keeps flowing.
  api.apply(pod('shop', 'web-8', 'node-a', '10.244.1.18', { app: 'web' }, 'web'));
  await until('good pod flows', () => a.workloadNames().includes('shop/web-8'));
  await until('refusals reported', () => c.status().refusals.length === 2);
  await until('status written', () => reporter.writes >= 2);
  await reporter.idle();

  const events = api.list('v1', 'Event');
  t.equal(events.length, 1, 'one Event for the Pod');
  t.match(events[0], { type: 'Warning', reason: 'SkeinRefused', involvedObject: { kind: 'Pod', name: 'broken' }, message: /status.podIP: not an IP/ });
  const stored = api.get('security.skein.io/v1alpha1', 'AuthorizationPolicy', 'shop', 'typo')!;
  t.match(stored.status, { conditions: [{ type: 'Accepted', status: 'False', reason: 'Invalid', message: 'spec.actoin: unknown field', observedGeneration: 1 }] });

  // Fix the policy: Accepted=True. (The status write is a change the watch sees; it must not loop.)
  api.apply({ ...policy, spec: { selector: { matchLabels: { app: 'web' } }, action: 'DENY' } });
  await until('policy accepted', () => (api.get('security.skein.io/v1alpha1', 'AuthorizationPolicy', 'shop', 'typo')?.status as Obj | undefined)?.conditions !== undefined && JSON.stringify(api.get('security.skein.io/v1alpha1', 'AuthorizationPolicy', 'shop', 'typo')!.status).includes('"True"'));
  await until('node-a has the policy', () => a.snapshot().authorizationPolicies.some((p) => p.name === 'typo'));
  await reporter.idle(); // the write the API server already holds is counted once its response is in
  const writes = reporter.writes;
  await new Promise((r) => setTimeout(r, 200));
  t.equal(reporter.writes, writes, 'no status write loop');

  // Enforced follows the agents' ACKs (the controller calls this every 2 s).
  const conditionsOf = () => ((api.get('security.skein.io/v1alpha1', 'AuthorizationPolicy', 'shop', 'typo')?.status as Obj | undefined)?.conditions ?? []) as Obj[];
  await until('ACKed by node-a', () => c.configServer.policyStatus().find((p) => p.object === 'AuthorizationPolicy/shop/typo')?.enforced === true);
  reporter.reportEnforcement(c.configServer.policyStatus());
  await reporter.idle();
  t.match(
    conditionsOf().find((x) => x.type === 'Enforced'),
    { status: 'True', reason: 'Enforced', message: /node-a/ },
    'Enforced=True once every agent that must apply it ACKed it',
  );
  t.match(conditionsOf().find((x) => x.type === 'Accepted'), { status: 'True' }, 'Accepted stays alongside');
});

t.test('controller restart over the Kubernetes source: agents resync', async (t) => {
  const { api, client } = await standIn(t);
  const first = await controllerOver(t, client);
  const { a, b } = await agents(t, first.port);
  first.c.configServer.kill();
  await first.stop();
  await until('agents noticed', () => a.errors.length > 0 && b.errors.length > 0);
  api.apply(pod('shop', 'web-4', 'node-a', '10.244.1.14', { app: 'web' }, 'web'));
  t.same(a.workloadNames(), ['legacy/api-1', 'shop/web-1'], 'serving the last good config meanwhile');
  await controllerOver(t, client, `127.0.0.1:${first.port}`);
  await until('node-a resynced', () => a.workloadNames().includes('shop/web-4'), 8000);
  t.ok(a.last()!.full);
  await until('node-b resynced', () => b.responses.filter((r) => r.full).length === 2, 8000);
});
