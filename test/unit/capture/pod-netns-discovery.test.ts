// Pod -> netns discovery over kubelet cgroup layouts as real nodes have them (systemd and
// cgroupfs drivers, containerd and CRI-O scope names, every QoS class), in a fake cgroupfs
// and /proc made in a temp dir. A namespace is a file; every /proc/PID/ns/net of a process
// in it is a hard link to that file, so they share an inode as real ones do.
import { linkSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import t, { type Test } from 'tap';
import { hasCode } from '../../../src/errors.js';
import { containerOf, localAddressesOf, PodNetnsDiscovery, podCgroupCandidates } from '../../../src/capture/pod-netns-discovery.js';

const UID = '2f6b5a4e-8c1d-4e0b-9a55-0d6c3f7e1a2b';
const U_ = UID.replaceAll('-', '_');
const SANDBOX = 'a3c1f0b2d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5061728394a5b6c7d8e9';
const APP = '7e9d2c4b6a8f0e1d3c5b7a9f8e6d4c2b0a1f3e5d7c9b8a6f4e2d0c1b3a5f7e9d';

function fibTrie(ips: string[]): string {
  // The shape of /proc/net/fib_trie: a leaf line per address, its route type under it.
  const leaves = ['127.0.0.1', ...ips.filter((ip) => ip.includes('.'))]
    .map((ip) => `     |-- ${ip}\n        /32 host LOCAL\n`)
    .join('');
  const table = `  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.0\n              /8 host LOCAL\n${leaves}     |-- 169.254.1.1\n        /32 link UNICAST\n`;
  return `Main:\n${table}Local:\n${table}`;
}

function ifInet6(ips: string[]): string {
  const hex = (ip: string) => {
    const [head = '', tail = ''] = ip.split('::');
    const h = head ? head.split(':') : [];
    const r = tail ? tail.split(':') : [];
    const groups = [...h, ...new Array(8 - h.length - r.length).fill('0'), ...r];
    return groups.map((g) => g.padStart(4, '0')).join('');
  };
  return ['::1', ...ips.filter((ip) => ip.includes(':'))].map((ip, i) => `${hex(ip)} ${String(i + 1).padStart(2, '0')} 80 10 80       eth0\n`).join('');
}

/** A node's /sys/fs/cgroup and /proc, in a temp dir. */
class FakeNode {
  readonly root = mkdtempSync(join(tmpdir(), 'skein-netns-'));
  readonly cgroup = join(this.root, 'sys/fs/cgroup');
  readonly proc = join(this.root, 'proc');
  private readonly netnsIps = new Map<string, string[]>();

  constructor() {
    mkdirSync(this.cgroup, { recursive: true });
    this.netns('host', ['172.20.0.2']);
    this.process('self', 'host', 'skein-agent');
  }

  netns(name: string, ips: string[]): void {
    const file = join(this.root, 'nsfs', name);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, name);
    this.netnsIps.set(name, ips);
  }

  process(pid: number | 'self', netns: string, comm: string): void {
    const dir = join(this.proc, String(pid));
    mkdirSync(join(dir, 'ns'), { recursive: true });
    mkdirSync(join(dir, 'net'), { recursive: true });
    rmSync(join(dir, 'ns', 'net'), { force: true });
    linkSync(join(this.root, 'nsfs', netns), join(dir, 'ns', 'net'));
    const ips = this.netnsIps.get(netns) ?? [];
    writeFileSync(join(dir, 'net', 'fib_trie'), fibTrie(ips));
    writeFileSync(join(dir, 'net', 'if_inet6'), ifInet6(ips));
    writeFileSync(join(dir, 'comm'), `${comm}\n`);
  }

  /** A cgroup directory (relative to the mount) holding these PIDs. */
  cg(rel: string, pids: number[] = []): string {
    const dir = join(this.cgroup, rel);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'cgroup.procs'), pids.map((p) => `${p}\n`).join(''));
    return dir;
  }

  discovery(kubeletRoots?: string[]): PodNetnsDiscovery {
    return new PodNetnsDiscovery({ cgroupRoot: this.cgroup, procRoot: this.proc, ...(kubeletRoots ? { kubeletRoots } : {}) });
  }

  remove(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

function node(t: Test): FakeNode {
  const n = new FakeNode();
  t.teardown(() => n.remove());
  return n;
}

/** A pod of one sandbox (pause) and one app container, both in netns `pod`. PIDs wrap: the sandbox's is the higher here. */
function runningPod(n: FakeNode, podDir: string, names: { sandbox: string; app: string }, ips = ['10.244.1.10']): void {
  n.netns('pod', ips);
  n.process(4190, 'pod', 'pause');
  n.process(4101, 'pod', 'node');
  n.cg(podDir);
  n.cg(`${podDir}/${names.sandbox}`, [4190]);
  n.cg(`${podDir}/${names.app}`, [4101]);
}

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
