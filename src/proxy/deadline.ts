/**
 * Deadlines and cancellation for the proxy's connects, written once: a signal that aborts on
 * the caller's signal or after a time, and a promise raced against a signal.
 */

export interface Deadline {
  signal: AbortSignal;
  /** The time ran out (rather than the caller aborting). */
  readonly timedOut: boolean;
  /** Clears the timer and stops following the caller's signal. */
  done(): void;
}

/**
 * A signal that aborts when `parent` does (reason: `reasons.aborted()`, else the parent's
 * reason) or after `ms` (reason: `reasons.timeout()`, else a TimeoutError).
 */
export function deadline(ms: number, parent?: AbortSignal, reasons: { timeout?: () => unknown; aborted?: () => unknown } = {}): Deadline {
  const ac = new AbortController();
  let timedOut = false;
  const onAbort = (): void => ac.abort(reasons.aborted ? reasons.aborted() : parent?.reason);
  const timer = setTimeout(() => {
    timedOut = true;
    ac.abort(reasons.timeout ? reasons.timeout() : new DOMException('deadline exceeded', 'TimeoutError'));
  }, ms);
  timer.unref();
  if (parent?.aborted) onAbort();
  else parent?.addEventListener('abort', onAbort, { once: true });
  return {
    signal: ac.signal,
    get timedOut() {
      return timedOut;
    },
    done() {
      clearTimeout(timer);
      parent?.removeEventListener('abort', onAbort);
    },
  };
}

/**
 * Settles as `p` does, unless `signal` aborts first: then rejects with the signal's reason,
 * and a result that still arrives goes to `disposeLate` (a socket nobody will use).
 */
export function untilAborted<T>(p: Promise<T>, signal: AbortSignal, disposeLate?: (late: T) => void): Promise<T> {
  if (signal.aborted) {
    if (disposeLate) p.then(disposeLate, () => {});
    return Promise.reject(signal.reason);
  }
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const onAbort = (): void => {
      if (settled) return;
      settled = true;
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        if (settled) disposeLate?.(v);
        else {
          settled = true;
          resolve(v);
        }
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        if (!settled) {
          settled = true;
          reject(err);
        }
      },
    );
  });
}
