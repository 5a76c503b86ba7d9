/**
 * Stable error codes of the identity room (SKEIN_IDENTITY_<CAUSE>). Operators grep logs and
 * alerts for these; the CA also sends them to agents (gRPC trailer `skein-code`, and the
 * start of the status message). test/unit/error-codes.test.ts keeps every code of src/ in a
 * codes.ts, once, and listed in the README.
 */
export const IdentityCode = {
  // CSR / request validation (gRPC INVALID_ARGUMENT)
  /** The CSR cannot be parsed or is not a PKCS#10 request. */
  CsrInvalid: 'SKEIN_IDENTITY_CSR_INVALID',
  /** The CSR's signature does not verify with its own key. */
  CsrSignature: 'SKEIN_IDENTITY_CSR_BAD_SIGNATURE',
  /** The CSR key is not ECDSA P-256. */
  CsrKey: 'SKEIN_IDENTITY_CSR_KEY_NOT_P256',
  /** The CSR does not carry exactly one SAN. */
  CsrSanCount: 'SKEIN_IDENTITY_CSR_SAN_COUNT',
  /** The CSR's SAN is not a URI. */
  CsrSanNotUri: 'SKEIN_IDENTITY_CSR_SAN_NOT_URI',
  /** Not a workload SPIFFE ID (spiffe://<td>/ns/<ns>/sa/<sa>). */
  SpiffeIdInvalid: 'SKEIN_IDENTITY_SPIFFE_ID_INVALID',
  /** The requested identity is in another trust domain than the CA's. */
  TrustDomain: 'SKEIN_IDENTITY_TRUST_DOMAIN_MISMATCH',
  /** The requested lifetime is negative or not a number. */
  TtlInvalid: 'SKEIN_IDENTITY_TTL_INVALID',
  // caller (gRPC UNAUTHENTICATED / PERMISSION_DENIED)
  /** The caller presented no credential the CA accepts. */
  Unauthenticated: 'SKEIN_IDENTITY_UNAUTHENTICATED',
  /** No pod with that identity runs on the caller's node. */
  NodeNotAuthorized: 'SKEIN_IDENTITY_NODE_NOT_AUTHORIZED',
  // CA state
  /** The CA failed for a reason of its own (logged on the CA side). */
  CaInternal: 'SKEIN_IDENTITY_CA_INTERNAL',
  /** The CA, or the TokenReview API it asks, cannot be reached. */
  CaUnavailable: 'SKEIN_IDENTITY_CA_UNAVAILABLE',
  /** A CA root or chain (stored or given by the operator) is unusable. */
  RootInvalid: 'SKEIN_IDENTITY_ROOT_INVALID',
  /** The CA state file can be read by others than its owner. */
  RootFilePermissions: 'SKEIN_IDENTITY_ROOT_FILE_PERMISSIONS',
  /** No authority with that id. */
  RootUnknown: 'SKEIN_IDENTITY_ROOT_UNKNOWN',
  /** The signing authority cannot be removed; activate another first. */
  RootActive: 'SKEIN_IDENTITY_ROOT_ACTIVE',
  /** A bootstrap token file is empty or named for an invalid node. */
  BootstrapTokens: 'SKEIN_IDENTITY_BOOTSTRAP_TOKEN_INVALID',
  // agent side
  /** No local pod holds that identity (acquire it first). */
  NotHeld: 'SKEIN_IDENTITY_NOT_HELD',
  /** The identity was released (no local pod left) while waiting for it. */
  Released: 'SKEIN_IDENTITY_RELEASED',
  /** The first certificate did not arrive in time. */
  IssuanceTimeout: 'SKEIN_IDENTITY_ISSUANCE_TIMEOUT',
  /** The caller stopped waiting for a certificate. */
  IssuanceAborted: 'SKEIN_IDENTITY_ISSUANCE_ABORTED',
  /** The CA refused or failed the request for another reason. */
  IssuanceFailed: 'SKEIN_IDENTITY_ISSUANCE_FAILED',
  /** The CA returned a certificate that does not match the request or the bundle. */
  IssuedCertInvalid: 'SKEIN_IDENTITY_ISSUED_CERT_INVALID',
  /** A trust bundle is empty or holds something other than CA roots. */
  BundleInvalid: 'SKEIN_IDENTITY_BUNDLE_INVALID',
  /** The certificate store is closed. */
  StoreClosed: 'SKEIN_IDENTITY_STORE_CLOSED',
  // peer verification (data path)
  /** The peer presented no certificate. */
  PeerNoCert: 'SKEIN_IDENTITY_PEER_NO_CERTIFICATE',
  /** The peer certificate does not chain to the trust bundle. */
  PeerUntrusted: 'SKEIN_IDENTITY_PEER_UNTRUSTED',
  /** The peer certificate is expired or not yet valid. */
  PeerExpired: 'SKEIN_IDENTITY_PEER_EXPIRED',
  /** The peer certificate does not carry exactly one URI SAN. */
  PeerSanCount: 'SKEIN_IDENTITY_PEER_SAN_COUNT',
  /** The peer certificate's URI SAN is not a workload SPIFFE ID. */
  PeerNotSpiffe: 'SKEIN_IDENTITY_PEER_NOT_SPIFFE',
  /** The peer is in another trust domain. */
  PeerTrustDomain: 'SKEIN_IDENTITY_PEER_TRUST_DOMAIN',
  /** The peer is not the identity expected for that destination. */
  PeerUnexpectedIdentity: 'SKEIN_IDENTITY_PEER_UNEXPECTED_IDENTITY',
} as const;

export type IdentityCodeValue = (typeof IdentityCode)[keyof typeof IdentityCode];
