/**
 * skein policy CRDs and Gateway API routes -> the policy model. Runs after the schema check,
 * so shapes are known; what is refused here is what a schema cannot say (weights summing to
 * 0, a parentRef that is not a Service). Cross-object checks (selectors matching nothing,
 * conflicting routes, missing backends) belong to the index, which sees every object.
 */
import type { Obj } from '../config/kube/objects.js';
import type {
  AuthorizationPolicy,
  BackendTrafficPolicy,
  MeshRoute,
  PeerAuthenticationPolicy,
  RouteMatch,
  RouteRule,
  WorkloadSelector,
} from '../config/policy-model.js';
import { WHEN_KEYS, whenKey } from '../policy/authorization.js';
import { durationMs } from './schema.js';

/** A refusal raised while translating one object. */
export class ObjectProblem extends Error {
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
  }
}

export type PolicyResource =
  | { type: 'route'; value: MeshRoute }
  | { type: 'authorization'; value: AuthorizationPolicy }
  | { type: 'peer-authentication'; value: PeerAuthenticationPolicy }
  | { type: 'backend-policy'; value: BackendTrafficPolicy };

// The object passed the schema check (kinds.ts) before it gets here, so its shape is known;
// reading it through `any` keeps this translation short instead of re-checking every field.
// biome-ignore lint/suspicious/noExplicitAny: schema-checked input, see above
type Any = Record<string, unknown> & { [k: string]: any };

function selectorOf(spec: Any): WorkloadSelector | undefined {
  return spec.selector ? { matchLabels: { ...(spec.selector.matchLabels ?? {}) } } : undefined;
}

function ms(v: unknown): number | undefined {
  return typeof v === 'string' ? durationMs(v) : undefined;
}

function strip<T extends Record<string, unknown>>(o: T): T {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k];
  return o;
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
            if (op[f] === undefined) continue;
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
      const p: BackendTrafficPolicy = {
        namespace,
        name,
        targets: (spec.targetRefs as Any[]).map((t) => `${namespace}/${t.name}`),
      };
      if (spec.loadBalancer?.algorithm) p.loadBalancer = { algorithm: spec.loadBalancer.algorithm };
      if (spec.retry) {
        p.retry = strip({
          attempts: spec.retry.attempts,
          perTryTimeoutMs: ms(spec.retry.perTryTimeout),
          retryOn: [...(spec.retry.retryOn ?? ['connect-failure', 'refused-stream', 'unavailable'])],
          backoff: { baseMs: 25, maxMs: 250 },
          budget: { percent: spec.retry.budget?.percent ?? 20, minRetriesPerSecond: spec.retry.budget?.minRetriesPerSecond ?? 3 },
        });
      }
      if (spec.timeout) p.timeout = strip({ requestMs: ms(spec.timeout.request), idleMs: ms(spec.timeout.idle) });
      if (spec.circuitBreaker) p.circuitBreaker = strip({ ...spec.circuitBreaker });
      if (spec.outlierDetection) {
        const od = spec.outlierDetection;
        p.outlierDetection = {
          consecutive5xx: od.consecutive5xx ?? 5,
          intervalMs: ms(od.interval) ?? 10_000,
          baseEjectionTimeMs: ms(od.baseEjectionTime) ?? 30_000,
          maxEjectionPercent: od.maxEjectionPercent ?? 10,
          maxEjectionTimeMs: 300_000,
        };
      }
      if (spec.rateLimit) p.rateLimit = { requestsPerSecond: spec.rateLimit.requestsPerSecond, burst: spec.rateLimit.burst ?? spec.rateLimit.requestsPerSecond, overrides: [] };
      return { type: 'backend-policy', value: p };
    }
    case 'HTTPRoute':
    case 'GRPCRoute':
      return { type: 'route', value: translateRoute(o, namespace, name, spec) };
    default:
      return undefined;
  }
}

function translateRoute(o: Any, namespace: string, name: string, spec: Any): MeshRoute {
  const parents = ((spec.parentRefs ?? []) as Any[]).map((p, i) => {
    const kind = p.kind ?? 'Gateway';
    const group = p.group ?? (kind === 'Service' ? '' : 'gateway.networking.k8s.io');
    if (kind !== 'Service' || group !== '') {
      throw new ObjectProblem(`spec.parentRefs[${i}]`, `skein attaches routes to Services only (GAMMA); got ${group || 'core'}/${kind}`);
    }
    return strip({ namespace: p.namespace ?? namespace, name: String(p.name), port: p.port as number | undefined });
  });
  if (parents.length === 0) throw new ObjectProblem('spec.parentRefs', 'missing: a mesh route must name the Service it attaches to');
  const rules: RouteRule[] = ((spec.rules ?? []) as Any[]).map((r, i) => {
    const backends = ((r.backendRefs ?? []) as Any[]).map((b, j) => {
      if ((b.kind ?? 'Service') !== 'Service' || (b.group ?? '') !== '') {
        throw new ObjectProblem(`spec.rules[${i}].backendRefs[${j}]`, 'only Service backends are supported');
      }
      return strip({ namespace: b.namespace ?? namespace, name: String(b.name), port: b.port as number | undefined, weight: b.weight ?? 1 });
    });
    if (backends.length > 0 && backends.reduce((s, b) => s + b.weight, 0) === 0) {
      throw new ObjectProblem(`spec.rules[${i}].backendRefs`, 'weights sum to 0: the rule could never send a request anywhere');
    }
    const matches: RouteMatch[] = ((r.matches ?? []) as Any[]).map((m) => {
      const out: RouteMatch = {};
      if (o.kind === 'GRPCRoute') {
        if (m.method) out.grpc = strip({ type: m.method.type ?? 'Exact', service: m.method.service, method: m.method.method });
      } else {
        if (m.path) out.path = { type: m.path.type ?? 'PathPrefix', value: m.path.value ?? '/' };
        if (m.method) out.method = m.method;
      }
      if (m.headers) out.headers = (m.headers as Any[]).map((h) => ({ name: String(h.name).toLowerCase(), value: h.value, type: h.type ?? 'Exact' }));
      return out;
    });
    const rule: RouteRule = { matches: matches.length > 0 ? matches : [o.kind === 'GRPCRoute' ? {} : { path: { type: 'PathPrefix', value: '/' } }], backends };
    const timeout = ms(r.timeouts?.request);
    if (timeout !== undefined) rule.timeoutMs = timeout;
    return rule;
  });
  const createdAt = o.metadata.creationTimestamp as string | undefined;
  return strip({ kind: o.kind, namespace, name, parents, hostnames: [...(spec.hostnames ?? [])], rules, createdAt });
}

/** A canonical string of a match, to find two routes claiming the same traffic. */
export function matchKey(m: RouteMatch): string {
  return JSON.stringify([m.path?.type, m.path?.value, m.method, m.grpc?.service, m.grpc?.method, (m.headers ?? []).map((h) => [h.name, h.type, h.value]).sort()]);
}
