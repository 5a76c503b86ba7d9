/**
 * Local rate limiting at the destination: token buckets refilled on demand from the clock (no
 * timers), with tokens as a float so the rate is exact over time. One bucket is shared by all
 * sources; each override of the policy has its own bucket, shared by the principals it lists.
 */
import type { RateLimitPolicy } from '../config/policy-model.js';

export class TokenBucket {
  private tokens: number;
  private last: number;
  /** Capacity: `burst`, but at least one token, or a bucket of burst 0 could never admit anything. */
  readonly capacity: number;

  constructor(
    readonly rate: number,
    burst: number,
    private readonly now: () => number = Date.now,
  ) {
    this.capacity = Math.max(1, burst);
    this.tokens = this.capacity;
    this.last = now();
  }

  private refill(): void {
    const t = this.now();
    if (t > this.last) {
      this.tokens = Math.min(this.capacity, this.tokens + ((t - this.last) / 1000) * Math.max(0, this.rate));
      this.last = t;
    }
  }

  /** Takes a token if one is there. */
  take(): boolean {
    this.refill();
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return true;
    }
    return false;
  }

  /** Whole seconds until a token is there (0 when one is): the Retry-After header's value. */
  retryAfterSeconds(): number {
    this.refill();
    if (this.tokens >= 1) return 0;
    if (!(this.rate > 0)) return 3600;
    return Math.max(1, Math.ceil((1 - this.tokens) / this.rate));
  }

  available(): number {
    this.refill();
    return this.tokens;
  }
}

export interface Admission {
  allowed: boolean;
  /** Seconds to wait (Retry-After) when refused; 0 when allowed. */
  retryAfterS: number;
  bucket: 'default' | 'override';
}

/** True when `principal` is listed: exactly, or by a pattern ending in `*` (a prefix; `*` alone is anyone). */
export function principalMatches(pattern: string, principal: string): boolean {
  return pattern.endsWith('*') ? principal.startsWith(pattern.slice(0, -1)) : pattern === principal;
}

/** Principals remembered (-> override index) before the cache starts over; identities are few. */
const PRINCIPAL_CACHE_MAX = 10_000;

export class RateLimiter {
  private readonly shared: TokenBucket;
  private readonly overrides: TokenBucket[];
  private readonly byPrincipal = new Map<string, number>();
  /** Requests refused, per bucket kind. */
  readonly limited = { default: 0, override: 0 };

  constructor(
    readonly policy: RateLimitPolicy,
    now: () => number = Date.now,
  ) {
    this.shared = new TokenBucket(policy.requestsPerSecond, policy.burst, now);
    this.overrides = policy.overrides.map((o) => new TokenBucket(o.requestsPerSecond, o.burst, now));
  }

  /** Index of the first override listing `principal`, or -1. */
  private overrideOf(principal: string): number {
    let i = this.byPrincipal.get(principal);
    if (i === undefined) {
      i = this.policy.overrides.findIndex((o) => o.principals.some((p) => principalMatches(p, principal)));
      if (this.byPrincipal.size >= PRINCIPAL_CACHE_MAX) this.byPrincipal.clear();
      this.byPrincipal.set(principal, i);
    }
    return i;
  }

  /** Admits or refuses one request from `principal` (undefined: a plaintext peer, the shared bucket). */
  admit(principal: string | undefined): Admission {
    const i = principal === undefined ? -1 : this.overrideOf(principal);
    const bucket = i >= 0 ? this.overrides[i]! : this.shared;
    const kind = i >= 0 ? 'override' : 'default';
    if (bucket.take()) return kind === 'default' ? ALLOWED_DEFAULT : ALLOWED_OVERRIDE;
    this.limited[kind]++;
    return { allowed: false, retryAfterS: bucket.retryAfterSeconds(), bucket: kind };
  }
}

const ALLOWED_DEFAULT: Admission = Object.freeze({ allowed: true, retryAfterS: 0, bucket: 'default' });
const ALLOWED_OVERRIDE: Admission = Object.freeze({ allowed: true, retryAfterS: 0, bucket: 'override' });
