/**
 * Property tests of the BPF map records skein decodes (issue 15: every parser skein owns):
 * encode/decode round trips for any address and port, and any bytes at all — wrong length,
 * unknown family — refused with SKEIN_CAPTURE_BAD_RECORD, never another exception.
 */
import fc from 'fast-check';
import t from 'tap';
import { bytesToIp, ipToBytes } from '../../../src/capture/ip.js';
import { decodeEnrolled, decodeNetnsPort, decodeOrigDst, decodeStamp, encodeNetnsPort, encodeOrigDst } from '../../../src/capture/maps.js';
import { canonicalIp } from '../../../src/config/address.js';
import { SkeinError } from '../../../src/errors.js';

const v4 = fc.ipV4();
const v6 = fc.ipV6();
const port = fc.integer({ min: 0, max: 65535 });

/** Runs `f`; true when it returned, or threw a SkeinError with `code`. */
function returnsOrRefuses(f: () => unknown, code: string): boolean {
  try {
    f();
    return true;
  } catch (err) {
    return err instanceof SkeinError && err.code === code;
  }
}

t.test('IP bytes round-trip for every IPv4 and IPv6 address (canonical text)', async () => {
  fc.assert(
    fc.property(fc.oneof(v4, v6), (ip) => {
      const text = bytesToIp(ipToBytes(ip));
      return text === canonicalIp(ip) || canonicalIp(text) === canonicalIp(ip);
    }),
    { numRuns: 3000 },
  );
});

t.test('orig_dst and netns_port records round-trip', async () => {
  fc.assert(
    fc.property(fc.oneof(v4.map((a) => [a, 4] as const), v6.map((a) => [a, 6] as const)), port, ([address, family], p) => {
      const back = decodeOrigDst(encodeOrigDst({ address, port: p, family }));
      return back.port === p && back.family === family && canonicalIp(back.address) === canonicalIp(address);
    }),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), port, (cookie, p) => {
      const back = decodeNetnsPort(encodeNetnsPort(cookie, p));
      return back.netnsCookie === cookie && back.port === p;
    }),
  );
});

t.test('any bytes: decoded, or refused with SKEIN_CAPTURE_BAD_RECORD (never a RangeError)', async () => {
  const bytes = fc.uint8Array({ minLength: 0, maxLength: 40 }).map((a) => Buffer.from(a));
  fc.assert(
    fc.property(bytes, (b) =>
      [() => decodeOrigDst(b), () => decodeNetnsPort(b), () => decodeEnrolled(b), () => decodeStamp(b)].every((f) => returnsOrRefuses(f, 'SKEIN_CAPTURE_BAD_RECORD')),
    ),
    { numRuns: 5000 },
  );
});
