/** Pure helpers: HBONE authority parsing and the SPIFFE peer check. */
import t from 'tap';
import { canonicalIp, formatAuthority } from '../../../../src/config/address.js';
import { parseAuthority } from '../../../../src/proxy/tunnel/authority.js';
import { checkPeerIdentity } from '../../../../src/proxy/tunnel/spiffe-peer.js';
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

t.test('peer identity check on real certificates (identity\'s verifyPeer underneath)', async (t) => {
  const ca = await makeCa(TRUST_DOMAIN);
  const other = await makeCa(TRUST_DOMAIN, 'unrelated CA');
  const B = [ca.certPem];
  const id = spiffe('ns1', 'sa1');
  const good = der((await makeLeaf(ca, [id])).certChainPem);
  t.same(checkPeerIdentity(good, B, TRUST_DOMAIN), { ok: true, identity: id });
  t.same(checkPeerIdentity(good, B, TRUST_DOMAIN, id), { ok: true, identity: id });
  t.match(checkPeerIdentity(good, B, TRUST_DOMAIN, spiffe('ns1', 'other')), { ok: false, reason: 'SKEIN_IDENTITY_PEER_UNEXPECTED_IDENTITY' });
  t.match(checkPeerIdentity(good, B, OTHER_TRUST_DOMAIN), { ok: false, reason: 'SKEIN_IDENTITY_PEER_TRUST_DOMAIN' });
  t.match(checkPeerIdentity(good, [other.certPem], TRUST_DOMAIN), { ok: false, reason: 'SKEIN_IDENTITY_PEER_UNTRUSTED' });
  t.match(checkPeerIdentity(der((await makeLeaf(ca, [])).certChainPem), B, TRUST_DOMAIN), { ok: false, reason: 'SKEIN_IDENTITY_PEER_SAN_COUNT' });
  t.match(checkPeerIdentity(der((await makeLeaf(ca, [id, spiffe('ns1', 'x')])).certChainPem), B, TRUST_DOMAIN), {
    ok: false,
    reason: 'SKEIN_IDENTITY_PEER_SAN_COUNT',
  });
  t.match(checkPeerIdentity(der((await makeLeaf(ca, ['urn:x:y'])).certChainPem), B, TRUST_DOMAIN), { ok: false, reason: 'SKEIN_IDENTITY_PEER_NOT_SPIFFE' });
  t.match(checkPeerIdentity(undefined, B, TRUST_DOMAIN), { ok: false, reason: 'SKEIN_IDENTITY_PEER_NO_CERTIFICATE' });
  t.match(checkPeerIdentity({} as never, B, TRUST_DOMAIN), { ok: false, reason: 'SKEIN_IDENTITY_PEER_NO_CERTIFICATE' });
  t.match(checkPeerIdentity(Buffer.from('garbage'), B, TRUST_DOMAIN), { ok: false });
});
