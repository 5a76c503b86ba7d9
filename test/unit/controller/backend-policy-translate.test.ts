// networking.skein.io BackendTrafficPolicy -> the model: every field and default, every
// refusal with field and reason, the index's target checks (Service or route rule exists)
// and "oldest wins" between policies on one target; and a property: random policies are
// accepted or refused, never crash the translation or the index.
import fc from 'fast-check';
import t from 'tap';
import type { BackendTrafficPolicy } from '../../../src/config/policy-model.js';
import type { Obj } from './helpers.js';
import { btp, entryValue, httpRoute, indexOver, SERVICES, verdictOf } from './traffic-fixtures.js';

const svc = [{ kind: 'Service', name: 'web' }];

function policyOf(spec: Obj): BackendTrafficPolicy {
  const v = verdictOf(btp(spec));
  if (v.refusal) throw new Error(`refused: ${v.refusal.field}: ${v.refusal.reason}`);
  return v.policy!.value as BackendTrafficPolicy;
}

const accepted: [string, Obj, Partial<BackendTrafficPolicy>][] = [
  ['targets and createdAt', { targetRefs: [{ group: '', kind: 'Service', name: 'web' }, { kind: 'Service', name: 'web-v2' }] }, { targets: ['shop/web', 'shop/web-v2'], createdAt: '2026-01-01T00:00:00Z' }],
  ['loadBalancer RoundRobin', { targetRefs: svc, loadBalancer: { type: 'RoundRobin' } }, { loadBalancer: { algorithm: 'ROUND_ROBIN' } }],
  ['loadBalancer PeakEWMA, PreferClose', { targetRefs: svc, loadBalancer: { type: 'PeakEWMA', locality: 'PreferClose' } }, { loadBalancer: { algorithm: 'PEAK_EWMA', locality: 'PreferClose' } }],
  ['the older algorithm spelling', { targetRefs: svc, loadBalancer: { algorithm: 'LEAST_REQUEST' } }, { loadBalancer: { algorithm: 'LEAST_REQUEST' } }],
  ['consistent hash on a header (lower-cased)', { targetRefs: svc, loadBalancer: { type: 'ConsistentHash', consistentHash: { type: 'Header', header: { name: 'X-User' } } } }, { loadBalancer: { algorithm: 'CONSISTENT_HASH', hash: { header: 'x-user' } } }],
  [
    'consistent hash on a cookie with ttl',
    { targetRefs: svc, loadBalancer: { type: 'ConsistentHash', consistentHash: { type: 'Cookie', cookie: { name: 'sid', ttl: '1h' } } } },
    { loadBalancer: { algorithm: 'CONSISTENT_HASH', hash: { cookie: { name: 'sid', ttlMs: 3_600_000 } } } },
  ],
  ['consistent hash on the source identity', { targetRefs: svc, loadBalancer: { type: 'ConsistentHash', consistentHash: { type: 'SourceIdentity' } } }, { loadBalancer: { algorithm: 'CONSISTENT_HASH', hash: { sourceIdentity: true } } }],
  [
    'retry defaults',
    { targetRefs: svc, retry: { attempts: 2 } },
    { retry: { attempts: 2, retryOn: ['connect-failure', 'refused-stream', 'unavailable'], backoff: { baseMs: 25, maxMs: 250 }, budget: { percent: 20, minRetriesPerSecond: 10 } } },
  ],
  [
    'retry, every field',
    {
      targetRefs: svc,
      retry: {
        attempts: 3,
        perTryTimeout: '500ms',
        retryOn: ['5xx', 'reset', '5xx'],
        codes: [409],
        backoff: { baseInterval: '50ms', maxInterval: '1s' },
        budget: { percent: 12.5, minRetriesPerSecond: 3 },
        maxReplayBytes: 1024,
        retryNonIdempotent: true,
      },
    },
    {
      retry: {
        attempts: 3,
        perTryTimeoutMs: 500,
        retryOn: ['5xx', 'reset'],
        codes: [409],
        backoff: { baseMs: 50, maxMs: 1000 },
        budget: { percent: 12.5, minRetriesPerSecond: 3 },
        maxReplayBytes: 1024,
        nonIdempotent: true,
      },
    },
  ],
  ['retry: a base above 25ms raises the default max to 10x', { targetRefs: svc, retry: { attempts: 1, backoff: { baseInterval: '100ms' } } }, { retry: { attempts: 1, retryOn: ['connect-failure', 'refused-stream', 'unavailable'], backoff: { baseMs: 100, maxMs: 1000 }, budget: { percent: 20, minRetriesPerSecond: 10 } } }],
  ['timeouts', { targetRefs: svc, timeout: { request: '2s' } }, { timeout: { requestMs: 2000 } }],
  ['circuit breaker', { targetRefs: svc, circuitBreaker: { maxPendingRequests: 0, maxRequests: 50, maxRetries: 3 } }, { circuitBreaker: { maxPendingRequests: 0, maxRequests: 50, maxRetries: 3 } }],
  ['outlier detection: Envoy defaults', { targetRefs: svc, outlierDetection: {} }, { outlierDetection: { consecutive5xx: 5, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionTimeMs: 300_000, maxEjectionPercent: 10 } }],
  [
    'outlier detection: every field',
    { targetRefs: svc, outlierDetection: { consecutive5xx: 3, consecutiveGatewayErrors: 2, consecutiveConnectFailures: 1, interval: '5s', baseEjectionTime: '10s', maxEjectionTime: '1m', maxEjectionPercent: 50 } },
    { outlierDetection: { consecutive5xx: 3, consecutiveGatewayErrors: 2, consecutiveConnectFailures: 1, intervalMs: 5000, baseEjectionTimeMs: 10_000, maxEjectionTimeMs: 60_000, maxEjectionPercent: 50 } },
  ],
  [
    'rate limit with overrides (burst defaults to the rate)',
    { targetRefs: svc, rateLimit: { requestsPerSecond: 100, overrides: [{ principals: ['spiffe://cluster.local/ns/shop/sa/batch'], requestsPerSecond: 10 }] } },
    { rateLimit: { requestsPerSecond: 100, burst: 100, overrides: [{ principals: ['spiffe://cluster.local/ns/shop/sa/batch'], requestsPerSecond: 10, burst: 10 }] } },
  ],
  [
    'fault injection (percentage defaults to 100)',
    { targetRefs: svc, faultInjection: { delay: { fixedDelay: '1s', percentage: 2.5 }, abort: { httpStatus: 503 } } },
    { faultInjection: { delay: { delayMs: 1000, percent: 2.5 }, abort: { httpStatus: 503, percent: 100 } } },
  ],
  [
    'fault injection on a route rule',
    { targetRefs: [{ group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', name: 'r', sectionName: 'api' }, { kind: 'GRPCRoute', name: 'g' }], faultInjection: { abort: { grpcStatus: 14, percentage: 10 } } },
    {
      targets: [],
      routeTargets: [
        { kind: 'HTTPRoute', namespace: 'shop', name: 'r', sectionName: 'api' },
        { kind: 'GRPCRoute', namespace: 'shop', name: 'g' },
      ],
      faultInjection: { abort: { grpcStatus: 14, percent: 10 } },
    },
  ],
];

t.test('BackendTrafficPolicy fields and defaults translate into the model', async (t) => {
  for (const [desc, spec, want] of accepted) {
    const p = policyOf(spec);
    for (const [k, v] of Object.entries(want)) t.same((p as unknown as Obj)[k], v, `${desc}: ${k}`);
  }
  t.same(policyOf({ targetRefs: svc }), { namespace: 'shop', name: 'p', targets: ['shop/web'], createdAt: '2026-01-01T00:00:00Z' }, 'nothing set, nothing added');
});

const refused: [string, Obj, string, RegExp][] = [
  ['no targetRefs', {}, 'spec.targetRefs', /missing/],
  ['a Deployment target', { targetRefs: [{ kind: 'Deployment', name: 'x' }] }, 'spec.targetRefs[0].kind', /expected one of Service, HTTPRoute, GRPCRoute/],
  ['a Service in a group', { targetRefs: [{ group: 'apps', kind: 'Service', name: 'web' }] }, 'spec.targetRefs[0].group', /core group/],
  ['a route in another group', { targetRefs: [{ group: 'x.io', kind: 'HTTPRoute', name: 'r' }] }, 'spec.targetRefs[0].group', /gateway.networking.k8s.io/],
  ['sectionName on a Service', { targetRefs: [{ kind: 'Service', name: 'web', sectionName: 'http' }] }, 'spec.targetRefs[0].sectionName', /only a route target/],
  ['the same target twice', { targetRefs: [...svc, ...svc] }, 'spec.targetRefs[1]', /same target as spec.targetRefs\[0\]/],
  ['a route target with retries', { targetRefs: [{ kind: 'HTTPRoute', name: 'r' }], retry: { attempts: 1 } }, 'spec.retry', /may carry only faultInjection/],
  ['a route target with LB', { targetRefs: [...svc, { kind: 'GRPCRoute', name: 'g' }], loadBalancer: { type: 'RoundRobin' } }, 'spec.loadBalancer', /targets a route \(spec.targetRefs\[1\]\)/],
  ['an unknown LB type', { targetRefs: svc, loadBalancer: { type: 'Random' } }, 'spec.loadBalancer.type', /expected one of/],
  ['type and algorithm', { targetRefs: svc, loadBalancer: { type: 'RoundRobin', algorithm: 'ROUND_ROBIN' } }, 'spec.loadBalancer.algorithm', /give one of them/],
  ['no LB type', { targetRefs: svc, loadBalancer: { locality: 'PreferClose' } }, 'spec.loadBalancer.type', /missing/],
  ['ConsistentHash without its block', { targetRefs: svc, loadBalancer: { type: 'ConsistentHash' } }, 'spec.loadBalancer.consistentHash', /missing/],
  ['hash Header without header', { targetRefs: svc, loadBalancer: { type: 'ConsistentHash', consistentHash: { type: 'Header' } } }, 'spec.loadBalancer.consistentHash.header', /missing/],
  ['hash Cookie with a header', { targetRefs: svc, loadBalancer: { type: 'ConsistentHash', consistentHash: { type: 'Cookie', cookie: { name: 'a' }, header: { name: 'b' } } } }, 'spec.loadBalancer.consistentHash.header', /not allowed with type Cookie/],
  ['consistentHash with RoundRobin', { targetRefs: svc, loadBalancer: { type: 'RoundRobin', consistentHash: { type: 'SourceIdentity' } } }, 'spec.loadBalancer.consistentHash', /only with type ConsistentHash/],
  ['an unknown retryOn', { targetRefs: svc, retry: { attempts: 1, retryOn: ['5xx', 'sometimes'] } }, 'spec.retry.retryOn[1]', /expected one of 5xx/],
  ['retry codes outside 400-599', { targetRefs: svc, retry: { attempts: 1, codes: [200] } }, 'spec.retry.codes[0]', /must be >= 400/],
  ['negative duration', { targetRefs: svc, retry: { attempts: 1, perTryTimeout: '-1s' } }, 'spec.retry.perTryTimeout', /not a duration/],
  ['zero duration', { targetRefs: svc, timeout: { request: '0s' } }, 'spec.timeout.request', /must be greater than 0/],
  ['idle timeout (not enforced)', { targetRefs: svc, timeout: { idle: '1m' } }, 'spec.timeout.idle', /not enforced by the agents/],
  ['connect timeout (not enforced)', { targetRefs: svc, timeout: { connect: '1s' } }, 'spec.timeout.connect', /not enforced by the agents/],
  ['maxConnections (not enforced)', { targetRefs: svc, circuitBreaker: { maxConnections: 10 } }, 'spec.circuitBreaker.maxConnections', /not enforced by the agents/],
  ['malformed duration', { targetRefs: svc, timeout: { request: 'soon' } }, 'spec.timeout.request', /not a duration/],
  ['backoff base > max', { targetRefs: svc, retry: { attempts: 1, backoff: { baseInterval: '1s', maxInterval: '100ms' } } }, 'spec.retry.backoff.maxInterval', /shorter than baseInterval/],
  ['perTryTimeout > request timeout', { targetRefs: svc, retry: { attempts: 1, perTryTimeout: '5s' }, timeout: { request: '1s' } }, 'spec.retry.perTryTimeout', /longer than timeout.request/],
  ['attempts above 10', { targetRefs: svc, retry: { attempts: 11 } }, 'spec.retry.attempts', /must be <= 10/],
  ['budget above 100%', { targetRefs: svc, retry: { attempts: 1, budget: { percent: 101 } } }, 'spec.retry.budget.percent', /must be <= 100/],
  ['base ejection > max ejection', { targetRefs: svc, outlierDetection: { baseEjectionTime: '10m' } }, 'spec.outlierDetection.maxEjectionTime', /shorter than baseEjectionTime/],
  ['maxEjectionPercent above 100', { targetRefs: svc, outlierDetection: { maxEjectionPercent: 150 } }, 'spec.outlierDetection.maxEjectionPercent', /must be <= 100/],
  ['rate limit override that is no SPIFFE ID', { targetRefs: svc, rateLimit: { requestsPerSecond: 1, overrides: [{ principals: ['shop/batch'], requestsPerSecond: 1 }] } }, 'spec.rateLimit.overrides[0].principals[0]', /not a SPIFFE ID/],
  [
    'a principal in two overrides',
    { targetRefs: svc, rateLimit: { requestsPerSecond: 1, overrides: [{ principals: ['spiffe://a/ns/b/sa/c'], requestsPerSecond: 1 }, { principals: ['spiffe://a/ns/b/sa/c'], requestsPerSecond: 2 }] } },
    'spec.rateLimit.overrides[1].principals[0]',
    /already has a bucket in overrides\[0\]/,
  ],
  ['zero rate', { targetRefs: svc, rateLimit: { requestsPerSecond: 0 } }, 'spec.rateLimit.requestsPerSecond', /must be >= 1/],
  ['fault injection with neither', { targetRefs: svc, faultInjection: {} }, 'spec.faultInjection', /needs delay, abort or both/],
  ['abort with both statuses', { targetRefs: svc, faultInjection: { abort: { httpStatus: 503, grpcStatus: 14 } } }, 'spec.faultInjection.abort', /exactly one of httpStatus and grpcStatus/],
  ['abort with neither status', { targetRefs: svc, faultInjection: { abort: { percentage: 5 } } }, 'spec.faultInjection.abort', /exactly one/],
  ['percentage above 100', { targetRefs: svc, faultInjection: { delay: { fixedDelay: '1s', percentage: 100.5 } } }, 'spec.faultInjection.delay.percentage', /must be <= 100/],
  ['grpcStatus out of range', { targetRefs: svc, faultInjection: { abort: { grpcStatus: 17 } } }, 'spec.faultInjection.abort.grpcStatus', /must be <= 16/],
  ['an unknown field', { targetRefs: svc, healthCheck: {} }, 'spec.healthCheck', /unknown field/],
];

t.test('refusals name the field and the reason', async (t) => {
  for (const [desc, spec, field, reason] of refused) {
    const v = verdictOf(btp(spec));
    t.match(v.refusal, { field, reason, code: 'SKEIN_CONTROLLER_RESOURCE_REFUSED' }, desc);
    t.notOk(v.policy, `${desc}: nothing translated`);
  }
});

t.test('the index: targets must exist; on one target the oldest policy wins', async (t) => {
  const route = httpRoute({ rules: [{ name: 'api', backendRefs: [{ name: 'web', port: 80 }] }] });
  const { index, refusal } = indexOver([
    ...SERVICES,
    route,
    btp({ targetRefs: svc, retry: { attempts: 1 } }, 'first', '2026-01-01T00:00:00Z'),
    btp({ targetRefs: [{ kind: 'Service', name: 'web-v2' }, ...svc], timeout: { request: '1s' } }, 'second', '2026-01-02T00:00:00Z'),
    btp({ targetRefs: [{ kind: 'Service', name: 'web-v2' }], timeout: { request: '1s' } }, 'third', '2026-01-03T00:00:00Z'),
    btp({ targetRefs: [{ kind: 'Service', name: 'ghost' }] }, 'ghost'),
    btp({ targetRefs: [{ kind: 'HTTPRoute', name: 'r', sectionName: 'api' }], faultInjection: { abort: { httpStatus: 500 } } }, 'fault-rule'),
    btp({ targetRefs: [{ kind: 'HTTPRoute', name: 'r', sectionName: 'nope' }], faultInjection: { abort: { httpStatus: 500 } } }, 'fault-no-rule'),
    btp({ targetRefs: [{ kind: 'GRPCRoute', name: 'r' }], faultInjection: { abort: { httpStatus: 500 } } }, 'fault-no-route'),
    btp({ targetRefs: [{ kind: 'HTTPRoute', name: 'r', sectionName: 'api' }], faultInjection: { delay: { fixedDelay: '1s' } } }, 'fault-rule-younger', '2026-01-05T00:00:00Z'),
  ]);
  t.ok(entryValue(index, 'backend-policy|shop/first'), 'the oldest on shop/web is served');
  t.match(refusal('BackendTrafficPolicy/shop/second'), {
    field: 'spec.targetRefs[1]',
    reason: 'conflicts with BackendTrafficPolicy shop/first (older), which already applies to Service shop/web',
    code: 'SKEIN_CONTROLLER_RESOURCE_CONFLICT',
  });
  t.ok(entryValue(index, 'backend-policy|shop/third'), 'a refused policy claims nothing: third has web-v2');
  t.match(refusal('BackendTrafficPolicy/shop/ghost'), { field: 'spec.targetRefs[0]', reason: 'Service shop/ghost does not exist' });
  t.match(entryValue<BackendTrafficPolicy>(index, 'backend-policy|shop/fault-rule'), { routeTargets: [{ kind: 'HTTPRoute', name: 'r', sectionName: 'api' }] });
  t.match(refusal('BackendTrafficPolicy/shop/fault-no-rule'), { field: 'spec.targetRefs[0].sectionName', reason: /has no rule named "nope"/ });
  t.match(refusal('BackendTrafficPolicy/shop/fault-no-route'), { field: 'spec.targetRefs[0]', reason: /GRPCRoute shop\/r does not exist/ });
  t.match(refusal('BackendTrafficPolicy/shop/fault-rule-younger'), { field: 'spec.targetRefs[0]', reason: /conflicts with BackendTrafficPolicy shop\/fault-rule \(older\), which already applies to HTTPRoute shop\/r rule api/ });
  t.equal(index.refusals().length, 5);
  index.close();
});

t.test('property: random policies are accepted or refused, never crash', async () => {
  const str = fc.oneof(fc.constantFrom('web', 'r', 'Service', 'HTTPRoute', 'RoundRobin', 'ConsistentHash', 'Header', 'Cookie', '1s', '0s', '-1s', '5xx', 'spiffe://a/b', ''), fc.string({ maxLength: 5 }));
  const num = fc.oneof(fc.integer({ min: -5, max: 700 }), fc.constantFrom(0, 1, 10, 100, 503), fc.double({ noNaN: true }));
  const key = fc.constantFrom(
    'targetRefs', 'kind', 'name', 'group', 'sectionName', 'loadBalancer', 'type', 'algorithm', 'consistentHash', 'header', 'cookie', 'ttl', 'locality',
    'retry', 'attempts', 'perTryTimeout', 'retryOn', 'codes', 'backoff', 'baseInterval', 'maxInterval', 'budget', 'percent', 'timeout', 'request',
    'circuitBreaker', 'outlierDetection', 'interval', 'baseEjectionTime', 'rateLimit', 'requestsPerSecond', 'burst', 'overrides',
    'principals', 'faultInjection', 'delay', 'fixedDelay', 'percentage', 'abort', 'httpStatus', 'grpcStatus',
  );
  const { value } = fc.letrec((tie) => ({
    value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, str, num, fc.boolean(), fc.array(tie('value'), { maxLength: 3 }), fc.dictionary(key, tie('value'), { maxKeys: 4 })),
  }));
  const target = fc.record({ kind: fc.constantFrom('Service', 'HTTPRoute', 'GRPCRoute'), name: fc.constantFrom('web', 'r', 'x') }, { requiredKeys: ['name'] });
  const route = httpRoute({ rules: [{ name: 'api', backendRefs: [{ name: 'web', port: 80 }] }] });
  fc.assert(
    fc.property(fc.array(target, { minLength: 1, maxLength: 2 }), fc.dictionary(key, value, { maxKeys: 3 }), (targetRefs, rest) => {
      const obj = btp({ ...rest, targetRefs });
      const v = verdictOf(obj);
      if (v.refusal) return v.refusal.reason.length > 0;
      const { index } = indexOver([...SERVICES, route, obj]);
      const ok = index.refusals().length + (index.entries().has('backend-policy|shop/p') ? 1 : 0) === 1;
      index.close();
      return ok;
    }),
    { numRuns: 300 },
  );
});
