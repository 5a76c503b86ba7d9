/**
 * Property tests of the HBONE :authority parser (issue 15: every parser skein owns): every
 * pod address and port the mesh formats parses back to itself; any string is parsed or
 * refused, never throws.
 */
import fc from 'fast-check';
import t from 'tap';
import { canonicalIp, formatAuthority } from '../../../../src/config/address.js';
import { parseAuthority } from '../../../../src/proxy/tunnel/authority.js';

t.test('formatAuthority -> parseAuthority round-trips for IPv4 and IPv6 and every port', async () => {
  fc.assert(
    fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), fc.integer({ min: 1, max: 65535 }), (ip, port) => {
      const a = parseAuthority(formatAuthority(ip, port));
      return a !== undefined && a.port === port && a.address === canonicalIp(ip);
    }),
    { numRuns: 3000 },
  );
});

t.test('any string: an authority or undefined, never an exception; names and port 0 are refused', async () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 80 }), (s) => {
      const a = parseAuthority(s);
      return a === undefined || (a.port >= 1 && a.port <= 65535 && (a.family === 4 || a.family === 6));
    }),
    { numRuns: 5000 },
  );
  fc.assert(fc.property(fc.domain(), fc.integer({ min: 1, max: 65535 }), (host, port) => parseAuthority(`${host}:${port}`) === undefined));
  fc.assert(fc.property(fc.ipV4(), (ip) => parseAuthority(`${ip}:0`) === undefined));
});
