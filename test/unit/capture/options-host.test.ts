import t from 'tap';
import { captureError, errnoName, isIncompatiblePin } from '../../../src/capture/errors.js';
import {
  bpffsHolding,
  checkHost,
  findCgroup2Root,
  hasCap,
  missingCapabilities,
  missingKernelFeatures,
  parseCapEff,
  parseKernelRelease,
  parseMountinfo,
} from '../../../src/capture/host.js';
import { defaultAddonPath } from '../../../src/capture/native.js';
import { CAPTURE_DEFAULTS, resolveCaptureOptions, validateCapturePod } from '../../../src/capture/options.js';
import { CaptureManager } from '../../../src/capture/capture-manager.js';

const MOUNTINFO = `22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 23 0:40 / /sys/fs/bpf rw,relatime - bpf bpf rw,mode=700
51 23 0:41 / /mnt/with\\040space rw,relatime - bpf bpf rw
`;
const ALL_CAPS = 0x000001ffffffffffn;

t.test('mountinfo: cgroup2 root and bpffs', async (t) => {
  const mounts = parseMountinfo(MOUNTINFO);
  t.equal(findCgroup2Root(mounts), '/sys/fs/cgroup/unified');
  t.equal(findCgroup2Root(parseMountinfo('22 27 0:21 / /proc rw - proc proc rw\n')), undefined);
  t.equal(bpffsHolding(mounts, '/sys/fs/bpf/skein'), '/sys/fs/bpf');
  t.equal(bpffsHolding(mounts, '/sys/fs/bpf'), '/sys/fs/bpf');
  t.equal(bpffsHolding(mounts, '/sys/fs/bpfx/skein'), undefined, 'prefix is not containment');
  t.equal(bpffsHolding(mounts, '/mnt/with space/x'), '/mnt/with space', 'octal escapes decoded');
});

t.test('capabilities', async (t) => {
  t.equal(parseCapEff('Name:\tnode\nCapEff:\t000001ffffffffff\n'), ALL_CAPS);
  t.equal(parseCapEff('Name: x\n'), 0n);
  t.ok(hasCap(ALL_CAPS, 39));
  t.same(missingCapabilities(ALL_CAPS), []);
  t.same(missingCapabilities(0n), ['BPF', 'NET_ADMIN', 'SYS_ADMIN']);
  t.same(missingCapabilities((1n << 39n) | (1n << 12n)), ['SYS_ADMIN'], 'CAP_BPF + NET_ADMIN without SYS_ADMIN');
});

t.test('kernel versions', async (t) => {
  t.same(parseKernelRelease('6.18.44-fc-v669'), [6, 18]);
  t.throws(() => parseKernelRelease('weird'), { code: 'SKEIN_CAPTURE_KERNEL_UNKNOWN' });
  t.same(missingKernelFeatures([6, 1]), []);
  t.same(missingKernelFeatures([5, 17]), []);
  t.equal(missingKernelFeatures([5, 10]).length, 2);
  t.equal(missingKernelFeatures([4, 19]).length, 4);
});

t.test('checkHost reports the first blocker with a stable code', async (t) => {
  const facts = { mounts: parseMountinfo(MOUNTINFO), capEff: ALL_CAPS, kernelRelease: '6.18.0' };
  t.same(checkHost(facts, '/sys/fs/bpf/skein'), { cgroup2Root: '/sys/fs/cgroup/unified', bpffs: '/sys/fs/bpf' });
  t.same(checkHost({ ...facts, mounts: facts.mounts.filter((m) => m.fsType !== 'bpf') }, '/sys/fs/bpf/skein').bpffs, undefined);
  t.throws(() => checkHost({ ...facts, capEff: 0n }, '/sys/fs/bpf/skein'), { code: 'SKEIN_CAPTURE_CAPABILITY_MISSING' });
  t.throws(() => checkHost({ ...facts, kernelRelease: '5.4.0' }, '/sys/fs/bpf/skein'), { code: 'SKEIN_CAPTURE_KERNEL_TOO_OLD' });
  t.throws(() => checkHost({ ...facts, mounts: facts.mounts.filter((m) => m.fsType !== 'cgroup2') }, '/x'), {
    code: 'SKEIN_CAPTURE_CGROUP2_MISSING',
  });
});

t.test('CaptureManager.start fails fast on the host checks (no kernel touched)', async (t) => {
  const facts = { mounts: parseMountinfo(MOUNTINFO), capEff: 0n, kernelRelease: '6.18.0' };
  const unusable = new Proxy({}, { get: () => () => { throw new Error('native must not be called'); } });
  const m = new CaptureManager({}, { hostFacts: () => facts, native: unusable as never });
  await t.rejects(m.start(), { code: 'SKEIN_CAPTURE_CAPABILITY_MISSING' });
  const old = new CaptureManager({}, { hostFacts: () => ({ ...facts, capEff: ALL_CAPS, kernelRelease: '5.8.1' }), native: unusable as never });
  await t.rejects(old.start(), { code: 'SKEIN_CAPTURE_KERNEL_TOO_OLD' });
  const noBpffs = new CaptureManager(
    { pinRoot: '/run/skein-pins', mountBpffs: true },
    { hostFacts: () => ({ ...facts, capEff: ALL_CAPS, mounts: parseMountinfo(MOUNTINFO).filter((x) => x.fsType !== 'bpf') }), native: unusable as never },
  );
  await t.rejects(noBpffs.start(), { code: 'SKEIN_CAPTURE_BPFFS_MISSING' }, 'pinRoot outside /sys/fs/bpf is not auto-mounted');
  t.throws(() => m.originalDestination({} as never), { code: 'SKEIN_CAPTURE_NO_ORIGINAL_DST' });
  await t.rejects(m.enroll({ uid: 'u', netnsPath: '/x', ips: ['10.0.0.1'], excludeInboundPorts: [], excludeOutboundPorts: [] }), {
    code: 'SKEIN_CAPTURE_NOT_STARTED',
  });
});

t.test('options: defaults and validation', async (t) => {
  const o = resolveCaptureOptions({ bpfObjectDir: '/opt/skein/bpf' });
  t.equal(o.pinRoot, '/sys/fs/bpf/skein');
  t.equal(o.outboundPort, 15001);
  t.equal(o.inboundPlaintextPort, 15006);
  t.equal(o.tunnelPort, 15008);
  t.equal(o.agentMark, CAPTURE_DEFAULTS.agentMark);
  t.equal(o.listenAddress, '::');
  t.equal(o.replaceStalePins, false);
  t.equal(o.podShare, 16_384, "a pod's share of the 65536 original-destination records: a quarter");
  t.equal(resolveCaptureOptions({ podShare: 0 }).podShare, 0, '0: no cap');
  t.ok(resolveCaptureOptions().bpfObjectDir.endsWith('/build/bpf/'));
  const bad = [
    { pinRoot: 'relative' },
    { outboundPort: 0 },
    { tunnelPort: 70000 },
    { outboundPort: 15006 },
    { agentMark: 0 },
    { agentMark: 2 ** 32 },
    { listenAddress: 'localhost' },
    { backlog: 0 },
    { cgroupPath: 'x' },
    { bpfObjectDir: 'build' },
    { podShare: -1 },
    { podShare: 1.5 },
    { podShare: 65_536 }, // as large as the map: one pod could fill it and evict the others'
  ];
  for (const b of bad) t.throws(() => resolveCaptureOptions(b), { code: 'SKEIN_CAPTURE_INVALID_OPTIONS' }, JSON.stringify(b));
});

t.test('pods: validation', async (t) => {
  const good = { uid: 'ns/p', netnsPath: '/var/run/netns/p', ips: ['10.0.0.1', 'fd00::1'], excludeOutboundPorts: [53, 53], excludeInboundPorts: [] };
  t.same(validateCapturePod(good).excludeOutboundPorts, [53], 'deduplicated');
  t.same(validateCapturePod({ uid: 'a', netnsPath: '/n', ips: ['10.0.0.1'] }).excludeInboundPorts, [], 'exclusions default to none');
  const bad = [
    { ...good, uid: '' },
    { ...good, uid: 'x'.repeat(128) },
    { ...good, netnsPath: 'rel' },
    { ...good, ips: [] },
    { ...good, ips: ['host.example'] },
    { ...good, excludeInboundPorts: [0] },
    { ...good, excludeOutboundPorts: [1.5] },
  ];
  for (const b of bad) t.throws(() => validateCapturePod(b), { code: 'SKEIN_CAPTURE_INVALID_POD' });
});

t.test('native error mapping', async (t) => {
  const native = Object.assign(new Error('setns failed: Operation not permitted (EPERM): /x'), { code: 'EPERM', errno: -1, syscall: 'setns' });
  const e = captureError('SKEIN_CAPTURE_NETNS_UNAVAILABLE', 'cannot enter', native, { uid: 'u' });
  t.equal(e.code, 'SKEIN_CAPTURE_NETNS_UNAVAILABLE');
  t.same(e.details, { uid: 'u', nativeCode: 'EPERM', errno: -1, syscall: 'setns' });
  t.equal(e.cause, native);
  t.match(e.message, /cannot enter: setns failed/);
  t.equal(errnoName(native), 'EPERM');
  t.equal(errnoName('x'), undefined);
  t.same(captureError('C', 'm', 'plain').details, { nativeCode: undefined, errno: undefined, syscall: undefined });
  t.ok(isIncompatiblePin(new Error("libbpf: couldn't reuse pinned map at '/x'")));
  t.notOk(isIncompatiblePin(new Error('verifier says no')));
  t.equal(defaultAddonPath({ SKEIN_NATIVE_ADDON: '/opt/x.node' }), '/opt/x.node');
  t.ok(defaultAddonPath({}).endsWith('/build/native/Release/skein_native.node'));
});
