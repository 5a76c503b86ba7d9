import t from 'tap';
import { SkeinError } from '../../../../src/errors.js';
import { IdentityCode } from '../../../../src/identity/codes.js';
import { DEFAULT_TTL_POLICY, effectiveTtl, validateCsr } from '../../../../src/identity/ca/csr-validation.js';
import { createWorkloadCsr, generateP256KeyPair } from '../../../../src/identity/x509/keys.js';
import { parseWorkloadSpiffeId, trustDomainOf } from '../../../../src/identity/spiffe.js';
import { subtle, x509 } from '../../../../src/identity/x509/provider.js';
import { id, TD } from '../helpers.js';

const POLICY = { defaultTtlSeconds: 86400, maxTtlSeconds: 172800 };

async function csrWith(names: x509.JsonGeneralName[], alg: 'P-256' | 'P-384' | 'RSA' = 'P-256'): Promise<string> {
  const keys =
    alg === 'RSA'
      ? await subtle.generateKey({ name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, true, ['sign', 'verify'])
      : await subtle.generateKey({ name: 'ECDSA', namedCurve: alg }, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    keys: keys as never,
    name: 'CN=ignored',
    signingAlgorithm: alg === 'RSA' ? { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } : { name: 'ECDSA', hash: alg === 'P-384' ? 'SHA-384' : 'SHA-256' },
    extensions: names.length ? [new x509.SubjectAlternativeNameExtension(names)] : [],
  });
  return csr.toString('pem');
}

async function code(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return err instanceof SkeinError ? err.code : `non-skein: ${String(err)}`;
  }
}

t.test('a valid CSR', async (t) => {
  const csr = await createWorkloadCsr(id('ns1', 'sa1'), await generateP256KeyPair());
  const v = await validateCsr(csr, TD, 3600, POLICY);
  t.equal(v.identity.id, id('ns1', 'sa1'));
  t.equal(v.identity.namespace, 'ns1');
  t.equal(v.identity.serviceAccount, 'sa1');
  t.equal(v.ttlSeconds, 3600);
  t.equal(v.ttlCapped, false);
  t.ok(v.publicKeySpki.byteLength > 60);
  // A subject CN is ignored (not refused): only the SAN matters.
  t.equal((await validateCsr(await csrWith([{ type: 'url', value: id('a', 'b') }]), TD, 0, POLICY)).identity.id, id('a', 'b'));
});

t.test('SAN count and type', async (t) => {
  t.equal(await code(validateCsr(await csrWith([]), TD, 0, POLICY)), IdentityCode.CsrSanCount, 'no SAN');
  t.equal(
    await code(validateCsr(await csrWith([{ type: 'url', value: id('a', 'b') }, { type: 'url', value: id('a', 'c') }]), TD, 0, POLICY)),
    IdentityCode.CsrSanCount,
    'two URI SANs',
  );
  t.equal(
    await code(validateCsr(await csrWith([{ type: 'url', value: id('a', 'b') }, { type: 'dns', value: 'evil.example' }]), TD, 0, POLICY)),
    IdentityCode.CsrSanCount,
    'URI + DNS SAN',
  );
  t.equal(await code(validateCsr(await csrWith([{ type: 'dns', value: 'web.shop.svc' }]), TD, 0, POLICY)), IdentityCode.CsrSanNotUri, 'DNS only');
});

t.test('SPIFFE ID form and trust domain', async (t) => {
  t.equal(await code(validateCsr(await createWorkloadCsr('spiffe://other.domain/ns/a/sa/b', await generateP256KeyPair()), TD, 0, POLICY)), IdentityCode.TrustDomain);
  t.equal(await code(validateCsr(await csrWith([{ type: 'url', value: 'spiffe://cluster.local/foo/bar' }]), TD, 0, POLICY)), IdentityCode.SpiffeIdInvalid);
  t.equal(await code(validateCsr(await csrWith([{ type: 'url', value: 'https://cluster.local/ns/a/sa/b' }]), TD, 0, POLICY)), IdentityCode.SpiffeIdInvalid);
  t.equal(await code(validateCsr(await csrWith([{ type: 'url', value: 'spiffe://cluster.local/ns/A_B/sa/b' }]), TD, 0, POLICY)), IdentityCode.SpiffeIdInvalid);
  t.equal(await code(validateCsr(await csrWith([{ type: 'url', value: 'spiffe://cluster.local/ns/a/sa/b/extra' }]), TD, 0, POLICY)), IdentityCode.SpiffeIdInvalid);
  t.equal(trustDomainOf('spiffe://x.y/ns/a/sa/b'), 'x.y');
  t.equal(trustDomainOf('nope'), undefined);
  t.throws(() => parseWorkloadSpiffeId('spiffe://BAD/ns/a/sa/b'));
  t.throws(() => parseWorkloadSpiffeId('spiffe://td'));
  t.throws(() => parseWorkloadSpiffeId('spiffe://td/ns/a/sa/'));
});

t.test('bad signature, key types, garbage', async (t) => {
  const pem = await createWorkloadCsr(id('a', 'b'), await generateP256KeyPair());
  const der = Buffer.from(x509.PemConverter.decodeFirst(pem));
  der[der.length - 5] = (der[der.length - 5] ?? 0) ^ 0xff; // flip a byte of the signature
  const tampered = x509.PemConverter.encode(der, 'CERTIFICATE REQUEST');
  t.equal(await code(validateCsr(tampered, TD, 0, POLICY)), IdentityCode.CsrSignature);
  // A CSR whose signature is over other content: the SAN swapped after signing.
  const other = await createWorkloadCsr(id('a', 'c'), await generateP256KeyPair());
  const a = Buffer.from(x509.PemConverter.decodeFirst(other));
  const i = a.indexOf(Buffer.from('/sa/c'));
  a[i + 4] = 'd'.charCodeAt(0);
  t.equal(await code(validateCsr(x509.PemConverter.encode(a, 'CERTIFICATE REQUEST'), TD, 0, POLICY)), IdentityCode.CsrSignature, 'SAN altered after signing');
  t.equal(await code(validateCsr(await csrWith([{ type: 'url', value: id('a', 'b') }], 'P-384'), TD, 0, POLICY)), IdentityCode.CsrKey, 'P-384');
  t.equal(await code(validateCsr(await csrWith([{ type: 'url', value: id('a', 'b') }], 'RSA'), TD, 0, POLICY)), IdentityCode.CsrKey, 'RSA');
  t.equal(await code(validateCsr('garbage', TD, 0, POLICY)), IdentityCode.CsrInvalid);
  t.equal(await code(validateCsr('x'.repeat(20000), TD, 0, POLICY)), IdentityCode.CsrInvalid, 'oversized');
});

t.test('TTL: default, capped, invalid', async (t) => {
  t.same(effectiveTtl(0, POLICY), { ttlSeconds: 86400, capped: false });
  t.same(effectiveTtl(undefined, POLICY), { ttlSeconds: 86400, capped: false });
  t.same(effectiveTtl(10 ** 12, POLICY), { ttlSeconds: 172800, capped: true }, 'huge TTL capped');
  t.same(effectiveTtl(2.7, POLICY), { ttlSeconds: 2, capped: false });
  t.same(effectiveTtl(0, { defaultTtlSeconds: 100, maxTtlSeconds: 50 }), { ttlSeconds: 50, capped: false });
  t.throws(() => effectiveTtl(-1, POLICY), { code: IdentityCode.TtlInvalid });
  t.throws(() => effectiveTtl(Number.NaN, POLICY), { code: IdentityCode.TtlInvalid });
  const csr = await createWorkloadCsr(id('a', 'b'), await generateP256KeyPair());
  const v = await validateCsr(csr, TD, 10 ** 9, DEFAULT_TTL_POLICY);
  t.equal(v.ttlSeconds, DEFAULT_TTL_POLICY.maxTtlSeconds);
  t.equal(v.ttlCapped, true);
});
