import { verify } from 'node:crypto';
import { SkeinError } from '../../errors.js';
import { IdentityCode } from '../codes.js';
import { firstElement } from '../x509/der.js';
import { p256KeyOf } from '../x509/keys.js';
import { parseWorkloadSpiffeId, type WorkloadSpiffeId } from '../spiffe.js';
import { x509 } from '../x509/provider.js';

export interface TtlPolicy {
  /** Used when the request asks for 0 (no preference). */
  defaultTtlSeconds: number;
  /** Requests above this are capped to it, not refused. */
  maxTtlSeconds: number;
}

export const DEFAULT_TTL_POLICY: TtlPolicy = { defaultTtlSeconds: 24 * 3600, maxTtlSeconds: 7 * 24 * 3600 };

/** What a valid CSR asks for. */
export interface ValidatedCsr {
  identity: WorkloadSpiffeId;
  /** SubjectPublicKeyInfo DER of the requester's key. */
  publicKeySpki: ArrayBuffer;
  ttlSeconds: number;
  /** The requested TTL was above the cap. */
  ttlCapped: boolean;
}

const MAX_CSR_PEM_BYTES = 16 * 1024;
const SAN_OID = '2.5.29.17';

/** The TTL to issue for a requested one: 0/absent -> default, above the cap -> the cap. */
export function effectiveTtl(requested: number | undefined, policy: TtlPolicy): { ttlSeconds: number; capped: boolean } {
  const r = requested ?? 0;
  if (!Number.isFinite(r) || r < 0) {
    throw new SkeinError(IdentityCode.TtlInvalid, 'requested TTL must be a non-negative number of seconds', { requested });
  }
  if (r === 0) return { ttlSeconds: Math.min(policy.defaultTtlSeconds, policy.maxTtlSeconds), capped: false };
  const whole = Math.max(1, Math.floor(r));
  return whole > policy.maxTtlSeconds ? { ttlSeconds: policy.maxTtlSeconds, capped: true } : { ttlSeconds: whole, capped: false };
}

/**
 * Checks a PKCS#10 CSR against the mesh's rules: its signature verifies, the key is ECDSA
 * P-256, it carries exactly one SAN which is a URI, and that URI is a workload SPIFFE ID
 * in `trustDomain`. The subject (CN...) is ignored: it is never copied into the leaf.
 */
// async: callers await it, and a future check may need to be (e.g. a revocation lookup).
export async function validateCsr(csrPem: string, trustDomain: string, requestedTtlSeconds: number | undefined, policy: TtlPolicy): Promise<ValidatedCsr> {
  if (csrPem.length > MAX_CSR_PEM_BYTES) throw new SkeinError(IdentityCode.CsrInvalid, 'CSR too large');
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (err) {
    throw new SkeinError(IdentityCode.CsrInvalid, 'CSR is not a parseable PKCS#10 request', undefined, { cause: err });
  }
  // The key is parsed lazily on first access: a corrupted SubjectPublicKeyInfo (e.g. a flipped
  // curve-parameters tag) throws here, not in the constructor. Found by the property test.
  let spki: ArrayBuffer;
  try {
    spki = csr.publicKey.rawData;
  } catch (err) {
    throw new SkeinError(IdentityCode.CsrKey, 'CSR key is not a parseable SubjectPublicKeyInfo', undefined, { cause: err });
  }
  const key = p256KeyOf(spki);
  if (!key) throw new SkeinError(IdentityCode.CsrKey, 'CSR key is not ECDSA P-256');
  // Node's verify on the raw to-be-signed bytes: the same check as csr.verify(), without a
  // WebCrypto key import per request. The CSR must be signed with ECDSA and SHA-256.
  let signatureOk = false;
  try {
    const alg = csr.signatureAlgorithm as { name?: string; hash?: { name?: string } };
    signatureOk =
      alg.name === 'ECDSA' && alg.hash?.name === 'SHA-256' && verify('sha256', firstElement(Buffer.from(csr.rawData)), key, Buffer.from(csr.signature));
  } catch {
    signatureOk = false;
  }
  if (!signatureOk) throw new SkeinError(IdentityCode.CsrSignature, 'CSR signature does not verify with its own key');

  let names: x509.GeneralName[];
  try {
    const sanExts = csr.extensions.filter((e) => e.type === SAN_OID);
    names = sanExts.flatMap((e) => new x509.SubjectAlternativeNameExtension(e.rawData).names.items);
  } catch (err) {
    throw new SkeinError(IdentityCode.CsrInvalid, 'CSR extensions are not parseable', undefined, { cause: err });
  }
  if (names.length !== 1) {
    throw new SkeinError(IdentityCode.CsrSanCount, `CSR must carry exactly one SAN, found ${names.length}`, { count: names.length });
  }
  const san = names[0] as x509.GeneralName;
  if (san.type !== 'url') throw new SkeinError(IdentityCode.CsrSanNotUri, `CSR SAN must be a URI, found ${san.type}`);
  const identity = parseWorkloadSpiffeId(san.value);
  if (identity.trustDomain !== trustDomain) {
    throw new SkeinError(IdentityCode.TrustDomain, `SPIFFE ID is in trust domain ${identity.trustDomain}, this CA serves ${trustDomain}`, {
      identity: identity.id,
    });
  }
  const { ttlSeconds, capped } = effectiveTtl(requestedTtlSeconds, policy);
  return { identity, publicKeySpki: spki, ttlSeconds, ttlCapped: capped };
}
