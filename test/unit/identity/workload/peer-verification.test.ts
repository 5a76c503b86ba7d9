import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { SkeinError } from '../../../../src/errors.js';
import { SigningAuthority } from '../../../../src/identity/ca/authority.js';
import { IdentityCode } from '../../../../src/identity/codes.js';
import { createWorkloadCsr, generateP256KeyPair, privateKeyToPem } from '../../../../src/identity/x509/keys.js';
import { peerChainCertificates, peerIdentityOf, verifyPeer } from '../../../../src/identity/workload/peer-verification.js';
import { secureContextFor, tlsOptionsFor } from '../../../../src/identity/workload/tls-options.js';
import { loadTrustBundleFile, saveTrustBundleFile, TrustBundle } from '../../../../src/identity/workload/trust-bundle.js';
import type { WorkloadCertificate } from '../../../../src/identity/workload/types.js';
import { craftIntermediate, craftLeaf, id, makeCa, TD, tempDir } from '../helpers.js';

const WEB = id('shop', 'web');

async function workloadCert(ca: Awaited<ReturnType<typeof makeCa>>, identity: string, ttl = 600): Promise<WorkloadCertificate> {
  const keys = await generateP256KeyPair();
  const issued = await ca.issue(await createWorkloadCsr(identity, keys), ttl);
  const leaf = new X509Certificate(issued.certChainPem[0] as string);
  return {
    identity,
    certChainPem: issued.certChainPem.slice(0, -1).join(''),
    privateKeyPem: await privateKeyToPem(keys.privateKey),
    notBefore: leaf.validFromDate,
    notAfter: leaf.validToDate,
  };
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    return err instanceof SkeinError ? err.code : `non-skein ${String(err)}`;
  }
}

t.test('verifyPeer: good, wrong identity, other trust domain, unknown root, expired, SAN count', async (t) => {
  const ca = await makeCa();
  const bundle = ca.trustBundlePem();
  const good = await workloadCert(ca, WEB);
  t.equal(verifyPeer(good.certChainPem, bundle, { trustDomain: TD }), WEB);
  t.equal(verifyPeer(good.certChainPem, new TrustBundle(bundle), { trustDomain: TD, expected: WEB }), WEB);
  t.equal(verifyPeer(good.certChainPem, bundle, { trustDomain: TD, expected: [id('a', 'b'), WEB] }), WEB);
  const der = new X509Certificate(good.certChainPem).raw;
  t.equal(verifyPeer(der, bundle, { trustDomain: TD }), WEB, 'DER input');
  t.equal(verifyPeer([der], bundle, { trustDomain: TD }), WEB, 'DER array input');
  t.equal(verifyPeer([good.certChainPem], bundle, { trustDomain: TD }), WEB, 'PEM array input');

  t.equal(codeOf(() => verifyPeer(good.certChainPem, bundle, { trustDomain: TD, expected: id('shop', 'db') })), IdentityCode.PeerUnexpectedIdentity);
  t.equal(codeOf(() => verifyPeer(good.certChainPem, bundle, { trustDomain: 'other.td' })), IdentityCode.PeerTrustDomain);
  const otherCa = await makeCa();
  t.equal(codeOf(() => verifyPeer(good.certChainPem, otherCa.trustBundlePem(), { trustDomain: TD })), IdentityCode.PeerUntrusted, 'unknown root');
  t.equal(codeOf(() => verifyPeer(good.certChainPem, bundle, { trustDomain: TD, now: new Date(Date.now() + 3600_000) })), IdentityCode.PeerExpired, 'expired');
  t.equal(codeOf(() => verifyPeer(good.certChainPem, bundle, { trustDomain: TD, now: new Date(Date.now() - 3600_000) })), IdentityCode.PeerExpired, 'not yet valid');
  t.equal(codeOf(() => verifyPeer(undefined, bundle, { trustDomain: TD })), IdentityCode.PeerNoCert);
  t.equal(codeOf(() => verifyPeer('', bundle, { trustDomain: TD })), IdentityCode.PeerNoCert);
  t.equal(codeOf(() => verifyPeer(Buffer.from('junk'), bundle, { trustDomain: TD })), IdentityCode.PeerUntrusted);

  const a = ca.activeAuthority();
  const noSan = await craftLeaf(a);
  t.equal(codeOf(() => verifyPeer(noSan.pem, bundle, { trustDomain: TD })), IdentityCode.PeerSanCount, 'no SAN');
  const twoSans = await craftLeaf(a, { names: [{ type: 'url', value: WEB }, { type: 'url', value: id('shop', 'db') }] });
  t.equal(codeOf(() => verifyPeer(twoSans.pem, bundle, { trustDomain: TD })), IdentityCode.PeerSanCount, 'two SANs');
  const uriDns = await craftLeaf(a, { names: [{ type: 'url', value: WEB }, { type: 'dns', value: 'web' }] });
  t.equal(codeOf(() => verifyPeer(uriDns.pem, bundle, { trustDomain: TD })), IdentityCode.PeerSanCount, 'URI + DNS');
  const dnsOnly = await craftLeaf(a, { names: [{ type: 'dns', value: 'web' }] });
  t.equal(codeOf(() => verifyPeer(dnsOnly.pem, bundle, { trustDomain: TD })), IdentityCode.PeerNotSpiffe);
  const badPath = await craftLeaf(a, { names: [{ type: 'url', value: 'spiffe://cluster.local/other' }] });
  t.equal(codeOf(() => verifyPeer(badPath.pem, bundle, { trustDomain: TD })), IdentityCode.PeerNotSpiffe);
  const otherTd = await craftLeaf(a, { names: [{ type: 'url', value: 'spiffe://evil.td/ns/shop/sa/web' }] });
  t.equal(codeOf(() => verifyPeer(otherTd.pem, bundle, { trustDomain: TD })), IdentityCode.PeerTrustDomain, 'root signs a foreign trust domain');
  const expired = await craftLeaf(a, { names: [{ type: 'url', value: WEB }], notBefore: new Date(Date.now() - 7200_000), notAfter: new Date(Date.now() - 3600_000) });
  t.equal(codeOf(() => verifyPeer(expired.pem, bundle, { trustDomain: TD })), IdentityCode.PeerExpired);
  const caLeaf = await craftLeaf(a, { names: [{ type: 'url', value: WEB }], ca: true });
  t.equal(codeOf(() => verifyPeer(caLeaf.pem, bundle, { trustDomain: TD })), IdentityCode.PeerUntrusted, 'CA cert as leaf');
});

t.test('verifyPeer through an intermediate; several roots', async (t) => {
  const root = await SigningAuthority.generateRoot({ trustDomain: TD });
  const ca = await makeCa({ authority: await craftIntermediate(root) });
  const cert = await workloadCert(ca, WEB);
  const other = await SigningAuthority.generateRoot({ trustDomain: TD });
  t.equal(verifyPeer(cert.certChainPem, [other.rootPem, root.rootPem], { trustDomain: TD }), WEB, 'any root of the bundle');
  const leafOnly = `${cert.certChainPem.split('-----END CERTIFICATE-----')[0]}-----END CERTIFICATE-----\n`;
  t.equal(codeOf(() => verifyPeer(leafOnly, [root.rootPem], { trustDomain: TD })), IdentityCode.PeerUntrusted, 'missing intermediate');
  t.equal(peerChainCertificates(cert.certChainPem).length, 2);
  t.equal(peerChainCertificates(peerChainCertificates(cert.certChainPem)).length, 2, 'X509Certificate[] input');
});

t.test('tlsOptionsFor: mutual TLS on loopback, identities checked both ways, server context rotation', async (t) => {
  const ca = await makeCa();
  const bundle = new TrustBundle(ca.trustBundlePem());
  const server1 = await workloadCert(ca, id('shop', 'db'));
  const client = await workloadCert(ca, WEB);
  const serverOpts = tlsOptionsFor(server1, bundle, { trustDomain: TD, alpnProtocols: ['h2'] });
  t.equal(serverOpts.minVersion, 'TLSv1.3');
  t.same(serverOpts.ALPNProtocols, ['h2']);
  const peers: string[] = [];
  const server = tls.createServer(serverOpts, (s) => {
    peers.push(peerIdentityOf(s, bundle, { trustDomain: TD }));
    s.end(`hello ${s.alpnProtocol}`);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const connect = (expectedPeer: string, cert = client) =>
    new Promise<{ data: string; serverSerial: string }>((resolve, reject) => {
      const s = tls.connect({ ...tlsOptionsFor(cert, bundle, { trustDomain: TD, expectedPeer, alpnProtocols: ['h2'] }), host: '127.0.0.1', port, servername: 'mesh' });
      let data = '';
      s.on('data', (d) => {
        data += d;
      });
      s.on('end', () => resolve({ data, serverSerial: s.getPeerCertificate().serialNumber }));
      s.on('error', reject);
    });
  const r1 = await connect(id('shop', 'db'));
  t.equal(r1.data, 'hello h2');
  t.same(peers, [WEB], 'server learned the client identity');
  await t.rejects(connect(id('shop', 'other')), { code: IdentityCode.PeerUnexpectedIdentity }, 'client refuses the wrong server identity');

  // A client with a certificate from another root is refused by the server's OpenSSL check.
  const foreign = await workloadCert(await makeCa(), WEB);
  // TLS 1.3: the client finishes its handshake before the server judges its certificate, so
  // the refusal shows up as an alert/reset instead of data — never as an accepted stream.
  const refused = await connect(id('shop', 'db'), foreign).catch((e: NodeJS.ErrnoException) => ({ data: `error ${e.code}`, serverSerial: '' }));
  t.not(refused.data, 'hello h2', `server refused the foreign client (${refused.data || 'closed'})`);
  t.equal(peers.length, 1, 'the server handler never ran for it');

  // Rotation: setSecureContext switches the served certificate for new handshakes.
  const server2 = await workloadCert(ca, id('shop', 'db'));
  server.setSecureContext(tlsOptionsFor(server2, bundle, { trustDomain: TD }));
  const r2 = await connect(id('shop', 'db'));
  t.equal(r2.serverSerial, new X509Certificate(server2.certChainPem).serialNumber, 'new handshakes see the new certificate');
  t.ok(secureContextFor(server2, bundle).context, 'SecureContext for SNICallback');
  // Without options the trust domain is our own certificate's.
  const r3 = await new Promise<string>((resolve, reject) => {
    const s = tls.connect({ ...tlsOptionsFor(client, bundle), host: '127.0.0.1', port, servername: 'mesh' });
    let data = '';
    s.on('data', (d) => {
      data += d;
    });
    s.on('end', () => resolve(data));
    s.on('error', reject);
  });
  t.match(r3, /^hello /, 'connected with default options (trust domain of our own certificate)');
});

t.test('trust bundle: add, remove, replace, refuse bad roots', async (t) => {
  const a = await SigningAuthority.generateRoot({ trustDomain: TD });
  const b = await SigningAuthority.generateRoot({ trustDomain: TD });
  const tb = new TrustBundle([a.rootPem]);
  t.equal(tb.version, 1);
  t.equal(tb.add(b.rootPem), true);
  t.equal(tb.add(b.rootPem), false, 'idempotent');
  t.equal(tb.size, 2);
  t.equal(tb.version, 2);
  t.ok(tb.has(a.id) && tb.has(b.id));
  t.equal(tb.replace([b.rootPem, a.rootPem]), false, 'same set, order ignored');
  t.equal(tb.remove(a.id), true);
  t.equal(tb.remove(a.id), false);
  t.same(tb.fingerprints(), [b.id]);
  t.throws(() => tb.remove(b.id), { code: IdentityCode.BundleInvalid }, 'never empty');
  t.equal(tb.replace([a.rootPem + b.rootPem]), true, 'a PEM with two roots');
  t.equal(tb.size, 2);
  t.throws(() => tb.replace([]), { code: IdentityCode.BundleInvalid });
  t.throws(() => tb.replace(['junk']), { code: IdentityCode.BundleInvalid });
  t.throws(() => tb.replace(['-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n']), { code: IdentityCode.BundleInvalid });
  const ca = await makeCa();
  const leaf = await workloadCert(ca, WEB);
  t.throws(() => tb.add(leaf.certChainPem), { code: IdentityCode.BundleInvalid }, 'a leaf is not a root');
  const inter = await craftIntermediate(a);
  t.throws(() => tb.add(inter.certChainPem[0] as string), { code: IdentityCode.BundleInvalid }, 'an intermediate is not a root');
  t.equal(new TrustBundle().size, 0);

  const dir = tempDir(t, 'bundle');
  await saveTrustBundleFile(join(dir, 'sub', 'roots.pem'), [a.rootPem, b.rootPem]);
  t.equal((statSync(join(dir, 'sub', 'roots.pem')).mode & 0o777).toString(8), '644', 'public file');
  t.same(await loadTrustBundleFile(join(dir, 'sub', 'roots.pem')), [a.rootPem, b.rootPem]);
  await t.rejects(saveTrustBundleFile(join(dir, 'bad.pem'), [leaf.certChainPem]), { code: IdentityCode.BundleInvalid });
  writeFileSync(join(dir, 'empty.pem'), 'nothing');
  await t.rejects(loadTrustBundleFile(join(dir, 'empty.pem')), { code: IdentityCode.BundleInvalid });
});
