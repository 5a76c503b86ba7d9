/**
 * Why a TLS handshake at the tunnel port (:15008) was refused, as a stable code for the log,
 * admin /stats and metrics. Node reports a client certificate that fails verification only
 * as the socket's `authorizationError` (the server destroys the socket itself, and the
 * 'tlsClientError' that follows says "socket hang up"), so both are read.
 */
import { TunnelCode } from '../codes.js';

/** The codes a refused handshake can get (all in TunnelCode, src/proxy/codes.ts). */
export const TlsRefusalCode = {
  UnknownCa: TunnelCode.TlsUnknownCa,
  CertExpired: TunnelCode.TlsCertExpired,
  CertNotYetValid: TunnelCode.TlsCertNotYetValid,
  CertRejected: TunnelCode.TlsCertRejected,
  NoClientCert: TunnelCode.TlsNoClientCert,
  AlpnMismatch: TunnelCode.TlsAlpnMismatch,
  ProtocolVersion: TunnelCode.TlsProtocolVersion,
  NotTls: TunnelCode.TlsNotTls,
  PeerRejectedServerCert: TunnelCode.TlsPeerRejectedServerCert,
  HandshakeTimeout: TunnelCode.TlsHandshakeTimeout,
  PeerClosed: TunnelCode.TlsPeerClosed,
  Failed: TunnelCode.TlsHandshakeFailed,
} as const;
export type TlsRefusal = (typeof TlsRefusalCode)[keyof typeof TlsRefusalCode];

const UNTRUSTED_CHAIN = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
]);

/**
 * The code for one refused handshake: `err` is what 'tlsClientError' gave, `authorizationError`
 * the socket's (OpenSSL's verification result of the client certificate), when it has one.
 */
export function classifyTlsRefusal(err: { code?: unknown; message?: unknown }, authorizationError?: unknown): TlsRefusal {
  const verify = typeof authorizationError === 'string' ? authorizationError : (authorizationError as { code?: unknown } | null | undefined)?.code;
  if (typeof verify === 'string' && verify !== '') {
    if (verify === 'CERT_HAS_EXPIRED') return TlsRefusalCode.CertExpired;
    if (verify === 'CERT_NOT_YET_VALID') return TlsRefusalCode.CertNotYetValid;
    if (UNTRUSTED_CHAIN.has(verify)) return TlsRefusalCode.UnknownCa;
    return TlsRefusalCode.CertRejected;
  }
  const code = typeof err.code === 'string' ? err.code : '';
  if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return TlsRefusalCode.HandshakeTimeout;
  if (code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE') return TlsRefusalCode.NoClientCert;
  if (code === 'ERR_SSL_NO_APPLICATION_PROTOCOL') return TlsRefusalCode.AlpnMismatch;
  if (/UNSUPPORTED_PROTOCOL|NO_PROTOCOLS_AVAILABLE|ALERT_PROTOCOL_VERSION|NO_SHARED_CIPHER/.test(code)) return TlsRefusalCode.ProtocolVersion;
  if (/WRONG_VERSION_NUMBER|HTTP_REQUEST|HTTPS_PROXY_REQUEST|PACKET_LENGTH_TOO_LONG|UNKNOWN_PROTOCOL/.test(code)) return TlsRefusalCode.NotTls;
  if (/ALERT_(UNKNOWN_CA|BAD_CERTIFICATE|CERTIFICATE_|UNSUPPORTED_CERTIFICATE|DECRYPT_ERROR|ACCESS_DENIED)/.test(code)) {
    return TlsRefusalCode.PeerRejectedServerCert;
  }
  if (code === 'ECONNRESET' || code === 'EPIPE') return TlsRefusalCode.PeerClosed;
  return TlsRefusalCode.Failed;
}
