/**
 * Endpoint selection for one service: round robin, least-request (power of two choices),
 * peak-EWMA (latency-aware P2C) and consistent hashing (Maglev).
 * Pickers keep no per-endpoint state that an endpoint-set change would invalidate: round robin
 * is a counter over the current ready list, the others key their state by endpoint IP, so an
 * update that adds or removes endpoints neither resets the spread nor leaks counts.
 */
import type { Endpoint, ServicePort } from '../config/model.js';
import type { LoadBalancingAlgorithm } from '../config/policy-model.js';
import { hash32, hash64 } from './hash.js';

export interface LoadBalancer {
  readonly algorithm: LoadBalancingAlgorithm;
  /**
   * One endpoint among `candidates` (already filtered to ready ones), or undefined if empty.
   * `key` is the request's hash key (consistent hashing only; others ignore it).
   */
  pick(candidates: readonly Endpoint[], key?: string): Endpoint | undefined;
  /** A request/connection to `ep` started; pair with `end`. */
  start(ep: Endpoint): void;
  /** It ended; `latencyMs` (when known) teaches latency-aware balancers. */
  end(ep: Endpoint, latencyMs?: number): void;
  /** In-flight count for an endpoint IP (observability, tests). */
  inFlight(ip: string): number;
  /** Drops state of endpoints not in `ips` (and with nothing in flight). */
  retain?(ips: ReadonlySet<string>): void;
}

abstract class InFlightTracking {
  private readonly active = new Map<string, number>();

  start(ep: Endpoint): void {
    this.active.set(ep.ip, (this.active.get(ep.ip) ?? 0) + 1);
  }

  end(ep: Endpoint, _latencyMs?: number): void {
    const n = (this.active.get(ep.ip) ?? 0) - 1;
    // Delete at zero so endpoints that went away do not stay in the map.
    if (n <= 0) this.active.delete(ep.ip);
    else this.active.set(ep.ip, n);
  }

  inFlight(ip: string): number {
    return this.active.get(ip) ?? 0;
  }
}

export class RoundRobin extends InFlightTracking implements LoadBalancer {
  readonly algorithm = 'ROUND_ROBIN' as const;
  private next: number;

  /** `start` offsets the first pick so many agents do not all begin at endpoint 0. */
  constructor(start = Math.floor(Math.random() * 1024)) {
    super();
    this.next = start;
  }

  pick(candidates: readonly Endpoint[]): Endpoint | undefined {
    if (candidates.length === 0) return undefined;
    const ep = candidates[this.next % candidates.length];
    this.next = (this.next + 1) % 0x3fffffff;
    return ep;
  }
}

export class LeastRequest extends InFlightTracking implements LoadBalancer {
  readonly algorithm = 'LEAST_REQUEST' as const;

  constructor(private readonly random: () => number = Math.random) {
    super();
  }

  pick(candidates: readonly Endpoint[]): Endpoint | undefined {
    const n = candidates.length;
    if (n === 0) return undefined;
    if (n === 1) return candidates[0];
    // Two distinct random choices; the less loaded wins (ties: the first, itself random).
    const [i, j] = twoIndexes(n, this.random);
    const a = candidates[i] as Endpoint;
    const b = candidates[j] as Endpoint;
    return this.inFlight(b.ip) < this.inFlight(a.ip) ? b : a;
  }
}

/** Two distinct random indexes in [0, n), n >= 2 (power of two choices). */
function twoIndexes(n: number, random: () => number): [number, number] {
  const i = Math.floor(random() * n) % n;
  let j = Math.floor(random() * (n - 1)) % (n - 1);
  if (j >= i) j++;
  return [i, j];
}

interface EwmaState {
  /** Latency estimate, ms, as of `stamp`. */
  cost: number;
  stamp: number;
  inFlight: number;
}

export interface PeakEwmaOptions {
  now?: () => number;
  random?: () => number;
  /** Time constant of the decay, ms (the estimate forgets an observation over ~this long). Default 10 s. */
  decayMs?: number;
  /** Estimate an endpoint starts with before any answer, ms. Default 50. */
  defaultLatencyMs?: number;
}

/**
 * Peak-EWMA (the idea from Finagle, used by Linkerd): each endpoint's cost is a latency
 * estimate times (in-flight + 1); two random candidates, the cheaper wins. The estimate is an
 * exponentially weighted average that decays with wall time, except that an observation above
 * it replaces it at once, so a slowing endpoint is avoided immediately and forgiven slowly.
 * Reading the cost decays it towards zero too, so an endpoint that stopped being picked after
 * one slow answer is tried again after a while instead of starving forever.
 */
export class PeakEwma implements LoadBalancer {
  readonly algorithm = 'PEAK_EWMA' as const;
  private readonly states = new Map<string, EwmaState>();
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly decayMs: number;
  private readonly defaultLatencyMs: number;

  constructor(opts: PeakEwmaOptions = {}) {
    this.now = opts.now ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.decayMs = opts.decayMs ?? 10_000;
    this.defaultLatencyMs = opts.defaultLatencyMs ?? 50;
  }

  private state(ip: string): EwmaState {
    let st = this.states.get(ip);
    if (!st) {
      st = { cost: this.defaultLatencyMs, stamp: this.now(), inFlight: 0 };
      this.states.set(ip, st);
    }
    return st;
  }

  /** The endpoint's current cost: decayed latency estimate times (in-flight + 1). */
  cost(ip: string): number {
    const st = this.states.get(ip);
    if (!st) return this.defaultLatencyMs;
    const elapsed = Math.max(0, this.now() - st.stamp);
    const latency = st.cost * Math.exp(-elapsed / this.decayMs);
    // A floor keeps in-flight counts meaningful once an idle estimate has decayed to ~0.
    return Math.max(latency, 1e-3) * (st.inFlight + 1);
  }

  /** Latency estimate of an endpoint as of now, ms (observability, tests). */
  latency(ip: string): number {
    const st = this.states.get(ip);
    if (!st) return this.defaultLatencyMs;
    return st.cost * Math.exp(-Math.max(0, this.now() - st.stamp) / this.decayMs);
  }

  pick(candidates: readonly Endpoint[]): Endpoint | undefined {
    const n = candidates.length;
    if (n === 0) return undefined;
    if (n === 1) return candidates[0];
    const [i, j] = twoIndexes(n, this.random);
    const a = candidates[i]!;
    const b = candidates[j]!;
    return this.cost(b.ip) < this.cost(a.ip) ? b : a;
  }

  start(ep: Endpoint): void {
    this.state(ep.ip).inFlight++;
  }

  end(ep: Endpoint, latencyMs?: number): void {
    const st = this.state(ep.ip);
    if (st.inFlight > 0) st.inFlight--;
    if (latencyMs === undefined || !(latencyMs >= 0)) return;
    const now = this.now();
    if (latencyMs > st.cost) {
      st.cost = latencyMs; // peak: a slower answer than the estimate is believed at once
    } else {
      const w = Math.exp(-Math.max(0, now - st.stamp) / this.decayMs);
      st.cost = st.cost * w + latencyMs * (1 - w);
    }
    st.stamp = now;
  }

  inFlight(ip: string): number {
    return this.states.get(ip)?.inFlight ?? 0;
  }

  retain(ips: ReadonlySet<string>): void {
    for (const [ip, st] of this.states) if (!ips.has(ip) && st.inFlight === 0) this.states.delete(ip);
  }
}

/** Maglev lookup table sizes (primes); the smallest with at least 100 slots per endpoint is used. */
const MAGLEV_SIZES = [4099, 16411, 65537] as const;

/**
 * A Maglev lookup table over a list of endpoints: slot -> index into the list. Each endpoint
 * fills slots in its own permutation order (offset and skip from its IP's hash), taking turns,
 * so every endpoint owns about the same number of slots and a change of the set moves few.
 */
export function maglevTable(ips: readonly string[]): Int32Array {
  const n = ips.length;
  const m = MAGLEV_SIZES.find((p) => p >= n * 100) ?? 65537;
  const table = new Int32Array(m).fill(-1);
  if (n === 0) return table;
  const offset = new Uint32Array(n);
  const skip = new Uint32Array(n);
  const next = new Uint32Array(n);
  const h = new Uint32Array(2);
  for (let i = 0; i < n; i++) {
    hash64(ips[i]!, h);
    offset[i] = h[0]! % m;
    skip[i] = (h[1]! % (m - 1)) + 1;
  }
  let filled = 0;
  for (;;) {
    for (let i = 0; i < n; i++) {
      // Next slot of endpoint i's permutation that is still free (m is prime: every slot comes up).
      let c = (offset[i]! + next[i]! * skip[i]!) % m;
      while (table[c]! >= 0) {
        next[i]!++;
        c = (offset[i]! + next[i]! * skip[i]!) % m;
      }
      table[c] = i;
      next[i]!++;
      if (++filled === m) return table;
    }
  }
}

interface MaglevEntry {
  signature: string;
  table: Int32Array;
}

/**
 * Consistent hashing with a Maglev table. The same key reaches the same endpoint while the set
 * does not change; adding or removing one endpoint moves about 1/n of the keys. The table is
 * built once per candidate list: cached by the list object (callers keep lists per config),
 * and by the list's IPs so a rebuilt list with the same members reuses it. Requests without a
 * key fall back to round robin.
 */
export class ConsistentHash extends InFlightTracking implements LoadBalancer {
  readonly algorithm = 'CONSISTENT_HASH' as const;
  private readonly byList = new WeakMap<readonly Endpoint[], Int32Array>();
  private last: MaglevEntry | undefined;
  private readonly fallback: RoundRobin;

  constructor(start?: number) {
    super();
    this.fallback = new RoundRobin(start);
  }

  tableFor(candidates: readonly Endpoint[]): Int32Array {
    let table = this.byList.get(candidates);
    if (table) return table;
    const ips = candidates.map((e) => e.ip);
    const signature = ips.join(',');
    if (this.last?.signature === signature) table = this.last.table;
    else {
      table = maglevTable(ips);
      this.last = { signature, table };
    }
    this.byList.set(candidates, table);
    return table;
  }

  pick(candidates: readonly Endpoint[], key?: string): Endpoint | undefined {
    const n = candidates.length;
    if (n === 0) return undefined;
    if (n === 1) return candidates[0];
    if (key === undefined) return this.fallback.pick(candidates);
    const table = this.tableFor(candidates);
    return candidates[table[hash32(key) % table.length]!];
  }
}

/** The balancer for a Service annotation or a policy's algorithm. */
export function createLoadBalancer(algorithm: LoadBalancingAlgorithm, opts: PeakEwmaOptions = {}): LoadBalancer {
  switch (algorithm) {
    case 'LEAST_REQUEST':
      return new LeastRequest(opts.random);
    case 'PEAK_EWMA':
      return new PeakEwma(opts);
    case 'CONSISTENT_HASH':
      return new ConsistentHash();
    default:
      return new RoundRobin();
  }
}

/** The port to dial on `ep` for service port `sp`, or undefined when it cannot be resolved. */
export function endpointPort(ep: Endpoint, sp: ServicePort): number | undefined {
  const byName = ep.ports[sp.name];
  if (byName !== undefined) return byName;
  // A slice with one unnamed port serves an unnamed service port.
  if (sp.name === '' && ep.ports[''] !== undefined) return ep.ports[''];
  return sp.targetPort > 0 ? sp.targetPort : undefined;
}
