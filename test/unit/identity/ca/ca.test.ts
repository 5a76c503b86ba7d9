import { X509Certificate } from 'node:crypto';
import { chmodSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import t from 'tap';
import { SigningAuthority } from '../../../../src/identity/ca/authority.js';
import { IdentityCode } from '../../../../src/identity/codes.js';
import { createWorkloadCsr, generateP256KeyPair } from '../../../../src/identity/x509/keys.js';
import { verifyPeer } from '../../../../src/identity/workload/peer-verification.js';
import { FileRootStore, MemoryRootStore, readAuthorityFiles } from '../../../../src/identity/ca/root-store.js';
import { x509 } from '../../../../src/identity/x509/provider.js';
import { craftIntermediate, id, makeCa, TD, tempDir } from '../helpers.js';

const csrFor = async (identity: string) => createWorkloadCsr(identity, await generateP256KeyPair());

t.test('first start generates a root, persists it 0600, a restart reuses it', async (t) => {
  const dir = tempDir(t, 'ca');
  const path = join(dir, 'sub', 'root.json');
  const store = new FileRootStore(path);
  const ca1 = await makeCa({ store });
  t.equal((statSync(path).mode & 0o777).toString(8), '600');
  const ca2 = await makeCa({ store });
  t.same(ca2.trustBundlePem(), ca1.trustBundlePem(), 'same root after restart');
  t.equal(ca2.activeAuthority().id, ca1.activeAuthority().id);
  const root = new X509Certificate(ca1.trustBundlePem()[0] as string);
  t.ok(root.ca, 'root is a CA');
  t.match(root.subject, /O=cluster.local/);

  chmodSync(path, 0o644);
  await t.rejects(makeCa({ store }), { code: IdentityCode.RootFilePermissions }, 'refuses a file others can read');
  chmodSync(path, 0o600);
  writeFileSync(path, 'not json', { mode: 0o600 });
  await t.rejects(makeCa({ store }), { code: IdentityCode.RootInvalid });
  writeFileSync(path, '{"version":2}', { mode: 0o600 });
  await t.rejects(makeCa({ store }), { code: IdentityCode.RootInvalid });
  writeFileSync(path, JSON.stringify({ version: 1, activeId: 'nope', authorities: [ca1.activeAuthority().material()] }), { mode: 0o600 });
  await t.rejects(makeCa({ store }), { code: IdentityCode.RootInvalid }, 'active id not among the authorities');
});

t.test('issued leaf: one critical URI SAN, no subject, EKU, key usage, serial, backdated', async (t) => {
  const now = new Date();
  const ca = await makeCa({ backdateSeconds: 120, now: () => now, ttl: { defaultTtlSeconds: 600, maxTtlSeconds: 900 } });
  const issued = await ca.issue(await csrFor(id('shop', 'web')), 0);
  t.equal(issued.certChainPem.length, 2, 'leaf + root');
  t.equal(issued.ttlSeconds, 600);
  const leaf = new x509.X509Certificate(issued.certChainPem[0] as string);
  t.equal(leaf.subject, '', 'no subject');
  const san = leaf.getExtension(x509.SubjectAlternativeNameExtension);
  t.ok(san?.critical, 'SAN critical');
  t.same(san?.names.items.map((n) => [n.type, n.value]), [['url', id('shop', 'web')]]);
  const ku = leaf.getExtension(x509.KeyUsagesExtension);
  t.equal(ku?.usages, x509.KeyUsageFlags.digitalSignature, 'digitalSignature only (EC: no keyEncipherment)');
  const eku = leaf.getExtension(x509.ExtendedKeyUsageExtension);
  t.same(eku?.usages, [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]);
  t.equal(leaf.getExtension(x509.BasicConstraintsExtension)?.ca, false);
  t.ok(leaf.getExtension(x509.AuthorityKeyIdentifierExtension), 'AKID links to the root');
  t.ok(leaf.serialNumber.length <= 40 && leaf.serialNumber.length >= 30, `random 16-byte serial ${leaf.serialNumber}`);
  t.equal(leaf.notBefore.getTime(), Math.floor(now.getTime() / 1000) * 1000 - 120_000, 'backdated 120 s');
  t.equal(leaf.notAfter.getTime(), Math.ceil((now.getTime() + 600_000) / 1000) * 1000, 'notAfter rounded up: never shorter than asked');
  const second = new x509.X509Certificate((await ca.issue(await csrFor(id('shop', 'web')), 0)).certChainPem[0] as string);
  t.not(second.serialNumber, leaf.serialNumber);
  t.equal(verifyPeer(issued.certChainPem.slice(0, 1), issued.trustBundlePem, { trustDomain: TD }), id('shop', 'web'));
});

t.test('operator-supplied intermediate: chain served leaf -> intermediate -> root', async (t) => {
  const root = await SigningAuthority.generateRoot({ trustDomain: TD });
  const inter = await craftIntermediate(root);
  const dir = tempDir(t, 'op');
  writeFileSync(join(dir, 'ca.crt'), inter.certChainPem[0] as string);
  writeFileSync(join(dir, 'ca.key'), inter.privateKeyPem);
  writeFileSync(join(dir, 'chain.crt'), root.rootPem);
  const material = await readAuthorityFiles({ certFile: join(dir, 'ca.crt'), keyFile: join(dir, 'ca.key'), chainFile: join(dir, 'chain.crt') });
  const store = new MemoryRootStore();
  const ca = await makeCa({ authority: material, store });
  t.equal(await store.load(), undefined, 'operator material is never copied into the store');
  const issued = await ca.issue(await csrFor(id('a', 'b')), 60);
  t.equal(issued.certChainPem.length, 3);
  t.same(issued.trustBundlePem, [root.rootPem]);
  const [leaf, mid, top] = issued.certChainPem.map((p) => new X509Certificate(p));
  t.ok(leaf?.verify(mid?.publicKey as never) && mid?.verify(top?.publicKey as never), 'each signed by the next');
  t.equal(verifyPeer(issued.certChainPem.slice(0, 2), issued.trustBundlePem, { trustDomain: TD }), id('a', 'b'));
  t.equal(ca.activeAuthority().id, root.id, 'authority id is its root fingerprint');

  // Bad operator material is refused with a clear code.
  await t.rejects(makeCa({ authority: { certChainPem: [inter.certChainPem[0] as string], privateKeyPem: inter.privateKeyPem } }), { code: IdentityCode.RootInvalid }, 'no root');
  const otherKey = (await SigningAuthority.generateRoot({ trustDomain: TD })).material().privateKeyPem;
  await t.rejects(makeCa({ authority: { certChainPem: inter.certChainPem, privateKeyPem: otherKey } }), { code: IdentityCode.RootInvalid }, 'key mismatch');
  await t.rejects(makeCa({ authority: { certChainPem: [inter.certChainPem[0] as string, (await SigningAuthority.generateRoot({ trustDomain: TD })).rootPem], privateKeyPem: inter.privateKeyPem } }), { code: IdentityCode.RootInvalid }, 'wrong root');
  await t.rejects(makeCa({ authority: { certChainPem: inter.certChainPem, privateKeyPem: 'nope' } }), { code: IdentityCode.RootInvalid }, 'unreadable key');
  await t.rejects(makeCa({ authority: { certChainPem: ['nope'], privateKeyPem: inter.privateKeyPem } }), { code: IdentityCode.RootInvalid }, 'no cert');
  await t.rejects(makeCa({ authority: inter, now: () => new Date(Date.now() + 2 * 24 * 3600_000) }), { code: IdentityCode.RootInvalid }, 'expired intermediate');
});

t.test('root rotation operations and persistence', async (t) => {
  const store = new MemoryRootStore();
  const ca = await makeCa({ store });
  const oldId = ca.activeAuthority().id;
  const changes: string[] = [];
  ca.on('activeChanged', (i: string) => changes.push(i));
  const added = await ca.addAuthority();
  t.equal(ca.trustBundlePem().length, 2, 'both roots in the bundle');
  t.equal(ca.activeAuthority().id, oldId, 'still signing with the old root');
  t.equal((await store.load())?.authorities.length, 2, 'persisted');
  await t.rejects(ca.removeAuthority(oldId), { code: IdentityCode.RootActive });
  await t.rejects(ca.activateAuthority('nope'), { code: IdentityCode.RootUnknown });
  await ca.activateAuthority(added.id);
  t.same(changes, [added.id]);
  t.equal(ca.trustBundlePem()[0], added.rootPem, 'active root first');
  const issued = await ca.issue(await csrFor(id('a', 'b')), 0);
  t.equal(issued.certChainPem[1], added.rootPem, 'signed by the new root');
  await ca.removeAuthority(oldId);
  t.same(ca.trustBundlePem(), [added.rootPem]);
  t.same(ca.listAuthorities().map((a) => a.active), [true]);
  const restarted = await makeCa({ store });
  t.equal(restarted.activeAuthority().id, added.id, 'restart keeps the rotated state');
  // Adding existing material twice keeps one copy.
  await restarted.addAuthority(restarted.activeAuthority().material());
  t.equal(restarted.listAuthorities().length, 1);
});

t.test('a rotation record is saved with the roots it describes, and survives a restart', async (t) => {
  const store = new MemoryRootStore();
  const ca = await makeCa({ store });
  const oldId = ca.activeAuthority().id;
  const bundles: number[] = [];
  ca.on('bundleChanged', (roots: string[]) => bundles.push(roots.length));
  t.equal(ca.rotationState(), undefined, 'never rotated');
  const r = await ca.beginRotation();
  t.same([r.phase, r.from], ['trusting', oldId]);
  t.same(await ca.beginRotation(), r, 'begin again: the same rotation (idempotent)');
  t.equal(ca.listAuthorities().length, 2, 'one new root, not two');
  const saved = await store.load();
  t.same([saved?.rotation?.phase, saved?.rotation?.to, saved?.authorities.length, saved?.activeId], ['trusting', r.to, 2, oldId], 'record and root in one save');

  const restarted = await makeCa({ store });
  t.same(restarted.rotationState(), r, 'a restart resumes the recorded rotation');
  await restarted.activateAuthority(r.to, 'reissuing');
  t.same([(await store.load())?.activeId, (await store.load())?.rotation?.phase], [r.to, 'reissuing'], 'switch and phase saved together');
  await restarted.removeAuthority(r.from, 'retiring');
  t.same([(await store.load())?.authorities.length, (await store.load())?.rotation?.phase], [1, 'retiring']);
  const done = await restarted.setRotationPhase('done');
  t.ok(done.completedAt, 'done has a completion time');
  const next = await restarted.beginRotation();
  t.not(next.to, r.to, 'after done, begin starts a new rotation');
  t.same(bundles, [2], 'bundleChanged on the first CA object when its root was added');
});

t.test('a rotation that cannot be saved is not started', async (t) => {
  const store = new MemoryRootStore();
  const ca = await makeCa({ store });
  store.save = async () => {
    throw new Error('disk full');
  };
  await t.rejects(ca.beginRotation(), /disk full/);
  t.equal(ca.listAuthorities().length, 1, 'no root only in memory');
  t.equal(ca.rotationState(), undefined);
});

t.test('refusals are counted by reason; issuances and signing latency measured', async (t) => {
  const registry = new Registry();
  const ca = await makeCa({ registry });
  await ca.issue(await csrFor(id('a', 'b')), 0);
  await t.rejects(ca.issue(await csrFor('spiffe://elsewhere/ns/a/sa/b'), 0), { code: IdentityCode.TrustDomain });
  await t.rejects(
    ca.issue(await csrFor(id('a', 'b')), 0, {
      authorize: () => {
        throw Object.assign(new Error('x'), { code: 'whatever' });
      },
    }),
  );
  const text = await registry.metrics();
  t.match(text, /skein_ca_certificates_issued_total 1/);
  t.match(text, new RegExp(`skein_ca_requests_refused_total\\{reason="${IdentityCode.TrustDomain}"\\} 1`));
  t.match(text, new RegExp(`skein_ca_requests_refused_total\\{reason="${IdentityCode.CaInternal}"\\} 1`));
  t.match(text, /skein_ca_signing_duration_seconds_count 1/);
  // A second CA on the same registry reuses the metrics instead of throwing.
  const ca2 = await makeCa({ registry });
  t.equal(ca2.metrics.issued, ca.metrics.issued);
});

t.test('operator roots with P-384 and RSA keys sign P-256 leaves; other key types are refused', async (t) => {
  const { generateKeyPairSync } = await import('node:crypto');
  const { importSigningKey } = await import('../../../../src/identity/x509/keys.js');
  const { subtle } = await import('../../../../src/identity/x509/provider.js');
  for (const kind of ['P-384', 'RSA'] as const) {
    const keys =
      kind === 'RSA'
        ? await subtle.generateKey({ name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }, true, ['sign', 'verify'])
        : await subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify']);
    const root = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: '0a',
      name: `CN=operator ${kind} root`,
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3600_000),
      keys: keys as never,
      signingAlgorithm: kind === 'RSA' ? { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' } : { name: 'ECDSA', hash: 'SHA-384' },
      extensions: [new x509.BasicConstraintsExtension(true, undefined, true), await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as never)],
    });
    const keyPem = x509.PemConverter.encode(await subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY');
    const ca = await makeCa({ authority: { certChainPem: [root.toString('pem')], privateKeyPem: keyPem } });
    const issued = await ca.issue(await csrFor(id('op', kind.toLowerCase().replace('-', ''))), 60);
    const leaf = new X509Certificate(issued.certChainPem[0] as string);
    t.ok(leaf.verify(new X509Certificate(root.toString('pem')).publicKey), `${kind} root signature on the leaf verifies`);
    t.equal(verifyPeer(issued.certChainPem.slice(0, 1), issued.trustBundlePem, { trustDomain: TD }), id('op', kind.toLowerCase().replace('-', '')));
  }
  // SEC1 ("EC PRIVATE KEY") input is accepted and converted.
  const sec1 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'sec1', format: 'pem' }).toString();
  t.equal((await importSigningKey(sec1)).nodeHash, 'sha256');
  const ed = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
  await t.rejects(importSigningKey(ed), { code: IdentityCode.RootInvalid });
});
