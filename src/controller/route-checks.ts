/** Cross-checks of routes and policies against the rest of the mesh, run by the index's global pass. */
import type { Service } from '../config/model.js';
import type { MeshRoute } from '../config/policy-model.js';
import { ControllerCode } from './codes.js';
import { matchKey, type PolicyResource } from './policy-translate.js';

export function policyObjectKey(p: PolicyResource): string {
  const v = p.value;
  switch (p.type) {
    case 'route':
      return `gateway.networking.k8s.io/${p.value.kind}/${v.namespace}/${v.name}`;
    case 'backend-policy':
      return `networking.skein.io/BackendTrafficPolicy/${v.namespace}/${v.name}`;
    case 'authorization':
      return `security.skein.io/AuthorizationPolicy/${v.namespace}/${v.name}`;
    case 'peer-authentication':
      return `security.skein.io/PeerAuthentication/${v.namespace}/${v.name}`;
  }
}

/** A route's parents and backends must exist; its matches must not be claimed by an older route. */
export function routeProblem(
  r: MeshRoute,
  services: Map<string, Service>,
  claims: Map<string, string>,
): { field: string; reason: string; code: string } | undefined {
  for (const [i, p] of r.parents.entries()) {
    if (!services.has(`${p.namespace}/${p.name}`)) {
      return { field: `spec.parentRefs[${i}]`, reason: `Service ${p.namespace}/${p.name} does not exist`, code: ControllerCode.Refused };
    }
  }
  for (const [i, rule] of r.rules.entries()) {
    for (const [j, b] of rule.backends.entries()) {
      if (!services.has(`${b.namespace}/${b.name}`)) {
        return {
          field: `spec.rules[${i}].backendRefs[${j}]`,
          reason: `Service ${b.namespace}/${b.name} does not exist`,
          code: ControllerCode.Refused,
        };
      }
    }
  }
  const mine: string[] = [];
  for (const p of r.parents) {
    for (const [i, rule] of r.rules.entries()) {
      for (const [j, m] of rule.matches.entries()) {
        const claim = `${r.kind}|${p.namespace}/${p.name}:${p.port ?? '*'}|${(r.hostnames.length ? r.hostnames : ['*']).sort().join(',')}|${matchKey(m)}`;
        const owner = claims.get(claim);
        if (owner) {
          return {
            field: `spec.rules[${i}].matches[${j}]`,
            reason: `conflicts with ${owner} (older), which already routes this match for Service ${p.namespace}/${p.name}`,
            code: ControllerCode.Conflict,
          };
        }
        mine.push(claim);
      }
    }
  }
  for (const c of mine) claims.set(c, `${r.kind} ${r.namespace}/${r.name}`);
  return undefined;
}
