import t from 'tap';
import { classifyTlsRefusal, TlsRefusalCode } from '../../../../src/proxy/tunnel/tls-refusal.js';

t.test('a refused handshake gets a stable code from the verification result, else the TLS error', async (t) => {
  const hangUp = { code: 'ECONNRESET', message: 'socket hang up' };
  t.equal(classifyTlsRefusal(hangUp, 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'), TlsRefusalCode.UnknownCa, 'foreign CA behind a hang-up');
  t.equal(classifyTlsRefusal(hangUp, 'SELF_SIGNED_CERT_IN_CHAIN'), TlsRefusalCode.UnknownCa);
  t.equal(classifyTlsRefusal(hangUp, 'CERT_HAS_EXPIRED'), TlsRefusalCode.CertExpired);
  t.equal(classifyTlsRefusal(hangUp, 'CERT_NOT_YET_VALID'), TlsRefusalCode.CertNotYetValid);
  t.equal(classifyTlsRefusal(hangUp, 'INVALID_PURPOSE'), TlsRefusalCode.CertRejected);
  t.equal(classifyTlsRefusal(hangUp, { code: 'CERT_HAS_EXPIRED' }), TlsRefusalCode.CertExpired, 'an Error-shaped verify error');
  t.equal(classifyTlsRefusal(hangUp, null), TlsRefusalCode.PeerClosed, 'a hang-up with nothing verified');
  t.equal(classifyTlsRefusal({ code: 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE' }), TlsRefusalCode.NoClientCert);
  t.equal(classifyTlsRefusal({ code: 'ERR_SSL_NO_APPLICATION_PROTOCOL' }), TlsRefusalCode.AlpnMismatch);
  t.equal(classifyTlsRefusal({ code: 'ERR_TLS_HANDSHAKE_TIMEOUT' }), TlsRefusalCode.HandshakeTimeout);
  t.equal(classifyTlsRefusal({ code: 'ERR_SSL_UNSUPPORTED_PROTOCOL' }), TlsRefusalCode.ProtocolVersion);
  t.equal(classifyTlsRefusal({ code: 'ERR_SSL_HTTP_REQUEST' }), TlsRefusalCode.NotTls);
  t.equal(classifyTlsRefusal({ code: 'ERR_SSL_WRONG_VERSION_NUMBER' }), TlsRefusalCode.NotTls);
  t.equal(classifyTlsRefusal({ code: 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA' }), TlsRefusalCode.PeerRejectedServerCert);
  t.equal(classifyTlsRefusal({ code: 'ERR_SOMETHING_NEW' }), TlsRefusalCode.Failed);
  t.equal(classifyTlsRefusal({}), TlsRefusalCode.Failed);
  for (const code of Object.values(TlsRefusalCode)) t.match(code, /^SKEIN_TUNNEL_TLS_[A-Z0-9_]+$/, `${code} follows SKEIN_<AREA>_<CAUSE>`);
});
