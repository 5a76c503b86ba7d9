/**
 * Endpoint selection for one service: round robin and least-request (power of two choices).
 * Pickers keep no per-endpoint state that an endpoint-set change would invalidate: round robin
 * is a counter over the current ready list, least-request counts in-flight requests by endpoint
 * IP, so an update that adds or removes endpoints neither resets the spread nor leaks counts.
 */
import type { Endpoint, LoadBalancerAlgorithm, ServicePort } from '../config/model.js';

export interface LoadBalancer {
  readonly algorithm: LoadBalancerAlgorithm;
  /** One endpoint among `candidates` (already filtered to ready ones), or undefined if empty. */
  pick(candidates: readonly Endpoint[]): Endpoint | undefined;
  /** A request/connection to `ep` started; pair with `end`. */
  start(ep: Endpoint): void;
  end(ep: Endpoint): void;
  /** In-flight count for an endpoint IP (observability, tests). */
  inFlight(ip: string): number;
}

abstract class InFlightTracking {
  private readonly active = new Map<string, number>();

  start(ep: Endpoint): void {
    this.active.set(ep.ip, (this.active.get(ep.ip) ?? 0) + 1);
  }

  end(ep: Endpoint): void {
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
    const i = Math.floor(this.random() * n) % n;
    let j = Math.floor(this.random() * (n - 1)) % (n - 1);
    if (j >= i) j++;
    const a = candidates[i] as Endpoint;
    const b = candidates[j] as Endpoint;
    return this.inFlight(b.ip) < this.inFlight(a.ip) ? b : a;
  }
}

export function createLoadBalancer(algorithm: LoadBalancerAlgorithm): LoadBalancer {
  return algorithm === 'LEAST_REQUEST' ? new LeastRequest() : new RoundRobin();
}

/** The port to dial on `ep` for service port `sp`, or undefined when it cannot be resolved. */
export function endpointPort(ep: Endpoint, sp: ServicePort): number | undefined {
  const byName = ep.ports[sp.name];
  if (byName !== undefined) return byName;
  // A slice with one unnamed port serves an unnamed service port.
  if (sp.name === '' && ep.ports[''] !== undefined) return ep.ports[''];
  return sp.targetPort > 0 ? sp.targetPort : undefined;
}
