/**
 * skein policy CRDs and Gateway API routes -> the policy model. Runs after the schema check,
 * so shapes are known; what is refused here is what a schema cannot say. Routes are
 * route-translate.ts's, BackendTrafficPolicy backend-policy-translate.ts's. Cross-object
 * checks (selectors matching nothing, conflicting routes, missing backends or targets)
 * belong to the index, which sees every object.
 */
import type { Obj } from '../config/kube/objects.js';
import type { AuthorizationPolicy, BackendTrafficPolicy, MeshRoute, PeerAuthenticationPolicy, WorkloadSelector } from '../config/policy-model.js';
import { WHEN_KEYS, whenKey } from '../policy/authorization.js';
import { translateBackendPolicy } from './backend-policy-translate.js';
import { type Any, ObjectProblem, strip } from './object-problem.js';
import { translateRoute } from './route-translate.js';

export { ObjectProblem } from './object-problem.js';
export { matchKey } from './route-translate.js';

export type PolicyResource =
  /** mirrorFields: the field of each mirror's backendRef (route-translate.ts). */
  | { type: 'route'; value: MeshRoute; mirrorFields: Map<string, string> }
  | { type: 'authorization'; value: AuthorizationPolicy }
  | { type: 'peer-authentication'; value: PeerAuthenticationPolicy }
  /** refs: the target key of each spec.targetRefs[i] (backend-policy-translate.ts). */
  | { type: 'backend-policy'; value: BackendTrafficPolicy; refs: string[] }
  /** Controller-only (never streamed): which routes of other namespaces may name this namespace's Services. */
  | { type: 'reference-grant'; value: ReferenceGrant };

/** Gateway API ReferenceGrant, as the index checks cross-namespace backendRefs against it. */
export interface ReferenceGrant {
  namespace: string;
  name: string;
  from: { group: string; kind: string; namespace: string }[];
  /** `name` absent: every object of that kind in the grant's namespace. */
  to: { group: string; kind: string; name?: string }[];
}

/** Whether a grant in the backend's namespace lets a `routeKind` of `routeNamespace` name Service `name`. */
export function granted(grants: readonly ReferenceGrant[], routeKind: string, routeNamespace: string, name: string): boolean {
  return grants.some(
    (g) =>
      g.from.some((f) => f.group === 'gateway.networking.k8s.io' && f.kind === routeKind && f.namespace === routeNamespace) &&
      g.to.some((t) => t.group === '' && t.kind === 'Service' && (t.name === undefined || t.name === name)),
  );
}

function selectorOf(spec: Any): WorkloadSelector | undefined {
  return spec.selector ? { matchLabels: { ...(spec.selector.matchLabels ?? {}) } } : undefined;
}

/** Translates a policy/route object; undefined for kinds that are not policies. */
export function translatePolicy(obj: Obj, namespace: string): PolicyResource | undefined {
  const o = obj as Any;
  const name = String(o.metadata.name);
  const spec: Any = o.spec ?? {};
  switch (o.kind) {
    case 'AuthorizationPolicy': {
      // Istio's shape: rules[].from[].source, rules[].to[].operation (ports as strings),
      // rules[].when[].key/values/notValues.
      const rules = ((spec.rules ?? []) as Any[]).map((r, i) => ({
        from: ((r.from ?? []) as Any[]).map((f) => strip({ ...f.source })),
        to: ((r.to ?? []) as Any[]).map((x, j) => {
          const op: Any = { ...x.operation };
          for (const f of ['ports', 'notPorts']) {
            // null is "unset" in Kubernetes objects (and passes the schema as such).
            if (op[f] === undefined || op[f] === null) {
              delete op[f];
              continue;
            }
            op[f] = (op[f] as string[]).map((v, k) => {
              const n = /^[0-9]{1,5}$/.test(v) ? Number(v) : Number.NaN;
              if (!(n >= 1 && n <= 65535)) throw new ObjectProblem(`spec.rules[${i}].to[${j}].operation.${f}[${k}]`, `not a port number: ${JSON.stringify(v)}`);
              return n;
            });
          }
          return strip(op);
        }),
        when: ((r.when ?? []) as Any[]).map((w, j) => {
          if (!whenKey(String(w.key))) {
            throw new ObjectProblem(`spec.rules[${i}].when[${j}].key`, `unsupported key ${JSON.stringify(w.key)} (supported: ${WHEN_KEYS.join(', ')})`);
          }
          if (!w.values?.length && !w.notValues?.length) throw new ObjectProblem(`spec.rules[${i}].when[${j}]`, 'needs values or notValues');
          return strip({ key: String(w.key), values: w.values ? [...w.values] : undefined, notValues: w.notValues ? [...w.notValues] : undefined });
        }),
      }));
      const dryRun = o.metadata.annotations?.['skein.io/dry-run'] === 'true' ? true : undefined;
      return {
        type: 'authorization',
        value: strip({ namespace, name, selector: selectorOf(spec), action: spec.action ?? 'ALLOW', rules, dryRun }),
      };
    }
    case 'PeerAuthentication': {
      // Istio's shape: mtls.mode, portLevelMtls: {"8080": {mode}}.
      const portLevelMtls: Record<string, 'STRICT' | 'PERMISSIVE'> = {};
      for (const [port, v] of Object.entries((spec.portLevelMtls ?? {}) as Record<string, Any>)) {
        const n = /^[0-9]{1,5}$/.test(port) ? Number(port) : Number.NaN;
        if (!(n >= 1 && n <= 65535)) throw new ObjectProblem(`spec.portLevelMtls.${port}`, `not a port number: ${JSON.stringify(port)}`);
        if (!spec.selector) throw new ObjectProblem('spec.portLevelMtls', 'needs a selector (as in Istio: port-level modes are per workload)');
        portLevelMtls[String(n)] = v.mode;
      }
      return {
        type: 'peer-authentication',
        value: strip({ namespace, name, selector: selectorOf(spec), mode: spec.mtls.mode, portLevelMtls }),
      };
    }
    case 'BackendTrafficPolicy': {
      const { value, refs } = translateBackendPolicy(o, namespace, name, spec);
      return { type: 'backend-policy', value, refs };
    }
    case 'ReferenceGrant':
      return {
        type: 'reference-grant',
        value: {
          namespace,
          name,
          from: (spec.from as Any[]).map((f) => ({ group: String(f.group), kind: String(f.kind), namespace: String(f.namespace) })),
          to: (spec.to as Any[]).map((x) => ({ group: String(x.group), kind: String(x.kind), ...(x.name !== undefined ? { name: String(x.name) } : {}) })),
        },
      };
    case 'HTTPRoute':
    case 'GRPCRoute':
      return { type: 'route', ...translateRoute(o, namespace, name, spec) };
    default:
      return undefined;
  }
}
