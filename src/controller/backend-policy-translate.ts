/**
 * networking.skein.io BackendTrafficPolicy -> the model's BackendTrafficPolicy. Runs after
 * the schema check (kinds.ts). Defaults are filled here, once, so every agent applies the
 * same numbers:
 *   retry: retryOn connect-failure/refused-stream/unavailable, backoff 25ms doubling up to
 *     max(250ms, 10 x baseInterval) (Envoy's ratio), budget 20% of requests with at least 10 retries/s (Linkerd's budget defaults);
 *   outlierDetection (Envoy's): consecutive5xx 5, interval 10s, baseEjectionTime 30s,
 *     maxEjectionTime 300s, maxEjectionPercent 10;
 *   rateLimit: burst = requestsPerSecond; faultInjection: percentage 100.
 * Whether targets exist and which policy owns a target is the index's (route-checks.ts).
 */
import type { BackendTrafficPolicy, LoadBalancingPolicy, RetryOn, RouteTargetRef } from '../config/policy-model.js';
import { type Any, ObjectProblem, strip } from './object-problem.js';
import { durationMs } from './schema.js';

const GATEWAY_GROUP = 'gateway.networking.k8s.io';
export const RETRY_DEFAULTS = {
  retryOn: ['connect-failure', 'refused-stream', 'unavailable'] as RetryOn[],
  backoff: { baseMs: 25, maxMs: 250 },
  budget: { percent: 20, minRetriesPerSecond: 10 },
};
export const OUTLIER_DEFAULTS = { consecutive5xx: 5, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionTimeMs: 300_000, maxEjectionPercent: 10 };
/** Fields a policy that targets a route may not carry (routes take fault injection only). */
const SERVICE_ONLY = ['loadBalancer', 'retry', 'timeout', 'circuitBreaker', 'outlierDetection', 'rateLimit'];

/** A translated policy and the target key of each `spec.targetRefs[i]` (for the index's checks). */
export interface TranslatedBackendPolicy {
  value: BackendTrafficPolicy;
  /** `Service/ns/name` or `HTTPRoute/ns/name` / `HTTPRoute/ns/name#rule`, in targetRefs order. */
  refs: string[];
}

function ms(v: unknown, field: string): number | undefined {
  if (typeof v !== 'string') return undefined;
  const n = durationMs(v);
  if (!(n > 0)) throw new ObjectProblem(field, `must be greater than 0, got ${JSON.stringify(v)}`);
  return n;
}

export function routeTargetKey(t: RouteTargetRef): string {
  return `${t.kind}/${t.namespace}/${t.name}${t.sectionName !== undefined ? `#${t.sectionName}` : ''}`;
}

export function translateBackendPolicy(o: Any, namespace: string, name: string, spec: Any): TranslatedBackendPolicy {
  const p: BackendTrafficPolicy = { namespace, name, targets: [] };
  const refs: string[] = [];
  const routeTargets: RouteTargetRef[] = [];
  for (const [i, t] of (spec.targetRefs as Any[]).entries()) {
    const at = `spec.targetRefs[${i}]`;
    let key: string;
    if (t.kind === 'Service') {
      if ((t.group ?? '') !== '') throw new ObjectProblem(`${at}.group`, `a Service is in the core group (''), got ${JSON.stringify(t.group)}`);
      if (t.sectionName !== undefined) throw new ObjectProblem(`${at}.sectionName`, 'only a route target may name a section (a rule)');
      p.targets.push(`${namespace}/${t.name}`);
      key = `Service/${namespace}/${t.name}`;
    } else {
      if ((t.group ?? GATEWAY_GROUP) !== GATEWAY_GROUP) throw new ObjectProblem(`${at}.group`, `a ${t.kind} is in ${GATEWAY_GROUP}, got ${JSON.stringify(t.group)}`);
      const r: RouteTargetRef = strip({ kind: t.kind, namespace, name: String(t.name), sectionName: t.sectionName });
      routeTargets.push(r);
      key = routeTargetKey(r);
    }
    const dup = refs.indexOf(key);
    if (dup >= 0) throw new ObjectProblem(at, `same target as spec.targetRefs[${dup}]`);
    refs.push(key);
  }
  if (routeTargets.length > 0) {
    p.routeTargets = routeTargets;
    const at = refs.findIndex((k) => !k.startsWith('Service/'));
    for (const f of SERVICE_ONLY) {
      if (spec[f] !== undefined) {
        throw new ObjectProblem(`spec.${f}`, `a policy that targets a route (spec.targetRefs[${at}]) may carry only faultInjection; put ${f} in a policy that targets the Service`);
      }
    }
  }
  if (spec.loadBalancer) p.loadBalancer = loadBalancer(spec.loadBalancer);
  if (spec.retry) {
    const r = spec.retry;
    const backoff = {
      baseMs: ms(r.backoff?.baseInterval, 'spec.retry.backoff.baseInterval') ?? RETRY_DEFAULTS.backoff.baseMs,
      maxMs: ms(r.backoff?.maxInterval, 'spec.retry.backoff.maxInterval') ?? RETRY_DEFAULTS.backoff.maxMs,
    };
    if (r.backoff?.maxInterval === undefined) backoff.maxMs = Math.max(backoff.maxMs, backoff.baseMs * 10);
    if (backoff.baseMs > backoff.maxMs) throw new ObjectProblem('spec.retry.backoff.maxInterval', `${r.backoff.maxInterval} is shorter than baseInterval ${r.backoff?.baseInterval ?? '25ms'}`);
    p.retry = strip({
      attempts: r.attempts,
      perTryTimeoutMs: ms(r.perTryTimeout, 'spec.retry.perTryTimeout'),
      retryOn: [...new Set((r.retryOn ?? RETRY_DEFAULTS.retryOn) as RetryOn[])],
      codes: r.codes ? [...new Set(r.codes as number[])] : undefined,
      backoff,
      budget: {
        percent: r.budget?.percent ?? RETRY_DEFAULTS.budget.percent,
        minRetriesPerSecond: r.budget?.minRetriesPerSecond ?? RETRY_DEFAULTS.budget.minRetriesPerSecond,
      },
      maxReplayBytes: r.maxReplayBytes,
      nonIdempotent: r.retryNonIdempotent,
    });
  }
  if (spec.timeout) {
    const t = strip({
      requestMs: ms(spec.timeout.request, 'spec.timeout.request'),
    });
    if (p.retry?.perTryTimeoutMs !== undefined && t.requestMs !== undefined && p.retry.perTryTimeoutMs > t.requestMs) {
      throw new ObjectProblem('spec.retry.perTryTimeout', `${spec.retry.perTryTimeout} is longer than timeout.request ${spec.timeout.request}`);
    }
    p.timeout = t;
  }
  if (spec.circuitBreaker) p.circuitBreaker = strip({ ...spec.circuitBreaker });
  if (spec.outlierDetection) {
    const od = spec.outlierDetection;
    p.outlierDetection = strip({
      consecutive5xx: od.consecutive5xx ?? OUTLIER_DEFAULTS.consecutive5xx,
      consecutiveGatewayErrors: od.consecutiveGatewayErrors,
      consecutiveConnectFailures: od.consecutiveConnectFailures,
      intervalMs: ms(od.interval, 'spec.outlierDetection.interval') ?? OUTLIER_DEFAULTS.intervalMs,
      baseEjectionTimeMs: ms(od.baseEjectionTime, 'spec.outlierDetection.baseEjectionTime') ?? OUTLIER_DEFAULTS.baseEjectionTimeMs,
      maxEjectionTimeMs: ms(od.maxEjectionTime, 'spec.outlierDetection.maxEjectionTime') ?? OUTLIER_DEFAULTS.maxEjectionTimeMs,
      maxEjectionPercent: od.maxEjectionPercent ?? OUTLIER_DEFAULTS.maxEjectionPercent,
    });
    if (p.outlierDetection.baseEjectionTimeMs > p.outlierDetection.maxEjectionTimeMs) {
      throw new ObjectProblem('spec.outlierDetection.maxEjectionTime', `${od.maxEjectionTime ?? '300s'} is shorter than baseEjectionTime ${od.baseEjectionTime ?? '30s'}`);
    }
  }
  if (spec.rateLimit) {
    const rl = spec.rateLimit;
    const seen = new Map<string, number>();
    const overrides = ((rl.overrides ?? []) as Any[]).map((x, i) => {
      for (const [j, pr] of (x.principals as string[]).entries()) {
        const at = `spec.rateLimit.overrides[${i}].principals[${j}]`;
        if (!pr.startsWith('spiffe://')) throw new ObjectProblem(at, `not a SPIFFE ID (spiffe://<trust-domain>/ns/<ns>/sa/<sa>): ${JSON.stringify(pr)}`);
        if (seen.has(pr)) throw new ObjectProblem(at, `${pr} already has a bucket in overrides[${seen.get(pr)}]`);
        seen.set(pr, i);
      }
      return { principals: [...x.principals], requestsPerSecond: x.requestsPerSecond, burst: x.burst ?? x.requestsPerSecond };
    });
    p.rateLimit = { requestsPerSecond: rl.requestsPerSecond, burst: rl.burst ?? rl.requestsPerSecond, overrides };
  }
  if (spec.faultInjection) {
    const f = spec.faultInjection;
    if (!f.delay && !f.abort) throw new ObjectProblem('spec.faultInjection', 'needs delay, abort or both');
    p.faultInjection = {};
    if (f.delay) p.faultInjection.delay = { delayMs: ms(f.delay.fixedDelay, 'spec.faultInjection.delay.fixedDelay')!, percent: f.delay.percentage ?? 100 };
    if (f.abort) {
      if ((f.abort.httpStatus === undefined) === (f.abort.grpcStatus === undefined)) {
        throw new ObjectProblem('spec.faultInjection.abort', 'needs exactly one of httpStatus and grpcStatus');
      }
      p.faultInjection.abort = strip({ httpStatus: f.abort.httpStatus, grpcStatus: f.abort.grpcStatus, percent: f.abort.percentage ?? 100 });
    }
  }
  const createdAt = o.metadata.creationTimestamp;
  if (typeof createdAt === 'string') p.createdAt = createdAt;
  return { value: p, refs };
}

const LB_TYPES: Record<string, LoadBalancingPolicy['algorithm']> = {
  RoundRobin: 'ROUND_ROBIN',
  LeastRequest: 'LEAST_REQUEST',
  PeakEWMA: 'PEAK_EWMA',
  ConsistentHash: 'CONSISTENT_HASH',
  ROUND_ROBIN: 'ROUND_ROBIN',
  LEAST_REQUEST: 'LEAST_REQUEST',
};

function loadBalancer(lb: Any): LoadBalancingPolicy {
  if (lb.type !== undefined && lb.algorithm !== undefined) throw new ObjectProblem('spec.loadBalancer.algorithm', 'algorithm is the older spelling of type: give one of them');
  const given = lb.type ?? lb.algorithm;
  if (given === undefined) throw new ObjectProblem('spec.loadBalancer.type', 'missing (RoundRobin, LeastRequest, PeakEWMA or ConsistentHash)');
  const out: LoadBalancingPolicy = { algorithm: LB_TYPES[given]! };
  if (out.algorithm === 'CONSISTENT_HASH') {
    const ch = lb.consistentHash as Any | undefined;
    if (!ch) throw new ObjectProblem('spec.loadBalancer.consistentHash', 'missing: type ConsistentHash needs consistentHash');
    const want = ch.type === 'Header' ? 'header' : ch.type === 'Cookie' ? 'cookie' : undefined;
    for (const f of ['header', 'cookie']) {
      if (f !== want && ch[f] !== undefined) throw new ObjectProblem(`spec.loadBalancer.consistentHash.${f}`, `not allowed with type ${ch.type}`);
    }
    if (want && ch[want] === undefined) throw new ObjectProblem(`spec.loadBalancer.consistentHash.${want}`, `missing: type ${ch.type} needs ${want}`);
    if (ch.type === 'Header') out.hash = { header: String(ch.header.name).toLowerCase() };
    else if (ch.type === 'Cookie') out.hash = { cookie: strip({ name: String(ch.cookie.name), ttlMs: ms(ch.cookie.ttl, 'spec.loadBalancer.consistentHash.cookie.ttl') }) };
    else out.hash = { sourceIdentity: true };
  } else if (lb.consistentHash !== undefined) {
    throw new ObjectProblem('spec.loadBalancer.consistentHash', `only with type ConsistentHash, not ${given}`);
  }
  if (lb.locality) out.locality = lb.locality;
  return out;
}
