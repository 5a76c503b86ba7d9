import t from 'tap';
import { canonicalIp, formatAuthority, ipFamilyOf } from '../../../src/config/address.js';

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
