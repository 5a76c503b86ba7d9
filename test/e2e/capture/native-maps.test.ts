/**
 * The native addon's map calls against real BPF maps (root): every key and value length is
 * checked against the map's own sizes before the kernel reads or writes the Buffer.
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';

import { fileURLToPath } from 'node:url';
import t from 'tap';
import { encodeOrigDst, encodePeerKey, MAP, ORIG_DST_SIZE, sumPerCpuU64, u32Key } from '../../../src/capture/maps.js';
import { loadNative } from '../../../src/capture/native.js';
import { ensureBpffs } from './fixture.js';

if (process.getuid?.() !== 0) {
  t.plan(0, 'native map e2e tests need root');
  process.exit(0);
}

const native = loadNative();
const objectPath = fileURLToPath(new URL('../../../build/bpf/sk_lookup.bpf.o', import.meta.url));

t.test('map calls refuse keys and values of the wrong length, with stable codes', async (t) => {
  ensureBpffs();
  const pinDir = `/sys/fs/bpf/skein-test-${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
  mkdirSync(pinDir);
  t.teardown(() => rmSync(pinDir, { recursive: true, force: true }));
  const obj = await native.loadObject(objectPath, pinDir);
  t.teardown(() => native.closeObject(obj.handle));
  const peers = obj.maps[MAP.originalByPeer] as number; // 16-byte key, 20-byte value (LRU hash)
  const counters = obj.maps[MAP.counters] as number; // 4-byte key, per-CPU __u64
  t.ok(peers !== undefined && counters !== undefined, 'maps loaded');
  t.same(
    [native.mapInfo(peers).keySize, native.mapInfo(peers).valueSize],
    [16, ORIG_DST_SIZE],
  );

  const key = encodePeerKey(7n, 40000, 4);
  const value = encodeOrigDst({ address: '10.96.0.7', port: 80, family: 4 });
  const keyErr = { code: 'SKEIN_NATIVE_KEY_SIZE_MISMATCH', map: MAP.originalByPeer, expected: 16, actual: 8 };
  const valueErr = { code: 'SKEIN_NATIVE_VALUE_SIZE_MISMATCH', map: MAP.originalByPeer, expected: ORIG_DST_SIZE };

  // Short and long keys for every call that takes one.
  for (const bad of [Buffer.alloc(8), Buffer.alloc(64)]) {
    const e = { ...keyErr, actual: bad.length };
    t.throws(() => native.mapLookup(peers, bad), e, `mapLookup key ${bad.length}`);
    t.throws(() => native.mapLookupAndDelete(peers, bad, ORIG_DST_SIZE), e, `mapLookupAndDelete key ${bad.length}`);
    t.throws(() => native.mapUpdate(peers, bad, value), e, `mapUpdate key ${bad.length}`);
    t.throws(() => native.mapDelete(peers, bad), e, `mapDelete key ${bad.length}`);
    t.throws(() => native.mapNextKey(peers, bad), e, `mapNextKey key ${bad.length}`);
  }
  // Values: a short update value would be over-read, a short lookup-and-delete buffer over-written.
  t.throws(() => native.mapUpdate(peers, key, Buffer.alloc(4)), { ...valueErr, actual: 4 }, 'mapUpdate short value');
  t.throws(() => native.mapUpdate(peers, key, Buffer.alloc(64)), { ...valueErr, actual: 64 }, 'mapUpdate long value');
  native.mapUpdate(peers, key, value);
  t.throws(() => native.mapLookupAndDelete(peers, key, 4), { ...valueErr, actual: 4 }, 'mapLookupAndDelete short value');
  t.throws(() => native.mapLookupAndDelete(peers, key, 4096), { ...valueErr, actual: 4096 }, 'mapLookupAndDelete long value');
  t.same(native.mapLookup(peers, key), value, 'a refused call changed nothing');
  t.same(native.mapLookupAndDelete(peers, key, ORIG_DST_SIZE), value, 'right sizes: read and removed');
  t.equal(native.mapLookup(peers, key), null);

  // Per-CPU: one 8-byte slot per possible CPU, in both directions.
  const perCpu = native.mapLookup(counters, u32Key(0));
  t.ok(perCpu && perCpu.length >= 8 && perCpu.length % 8 === 0, `per-CPU lookup answers every CPU (${perCpu?.length} bytes)`);
  const slots = Buffer.alloc(perCpu?.length ?? 8);
  for (let i = 0; i < slots.length; i += 8) slots.writeBigUInt64LE(1n, i);
  native.mapUpdate(counters, u32Key(5), slots);
  t.equal(sumPerCpuU64(native.mapLookup(counters, u32Key(5)) ?? Buffer.alloc(0)), BigInt(slots.length / 8));
  t.throws(() => native.mapUpdate(counters, u32Key(5), Buffer.alloc(8 + slots.length)), { code: 'SKEIN_NATIVE_VALUE_SIZE_MISMATCH', expected: slots.length });
  t.throws(() => native.mapLookup(counters, Buffer.alloc(8)), { code: 'SKEIN_NATIVE_KEY_SIZE_MISMATCH', expected: 4, actual: 8 });
});


t.test('map calls on an fd that is not a map (a program, a socket, a closed fd) fail with EBADF, never read foreign info as sizes', async (t) => {
  ensureBpffs();
  const pinDir = `/sys/fs/bpf/skein-test-${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
  mkdirSync(pinDir);
  t.teardown(() => rmSync(pinDir, { recursive: true, force: true }));
  const obj = await native.loadObject(objectPath, pinDir);
  t.teardown(() => native.closeObject(obj.handle));
  // A program's info, read as a map's, puts its tag bytes where key_size/value_size are:
  // a lookup would have allocated (and the kernel been handed) whatever they said.
  const prog = Object.values(obj.programs)[0] as number;
  const [a, b] = native.socketPair();
  t.teardown(() => {
    native.closeFd(a);
    native.closeFd(b);
  });
  for (const [what, fd] of [['program', prog], ['socket', a], ['closed', 100_000]] as const) {
    const e = { code: 'EBADF', syscall: 'mapInfo' };
    t.throws(() => native.mapInfo(fd), e, `mapInfo(${what})`);
    t.throws(() => native.mapLookup(fd, Buffer.alloc(16)), e, `mapLookup(${what})`);
    t.throws(() => native.mapLookupAndDelete(fd, Buffer.alloc(16), ORIG_DST_SIZE), e, `mapLookupAndDelete(${what})`);
    t.throws(() => native.mapUpdate(fd, Buffer.alloc(16), Buffer.alloc(ORIG_DST_SIZE)), e, `mapUpdate(${what})`);
    t.throws(() => native.mapDelete(fd, Buffer.alloc(16)), e, `mapDelete(${what})`);
    t.throws(() => native.mapNextKey(fd, null), e, `mapNextKey(${what})`);
  }
  t.equal(native.progInfo(prog).id > 0, true, 'the program itself is untouched');
});
