import t from 'tap';
import { bytesToIp, familyOf, ipToBytes } from '../../../src/capture/ip.js';
import {
  decodeEnrolled,
  decodeInboundPod,
  decodeNetnsPort,
  decodeOrigDst,
  decodePodAddr,
  decodePodRecord,
  decodeSlotPort,
  decodeStamp,
  encodeConfig,
  encodeEnrolled,
  encodeInboundPod,
  encodeNetnsPort,
  encodeOrigDst,
  encodePeerKey,
  encodePodAddr,
  encodePodRecord,
  encodeSlotPort,
  encodeSocketFd,
  encodeStamp,
  familyOfAf,
  sumPerCpuU64,
  u32Key,
  u64Key,
} from '../../../src/capture/maps.js';

t.test('IP text <-> network-order bytes', async (t) => {
  t.same([...ipToBytes('10.96.0.7')], [10, 96, 0, 7]);
  t.equal(ipToBytes('::1').toString('hex'), '00000000000000000000000000000001');
  t.equal(ipToBytes('fd77:1::2').toString('hex'), 'fd770001000000000000000000000002');
  t.equal(ipToBytes('::ffff:10.0.0.1').toString('hex'), '00000000000000000000ffff0a000001');
  t.equal(ipToBytes('2001:db8:1:2:3:4:5:6').toString('hex'), '20010db8000100020003000400050006');
  t.equal(ipToBytes('fe80::1%eth0').toString('hex'), 'fe800000000000000000000000000001');
  for (const a of ['::1', '::', 'fd77:1::2', '2001:db8::7', '2001:db8:0:1:0:0:0:1', '1:2:3:4:5:6:7:8', '1::', '10.0.0.255']) {
    const canonical = a === '2001:db8:0:1:0:0:0:1' ? '2001:db8:0:1::1' : a;
    t.equal(bytesToIp(ipToBytes(a)), canonical, `round trip ${a}`);
  }
  t.equal(bytesToIp(Buffer.from('20010db8000000010000000000000000', 'hex')), '2001:db8:0:1::', 'longest zero run compressed');
  t.equal(bytesToIp(Buffer.from('20010000000100000000000100000001', 'hex')), '2001:0:1::1:0:1', 'longest run wins');
  t.equal(bytesToIp(Buffer.from('20010000000000010000000000010001', 'hex')), '2001::1:0:0:1:1', 'first of equal runs');
  t.throws(() => ipToBytes('nope'), { code: 'SKEIN_CAPTURE_INVALID_ADDRESS' });
  t.throws(() => bytesToIp(Buffer.alloc(5)), { code: 'SKEIN_CAPTURE_INVALID_ADDRESS' });
  t.equal(familyOf('::ffff:1.2.3.4'), 4);
  t.equal(familyOf('fd00::1'), 6);
  t.throws(() => familyOf('x'), { code: 'SKEIN_CAPTURE_INVALID_ADDRESS' });
});

t.test('map keys and values match bpf/skein.h byte for byte', async (t) => {
  t.equal(u32Key(7).toString('hex'), '07000000');
  t.equal(u64Key(0x0102030405060708n).toString('hex'), '0807060504030201');
  t.same(decodeStamp(encodeStamp(1)), { layout: 1 });
  t.equal(encodeStamp(1).length, 8);
  t.equal(encodeConfig(0x536b6e, 0).toString('hex'), '6e6b530000000000');
  t.equal(encodeConfig(0x536b6e, 16384).toString('hex'), '6e6b530000400000', 'pod_share after the mark');
  t.equal(encodeEnrolled(15001).toString('hex'), '993a000000000000');
  t.same(decodeEnrolled(encodeEnrolled(15001)), { outboundPort: 15001 });

  const np = encodeNetnsPort(5n, 9999);
  t.equal(np.length, 16);
  t.equal(np.toString('hex'), '0500000000000000' + '0f27' + '0000' + '00000000');
  t.same(decodeNetnsPort(np), { netnsCookie: 5n, port: 9999 });

  // struct orig_dst: family (LE), port (network order), address (network order)
  const v4 = encodeOrigDst({ address: '10.96.0.7', port: 80, family: 4 });
  t.equal(v4.toString('hex'), `020000500a600007${'00'.repeat(12)}`);
  t.same(decodeOrigDst(v4), { address: '10.96.0.7', port: 80, family: 4 });
  const v6 = encodeOrigDst({ address: 'fd77:1::2', port: 8080, family: 6 });
  t.equal(v6.subarray(0, 4).toString('hex'), '0a001f90');
  t.same(decodeOrigDst(v6), { address: 'fd77:1::2', port: 8080, family: 6 });

  t.equal(encodePeerKey(1n, 40000, 4).toString('hex'), '0100000000000000' + '409c' + '0200' + '00000000');
  t.equal(encodePeerKey(1n, 40000, 6).subarray(10, 12).toString('hex'), '0a00');

  const pa = encodePodAddr('10.77.1.2');
  t.equal(pa.toString('hex'), `020000000a4d0102${'00'.repeat(12)}`);
  t.equal(decodePodAddr(pa), '10.77.1.2');
  t.equal(decodePodAddr(encodePodAddr('fd77:1::2')), 'fd77:1::2');
  t.equal(encodePodAddr('::ffff:10.77.1.2').toString('hex'), pa.toString('hex'), 'mapped form is the IPv4 key');

  t.same(decodeInboundPod(encodeInboundPod(3, 15008)), { slot: 3, tunnelPort: 15008 });
  t.equal(encodeInboundPod(3, 15008).toString('hex'), '03000000' + 'a03a' + '0000');
  t.same(decodeSlotPort(encodeSlotPort(4, 9999)), { slot: 4, port: 9999 });

  const rec = { netnsCookie: 42n, netnsIno: 4026532000n, uid: 'ns1/pod-a' };
  const rb = encodePodRecord(rec);
  t.equal(rb.length, 144);
  t.same(decodePodRecord(rb), rec);
  t.same(decodePodRecord(encodePodRecord({ ...rec, uid: 'x'.repeat(127) })).uid, 'x'.repeat(127), 'longest uid');
  t.throws(() => encodePodRecord({ ...rec, uid: 'x'.repeat(128) }), { code: 'SKEIN_CAPTURE_INVALID_POD' });
  t.equal(encodeSocketFd(12).toString('hex'), '0c00000000000000');
  t.equal(familyOfAf(2), 4);
  t.equal(familyOfAf(10), 6);
  t.throws(() => familyOfAf(1), { code: 'SKEIN_CAPTURE_BAD_RECORD' });
});

t.test('per-CPU counters: one 8-byte slot per CPU, summed', async (t) => {
  const b = Buffer.alloc(24);
  b.writeBigUInt64LE(3n, 0);
  b.writeBigUInt64LE(0n, 8);
  b.writeBigUInt64LE(2n ** 40n, 16);
  t.equal(sumPerCpuU64(b), 3n + 2n ** 40n);
  t.equal(sumPerCpuU64(Buffer.alloc(0)), 0n);
  t.throws(() => sumPerCpuU64(Buffer.alloc(12)), { code: 'SKEIN_CAPTURE_BAD_RECORD' });
});
