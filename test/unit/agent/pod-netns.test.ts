// The agent's view of pods' namespaces follows the node: a pod restarted (new sandbox
// process, new namespace) is found again, an unchanged pod keeps its answer, and what the pod
// object says about its netns is never used.
import t from 'tap';
import { PodNetnsDiscovery } from '../../../src/capture/pod-netns-discovery.js';
import { KubeletPodNetnsLocator } from '../../../src/agent/pod-netns.js';
import type { Workload } from '../../../src/config/model.js';
import { silentLogger } from '../../../src/telemetry/log.js';
import { APP, node, runningPod, SANDBOX, UID, U_ } from '../capture/fake-node-fs.js';

const DIR = `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${U_}.slice`;

function workload(extra: Partial<Workload> = {}): Workload {
  return {
    uid: UID,
    namespace: 'shop',
    name: 'client-0',
    serviceAccount: 'client',
    node: 'node-a',
    ips: ['10.244.1.10'],
    labels: {},
    annotations: {},
    identity: 'spiffe://cluster.local/ns/shop/sa/client',
    meshEnabled: true,
    peerAuthentication: 'STRICT',
    excludeOutboundPorts: [],
    excludeInboundPorts: [],
    ready: true,
    ...extra,
  } as Workload;
}

t.test('found once, kept while valid, found again after a restart', async (t) => {
  const n = node(t);
  runningPod(n, DIR, { sandbox: `cri-containerd-${SANDBOX}.scope`, app: `cri-containerd-${APP}.scope` });
  const locator = new KubeletPodNetnsLocator(new PodNetnsDiscovery({ cgroupRoot: n.cgroup, procRoot: n.proc }), silentLogger());
  const first = locator.locate(workload());
  t.equal(first, `${n.proc}/4190/ns/net`);
  t.equal(locator.locate(workload()), first, 'unchanged pod: same answer');

  // The pod restarts: its old sandbox is gone; a new one (new PID, new namespace) holds the IP.
  n.cg(`${DIR}/cri-containerd-${SANDBOX}.scope`, []);
  n.cg(`${DIR}/cri-containerd-${APP}.scope`, []);
  n.netns('pod2', ['10.244.1.10']);
  n.process(5300, 'pod2', 'pause');
  n.cg(`${DIR}/cri-containerd-${'b'.repeat(64)}.scope`, [5300]);
  t.equal(locator.locate(workload()), `${n.proc}/5300/ns/net`, 'the new sandbox');
});

t.test("a pod's own netnsPath and lab annotations are not used", async (t) => {
  const n = node(t);
  runningPod(n, DIR, { sandbox: `cri-containerd-${SANDBOX}.scope`, app: `cri-containerd-${APP}.scope` });
  const locator = new KubeletPodNetnsLocator(new PodNetnsDiscovery({ cgroupRoot: n.cgroup, procRoot: n.proc }), silentLogger());
  const forged = workload({ netnsPath: '/var/run/netns/other', annotations: { 'lab.skein.io/netns': '/var/run/netns/other' } });
  t.equal(locator.locate(forged), `${n.proc}/4190/ns/net`);
});

t.test('nothing to trust: a stable code, and no stale answer afterwards', async (t) => {
  const n = node(t);
  runningPod(n, DIR, { sandbox: `cri-containerd-${SANDBOX}.scope`, app: `cri-containerd-${APP}.scope` });
  const locator = new KubeletPodNetnsLocator(new PodNetnsDiscovery({ cgroupRoot: n.cgroup, procRoot: n.proc }), silentLogger());
  locator.locate(workload());
  // The API now gives the pod another IP than its namespace holds (e.g. a forged status).
  t.throws(() => locator.locate(workload({ ips: ['10.244.1.99'] })), { code: 'SKEIN_CAPTURE_NETNS_IP_MISMATCH' });
  t.throws(() => locator.locate(workload({ uid: '00000000-0000-4000-8000-000000000000' })), { code: 'SKEIN_CAPTURE_POD_CGROUP_NOT_FOUND' });
  t.equal(locator.locate(workload()), `${n.proc}/4190/ns/net`, 'back to the truth once the IPs match again');
});
