// Pod -> netns discovery over kubelet cgroup layouts as real nodes have them (systemd and
// cgroupfs drivers, containerd and CRI-O scope names, every QoS class), in a fake cgroupfs
// and /proc made in a temp dir (fake-node-fs.ts).
import { join } from 'node:path';
import t from 'tap';
import { hasCode } from '../../../src/errors.js';
import { containerOf, localAddressesOf, podCgroupCandidates } from '../../../src/capture/pod-netns-discovery.js';
import { APP, node, runningPod, SANDBOX, UID, U_ } from './fake-node-fs.js';

t.test('candidate paths: both drivers, every QoS class, a kubelet --cgroup-root', async (t) => {
  const rels = podCgroupCandidates(UID).map((c) => `${c.driver} ${c.qos} ${c.rel}`);
  t.same(rels, [
    `systemd guaranteed kubepods.slice/kubepods-pod${U_}.slice`,
    `systemd burstable kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${U_}.slice`,
    `systemd besteffort kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${U_}.slice`,
    `cgroupfs guaranteed kubepods/pod${UID}`,
    `cgroupfs burstable kubepods/burstable/pod${UID}`,
    `cgroupfs besteffort kubepods/besteffort/pod${UID}`,
  ]);
  // kind and others run the kubelet with --cgroup-root=/kubelet: the slice names nest.
  t.same(
    podCgroupCandidates(UID, ['kubelet.slice/kubelet-kubepods.slice']).map((c) => c.rel)[1],
    `kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod${U_}.slice`,
  );
});

t.test('container cgroup names', async (t) => {
  t.same(containerOf(`cri-containerd-${APP}.scope`), { runtime: 'containerd', id: APP });
  t.same(containerOf(`crio-${APP}.scope`), { runtime: 'crio', id: APP });
  t.same(containerOf(`docker-${APP}.scope`), { runtime: 'docker', id: APP });
  t.same(containerOf(APP), { runtime: 'unknown', id: APP }, 'cgroupfs driver: the bare id');
  t.equal(containerOf(`crio-conmon-${APP}.scope`), null, "CRI-O's conmon lives in the host netns: skipped");
});

const layouts: { name: string; dir: string; sandbox: string; app: string; driver: string; qos: string; runtime: string }[] = [
  {
    name: 'systemd driver, containerd, Burstable',
    dir: `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${U_}.slice`,
    sandbox: `cri-containerd-${SANDBOX}.scope`,
    app: `cri-containerd-${APP}.scope`,
    driver: 'systemd',
    qos: 'burstable',
    runtime: 'containerd',
  },
  {
    name: 'systemd driver, containerd, Guaranteed',
    dir: `kubepods.slice/kubepods-pod${U_}.slice`,
    sandbox: `cri-containerd-${SANDBOX}.scope`,
    app: `cri-containerd-${APP}.scope`,
    driver: 'systemd',
    qos: 'guaranteed',
    runtime: 'containerd',
  },
  {
    name: 'systemd driver, CRI-O, BestEffort',
    dir: `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${U_}.slice`,
    sandbox: `crio-${SANDBOX}.scope`,
    app: `crio-${APP}.scope`,
    driver: 'systemd',
    qos: 'besteffort',
    runtime: 'crio',
  },
  {
    name: 'cgroupfs driver, Burstable',
    dir: `kubepods/burstable/pod${UID}`,
    sandbox: SANDBOX,
    app: APP,
    driver: 'cgroupfs',
    qos: 'burstable',
    runtime: 'unknown',
  },
  {
    name: 'cgroupfs driver, Guaranteed',
    dir: `kubepods/pod${UID}`,
    sandbox: SANDBOX,
    app: APP,
    driver: 'cgroupfs',
    qos: 'guaranteed',
    runtime: 'unknown',
  },
  {
    name: 'cgroupfs driver, BestEffort',
    dir: `kubepods/besteffort/pod${UID}`,
    sandbox: SANDBOX,
    app: APP,
    driver: 'cgroupfs',
    qos: 'besteffort',
    runtime: 'unknown',
  },
];

for (const l of layouts) {
  t.test(`finds the netns: ${l.name}`, async (t) => {
    const n = node(t);
    runningPod(n, l.dir, l);
    const found = n.discovery().discover({ uid: UID, ips: ['10.244.1.10'] });
    t.equal(found.cgroup.path, join(n.cgroup, l.dir));
    t.equal(found.cgroup.driver, l.driver);
    t.equal(found.cgroup.qos, l.qos);
    t.equal(found.pid, 4190, 'the sandbox (pause) process, which outlives app restarts');
    t.equal(found.runtime, l.runtime);
    t.equal(found.containerId, SANDBOX, 'the sandbox container');
    t.equal(found.netnsPath, join(n.proc, '4190', 'ns', 'net'));
    t.ok(n.discovery().stillValid(found));
  });
}

t.test('CRI-O: a conmon scope (host netns) beside the containers does not get in the way', async (t) => {
  const n = node(t);
  const dir = `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${U_}.slice`;
  n.process(3900, 'host', 'conmon');
  n.cg(`${dir}/crio-conmon-${APP}.scope`, [3900]);
  runningPod(n, dir, { sandbox: `crio-${SANDBOX}.scope`, app: `crio-${APP}.scope` });
  t.equal(n.discovery().discover({ uid: UID, ips: ['10.244.1.10'] }).pid, 4190);
});

t.test('no pause process: the lowest PID of the namespace', async (t) => {
  const n = node(t);
  const dir = `kubepods/burstable/pod${UID}`;
  n.netns('pod', ['10.244.1.10']);
  n.process(5200, 'pod', 'python3');
  n.process(5100, 'pod', 'sh');
  n.cg(dir);
  n.cg(`${dir}/${APP}`, [5200, 5100]);
  t.equal(n.discovery().discover({ uid: UID, ips: ['10.244.1.10'] }).pid, 5100);
});

t.test('processes in nested cgroups below a container (systemd in a container) are found', async (t) => {
  const n = node(t);
  const dir = `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${U_}.slice`;
  n.netns('pod', ['10.244.1.10']);
  n.process(6100, 'pod', 'systemd');
  n.cg(dir);
  n.cg(`${dir}/cri-containerd-${APP}.scope`);
  n.cg(`${dir}/cri-containerd-${APP}.scope/init.scope`, [6100]);
  t.equal(n.discovery().discover({ uid: UID, ips: ['10.244.1.10'] }).pid, 6100);
});

t.test('dual-stack: every IP of the pod must be in the namespace', async (t) => {
  const n = node(t);
  const dir = `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${U_}.slice`;
  runningPod(n, dir, { sandbox: `cri-containerd-${SANDBOX}.scope`, app: `cri-containerd-${APP}.scope` }, ['10.244.1.10', 'fd00:10:244:1::a']);
  const d = n.discovery();
  t.equal(d.discover({ uid: UID, ips: ['10.244.1.10', 'fd00:10:244:1:0:0:0:a'] }).pid, 4190, 'IPv6 compared in canonical form');
  t.throws(() => d.discover({ uid: UID, ips: ['10.244.1.10', 'fd00:10:244:1::b'] }), { code: 'SKEIN_CAPTURE_NETNS_IP_MISMATCH' });
});

t.test('a namespace without the pod IPs is refused (a forged or stale answer)', async (t) => {
  const n = node(t);
  const dir = `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${U_}.slice`;
  runningPod(n, dir, { sandbox: `cri-containerd-${SANDBOX}.scope`, app: `cri-containerd-${APP}.scope` }, ['10.244.1.99']);
  const err = (() => {
    try {
      n.discovery().discover({ uid: UID, ips: ['10.244.1.10'] });
    } catch (e) {
      return e as { code: string; details: { seen: Record<string, string[]> } };
    }
    return undefined;
  })();
  t.equal(err?.code, 'SKEIN_CAPTURE_NETNS_IP_MISMATCH');
  t.ok(Object.values(err?.details.seen ?? {}).some((ips) => ips.includes('10.244.1.99')), 'the error says what the namespace holds');
});

t.test("a host-network pod (the agent's own namespace) is refused even though it holds the IP", async (t) => {
  const n = node(t);
  const dir = `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${U_}.slice`;
  n.process(7100, 'host', 'kube-proxy');
  n.cg(dir);
  n.cg(`${dir}/cri-containerd-${APP}.scope`, [7100]);
  t.throws(() => n.discovery().discover({ uid: UID, ips: ['172.20.0.2'] }), { code: 'SKEIN_CAPTURE_HOST_NETWORK_POD' });
});

t.test('no cgroup yet, or no process in it: stable codes, no guess', async (t) => {
  const n = node(t);
  const d = n.discovery();
  t.throws(() => d.discover({ uid: UID, ips: ['10.244.1.10'] }), { code: 'SKEIN_CAPTURE_POD_CGROUP_NOT_FOUND' });
  t.equal(d.findPodCgroup(UID), undefined);
  const dir = `kubepods/besteffort/pod${UID}`;
  n.cg(dir);
  n.cg(`${dir}/${APP}`, []);
  t.throws(() => d.discover({ uid: UID, ips: ['10.244.1.10'] }), { code: 'SKEIN_CAPTURE_POD_NO_PROCESS' });
  n.cg(`${dir}/${APP}`, [9999]); // listed, but gone from /proc
  t.throws(() => d.discover({ uid: UID, ips: ['10.244.1.10'] }), { code: 'SKEIN_CAPTURE_POD_NO_PROCESS' });
  t.throws(() => d.discover({ uid: UID, ips: [] }), { code: 'SKEIN_CAPTURE_INVALID_POD' });
});

t.test('a UID that is not a UUID never becomes a path', async (t) => {
  const n = node(t);
  for (const uid of ['../../etc', `${UID}/..`, '', 'pod']) {
    t.throws(() => n.discovery().findPodCgroup(uid), { code: 'SKEIN_CAPTURE_INVALID_POD' }, JSON.stringify(uid));
  }
});

t.test('a pod in two QoS classes at once is not guessed at', async (t) => {
  const n = node(t);
  runningPod(n, `kubepods/burstable/pod${UID}`, { sandbox: SANDBOX, app: APP });
  n.cg(`kubepods/besteffort/pod${UID}`);
  t.throws(() => n.discovery().discover({ uid: UID, ips: ['10.244.1.10'] }), { code: 'SKEIN_CAPTURE_POD_CGROUP_AMBIGUOUS' });
});

t.test('a kubelet with --cgroup-root: found only where it is told to look', async (t) => {
  const n = node(t);
  const dir = `kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod${U_}.slice`;
  runningPod(n, dir, { sandbox: `cri-containerd-${SANDBOX}.scope`, app: `cri-containerd-${APP}.scope` });
  t.throws(() => n.discovery().discover({ uid: UID, ips: ['10.244.1.10'] }), { code: 'SKEIN_CAPTURE_POD_CGROUP_NOT_FOUND' });
  t.equal(n.discovery(['kubelet.slice/kubelet-kubepods.slice']).discover({ uid: UID, ips: ['10.244.1.10'] }).cgroup.qos, 'besteffort');
});

t.test('stillValid: false once the process left the pod or its namespace changed (restart, PID reuse)', async (t) => {
  const n = node(t);
  const dir = `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${U_}.slice`;
  runningPod(n, dir, { sandbox: `cri-containerd-${SANDBOX}.scope`, app: `cri-containerd-${APP}.scope` });
  const d = n.discovery();
  const found = d.discover({ uid: UID, ips: ['10.244.1.10'] });
  t.ok(d.stillValid(found));
  n.netns('other', ['10.244.1.77']);
  n.process(4190, 'other', 'pause'); // PID 4190 reused by a process of another pod's netns
  t.notOk(d.stillValid(found), 'another namespace behind the same PID');
  n.process(4190, 'pod', 'pause');
  t.ok(d.stillValid(found));
  n.cg(`${dir}/cri-containerd-${SANDBOX}.scope`, []);
  t.notOk(d.stillValid(found), 'the PID left the pod');
});

t.test("localAddressesOf reads this process's real namespace (kernel's /proc format)", async (t) => {
  const local = localAddressesOf('/proc', process.pid);
  t.ok(local.has('127.0.0.1'), [...local].join(', '));
  t.notOk(local.has('127.0.0.0'), 'the 127/8 route is not an address');
  t.notOk(local.has('0.0.0.0'));
});

t.test('hasCode works on discovery errors (what the agent matches on)', async (t) => {
  const n = node(t);
  try {
    n.discovery().discover({ uid: UID, ips: ['10.244.1.10'] });
    t.fail('should throw');
  } catch (err) {
    t.ok(hasCode(err, 'SKEIN_CAPTURE_POD_CGROUP_NOT_FOUND'));
  }
});
