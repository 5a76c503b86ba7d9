/**
 * Circuit breaking for one Service, as Envoy's thresholds: counters of pending requests,
 * requests and retries against limits (connections are not limited: requests to a Service
 * share multiplexed sessions, so the controller refuses maxConnections); what would exceed a limit is refused (and
 * counted as an overflow) instead of queued. An absent limit is unlimited: Envoy's implicit
 * default of 1024 per kind is deliberately not applied, because a mesh that silently caps
 * every Service at 1024 concurrent requests surprises operators who never asked for a breaker.
 */
import type { CircuitBreakerPolicy } from '../config/policy-model.js';

export type BreakerKind = 'pending' | 'requests' | 'retries';

const KINDS: readonly BreakerKind[] = ['pending', 'requests', 'retries'];

export class CircuitBreaker {
  private readonly limits: Record<BreakerKind, number>;
  private readonly active: Record<BreakerKind, number> = { pending: 0, requests: 0, retries: 0 };
  /** Acquisitions refused per kind, since this breaker was created. */
  readonly overflows: Record<BreakerKind, number> = { pending: 0, requests: 0, retries: 0 };

  constructor(readonly policy: CircuitBreakerPolicy = {}) {
    const lim = (n: number | undefined): number => (n === undefined ? Number.POSITIVE_INFINITY : Math.max(0, n));
    this.limits = {
      pending: lim(policy.maxPendingRequests),
      requests: lim(policy.maxRequests),
      retries: lim(policy.maxRetries),
    };
  }

  /** Takes one unit of `kind` when under its limit; false (and an overflow counted) otherwise. Pair a true with `release`. */
  tryAcquire(kind: BreakerKind): boolean {
    if (this.active[kind] >= this.limits[kind]) {
      this.overflows[kind]++;
      return false;
    }
    this.active[kind]++;
    return true;
  }

  release(kind: BreakerKind): void {
    if (this.active[kind] > 0) this.active[kind]--;
  }

  current(kind: BreakerKind): number {
    return this.active[kind];
  }

  limit(kind: BreakerKind): number {
    return this.limits[kind];
  }

  describe(): object {
    const out: Record<string, { active: number; limit: number | null; overflows: number }> = {};
    for (const k of KINDS) {
      const limit = this.limits[k];
      out[k] = { active: this.active[k], limit: Number.isFinite(limit) ? limit : null, overflows: this.overflows[k] };
    }
    return out;
  }
}
