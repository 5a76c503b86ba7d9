/**
 * What an echo pod is told to do wrong: fail a share of its requests with a status, answer
 * late, and count what it served. Set at start by flags (`--fail-status`, `--fail-ratio`,
 * `--delay-ms`) and changed at run time by the `/_echo/` control routes, so a test can make
 * one pod fail and recover without restarting it.
 *
 * The failing share is spread deterministically (no randomness): counting the requests
 * since the fault was set from 1, request n fails when floor(n*R) > floor((n-1)*R). So any
 * run of N consecutive requests has floor or ceil of N*R failures, exactly 30 out of 100 for
 * R = 0.3 (failing requests 4, 7, 10, 14, ...), every request for R = 1 and every other one
 * for R = 0.5.
 */

/** Upper bound of any delay (flag, control route or `/delay/MS`). */
export const MAX_DELAY_MS = 60_000;
/** The gRPC status of a failed call whatever the HTTP fail status: UNAVAILABLE. */
export const GRPC_FAIL_CODE = 14;

const PPM = 1_000_000;

export interface FaultSettings {
  /** HTTP status of a failed request; undefined when nothing fails. */
  failStatus?: number;
  /** Share of requests that fail, 0..1. */
  failRatio: number;
  delayMs: number;
}

export interface EchoStats {
  /** Requests served (control requests excluded), HTTP and gRPC. */
  requests: number;
  /** HTTP answers by status; `aborted` when the client left before any status was sent. */
  byStatus: Record<string, number>;
  /** gRPC calls by status code (0 = OK). */
  byGrpcStatus: Record<string, number>;
  /** Requests this pod failed on purpose (either protocol). */
  injectedFailures: number;
}

/** A fail status must be a final status: 200..599. */
export function validFailStatus(n: number): boolean {
  return Number.isInteger(n) && n >= 200 && n <= 599;
}

export function validRatio(r: number): boolean {
  return Number.isFinite(r) && r >= 0 && r <= 1;
}

export function validDelay(ms: number): boolean {
  return Number.isInteger(ms) && ms >= 0 && ms <= MAX_DELAY_MS;
}

/**
 * The settings the flags give: `--fail-status` alone fails every request; `--fail-ratio`
 * alone fails that share with 503. Throws (naming the flag) on a value out of range.
 */
export function faultsFromFlags(flags: { failStatus?: string; failRatio?: string; delayMs?: string }): FaultSettings {
  const out: FaultSettings = { failRatio: 0, delayMs: 0 };
  if (flags.delayMs !== undefined) {
    const ms = Number(flags.delayMs);
    if (!validDelay(ms)) throw new Error(`--delay-ms: must be an integer between 0 and ${MAX_DELAY_MS}, got ${flags.delayMs}`);
    out.delayMs = ms;
  }
  if (flags.failStatus === undefined && flags.failRatio === undefined) return out;
  const status = flags.failStatus === undefined ? 503 : Number(flags.failStatus);
  if (!validFailStatus(status)) throw new Error(`--fail-status: must be an HTTP status between 200 and 599, got ${flags.failStatus}`);
  const ratio = flags.failRatio === undefined ? 1 : Number(flags.failRatio);
  if (!validRatio(ratio)) throw new Error(`--fail-ratio: must be a number between 0 and 1, got ${flags.failRatio}`);
  out.failStatus = status;
  out.failRatio = ratio;
  return out;
}

export class EchoFaults {
  private failStatus: number | undefined;
  /** The ratio in parts per million, so the spread is integer arithmetic. */
  private failPpm = 0;
  private delay = 0;
  /** Requests decided since the fault was last set. */
  private n = 0;
  private stats: EchoStats = { requests: 0, byStatus: {}, byGrpcStatus: {}, injectedFailures: 0 };

  constructor(initial: FaultSettings = { failRatio: 0, delayMs: 0 }) {
    if (initial.failStatus !== undefined) this.setFail(initial.failStatus, initial.failRatio);
    this.setDelay(initial.delayMs);
  }

  /** Fails the share `ratio` of the next requests with `status`; restarts the spread. */
  setFail(status: number, ratio: number): void {
    if (!validFailStatus(status) || !validRatio(ratio)) throw new Error(`bad fault: status ${status}, ratio ${ratio}`);
    this.failStatus = status;
    this.failPpm = Math.round(ratio * PPM);
    this.n = 0;
  }

  clearFail(): void {
    this.failStatus = undefined;
    this.failPpm = 0;
    this.n = 0;
  }

  setDelay(ms: number): void {
    if (!validDelay(ms)) throw new Error(`bad delay: ${ms}`);
    this.delay = ms;
  }

  get delayMs(): number {
    return this.delay;
  }

  settings(): FaultSettings {
    return { failStatus: this.failStatus, failRatio: this.failPpm / PPM, delayMs: this.delay };
  }

  /** Decides one served request: the status to fail it with, or undefined to serve it. */
  decide(): number | undefined {
    if (this.failStatus === undefined || this.failPpm === 0) return undefined;
    this.n += 1;
    const fails = Math.floor((this.n * this.failPpm) / PPM) > Math.floor(((this.n - 1) * this.failPpm) / PPM);
    if (!fails) return undefined;
    this.stats.injectedFailures += 1;
    return this.failStatus;
  }

  countHttp(status: number | 'aborted'): void {
    this.stats.requests += 1;
    const k = String(status);
    this.stats.byStatus[k] = (this.stats.byStatus[k] ?? 0) + 1;
  }

  countGrpc(code: number): void {
    this.stats.requests += 1;
    const k = String(code);
    this.stats.byGrpcStatus[k] = (this.stats.byGrpcStatus[k] ?? 0) + 1;
  }

  snapshot(): EchoStats {
    return structuredClone(this.stats);
  }

  resetStats(): void {
    this.stats = { requests: 0, byStatus: {}, byGrpcStatus: {}, injectedFailures: 0 };
  }
}
