/**
 * Stable error codes of the identity room (SKEIN_IDENTITY_<CAUSE>). Operators grep logs and
 * alerts for these; the CA also sends them to agents (gRPC trailer `skein-code`, and the
 * start of the status message). test/unit/error-codes.test.ts keeps every code of src/ in a
 * codes.ts, once, and listed in the README.
 */
export const IdentityCode = {
  // CSR / request validation (gRPC INVALID_ARGUMENT)
  CsrInvalid: 'SKEIN_IDENTITY_CSR_INVALID',
  CsrSignature: 'SKEIN_IDENTITY_CSR_BAD_SIGNATURE',
  CsrKey: 'SKEIN_IDENTITY_CSR_KEY_NOT_P256',
  CsrSanCount: 'SKEIN_IDENTITY_CSR_SAN_COUNT',
  CsrSanNotUri: 'SKEIN_IDENTITY_CSR_SAN_NOT_URI',
  SpiffeIdInvalid: 'SKEIN_IDENTITY_SPIFFE_ID_INVALID',
  TrustDomain: 'SKEIN_IDENTITY_TRUST_DOMAIN_MISMATCH',
  TtlInvalid: 'SKEIN_IDENTITY_TTL_INVALID',
  // caller (gRPC UNAUTHENTICATED / PERMISSION_DENIED)
  Unauthenticated: 'SKEIN_IDENTITY_UNAUTHENTICATED',
  NodeNotAuthorized: 'SKEIN_IDENTITY_NODE_NOT_AUTHORIZED',
  // CA state
  CaInternal: 'SKEIN_IDENTITY_CA_INTERNAL',
  CaUnavailable: 'SKEIN_IDENTITY_CA_UNAVAILABLE',
  RootInvalid: 'SKEIN_IDENTITY_ROOT_INVALID',
  RootFilePermissions: 'SKEIN_IDENTITY_ROOT_FILE_PERMISSIONS',
  RootUnknown: 'SKEIN_IDENTITY_ROOT_UNKNOWN',
  RootActive: 'SKEIN_IDENTITY_ROOT_ACTIVE',
  BootstrapTokens: 'SKEIN_IDENTITY_BOOTSTRAP_TOKEN_INVALID',
  // agent side
  NotHeld: 'SKEIN_IDENTITY_NOT_HELD',
  Released: 'SKEIN_IDENTITY_RELEASED',
  IssuanceTimeout: 'SKEIN_IDENTITY_ISSUANCE_TIMEOUT',
  IssuanceAborted: 'SKEIN_IDENTITY_ISSUANCE_ABORTED',
  IssuanceFailed: 'SKEIN_IDENTITY_ISSUANCE_FAILED',
  IssuedCertInvalid: 'SKEIN_IDENTITY_ISSUED_CERT_INVALID',
  BundleInvalid: 'SKEIN_IDENTITY_BUNDLE_INVALID',
  StoreClosed: 'SKEIN_IDENTITY_STORE_CLOSED',
  // peer verification (data path)
  PeerNoCert: 'SKEIN_IDENTITY_PEER_NO_CERTIFICATE',
  PeerUntrusted: 'SKEIN_IDENTITY_PEER_UNTRUSTED',
  PeerExpired: 'SKEIN_IDENTITY_PEER_EXPIRED',
  PeerSanCount: 'SKEIN_IDENTITY_PEER_SAN_COUNT',
  PeerNotSpiffe: 'SKEIN_IDENTITY_PEER_NOT_SPIFFE',
  PeerTrustDomain: 'SKEIN_IDENTITY_PEER_TRUST_DOMAIN',
  PeerUnexpectedIdentity: 'SKEIN_IDENTITY_PEER_UNEXPECTED_IDENTITY',
} as const;

export type IdentityCodeValue = (typeof IdentityCode)[keyof typeof IdentityCode];
