import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { SigningAuthority } from '../../../../src/identity/ca/authority.js';
import { firstElement, oid, positiveInteger, subjectOfCertificate, time } from '../../../../src/identity/x509/der.js';
import { generateP256KeyPair } from '../../../../src/identity/x509/keys.js';
import { subtle, x509 } from '../../../../src/identity/x509/provider.js';
import { craftIntermediate, id, TD, tempDir } from '../helpers.js';

t.test('DER pieces', async (t) => {
  t.equal(oid('2.5.29.17').toString('hex'), '0603551d11');
  t.equal(oid('1.2.840.10045.4.3.2').toString('hex'), '06082a8648ce3d040302');
  t.equal(positiveInteger(Buffer.from('00007f', 'hex')).toString('hex'), '02017f', 'leading zeros dropped');
  t.equal(positiveInteger(Buffer.from('80', 'hex')).toString('hex'), '02020080', 'sign byte added');
  t.equal(time(new Date('2049-12-31T23:59:59.999Z')).toString('ascii').slice(2), '491231235959Z', 'UTCTime');
  t.equal(time(new Date('2050-01-01T00:00:00Z')).toString('ascii').slice(2), '20500101000000Z', 'GeneralizedTime from 2050');
  t.equal(time(new Date('2050-01-01T00:00:00Z'))[0], 0x18);
  t.throws(() => firstElement(Buffer.from('0400', 'hex')), /not a SEQUENCE/);
  t.throws(() => firstElement(Buffer.from('3005', 'hex')), /truncated|past end/);
  t.throws(() => firstElement(Buffer.from('3085ffffffffff', 'hex')), /unsupported length/);
  t.throws(() => firstElement(Buffer.from('300304', 'hex')), /past end/);
  // Long-form lengths: a 300-byte element.
  const big = Buffer.concat([Buffer.from('3082012f0482012b', 'hex'), Buffer.alloc(299)]);
  t.equal(firstElement(big).length, 303);
});

t.test('the fast workload leaf equals the generic one in content, and OpenSSL accepts it', async (t) => {
  const root = await SigningAuthority.generateRoot({ trustDomain: TD });
  const ca = await SigningAuthority.fromMaterial(await craftIntermediate(root));
  t.equal(subjectOfCertificate(ca.signingCert.raw).toString('hex'), Buffer.from(new x509.X509Certificate(ca.signingCert.raw).subjectName.toArrayBuffer()).toString('hex'));
  const keys = await generateP256KeyPair();
  const spki = await subtle.exportKey('spki', keys.publicKey);
  const now = new Date();
  const req = { publicKeySpki: spki, uriSans: [id('shop', 'web')], ttlSeconds: 600, backdateSeconds: 60, now };
  const fast = new x509.X509Certificate(await ca.signLeaf(req));
  // Generic path (taken when DNS SANs are present): compare everything but the SAN.
  const generic = new x509.X509Certificate(await ca.signLeaf({ ...req, dnsSans: ['web.shop.svc'] }));
  t.equal(fast.issuer, generic.issuer);
  t.equal(fast.subject, generic.subject);
  t.equal(fast.notBefore.getTime(), generic.notBefore.getTime());
  t.equal(fast.notAfter.getTime(), generic.notAfter.getTime());
  t.same(fast.signatureAlgorithm, generic.signatureAlgorithm);
  const exts = (c: x509.X509Certificate) => c.extensions.filter((e) => e.type !== '2.5.29.17').map((e) => [e.type, e.critical, Buffer.from(e.value).toString('hex')]);
  t.same(exts(fast), exts(generic), 'same extensions, byte for byte');
  t.ok(await fast.verify({ publicKey: new x509.X509Certificate(ca.signingCert.raw).publicKey, signatureOnly: true }), 'signature verifies');
  t.ok(new X509Certificate(Buffer.from(fast.rawData)).checkIssued(ca.signingCert));

  if (!existsSync('/usr/bin/openssl')) {
    t.comment('openssl CLI not installed: OpenSSL cross-check skipped');
    return;
  }
  const dir = tempDir(t, 'der');
  writeFileSync(join(dir, 'root.pem'), root.rootPem);
  writeFileSync(join(dir, 'inter.pem'), ca.chainPem[0] as string);
  writeFileSync(join(dir, 'leaf.pem'), fast.toString('pem'));
  const out = execFileSync('openssl', ['verify', '-x509_strict', '-CAfile', join(dir, 'root.pem'), '-untrusted', join(dir, 'inter.pem'), '-purpose', 'sslclient', join(dir, 'leaf.pem')], {
    encoding: 'utf8',
  });
  t.match(out, /leaf.pem: OK/);
  const text = execFileSync('openssl', ['x509', '-noout', '-text', '-in', join(dir, 'leaf.pem')], { encoding: 'utf8' });
  t.match(text, /X509v3 Subject Alternative Name: critical\s+URI:spiffe:\/\/cluster.local\/ns\/shop\/sa\/web/);
  t.match(text, /X509v3 Key Usage: critical\s+Digital Signature\n/);
  t.match(text, /TLS Web Server Authentication, TLS Web Client Authentication/);
  t.match(text, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
});
