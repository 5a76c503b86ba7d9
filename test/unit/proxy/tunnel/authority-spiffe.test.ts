/** Pure helpers: HBONE authority parsing and the SPIFFE peer check. */
import t from 'tap';
import { canonicalIp, formatAuthority, parseAuthority } from '../../../../src/proxy/tunnel/authority.js';
import { checkPeerIdentity, parseSpiffeId, parseSubjectAltName } from '../../../../src/proxy/tunnel/spiffe-peer.js';
import { makeCa, makeLeaf, OTHER_TRUST_DOMAIN, spiffe, TRUST_DOMAIN } from './fixtures.js';

function der(pem: string): Buffer {
  return Buffer.from(pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
}

t.test('authority', async (t) => {
  t.same(parseAuthority('10.0.0.5:8080'), { address: '10.0.0.5', port: 8080, family: 4 });
  t.same(parseAuthority('[fd00:0:0::5]:80'), { address: 'fd00::5', port: 80, family: 6 });
  for (const bad of [undefined, '', '10.0.0.5', 'pod:80', '10.0.0.5:0', '10.0.0.5:65536', '10.0.0.5:+80', '[fd00::5]80', 'fd00::5:80', '[10.0.0.5]:80', '999.1.1.1:80']) {
    t.equal(parseAuthority(bad), undefined, `rejects ${String(bad)}`);
  }
  t.equal(formatAuthority('fd00::5', 443), '[fd00::5]:443');
  t.equal(formatAuthority('10.1.2.3', 443), '10.1.2.3:443');
  t.equal(canonicalIp('FD00:0000::0005'), 'fd00::5');
  t.equal(canonicalIp('nope'), undefined);
});

t.test('SPIFFE IDs', async (t) => {
  t.same(parseSpiffeId('spiffe://cluster.local/ns/a/sa/b'), { trustDomain: 'cluster.local', path: '/ns/a/sa/b' });
  for (const bad of ['spiffe://cluster.local', 'spiffe://Cluster.local/x', 'https://cluster.local/x', 'spiffe://td/a/../b', 'spiffe://td/a?x=1', 'spiffe://td//a']) {
    t.equal(parseSpiffeId(bad), undefined, `rejects ${bad}`);
  }
});

t.test('subjectAltName text: quoted values cannot pose as extra entries', async (t) => {
  t.same(parseSubjectAltName('URI:spiffe://td/ns/a/sa/b, DNS:x.test'), [
    { type: 'URI', value: 'spiffe://td/ns/a/sa/b' },
    { type: 'DNS', value: 'x.test' },
  ]);
  t.same(parseSubjectAltName('URI:"spiffe://td/a, URI:spiffe://td/b"'), [{ type: 'URI', value: 'spiffe://td/a, URI:spiffe://td/b' }]);
  t.throws(() => parseSubjectAltName('URI:"unterminated'));
});

t.test('peer identity check on real certificates', async (t) => {
  const ca = await makeCa(TRUST_DOMAIN);
  const id = spiffe('ns1', 'sa1');
  const good = der((await makeLeaf(ca, [id])).certChainPem);
  t.same(checkPeerIdentity(good, TRUST_DOMAIN), { ok: true, identity: id });
  t.same(checkPeerIdentity(good, TRUST_DOMAIN, id), { ok: true, identity: id });
  t.match(checkPeerIdentity(good, TRUST_DOMAIN, spiffe('ns1', 'other')), { ok: false, reason: 'unexpected-identity' });
  t.match(checkPeerIdentity(good, OTHER_TRUST_DOMAIN), { ok: false, reason: 'wrong-trust-domain' });
  t.match(checkPeerIdentity(der((await makeLeaf(ca, [])).certChainPem), TRUST_DOMAIN), { ok: false, reason: 'no-uri-san' });
  t.match(checkPeerIdentity(der((await makeLeaf(ca, [id, spiffe('ns1', 'x')])).certChainPem), TRUST_DOMAIN), {
    ok: false,
    reason: 'multiple-uri-sans',
  });
  t.match(checkPeerIdentity(der((await makeLeaf(ca, ['urn:x:y'])).certChainPem), TRUST_DOMAIN), { ok: false, reason: 'not-spiffe' });
  t.match(checkPeerIdentity(undefined, TRUST_DOMAIN), { ok: false, reason: 'no-certificate' });
  t.match(checkPeerIdentity(Buffer.from('garbage'), TRUST_DOMAIN), { ok: false, reason: 'unparsable' });
});
