import t from 'tap';
import type { MeshSnapshot, Service, Workload } from '../../../src/config/model.js';
import { ConfigStore, type SnapshotDiff } from '../../../src/config/store.js';

function workload(uid: string, ips: string[]): Workload {
  return {
    uid,
    namespace: 'shop',
    name: uid,
    serviceAccount: 'default',
    node: 'node-a',
    ips,
    labels: {},
    annotations: {},
    identity: 'spiffe://cluster.local/ns/shop/sa/default',
    meshEnabled: true,
    peerAuthentication: 'STRICT',
    excludeOutboundPorts: [],
    excludeInboundPorts: [],
    ready: true,
  };
}

t.test('ConfigStore finds an address however config and sockets write it', async (t) => {
  const echo: Service = {
    namespace: 'shop',
    name: 'echo',
    hostname: 'echo.shop.svc.cluster.local',
    vips: ['FD00:96:0:0::A'],
    ports: [{ name: 'http', port: 80, targetPort: 8080 }],
    endpoints: [{ ip: 'fd00:244:0:0:0:0:0:7', ready: true, ports: { http: 8080 }, meshEnabled: true, identity: 'spiffe://cluster.local/ns/shop/sa/default' }],
    loadBalancer: 'ROUND_ROBIN',
  };
  const snapshot: MeshSnapshot = {
    version: 'v1',
    trustDomain: 'cluster.local',
    clusterDomain: 'cluster.local',
    nodes: [],
    workloads: [workload('w-6', ['fd00:0244:0000::0006']), workload('w-4', ['10.244.0.4'])],
    services: [echo],
  };
  const store = new ConfigStore();
  const applied = store.apply(snapshot);
  t.ok(applied.ok, 'snapshot applied');
  // What a socket or an HBONE :authority reports: compressed, lowercase, IPv4 unmapped.
  t.equal(store.workloadByIp('fd00:244::6')?.uid, 'w-6', 'uncompressed IPv6 in config, compressed from the socket');
  t.equal(store.workloadByIp('::ffff:10.244.0.4')?.uid, 'w-4', 'IPv4-mapped from a dual-stack socket');
  t.equal(store.endpointByIp('fd00:244::7')?.ip, 'fd00:244:0:0:0:0:0:7');
  t.equal(store.serviceByVip('fd00:96::a', 80)?.service.name, 'echo', 'VIP written differently');
  t.equal(store.workloadByIp('fd00:244::99'), undefined);
});

function snapshotOf(version: string, workloads: Workload[]): MeshSnapshot {
  return { version, trustDomain: 'cluster.local', clusterDomain: 'cluster.local', nodes: [], workloads, services: [] };
}

t.test('apply reports what changed and tells subscribers', async (t) => {
  const store = new ConfigStore();
  const seen: SnapshotDiff[] = [];
  const unsubscribe = store.subscribe((d) => seen.push(d));
  const first = store.apply(snapshotOf('v1', [workload('a', ['10.0.0.1']), workload('b', ['10.0.0.2'])]));
  t.ok(first.ok);
  const moved = { ...workload('b', ['10.0.0.2']), labels: { app: 'b' } };
  const second = store.apply(snapshotOf('v2', [moved, workload('c', ['10.0.0.3'])]));
  if (!second.ok) throw second.error;
  t.same(second.diff.workloads.added.map((w) => w.uid), ['c']);
  t.same(second.diff.workloads.removed.map((w) => w.uid), ['a']);
  t.same(second.diff.workloads.changed.map((w) => w.uid), ['b']);
  t.equal(second.diff.previousVersion, 'v1');
  t.same(seen.map((d) => d.version), ['v1', 'v2']);
  unsubscribe();
  store.apply(snapshotOf('v3', []));
  t.equal(seen.length, 2, 'an unsubscribed listener hears nothing more');
});

t.test('a refused snapshot leaves the last good one serving', async (t) => {
  const store = new ConfigStore();
  t.ok(store.apply(snapshotOf('v1', [workload('a', ['10.0.0.1'])])).ok);
  const heard: string[] = [];
  store.subscribe((d) => heard.push(d.version));
  const refused = store.apply(snapshotOf('v2', [workload('a', ['10.0.0.1']), workload('a', ['10.0.0.9'])]));
  t.notOk(refused.ok, 'two workloads with one uid are refused');
  t.equal(store.lastRejection()?.code, 'SKEIN_CONFIG_SNAPSHOT_INVALID');
  t.equal(store.snapshot()?.version, 'v1', 'still serving v1');
  t.equal(store.workloadByIp('10.0.0.1')?.uid, 'a');
  t.equal(store.workloadByIp('10.0.0.9'), undefined, 'nothing of the refused snapshot is served');
  t.same(heard, [], 'subscribers hear only applied snapshots');
  t.ok(store.apply(snapshotOf('v3', [])).ok);
  t.equal(store.lastRejection(), undefined, 'a good apply clears the rejection');
});
