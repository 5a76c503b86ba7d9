/** Cross-checks of routes and policies against the rest of the mesh, run by the index's global pass. */
import type { Service } from '../config/model.js';
import type { BackendTrafficPolicy, MeshRoute, RouteFilters } from '../config/policy-model.js';
import { ControllerCode } from './codes.js';
import { granted, matchKey, type PolicyResource, type ReferenceGrant } from './policy-translate.js';

export interface CrossProblem {
  field: string;
  reason: string;
  code: string;
}

export function policyObjectKey(p: PolicyResource): string {
  const v = p.value;
  switch (p.type) {
    case 'route':
      return `gateway.networking.k8s.io/${p.value.kind}/${v.namespace}/${v.name}`;
    case 'backend-policy':
      return `networking.skein.io/BackendTrafficPolicy/${v.namespace}/${v.name}`;
    case 'authorization':
      return `security.skein.io/AuthorizationPolicy/${v.namespace}/${v.name}`;
    case 'reference-grant':
      return `gateway.networking.k8s.io/ReferenceGrant/${v.namespace}/${v.name}`;
    case 'peer-authentication':
      return `security.skein.io/PeerAuthentication/${v.namespace}/${v.name}`;
  }
}

/** A route's parents and backends must exist; its matches must not be claimed by an older route. */
export function routeProblem(
  r: MeshRoute,
  services: Map<string, Service>,
  claims: Map<string, string>,
  mirrorFields: ReadonlyMap<string, string> = new Map(),
  grants: ReadonlyMap<string, readonly ReferenceGrant[]> = new Map(),
): CrossProblem | undefined {
  // A Service of another namespace (backend or mirror) needs that namespace's ReferenceGrant
  // (Gateway API: otherwise ResolvedRefs=False, RefNotPermitted).
  const permitted = (ns: string, name: string): boolean => ns === r.namespace || granted(grants.get(ns) ?? [], r.kind, r.namespace, name);
  const notPermitted = (field: string, ns: string, name: string): CrossProblem => ({
    field,
    reason: `RefNotPermitted: Service ${ns}/${name} is in another namespace and no ReferenceGrant in ${ns} lets ${r.kind}s of ${r.namespace} refer to it`,
    code: ControllerCode.Refused,
  });
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
      if (!permitted(b.namespace, b.name)) return notPermitted(`spec.rules[${i}].backendRefs[${j}]`, b.namespace, b.name);
    }
    const lists: [string, RouteFilters | undefined][] = [[`spec.rules[${i}].filters`, rule.filters], ...rule.backends.map((b, j): [string, RouteFilters | undefined] => [`spec.rules[${i}].backendRefs[${j}].filters`, b.filters])];
    for (const [at, filters] of lists) {
      for (const [k, m] of (filters?.mirrors ?? []).entries()) {
        if (!permitted(m.namespace, m.name)) return notPermitted(mirrorFields.get(`${at}#${k}`) ?? at, m.namespace, m.name);
      }
    }
    const mirror = mirrorProblem(rule.filters, `spec.rules[${i}].filters`, services, mirrorFields);
    if (mirror) return mirror;
    for (const [j, b] of rule.backends.entries()) {
      const p = mirrorProblem(b.filters, `spec.rules[${i}].backendRefs[${j}].filters`, services, mirrorFields);
      if (p) return p;
    }
  }
  const mine: string[] = [];
  for (const p of r.parents) {
    for (const [i, rule] of r.rules.entries()) {
      for (const [j, m] of rule.matches.entries()) {
        // Producer routes (in the Service's namespace) and each namespace's consumer routes are
        // separate route sets (GAMMA): a consumer route never conflicts with the producer's.
        const scope = r.namespace === p.namespace ? 'producer' : `consumer:${r.namespace}`;
        const claim = `${r.kind}|${scope}|${p.namespace}/${p.name}:${p.port ?? '*'}|${(r.hostnames.length ? r.hostnames : ['*']).sort().join(',')}|${matchKey(m)}`;
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

function mirrorProblem(
  filters: MeshRoute['rules'][number]['filters'],
  at: string,
  services: Map<string, Service>,
  mirrorFields: ReadonlyMap<string, string>,
): CrossProblem | undefined {
  for (const [k, m] of (filters?.mirrors ?? []).entries()) {
    if (!services.has(`${m.namespace}/${m.name}`)) {
      return { field: mirrorFields.get(`${at}#${k}`) ?? at, reason: `mirror Service ${m.namespace}/${m.name} does not exist`, code: ControllerCode.Refused };
    }
  }
  return undefined;
}

/**
 * A BackendTrafficPolicy's targets must exist (a Service; a served route, and its rule when
 * sectionName names one), and each target has one policy: the oldest (creationTimestamp,
 * then name) wins, later ones are refused naming it. Call in age order; `claims` collects
 * the winners.
 */
export function backendPolicyProblem(
  p: BackendTrafficPolicy,
  refs: string[],
  services: Map<string, Service>,
  routes: Map<string, MeshRoute>,
  claims: Map<string, string>,
): CrossProblem | undefined {
  for (const [i, ref] of refs.entries()) {
    const field = `spec.targetRefs[${i}]`;
    const [kind, rest] = [ref.slice(0, ref.indexOf('/')), ref.slice(ref.indexOf('/') + 1)];
    if (kind === 'Service') {
      if (!services.has(rest)) return { field, reason: `Service ${rest} does not exist`, code: ControllerCode.Refused };
      continue;
    }
    const [routeName, section] = rest.split('#') as [string, string | undefined];
    const route = routes.get(`${kind}/${routeName}`);
    if (!route) return { field, reason: `${kind} ${routeName} does not exist or is refused`, code: ControllerCode.Refused };
    if (section !== undefined && !route.rules.some((r) => r.name === section)) {
      return { field: `${field}.sectionName`, reason: `${kind} ${routeName} has no rule named ${JSON.stringify(section)}`, code: ControllerCode.Refused };
    }
  }
  for (const [i, ref] of refs.entries()) {
    const owner = claims.get(ref);
    if (owner) {
      const what = ref.startsWith('Service/') ? `Service ${ref.slice(8)}` : ref.replace('/', ' ').replace('#', ' rule ');
      return { field: `spec.targetRefs[${i}]`, reason: `conflicts with ${owner} (older), which already applies to ${what}`, code: ControllerCode.Conflict };
    }
  }
  for (const ref of refs) claims.set(ref, `BackendTrafficPolicy ${p.namespace}/${p.name}`);
  return undefined;
}
