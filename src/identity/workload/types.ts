import type { SpiffeId } from '../spiffe.js';

/** A workload certificate held in the agent's memory (the key never leaves it). */
export interface WorkloadCertificate {
  identity: SpiffeId;
  /** PEM: leaf first, then intermediates (no roots). */
  certChainPem: string;
  /** PEM PKCS#8 private key (ECDSA P-256). Never logged, never written to disk. */
  privateKeyPem: string;
  notBefore: Date;
  notAfter: Date;
}

/**
 * What the data path needs from identity: a certificate for a local workload identity and
 * the current trust bundle. `certificateFor` waits for issuance when the certificate is not
 * there yet (a connection waits rather than fails) and rejects with a SkeinError on failure.
 */
export interface IdentitySource {
  certificateFor(identity: SpiffeId, signal?: AbortSignal): Promise<WorkloadCertificate>;
  /**
   * The current certificate of a held identity when there is a valid one, without waiting
   * (the per-request fast path); undefined otherwise (then use certificateFor).
   */
  currentCertificate?(identity: SpiffeId): WorkloadCertificate | undefined;
  /** PEM roots currently trusted (several during a root rotation). */
  trustBundlePem(): string[];
  /** Trust domain this mesh's identities live in. */
  trustDomain(): string;
}
