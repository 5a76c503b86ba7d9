/**
 * The identity room: the mesh CA (library + gRPC server, hosted by the controller) and the
 * agent's workload certificates, trust bundle and peer verification (used by the data path).
 */
export type { CallerIdentity, Authenticator, PresentedCredentials } from './ca/authn.js';
export { bearerTokenOf } from './ca/authn.js';
export { type AuthorityMaterial, SigningAuthority } from './ca/authority.js';
export { BootstrapTokenAuthenticator, createBootstrapTokens, readBootstrapToken } from './ca/bootstrap-tokens.js';
export { type AuthorityInfo, CertificateAuthority, type CertificateAuthorityOptions, type IssuedCertificate } from './ca/ca.js';
export { CaClient, type CaClientOptions, type CertificateIssuer, type IssuerResponse } from './workload/ca-client.js';
export { CaServer, type CaServerOptions, DEFAULT_CA_PORT, DEFAULT_SERVING_SANS } from './ca/ca-server.js';
export { CertificateStore, type CertificateStatus, type CertificateStoreOptions } from './workload/certificate-store.js';
export { IdentityCode } from './codes.js';
export { DEFAULT_TTL_POLICY, type TtlPolicy } from './ca/csr-validation.js';
export { SKEIN_CODE_METADATA } from './grpc-status.js';
export { type NodeAuthorizer, StaticNodeAuthorizer, WorkloadNodeAuthorizer } from './ca/node-authorizer.js';
export { type PeerChain, peerIdentityOf, type VerifyPeerOptions, verifyPeer } from './workload/peer-verification.js';
export { type Clock, DEFAULT_RENEWAL_POLICY, type RenewalPolicy, type Timers } from './workload/renewal.js';
export { DEFAULT_ROOT_FILE, FileRootStore, MemoryRootStore, type PersistedCaState, readAuthorityFiles, type RootStore } from './ca/root-store.js';
export { parseWorkloadSpiffeId, type WorkloadSpiffeId } from './spiffe.js';
export { type MeshTlsOptions, secureContextFor, tlsOptionsFor } from './workload/tls-options.js';
export { KubeTokenReviewer, TokenReviewAuthenticator, type TokenReviewer, type TokenReviewOptions } from './ca/token-review.js';
export { loadTrustBundleFile, saveTrustBundleFile, TrustBundle } from './workload/trust-bundle.js';
export type { IdentitySource, WorkloadCertificate } from './workload/types.js';
