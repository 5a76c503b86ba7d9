/**
 * Peer authentication at the destination: whether a local pod takes plaintext from outside the
 * mesh on a port (PERMISSIVE) or only mutual TLS from the mesh (STRICT), from PeerAuthentication
 * objects as Istio reads them: the most specific scope that has a policy wins — workload
 * (selector) over namespace (no selector) over mesh (root namespace, no selector) — and a
 * policy's `portLevelMtls` overrides its mode on that port. Between policies of one scope the
 * first by name decides (deterministic on every agent).
 *
 * With no PeerAuthentication for the pod, the `skein.io/peer-authentication` annotation (pod,
 * else namespace) decides, as the shorthand it is; default STRICT.
 */
import type { Workload } from '../config/model.js';
import { type PeerAuthenticationPolicy, selectorMatches } from '../config/policy-model.js';

export type MtlsMode = 'STRICT' | 'PERMISSIVE';

/** The policy that decides for `w`, if any, and at which scope. */
export function peerAuthenticationFor(w: Workload, all: readonly PeerAuthenticationPolicy[]): { policy: PeerAuthenticationPolicy; scope: 'workload' | 'namespace' | 'mesh' } | undefined {
  const byName = (a: PeerAuthenticationPolicy, b: PeerAuthenticationPolicy) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
  const own = all.filter((p) => !p.meshWide && p.namespace === w.namespace).sort(byName);
  const workload = own.find((p) => p.selector && selectorMatches(p.selector, w.labels));
  if (workload) return { policy: workload, scope: 'workload' };
  const namespace = own.find((p) => !p.selector);
  if (namespace) return { policy: namespace, scope: 'namespace' };
  const mesh = all.filter((p) => p.meshWide && !p.selector).sort(byName)[0];
  return mesh ? { policy: mesh, scope: 'mesh' } : undefined;
}

/** The mode for plaintext to `port` of `w`. */
export function mtlsModeFor(w: Workload, port: number, all: readonly PeerAuthenticationPolicy[]): MtlsMode {
  return modeOf(peerAuthenticationFor(w, all)?.policy, w, port);
}

/** The mode `policy` (the one that decides for `w`, if any) gives plaintext to `port`. */
export function modeOf(policy: PeerAuthenticationPolicy | undefined, w: Workload, port: number): MtlsMode {
  if (!policy) return w.peerAuthentication === 'PERMISSIVE' ? 'PERMISSIVE' : 'STRICT';
  return policy.portLevelMtls[String(port)] ?? policy.mode;
}
