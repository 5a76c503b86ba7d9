/** CaptureManager's bookkeeping against the in-memory FakeKernel (no root, no BPF). */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { CaptureManager } from '../../../src/capture/capture-manager.js';
import type { HostFacts } from '../../../src/capture/host.js';
import { decodeEnrolled, decodeInboundPod, decodePodRecord, encodeConfig, encodePodAddr, encodeStamp, MAP, PIN_LAYOUT, u32Key, u64Key } from '../../../src/capture/maps.js';
import { CAPTURE_DEFAULTS } from '../../../src/capture/options.js';
import { FakeKernel } from './fake-kernel.js';

function setup(t: Tap.Test) {
  const dir = mkdtempSync(join(tmpdir(), 'skein-capture-unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const pinRoot = join(dir, 'bpffs', 'skein');
  const cgroupPath = join(dir, 'cgroup');
  const bpfObjectDir = join(dir, 'objs');
  for (const d of [cgroupPath, bpfObjectDir, join(dir, 'netns')]) mkdirSync(d, { recursive: true });
  for (const o of ['connect4', 'connect6', 'sock_ops', 'sk_lookup']) writeFileSync(join(bpfObjectDir, `${o}.bpf.o`), '');
  const kernel = new FakeKernel();
  const netns = (name: string, cookie: bigint) => {
    const path = join(dir, 'netns', name);
    writeFileSync(path, '');
    kernel.netns.set(path, cookie);
    return path;
  };
  const facts = (): HostFacts => ({
    mounts: [
      { mountPoint: join(dir, 'bpffs'), fsType: 'bpf' },
      { mountPoint: cgroupPath, fsType: 'cgroup2' },
    ],
    capEff: 0x1ffffffffffn,
    kernelRelease: '6.18.0',
  });
  const manager = (extra: Record<string, unknown> = {}) =>
    new CaptureManager({ pinRoot, cgroupPath, bpfObjectDir, ...extra }, { native: kernel.native(), hostFacts: facts });
  return { dir, pinRoot, cgroupPath, bpfObjectDir, kernel, netns, manager };
}

const pod = (uid: string, netnsPath: string, ips: string[], extra: Record<string, number[]> = {}) => ({
  uid,
  netnsPath,
  ips,
  excludeOutboundPorts: extra.out ?? [],
  excludeInboundPorts: extra.in ?? [],
});

t.test('start, enroll, release: slots and tables', async (t) => {
  const { kernel, netns, manager } = setup(t);
  const m = manager();
  await m.start();
  await m.start(); // idempotent
  t.equal(kernel.liveLinks().length, 3, 'three cgroup links');
  t.same(kernel.mapByName(MAP.stamp)?.entries.get(u32Key(0).toString('hex')), encodeStamp(PIN_LAYOUT));
  t.same(kernel.mapByName(MAP.config)?.entries.get(u32Key(0).toString('hex')), encodeConfig(CAPTURE_DEFAULTS.agentMark, 16_384), "the agent's mark and each pod's share of records");

  const a = await m.enroll(pod('ns/a', netns('a', 11n), ['10.0.0.1', 'fd00::1'], { out: [53], in: [9000] }));
  const b = await m.enroll(pod('ns/b', netns('b', 12n), ['10.0.0.2']));
  t.equal(a.slot, 0);
  t.equal(b.slot, 1);
  const enrolled = kernel.mapByName(MAP.enrolled);
  t.same(decodeEnrolled(enrolled?.entries.get(u64Key(11n).toString('hex')) ?? Buffer.alloc(8)), { outboundPort: 15001 });
  const addrs = kernel.mapByName(MAP.inboundAddresses);
  t.same(decodeInboundPod(addrs?.entries.get(encodePodAddr('fd00::1').toString('hex')) ?? Buffer.alloc(8)), { slot: 0, tunnelPort: 15008 });
  t.equal(addrs?.entries.size, 3);
  t.equal(kernel.mapByName(MAP.outboundExcluded)?.entries.size, 1);
  t.equal(kernel.mapByName(MAP.inboundExcluded)?.entries.size, 1);
  t.equal(kernel.mapByName(MAP.inboundSockets)?.entries.size, 2);
  t.equal(kernel.liveLinks().filter((l) => l.type === 5).length, 2, 'one sk_lookup link per pod');

  // Re-enrol with other exclusions and IPs: tables follow, nothing duplicated.
  const again = await m.enroll(pod('ns/a', a.netnsPath, ['10.0.0.1'], { out: [], in: [9001] }));
  t.equal(again, a, 'same enrolment object');
  t.equal(addrs?.entries.size, 2, 'dropped address removed');
  t.equal(kernel.mapByName(MAP.outboundExcluded)?.entries.size, 0);
  t.equal(kernel.mapByName(MAP.inboundExcluded)?.entries.size, 1);

  t.ok(await m.release('ns/a'));
  t.notOk(await m.release('ns/a'), 'second release finds nothing');
  t.notOk(enrolled?.entries.has(u64Key(11n).toString('hex')), 'netns left the enrolled map');
  t.equal(addrs?.entries.size, 1);
  t.equal(kernel.mapByName(MAP.inboundSockets)?.entries.size, 1);
  t.equal(kernel.liveLinks().filter((l) => l.type === 5).length, 1, 'its sk_lookup link detached');
  const c = await m.enroll(pod('ns/c', netns('c', 13n), ['10.0.0.3']));
  t.equal(c.slot, 0, 'freed slot reused');
  t.same(m.enrolled().map((p) => p.uid).sort(), ['ns/b', 'ns/c']);

  await t.rejects(m.enroll(pod('ns/host', '/proc/self/ns/net', ['10.0.0.9'])), { code: 'SKEIN_CAPTURE_HOST_NETWORK_POD' });
  await t.rejects(m.enroll(pod('ns/gone', '/nowhere', ['10.0.0.8'])), { code: 'SKEIN_CAPTURE_NETNS_UNAVAILABLE' });
  t.throws(() => m.enroll(pod('', '/x', ['10.0.0.8'])), { code: 'SKEIN_CAPTURE_INVALID_POD' });

  // A pod restarted with a new netns under the same uid: old state replaced.
  kernel.netns.set(b.netnsPath, 22n);
  const b2 = await m.enroll(pod('ns/b', b.netnsPath, ['10.0.0.2']));
  t.equal(b2.netnsCookie, 22n);
  t.notOk(enrolled?.entries.has(u64Key(12n).toString('hex')), 'old cookie gone');
  t.ok(enrolled?.entries.has(u64Key(22n).toString('hex')), 'new cookie enrolled');

  await m.uninstall();
  t.equal(kernel.liveLinks().length, 0, 'uninstall detaches every link');
});

t.test('restart: a new manager adopts links and slots instead of stacking', async (t) => {
  const { kernel, netns, manager } = setup(t);
  const first = manager();
  await first.start();
  const a = await first.enroll(pod('ns/a', netns('a', 11n), ['10.0.0.1']));
  await first.enroll(pod('ns/b', netns('b', 12n), ['10.0.0.2']));
  const linkIds = kernel.liveLinks().map((l) => l.id).sort();
  await first.close();

  const second = manager();
  await second.start();
  t.same(kernel.liveLinks().map((l) => l.id).sort(), linkIds, 'same links, none added');
  const newProgs = new Set(Object.values(second.programIds()));
  t.ok(kernel.liveLinks().every((l) => newProgs.has(l.prog.id)), 'every link runs the new programs');
  const again = await second.enroll(pod('ns/a', a.netnsPath, ['10.0.0.1']));
  t.equal(again.slot, a.slot, 'slot adopted from the pinned registry');
  t.equal(kernel.liveLinks().length, linkIds.length, 'pod link adopted, not duplicated');

  // ns/b is not re-enrolled and its netns vanished: reconcile cleans what the first agent left.
  kernel.netns.delete(netns('b', 12n));
  t.same(await second.reconcile([{ uid: 'ns/a' }, { uid: 'ns/b', netnsPath: join('/nowhere') }]), ['ns/b']);
  const pods = kernel.mapByName(MAP.pods);
  t.same([...(pods?.entries.values() ?? [])].map((v) => decodePodRecord(v).uid), ['ns/a']);
  t.same(await second.reconcile([]), ['ns/a']);
});

t.test('a defunct pod link (netns gone while the agent was down) is cleaned at start', async (t) => {
  const { kernel, netns, manager } = setup(t);
  const first = manager();
  await first.start();
  await first.enroll(pod('ns/a', netns('a', 11n), ['10.0.0.1']));
  await first.close();
  for (const l of kernel.links) if (l.type === 5) l.detached = true; // the kernel drops it with the netns
  const second = manager();
  await second.start();
  t.equal(kernel.mapByName(MAP.pods)?.entries.size, 0, 'slot purged');
  t.equal(kernel.mapByName(MAP.enrolled)?.entries.size, 0, 'not enrolled any more');
});

t.test('stale pins: refused, or replaced on request', async (t) => {
  const { kernel, manager } = setup(t);
  const first = manager();
  await first.start();
  await first.close();
  kernel.mapByName(MAP.stamp)?.entries.set(u32Key(0).toString('hex'), encodeStamp(99));
  await t.rejects(manager().start(), { code: 'SKEIN_CAPTURE_STALE_PINS' });
  const replacing = manager({ replaceStalePins: true });
  await replacing.start();
  t.equal(kernel.liveLinks().length, 3, 'old links detached, three new ones');
  await replacing.close();

  const pods = kernel.mapByName(MAP.pods);
  if (pods) pods.incompatible = true; // a map whose shape changed without a layout bump
  await t.rejects(manager().start(), { code: 'SKEIN_CAPTURE_STALE_PINS' });
});

t.test('missing objects and originalDestination lookups', async (t) => {
  const { kernel, netns, manager, bpfObjectDir } = setup(t);
  const m = manager();
  await m.start();
  const a = await m.enroll(pod('ns/a', netns('a', 11n), ['10.0.0.1']));
  const fd = await kernel.native().openSocket(a.netnsPath, 4, 0);
  const socket = { _handle: { fd }, remotePort: 40000, remoteAddress: '::ffff:127.0.0.1' } as never;
  t.throws(() => m.originalDestination(socket), { code: 'SKEIN_CAPTURE_NO_ORIGINAL_DST' }, 'nothing recorded');
  const peers = kernel.mapByName(MAP.originalByPeer);
  const key = Buffer.alloc(16);
  key.writeBigUInt64LE(11n, 0);
  key.writeUInt16LE(40000, 8);
  key.writeUInt16LE(2, 10);
  peers?.entries.set(key.toString('hex'), Buffer.from(`020000500a600007${'00'.repeat(12)}`, 'hex'));
  t.same(m.originalDestination(socket), { address: '10.96.0.7', port: 80, family: 4 });
  t.equal(peers?.entries.size, 0, 'consumed');
  t.same(m.inboundDestination({ localAddress: '::ffff:10.0.0.1', localPort: 8080 } as never), { address: '10.0.0.1', port: 8080, family: 4 });
  t.throws(() => m.inboundDestination({} as never), { code: 'SKEIN_CAPTURE_NO_ORIGINAL_DST' });
  t.type(await m.openAgentSocket(a.netnsPath, 4), 'number');
  await m.close();

  rmSync(join(bpfObjectDir, 'sk_lookup.bpf.o'));
  await t.rejects(manager().start(), { code: 'SKEIN_CAPTURE_BPF_OBJECT_MISSING' });
});

t.test('counters: the kernel\'s per-CPU counts, summed; zeros before start', async (t) => {
  const { kernel, manager } = setup(t);
  const m = manager();
  t.same(m.counters(), { skLookupAssignFailed: 0, skLookupNoSocket: 0, podShareRefused: 0, noRecordRefused: 0 }, 'not started');
  await m.start();
  t.same(m.counters(), { skLookupAssignFailed: 0, skLookupNoSocket: 0, podShareRefused: 0, noRecordRefused: 0 }, 'nothing counted');
  const perCpu = (...n: bigint[]) => {
    const b = Buffer.alloc(8 * n.length);
    for (const [i, v] of n.entries()) b.writeBigUInt64LE(v, 8 * i);
    return b;
  };
  const counters = kernel.mapByName(MAP.counters);
  counters?.entries.set(u32Key(0).toString('hex'), perCpu(2n, 5n));
  counters?.entries.set(u32Key(1).toString('hex'), perCpu(0n, 1n));
  counters?.entries.set(u32Key(2).toString('hex'), perCpu(3n, 0n));
  t.same(m.counters(), { skLookupAssignFailed: 7, skLookupNoSocket: 1, podShareRefused: 3, noRecordRefused: 0 });
});

t.test('a port the app already holds: the pod is captured refusing, then served once the port is free', async (t) => {
  const { kernel, netns, manager } = setup(t);
  const m = manager();
  await m.start();
  const path = netns('held', 31n);
  kernel.heldPorts.set(path, new Set([15006])); // the second of the three listeners
  const fdsBefore = kernel.fds.size;
  await t.rejects(m.enroll(pod('ns/held', path, ['10.0.0.31'])), { code: 'SKEIN_CAPTURE_PORT_HELD', details: { port: 15006 } }, 'enroll says the pod is held, with the port');
  const p = m.enrolled().find((e) => e.uid === 'ns/held');
  t.match(p?.held, { code: 'SKEIN_CAPTURE_PORT_HELD', port: 15006, reason: /port 15006/ }, 'but it is captured: listed, held');
  t.equal(p?.listeners, undefined, 'no listeners to serve');
  t.equal(kernel.fds.size, fdsBefore, 'the listener opened before the failure was closed');
  const enrolled = kernel.mapByName(MAP.enrolled);
  t.same(decodeEnrolled(enrolled?.entries.get(u64Key(31n).toString('hex')) ?? Buffer.alloc(8)), { outboundPort: 0 }, 'connect4/6 refuse its connects (outbound port 0)');
  const slot = p?.slot ?? -1;
  t.notOk(kernel.mapByName(MAP.inboundSockets)?.entries.has(u32Key(slot).toString('hex')), 'no agent socket: sk_lookup drops inbound plaintext');
  t.equal(kernel.liveLinks().filter((l) => l.type === 5).length, 1, 'sk_lookup attached in its netns');

  // Still held: stays captured and refusing, nothing leaks.
  await t.rejects(m.enroll(pod('ns/held', path, ['10.0.0.31'])), { code: 'SKEIN_CAPTURE_PORT_HELD' });
  t.equal(kernel.fds.size, fdsBefore, 'no fd leaked by the retry');
  t.same(decodeEnrolled(enrolled?.entries.get(u64Key(31n).toString('hex')) ?? Buffer.alloc(8)), { outboundPort: 0 }, 'still refusing');

  // The app lets go: the next enroll opens the listeners and steers to them.
  kernel.heldPorts.delete(path);
  const served = await m.enroll(pod('ns/held', path, ['10.0.0.31']));
  t.equal(served.slot, slot, 'same slot');
  t.equal(served.held, undefined, 'no longer held');
  t.ok(served.listeners.outbound > 0, 'listeners open');
  t.same(decodeEnrolled(enrolled?.entries.get(u64Key(31n).toString('hex')) ?? Buffer.alloc(8)), { outboundPort: 15001 }, 'connects go to the outbound listener');
  t.ok(kernel.mapByName(MAP.inboundSockets)?.entries.has(u32Key(slot).toString('hex')), 'sk_lookup has the agent socket');

  // Another netns is not affected; a held pod is released like any other.
  kernel.heldPorts.set(path, new Set([15001]));
  const other = await m.enroll(pod('ns/other', netns('other', 32n), ['10.0.0.32']));
  t.equal(other.held, undefined, 'another netns is not affected by this one’s held ports');
  const path3 = netns('held3', 33n);
  kernel.heldPorts.set(path3, new Set([15008]));
  await t.rejects(m.enroll(pod('ns/held3', path3, ['10.0.0.33'])), { code: 'SKEIN_CAPTURE_PORT_HELD', details: { port: 15008 } }, 'held on the tunnel port too');
  t.ok(await m.release('ns/held3'));
  t.notOk(enrolled?.entries.has(u64Key(33n).toString('hex')), 'released: out of the enrolled map');
  await m.uninstall();
});
