/**
 * Retry budget for one Service (the idea of Linkerd's budgets): over a sliding window of 10 s,
 * retries may be at most `percent`% of the requests, but a floor of `minRetriesPerSecond`
 * always remains so a quiet Service can still retry. Counts live in a ring of one-second
 * buckets, so memory is constant whatever the request rate and the window slides in steps of
 * a bucket (an approximation of at most one bucket, 10% of the window).
 */
import type { RetryPolicy } from '../config/policy-model.js';

export class RetryBudget {
  private readonly requests: Float64Array;
  private readonly retries: Float64Array;
  /** Bucket index (time / bucketMs) each slot holds, to recognise stale slots. */
  private readonly epochs: Float64Array;
  private readonly bucketMs: number;
  /** Retries refused by the budget. */
  exhausted = 0;

  constructor(
    readonly budget: RetryPolicy['budget'],
    private readonly now: () => number = Date.now,
    readonly windowMs = 10_000,
    buckets = 10,
  ) {
    this.bucketMs = windowMs / buckets;
    this.requests = new Float64Array(buckets);
    this.retries = new Float64Array(buckets);
    this.epochs = new Float64Array(buckets).fill(-1);
  }

  private slot(): number {
    const epoch = Math.floor(this.now() / this.bucketMs);
    const i = epoch % this.requests.length;
    if (this.epochs[i] !== epoch) {
      this.epochs[i] = epoch;
      this.requests[i] = 0;
      this.retries[i] = 0;
    }
    return i;
  }

  /** An original request (not a retry) started. */
  requestStarted(): void {
    this.requests[this.slot()]!++;
  }

  /** Requests and retries counted in the window ending now. */
  window(): { requests: number; retries: number } {
    const epoch = Math.floor(this.now() / this.bucketMs);
    let requests = 0;
    let retries = 0;
    for (let i = 0; i < this.requests.length; i++) {
      const e = this.epochs[i]!;
      if (e > epoch - this.requests.length && e <= epoch) {
        requests += this.requests[i]!;
        retries += this.retries[i]!;
      }
    }
    return { requests, retries };
  }

  /** Retries the window allows in total right now. */
  allowance(requests: number): number {
    const floor = (this.budget.minRetriesPerSecond * this.windowMs) / 1000;
    return Math.max(floor, (requests * this.budget.percent) / 100);
  }

  /** True, and the retry counted, when one more retry stays within the budget. */
  canRetry(): boolean {
    const { requests, retries } = this.window();
    if (retries + 1 > this.allowance(requests)) {
      this.exhausted++;
      return false;
    }
    this.retries[this.slot()]!++;
    return true;
  }

  describe(): object {
    const w = this.window();
    return { ...w, allowance: this.allowance(w.requests), exhausted: this.exhausted, ...this.budget };
  }
}

/**
 * Delay before retry number `retryIndex` (0 = the first retry), ms: exponential backoff with
 * full jitter (uniform in [0, min(max, base * 2^retryIndex))), which spreads the retries of
 * many clients that failed together instead of having them return in lockstep.
 */
export function backoffMs(retryIndex: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const cap = Math.min(maxMs, baseMs * 2 ** Math.max(0, Math.min(retryIndex, 52)));
  return Math.floor(random() * Math.max(0, cap));
}
