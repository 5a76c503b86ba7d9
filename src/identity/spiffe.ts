import { SkeinError } from '../errors.js';
import { IdentityCode } from './codes.js';

/**
 * SPIFFE ID, `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`: the same string
 * config/model.ts carries in Workload.identity. Declared here too because identity does not
 * import the mesh model (the CA and the certificate store work on identities alone).
 */
export type SpiffeId = string;

/** A workload SPIFFE ID split into its parts. */
export interface WorkloadSpiffeId {
  id: SpiffeId;
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

// Trust domain: SPIFFE allows lower-case letters, digits, '.', '-', '_'. Namespace: a DNS
// label; service account: a DNS subdomain (Kubernetes object name rules).
const TRUST_DOMAIN = /^[a-z0-9._-]{1,255}$/;
const NAMESPACE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const SERVICE_ACCOUNT = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

export const SPIFFE_ID_INVALID = IdentityCode.SpiffeIdInvalid;

/**
 * Parses `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`, the only form of
 * identity this mesh issues or accepts. Throws SKEIN_IDENTITY_SPIFFE_ID_INVALID otherwise.
 */
export function parseWorkloadSpiffeId(id: string): WorkloadSpiffeId {
  const fail = (why: string): never => {
    throw new SkeinError(SPIFFE_ID_INVALID, `not a workload SPIFFE ID (${why})`, { id: id.slice(0, 300) });
  };
  if (!id.startsWith('spiffe://')) fail('scheme is not spiffe://');
  const rest = id.slice('spiffe://'.length);
  const slash = rest.indexOf('/');
  if (slash < 0) fail('no path');
  const trustDomain = rest.slice(0, slash);
  if (!TRUST_DOMAIN.test(trustDomain)) fail('bad trust domain');
  const parts = rest.slice(slash + 1).split('/');
  if (parts.length !== 4 || parts[0] !== 'ns' || parts[2] !== 'sa') fail('path is not /ns/<namespace>/sa/<service-account>');
  const namespace = parts[1] ?? '';
  const serviceAccount = parts[3] ?? '';
  if (!NAMESPACE.test(namespace)) fail('bad namespace');
  if (!SERVICE_ACCOUNT.test(serviceAccount)) fail('bad service account');
  return { id, trustDomain, namespace, serviceAccount };
}

/** The trust domain of a SPIFFE ID, or undefined when it is not a workload SPIFFE ID. */
export function trustDomainOf(id: string): string | undefined {
  try {
    return parseWorkloadSpiffeId(id).trustDomain;
  } catch {
    return undefined;
  }
}
