import t from 'tap';
import { canonicalIp, formatAuthority, ipFamilyOf } from '../../../src/config/address.js';
import type { MeshSnapshot, Service, Workload } from '../../../src/config/model.js';
import { ConfigStore } from '../../../src/config/store.js';

t.test('one canonical text form per address', async (t) => {
  t.equal(canonicalIp('fd00:0:0:0:0:0:0:5'), 'fd00::5', 'uncompressed IPv6 is compressed');
  t.equal(canonicalIp('FD00:0000::0005'), 'fd00::5', 'upper case and leading zeros');
  t.equal(canonicalIp('fd00::5'), 'fd00::5');
  t.equal(canonicalIp('::ffff:10.0.0.1'), '10.0.0.1', 'IPv4-mapped, as a dual-stack socket reports it');
  t.equal(canonicalIp('0:0:0:0:0:ffff:a00:1'), '10.0.0.1', 'IPv4-mapped, uncompressed and in hex');
  t.equal(canonicalIp('10.0.0.1'), '10.0.0.1');
  t.equal(canonicalIp('::1'), '::1');
  t.equal(canonicalIp('nope'), undefined);
  t.equal(canonicalIp('10.0.0.256'), undefined);
  t.equal(ipFamilyOf('::ffff:1.2.3.4'), 4);
  t.equal(ipFamilyOf('fd00::1'), 6);
  t.equal(ipFamilyOf('x'), undefined);
  t.equal(formatAuthority('fd00::5', 8080), '[fd00::5]:8080');
  t.equal(formatAuthority('10.0.0.5', 80), '10.0.0.5:80');
});

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
