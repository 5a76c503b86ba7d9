import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { MeshSnapshot } from '../../../src/config/model.js';
import { ConfigStore } from '../../../src/config/store.js';
import { KubeFolderSource, parseYamlObjects } from '../../../src/config/kube/folder-source.js';
import { normaliseAppProtocol } from '../../../src/config/kube/translate.js';
import type { SkeinError } from '../../../src/errors.js';

const FIXTURES = new URL('./fixtures/cluster/', import.meta.url).pathname;

async function copyFixtures(t: { teardown: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `skein-cfg-${process.pid}-`));
  await cp(FIXTURES, dir, { recursive: true });
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

t.test('a realistic folder translates into the mesh model', async (t) => {
  const src = new KubeFolderSource({ dir: FIXTURES, watch: false, trustDomain: 'lab.skein', clusterDomain: 'cluster.lab' });
  const s = await src.load();
  t.equal(s.trustDomain, 'lab.skein');
  t.same(
    s.nodes.map((n) => [n.name, n.address, n.podCIDRs, n.zone]),
    [
      ['node-a', '192.168.50.10', ['10.244.0.0/24'], 'zone-1'],
      ['node-b', '192.168.50.11', ['10.244.1.0/24', 'fd00:10:244:1::/64'], undefined],
    ],
    'zone from the topology.kubernetes.io/zone label; absent without it',
  );
  const byName = new Map(s.workloads.map((w) => [`${w.namespace}/${w.name}`, w]));
  t.same([...byName.keys()].sort(), ['apps/client-0', 'apps/web-0', 'apps/web-1', 'legacy/db-0', 'shop/cart-0', 'shop/catalog-0'], 'pending, finished and hostNetwork pods left out');
  const web0 = byName.get('apps/web-0');
  t.match(web0, {
    uid: '1f0e6c2a-0000-4000-8000-000000000001',
    node: 'node-a',
    serviceAccount: 'web',
    ips: ['10.244.0.5', 'fd00:10:244::5'],
    identity: 'spiffe://lab.skein/ns/apps/sa/web',
    meshEnabled: true,
    peerAuthentication: 'STRICT',
    excludeOutboundPorts: [5432, 6379],
    excludeInboundPorts: [9090],
    ready: true,
  });
  // The fixture's pod carries lab.skein.io/netns and /cgroup annotations: a pod author's words,
  // which must never tell the privileged agent where the pod's namespace is.
  t.equal(web0?.netnsPath, undefined, 'no netns from an annotation');
  t.notOk('cgroupPath' in (web0 ?? {}), 'no cgroup from an annotation');
  t.equal(byName.get('apps/web-1')?.ready, false, 'Ready=False condition');
  t.equal(byName.get('apps/client-0')?.meshEnabled, false, 'pod label opts out');
  t.equal(byName.get('apps/client-0')?.identity, 'spiffe://lab.skein/ns/apps/sa/default', 'default service account');
  t.equal(byName.get('legacy/db-0')?.meshEnabled, false, 'namespace not enrolled');
  t.equal(byName.get('shop/catalog-0')?.peerAuthentication, 'PERMISSIVE', 'namespace annotation');
  t.equal(byName.get('shop/cart-0')?.peerAuthentication, 'STRICT', 'pod annotation overrides namespace');

  const svc = new Map(s.services.map((x) => [`${x.namespace}/${x.name}`, x]));
  t.same([...svc.keys()], ['apps/headless', 'apps/web', 'legacy/db', 'shop/catalog'], 'ExternalName skipped');
  const web = svc.get('apps/web');
  t.equal(web?.hostname, 'web.apps.svc.cluster.lab');
  t.same(web?.vips, ['10.96.0.10', 'fd00:10:96::a']);
  t.equal(web?.loadBalancer, 'LEAST_REQUEST');
  t.same(web?.ports, [
    { name: 'http', port: 80, targetPort: 8080, appProtocol: 'http2' },
    { name: 'grpc', port: 9000, targetPort: 9000, appProtocol: 'grpc' },
    { name: 'metrics', port: 9100, targetPort: 9100 },
  ], 'UDP port dropped, named targetPort resolved, appProtocol normalised');
  t.same(
    web?.endpoints.map((e) => [e.ip, e.ready, e.node, e.identity, e.meshEnabled, e.ports.http]),
    [
      ['10.244.0.5', true, 'node-a', 'spiffe://lab.skein/ns/apps/sa/web', true, 8080],
      ['10.244.1.7', false, 'node-b', 'spiffe://lab.skein/ns/apps/sa/web', true, 8080],
    ],
    'from the EndpointSlice',
  );
  t.same(svc.get('apps/headless')?.vips, [], 'headless: no VIP');
  const catalog = svc.get('shop/catalog');
  t.same(catalog?.ports, [{ name: '', port: 8080, targetPort: 8080, appProtocol: 'http' }]);
  t.same(catalog?.endpoints.map((e) => [e.ip, e.ready, e.meshEnabled]), [['10.244.0.21', true, true]], 'endpoints from the selector without a slice');
  t.same(svc.get('legacy/db')?.endpoints.map((e) => [e.ip, e.meshEnabled, e.identity]), [['10.244.1.30', false, 'spiffe://lab.skein/ns/legacy/sa/default']]);

  const store = new ConfigStore();
  t.ok(store.apply(s).ok, 'the store accepts it');
  t.equal(store.serviceByVip('10.96.0.10', 9000)?.port.appProtocol, 'grpc');
  t.equal(store.serviceByVip('fd00:10:96::a', 80)?.service.name, 'web');
  t.equal(store.workloadByIp('::ffff:10.244.0.5')?.name, 'web-0', 'v4-mapped address');
  t.same(store.localWorkloads('node-a').map((w) => w.name).sort(), ['catalog-0', 'client-0', 'web-0']);
});

t.test('appProtocol normalisation', async (t) => {
  for (const [i, o] of [
    ['http', 'http'],
    ['HTTP', 'http'],
    ['http2', 'http2'],
    ['h2c', 'http2'],
    ['kubernetes.io/h2c', 'http2'],
    ['grpc', 'grpc'],
    ['tcp', 'tcp'],
    ['kubernetes.io/ws', undefined],
    ['mysql', undefined],
  ] as const) {
    t.equal(normaliseAppProtocol(i), o, i);
  }
});

t.test('malformed input is reported with file, field and reason', async (t) => {
  const parse = (text: string): SkeinError => {
    try {
      parseYamlObjects('bad.yaml', text);
    } catch (err) {
      return err as SkeinError;
    }
    throw new Error('no error');
  };
  const e1 = parse('apiVersion: v1\nkind: Pod\nmetadata: {name: x\n');
  t.equal(e1.code, 'SKEIN_CONFIG_PARSE');
  t.equal(e1.details?.file, 'bad.yaml');
  t.match(String(e1.details?.field), /line \d+/);
  t.ok(e1.details?.reason);

  const dir = await copyFixtures(t);
  await writeFile(
    join(dir, 'zz-broken-service.yaml'),
    'apiVersion: v1\nkind: Service\nmetadata: {name: broken, namespace: apps}\nspec:\n  clusterIP: 10.96.0.99\n  ports:\n    - {name: http, port: "eighty"}\n',
  );
  const src = new KubeFolderSource({ dir, watch: false });
  const err = await src.load().then(
    () => undefined,
    (e: SkeinError) => e,
  );
  t.equal(err?.code, 'SKEIN_CONFIG_INVALID');
  t.same(
    { file: err?.details?.file, field: err?.details?.field, object: err?.details?.object },
    { file: 'zz-broken-service.yaml', field: 'spec.ports[0].port', object: 'Service/apps/broken' },
  );
  t.match(String(err?.details?.reason), /port number/);
});

t.test('the store keeps the last good snapshot; the folder is watched', async (t) => {
  const dir = await copyFixtures(t);
  // Hidden files (editor swap files) are never read, even when they are not YAML.
  await writeFile(join(dir, '.web.yaml.swp.yaml'), 'not: yaml: [');
  const store = new ConfigStore();
  const errors: SkeinError[] = [];
  const snapshots: MeshSnapshot[] = [];
  let wake: () => void = () => {};
  const next = (): Promise<void> =>
    new Promise((r) => {
      wake = r;
    });
  const src = new KubeFolderSource({ dir, debounceMs: 50, rescanMs: 500 });
  let waiting = next();
  await src.start(
    (s) => {
      snapshots.push(s);
      const res = store.apply(s);
      if (!res.ok) errors.push(res.error);
      wake();
    },
    (e) => {
      errors.push(e);
      wake();
    },
  );
  t.teardown(() => src.stop());
  await waiting;
  t.equal(snapshots.length, 1, 'first snapshot at start');
  const firstVersion = store.snapshot()?.version;

  // A broken file: reported, last good keeps serving.
  waiting = next();
  await writeFile(join(dir, 'workloads', 'broken.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: [oops\n');
  await waiting;
  t.equal(errors.length, 1);
  t.equal(errors[0]?.code, 'SKEIN_CONFIG_PARSE');
  t.equal(errors[0]?.details?.file, join('workloads', 'broken.yaml'));
  t.equal(store.snapshot()?.version, firstVersion, 'last good snapshot still served');
  t.ok(store.serviceByVip('10.96.0.10', 80), 'indexes intact');

  // Fixed by adding a pod: picked up by the watch, with a diff.
  const diffs: string[][] = [];
  store.subscribe((d) => diffs.push(d.workloads.added.map((w) => w.name)));
  waiting = next();
  await writeFile(
    join(dir, 'workloads', 'broken.yaml'),
    'apiVersion: v1\nkind: Pod\nmetadata: {name: web-2, namespace: apps, uid: u-web-2, labels: {app: web}}\nspec: {nodeName: node-b, serviceAccountName: web}\nstatus: {phase: Running, podIP: 10.244.1.8}\n',
  );
  await waiting;
  t.equal(errors.length, 1, 'no new error');
  t.not(store.snapshot()?.version, firstVersion, 'new snapshot served');
  t.same(diffs, [['web-2']], 'subscribers see the added workload');
  t.equal(store.workloadByIp('10.244.1.8')?.name, 'web-2');

  // The periodic rescan does not re-emit unchanged content.
  const count = snapshots.length;
  await new Promise((r) => setTimeout(r, 1200));
  t.equal(snapshots.length, count, 'unchanged folder: no new snapshot');
});

t.test('store validation and diffs', async (t) => {
  const src = new KubeFolderSource({ dir: FIXTURES, watch: false });
  const good = await src.load();
  const store = new ConfigStore();
  const first = store.apply(good);
  t.ok(first.ok);
  if (first.ok) t.equal(first.diff.workloads.added.length, good.workloads.length);

  const dupVip = structuredClone(good);
  const catalog = dupVip.services.find((s) => s.name === 'catalog');
  if (catalog) {
    catalog.vips = ['10.96.0.10'];
    catalog.ports = [{ name: 'http', port: 80, targetPort: 8080 }];
  }
  dupVip.version = 'dup';
  const r = store.apply(dupVip);
  t.notOk(r.ok, 'VIP:port claimed twice refused');
  if (!r.ok) {
    t.equal(r.error.code, 'SKEIN_CONFIG_SNAPSHOT_INVALID');
    t.match(String(r.error.details?.reason), /10\.96\.0\.10:80 also claimed by apps\/web/);
  }
  t.equal(store.snapshot()?.version, good.version, 'previous snapshot still served');
  t.equal(store.lastRejection()?.code, 'SKEIN_CONFIG_SNAPSHOT_INVALID');

  const dupIp = structuredClone(good);
  dupIp.version = 'dup-ip';
  const w = dupIp.workloads[1];
  if (w) w.ips = [...(dupIp.workloads[0]?.ips ?? [])];
  t.notOk(store.apply(dupIp).ok, 'pod IP claimed twice refused');

  const changed = structuredClone(good);
  changed.version = 'changed';
  changed.workloads = changed.workloads.filter((x) => x.name !== 'db-0');
  const web0 = changed.workloads.find((x) => x.name === 'web-0');
  if (web0) web0.ready = false;
  const r2 = store.apply(changed);
  t.ok(r2.ok);
  if (r2.ok) {
    t.same(r2.diff.workloads.removed.map((x) => x.name), ['db-0']);
    t.same(r2.diff.workloads.changed.map((x) => x.name), ['web-0']);
    t.same(r2.diff.workloads.added, []);
    t.equal(r2.diff.previousVersion, good.version);
  }
  t.equal(store.lastRejection(), undefined, 'cleared by a good apply');
});

t.test("folder mode refuses policies and routes: it cannot enforce them, and ignoring one would look applied", async (t) => {
  const dir = await copyFixtures(t);
  await writeFile(
    join(dir, 'zz-policy.yaml'),
    'apiVersion: security.skein.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: apps}\nspec: {action: DENY, rules: [{}]}\n',
  );
  const err = await new KubeFolderSource({ dir, watch: false }).load().then(
    () => undefined,
    (e: SkeinError) => e,
  );
  t.equal(err?.code, 'SKEIN_CONFIG_INVALID');
  t.same({ file: err?.details?.file, field: err?.details?.field, object: err?.details?.object }, { file: 'zz-policy.yaml', field: 'kind', object: 'AuthorizationPolicy/apps/deny-all' });
  t.match(String(err?.details?.reason), /only with a controller/);
});
