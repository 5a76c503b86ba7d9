import fc from 'fast-check';
import t from 'tap';
import type { OutlierDetectionPolicy } from '../../../src/config/policy-model.js';
import { CircuitBreaker } from '../../../src/routing/circuit-breaker.js';
import { OutlierDetector } from '../../../src/routing/outlier-detector.js';
import { principalMatches, RateLimiter, TokenBucket } from '../../../src/routing/rate-limiter.js';
import { backoffMs, RetryBudget } from '../../../src/routing/retry-budget.js';

const od = (over: Partial<OutlierDetectionPolicy> = {}): OutlierDetectionPolicy => ({
  consecutive5xx: 5,
  consecutiveGatewayErrors: 3,
  consecutiveConnectFailures: 2,
  intervalMs: 10_000,
  baseEjectionTimeMs: 30_000,
  maxEjectionTimeMs: 300_000,
  maxEjectionPercent: 50,
  ...over,
});

t.test('circuit breaker: limits per kind, overflows counted, absent limit is unlimited (no implicit 1024)', async (t) => {
  const cb = new CircuitBreaker({ maxRequests: 2, maxRetries: 0 });
  t.ok(cb.tryAcquire('requests'));
  t.ok(cb.tryAcquire('requests'));
  t.notOk(cb.tryAcquire('requests'));
  t.equal(cb.overflows.requests, 1);
  cb.release('requests');
  t.ok(cb.tryAcquire('requests'), 'released capacity is reusable');
  t.notOk(cb.tryAcquire('retries'), 'a limit of 0 refuses everything');
  let ok = 0;
  for (let i = 0; i < 5000; i++) if (cb.tryAcquire('pending')) ok++;
  t.equal(ok, 5000, 'no limit set: unlimited');
  t.equal(cb.current('pending'), 5000);
  for (let i = 0; i <= 5000; i++) cb.release('pending');
  t.equal(cb.current('pending'), 0, 'release never goes negative');
  t.same((cb.describe() as Record<string, unknown>).requests, { active: 2, limit: 2, overflows: 1 });
});

t.test('outlier detector: consecutive counters per kind, reset by success', async (t) => {
  let now = 0;
  const d = new OutlierDetector(od(), () => now);
  d.setHosts(new Set(['a', 'b', 'c', 'd']));
  d.record('a', '5xx');
  d.record('a', 'gateway-error');
  d.record('a', 'gateway-error');
  t.notOk(d.isEjected('a'), 'a plain 5xx broke the gateway-error streak');
  d.record('a', 'gateway-error');
  t.ok(d.isEjected('a'), 'three gateway errors in a row');
  for (let i = 0; i < 4; i++) d.record('b', '5xx');
  d.record('b', 'success');
  d.record('b', '5xx');
  t.notOk(d.isEjected('b'), 'success resets the 5xx streak');
  d.record('c', 'connect-failure');
  d.record('c', 'connect-failure');
  t.ok(d.isEjected('c'), 'two connect failures');
  t.equal(d.ejections, 2);
  t.same(
    d.ejected().map((e) => e.ip),
    ['a', 'c'],
  );
  now = 30_000;
  t.notOk(d.isEjected('a'), 'back after baseEjectionTime (lazy, no timers)');
});

t.test('outlier detector: ejection time grows with times ejected, capped; multiplier decays while healthy', async (t) => {
  let now = 0;
  const d = new OutlierDetector(od({ maxEjectionTimeMs: 70_000 }), () => now);
  d.setHosts(new Set(['a', 'b']));
  const eject = () => {
    for (let i = 0; i < 2; i++) d.record('a', 'connect-failure');
  };
  eject();
  t.equal(d.ejected()[0]?.until, 30_000);
  now = 30_000;
  eject();
  t.equal(d.ejected()[0]?.until, 30_000 + 60_000, 'second ejection: 2 x base');
  now = 90_000;
  eject();
  t.equal(d.ejected()[0]?.until, 90_000 + 70_000, 'third: capped at max');
  t.equal(d.timesEjected('a'), 3);
  now = 160_000 + 25_000;
  t.equal(d.timesEjected('a'), 1, 'two intervals healthy: multiplier down by two');
  now += 100_000;
  t.equal(d.timesEjected('a'), 0);
  eject();
  t.equal(d.ejected()[0]!.until - now, 30_000, 'fully decayed: base time again');
});

t.test('outlier detector: max ejection percent, at least one host (Envoy semantics)', async (t) => {
  const d = new OutlierDetector(od({ maxEjectionPercent: 10 }), () => 0);
  d.setHosts(new Set(['a', 'b', 'c']));
  for (const ip of ['a', 'b']) for (let i = 0; i < 2; i++) d.record(ip, 'connect-failure');
  t.same(
    d.ejected().map((e) => e.ip),
    ['a'],
    '10% of 3 hosts rounds to 0, yet one may be ejected',
  );
  t.equal(d.overflows, 1);

  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 20 }),
      fc.integer({ min: 0, max: 100 }),
      fc.array(fc.tuple(fc.nat(19), fc.constantFrom('success', '5xx', 'gateway-error', 'connect-failure') as fc.Arbitrary<'success'>, fc.nat(20_000)), { maxLength: 200 }),
      (hosts, percent, events) => {
        let now = 0;
        const det = new OutlierDetector(od({ maxEjectionPercent: percent }), () => now);
        const ips = Array.from({ length: hosts }, (_, i) => `h${i}`);
        det.setHosts(new Set(ips));
        const max = Math.max(1, Math.floor((hosts * percent) / 100));
        for (const [h, outcome, dt] of events) {
          now += dt;
          det.record(ips[h % hosts]!, outcome);
          if (det.ejected().length > max) return false;
        }
        return true;
      },
    ),
  );
});

t.test('retry budget: percent of recent requests, with a per-second floor, over a sliding 10 s window', async (t) => {
  let now = 0;
  const b = new RetryBudget({ percent: 20, minRetriesPerSecond: 1 }, () => now);
  let allowed = 0;
  while (b.canRetry()) allowed++;
  t.equal(allowed, 10, 'no traffic: the floor (1/s over 10 s)');
  for (let i = 0; i < 100; i++) b.requestStarted();
  t.ok(b.canRetry(), 'floor 10 < 20% of 100');
  let more = 1;
  while (b.canRetry()) more++;
  t.equal(allowed + more, 20, '20% of 100 requests');
  t.ok(b.exhausted >= 2);
  now = 10_500;
  t.ok(b.canRetry(), 'the window slid past the old retries');
  const w = b.window();
  t.equal(w.requests, 0);
});

t.test('backoff: full jitter within min(max, base * 2^n)', async (t) => {
  t.equal(backoffMs(0, 25, 250, () => 0.999), 24);
  t.equal(backoffMs(3, 25, 250, () => 0.999), 199);
  t.equal(backoffMs(10, 25, 250, () => 0.5), 125, 'capped');
  t.equal(backoffMs(2000, 25, 250, () => 0.5), 125, 'huge retry index stays finite');
  fc.assert(fc.property(fc.nat(60), fc.integer({ min: 1, max: 1000 }), fc.integer({ min: 1, max: 100_000 }), fc.double({ min: 0, max: 0.9999, noNaN: true }), (n, base, max, r) => {
    const d = backoffMs(n, base, max, () => r);
    return d >= 0 && d < Math.max(1, Math.min(max, base * 2 ** n));
  }));
});

t.test('token bucket: burst then rate, exact over time, Retry-After', async (t) => {
  let now = 0;
  const b = new TokenBucket(10, 5, () => now);
  let n = 0;
  while (b.take()) n++;
  t.equal(n, 5, 'burst');
  t.equal(b.retryAfterSeconds(), 1);
  now = 1000;
  n = 0;
  while (b.take()) n++;
  t.equal(n, 5, 'one second at 10/s refills to the burst cap of 5');
  let steady = 0;
  for (let i = 0; i < 100; i++) {
    now += 100;
    if (b.take()) steady++;
    if (b.take()) steady += 1000;
  }
  t.equal(steady, 100, 'exactly a token every 100 ms');
  const slow = new TokenBucket(0.1, 1, () => now);
  slow.take();
  t.equal(slow.retryAfterSeconds(), 10);
  t.equal(new TokenBucket(0, 0, () => now).capacity, 1, 'burst 0: one token of capacity');

  fc.assert(
    fc.property(fc.double({ min: 0.1, max: 100, noNaN: true }), fc.integer({ min: 0, max: 20 }), fc.array(fc.integer({ min: 0, max: 500 }), { minLength: 1, maxLength: 300 }), (rate, burst, gaps) => {
      let clock = 0;
      const tb = new TokenBucket(rate, burst, () => clock);
      const admitted: number[] = [];
      for (const g of gaps) {
        clock += g;
        if (tb.take()) admitted.push(clock);
      }
      // Over any interval [admitted[i], admitted[j]], admissions <= rate * t + capacity.
      for (let i = 0; i < admitted.length; i++) {
        for (let j = i; j < admitted.length; j++) {
          const dt = (admitted[j]! - admitted[i]!) / 1000;
          if (j - i + 1 > rate * dt + tb.capacity + 1e-9) return false;
        }
      }
      return true;
    }),
  );
});

t.test('rate limiter: shared bucket, override buckets by principal (exact or * suffix)', async (t) => {
  let now = 0;
  const rl = new RateLimiter(
    {
      requestsPerSecond: 1,
      burst: 2,
      overrides: [
        { principals: ['spiffe://td/ns/batch/*'], requestsPerSecond: 1, burst: 1 },
        { principals: ['spiffe://td/ns/web/sa/front'], requestsPerSecond: 100, burst: 3 },
      ],
    },
    () => now,
  );
  t.same(rl.admit('spiffe://td/ns/other/sa/x'), { allowed: true, retryAfterS: 0, bucket: 'default' });
  t.ok(rl.admit(undefined).allowed, 'plaintext peers share the default bucket');
  t.same(rl.admit('spiffe://td/ns/other/sa/y'), { allowed: false, retryAfterS: 1, bucket: 'default' });
  t.same(rl.admit('spiffe://td/ns/batch/sa/job'), { allowed: true, retryAfterS: 0, bucket: 'override' });
  t.same(rl.admit('spiffe://td/ns/batch/sa/other'), { allowed: false, retryAfterS: 1, bucket: 'override' }, 'one bucket per override, shared');
  for (let i = 0; i < 3; i++) t.ok(rl.admit('spiffe://td/ns/web/sa/front').allowed);
  t.notOk(rl.admit('spiffe://td/ns/web/sa/front').allowed);
  t.notOk(rl.admit('spiffe://td/ns/web/sa/front2').allowed, 'exact principals do not prefix-match');
  t.same(rl.limited, { default: 2, override: 2 });
  now = 1000;
  t.ok(rl.admit('spiffe://td/ns/other/sa/y').allowed);
  t.ok(principalMatches('*', 'anything'));
  t.notOk(principalMatches('spiffe://a', 'spiffe://ab'));
});
