/** Time source and timers of the certificate store, injectable so tests run in fake time. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

export interface Timers {
  /** `keepAlive`: the timer holds the process open (waits someone awaits); others do not. */
  setTimeout(fn: () => void, ms: number, keepAlive?: boolean): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = { now: () => Date.now() };

/** Real timers, unref'd unless asked: a pending renewal never keeps the process alive by itself. */
export const systemTimers: Timers = {
  setTimeout(fn, ms, keepAlive = false) {
    const t = setTimeout(fn, Math.min(Math.max(0, ms), 2 ** 31 - 1));
    if (!keepAlive) t.unref();
    return t;
  },
  clearTimeout(handle) {
    clearTimeout(handle as NodeJS.Timeout);
  },
};

export interface RenewalPolicy {
  /** Renew when this fraction of the lifetime (as seen on receipt) has passed. */
  renewFraction: number;
  /** Spread of the renewal point: renewFraction ± jitterFraction/2, so nodes don't renew in step. */
  jitterFraction: number;
  /** First retry delay after a failure; doubles each attempt. */
  backoffInitialMs: number;
  /** Cap of the retry delay. */
  backoffMaxMs: number;
  /** Floor of any delay (no busy loop when a certificate is nearly expired). */
  minDelayMs: number;
}

export const DEFAULT_RENEWAL_POLICY: RenewalPolicy = {
  renewFraction: 0.5,
  jitterFraction: 0.1,
  backoffInitialMs: 1000,
  backoffMaxMs: 30_000,
  minDelayMs: 100,
};

/**
 * Delay until renewal of a certificate received at `receivedAt` and valid until `notAfter`.
 * Measured from receipt, not from notBefore: the CA backdates notBefore for clock skew, and
 * half of a backdated lifetime could already be over on arrival.
 */
export function renewalDelayMs(receivedAt: number, notAfter: number, policy: RenewalPolicy, random: () => number): number {
  const remaining = notAfter - receivedAt;
  if (remaining <= 0) return policy.minDelayMs;
  const fraction = policy.renewFraction + policy.jitterFraction * (random() - 0.5);
  return Math.max(policy.minDelayMs, Math.floor(remaining * Math.min(0.95, Math.max(0.05, fraction))));
}

/**
 * Delay before retry number `attempt` (1 = first retry): exponential with "equal jitter"
 * (half fixed, half random), capped; and, while a certificate is still valid, at most a
 * quarter of its remaining life so retries grow denser as expiry approaches — a CA that
 * comes back is used well before the certificate lapses.
 */
export function retryDelayMs(attempt: number, policy: RenewalPolicy, random: () => number, now: number, notAfter?: number): number {
  const exp = Math.min(policy.backoffMaxMs, policy.backoffInitialMs * 2 ** Math.max(0, attempt - 1));
  let delay = exp / 2 + (random() * exp) / 2;
  if (notAfter !== undefined && notAfter > now) delay = Math.min(delay, (notAfter - now) / 4);
  return Math.max(policy.minDelayMs, Math.floor(delay));
}
