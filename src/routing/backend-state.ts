/**
 * Per-Service backend state the proxy consults for every request: the load balancer, outlier
 * ejections, the circuit breaker and the retry budget, configured by the BackendTrafficPolicy
 * in effect (or the Service's own load-balancer annotation without one). State survives config
 * updates: each part is kept while its own policy section is unchanged, so a new snapshot
 * neither forgets ejections nor resets in-flight counts.
 *
 * Picking is cheap: ready endpoints per (Service object, port) are computed once, the
 * non-ejected subset and locality tiers are recomputed only when the ejected set or the
 * endpoint list changes, so a pick allocates nothing unless the request excludes endpoints it
 * already tried.
 */
import type { Endpoint, NodeInfo, Service, ServicePort } from '../config/model.js';
import type { BackendTrafficPolicy } from '../config/policy-model.js';
import { CircuitBreaker } from './circuit-breaker.js';
import { createLoadBalancer, endpointPort, type LoadBalancer } from './load-balancer.js';
import { closestUsable, type LocalityTiers, localityTiers, zonesOf } from './locality.js';
import { OutlierDetector } from './outlier-detector.js';
import { RetryBudget } from './retry-budget.js';

export interface PickContext {
  /** The caller's node (locality). */
  localNode: string;
  /** Consistent hashing: the request's key (header, cookie or source identity value); absent: round robin. */
  hashKey?: string;
  /** Endpoint IPs this request already tried (retries go elsewhere when they can). */
  exclude?: ReadonlySet<string>;
}

export type FinishOutcome = 'success' | '5xx' | 'gateway-error' | 'connect-failure' | 'other';

export interface Clock {
  now: () => number;
  random: () => number;
}

/** Policies that target one Service; the first wins, the others are reported. */
export interface PolicyConflict {
  target: string;
  winner: string;
  losers: string[];
}

const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/** Candidates of one port: ready list, and what was derived from it for one ejection version. */
interface PortCache {
  ready: readonly Endpoint[];
  /** Ejection version `usable` was computed at (-1: never). */
  version: number;
  /** Ready and not ejected; `ready` itself in panic mode (all ejected) or when none is ejected. */
  usable: readonly Endpoint[];
  /** Every ready endpoint is ejected: `usable` is all of them (panic mode). */
  panic: boolean;
  /** Locality tiers of `usable`, per local node. */
  tiers: Map<string, LocalityTiers>;
}

export class BackendState {
  private lb!: LoadBalancer;
  private lbKey = '';
  private breakerOf!: CircuitBreaker;
  private budgetOf: RetryBudget | undefined;
  private outliersOf: OutlierDetector | undefined;
  private service!: Service;
  private zones: ReadonlyMap<string, string> = new Map();
  private ports = new WeakMap<Service, Map<string, PortCache>>();
  /** Picks served from every endpoint being ejected (Envoy's panic mode). */
  panics = 0;
  private policyOf: BackendTrafficPolicy | undefined;

  constructor(
    service: Service,
    policy: BackendTrafficPolicy | undefined,
    zones: ReadonlyMap<string, string>,
    private readonly clock: Clock,
  ) {
    this.update(service, policy, zones);
  }

  /** A new snapshot: keeps each part whose configuration did not change. */
  update(service: Service, policy: BackendTrafficPolicy | undefined, zones: ReadonlyMap<string, string>): void {
    const old = this.policyOf;
    const first = this.service === undefined;
    this.service = service;
    this.zones = zones;
    this.policyOf = policy;
    const algorithm = policy?.loadBalancer?.algorithm ?? service.loadBalancer;
    if (first || this.lbKey !== algorithm) {
      this.lb = createLoadBalancer(algorithm, this.clock);
      this.lbKey = algorithm;
    }
    if (first || !same(old?.circuitBreaker, policy?.circuitBreaker)) this.breakerOf = new CircuitBreaker(policy?.circuitBreaker);
    if (first || !same(old?.retry?.budget, policy?.retry?.budget)) {
      this.budgetOf = policy?.retry ? new RetryBudget(policy.retry.budget, this.clock.now) : undefined;
    }
    if (first || !same(old?.outlierDetection, policy?.outlierDetection)) {
      this.outliersOf = policy?.outlierDetection ? new OutlierDetector(policy.outlierDetection, this.clock.now) : undefined;
    }
    const ips = new Set(service.endpoints.filter((e) => e.ready).map((e) => e.ip));
    this.outliersOf?.setHosts(ips);
    this.lb.retain?.(ips);
    // Zones may have changed: derived lists start over (ready lists are per Service object anyway).
    this.ports = new WeakMap();
  }

  /** The policy in effect (undefined: the Service's own load-balancer annotation, no limits). */
  get policy(): BackendTrafficPolicy | undefined {
    return this.policyOf;
  }

  get breaker(): CircuitBreaker {
    return this.breakerOf;
  }

  /** Present when the policy has retries. */
  get budget(): RetryBudget | undefined {
    return this.budgetOf;
  }

  /** Present when the policy has outlier detection. */
  get outliers(): OutlierDetector | undefined {
    return this.outliersOf;
  }

  private portCache(sp: ServicePort): PortCache {
    let perPort = this.ports.get(this.service);
    if (!perPort) {
      perPort = new Map();
      this.ports.set(this.service, perPort);
    }
    let pc = perPort.get(sp.name);
    if (!pc) {
      const ready = this.service.endpoints.filter((e) => e.ready && endpointPort(e, sp) !== undefined);
      pc = { ready, version: -1, usable: ready, panic: false, tiers: new Map() };
      perPort.set(sp.name, pc);
    }
    return pc;
  }

  /** Ready endpoints of `sp` that are not ejected (all ready ones when every one is: panic). */
  private usable(pc: PortCache): readonly Endpoint[] {
    const od = this.outliers;
    if (!od) return pc.ready;
    od.refresh();
    if (pc.version !== od.version) {
      const kept = pc.ready.filter((e) => !od.isEjected(e.ip));
      pc.panic = kept.length === 0;
      pc.usable = kept.length === pc.ready.length || pc.panic ? pc.ready : kept;
      pc.version = od.version;
      pc.tiers.clear();
    }
    if (pc.panic) this.panics++;
    return pc.usable;
  }

  /** Ready, non-ejected endpoints of `sp`, locality-filtered, chosen by the LB; counts the pick as started. */
  pick(sp: ServicePort, ctx: PickContext): { endpoint: Endpoint; port: number } | undefined {
    const pc = this.portCache(sp);
    if (pc.ready.length === 0) return undefined;
    let candidates = this.usable(pc);
    const exclude = ctx.exclude && ctx.exclude.size > 0 ? ctx.exclude : undefined;
    const usable = exclude ? (e: Endpoint) => !exclude.has(e.ip) : undefined;
    if (this.policy?.loadBalancer?.locality === 'PreferClose') {
      let tiers = pc.tiers.get(ctx.localNode);
      if (!tiers) {
        tiers = localityTiers(candidates, ctx.localNode, this.zones);
        pc.tiers.set(ctx.localNode, tiers);
      }
      const close = closestUsable(tiers, usable);
      // Everything already tried: try again among the closest rather than fail the retry.
      candidates = close.length > 0 ? close : closestUsable(tiers);
    } else if (usable) {
      const rest = candidates.filter(usable);
      if (rest.length > 0) candidates = rest;
    }
    const endpoint = this.lb.pick(candidates, ctx.hashKey);
    if (!endpoint) return undefined;
    this.lb.start(endpoint);
    return { endpoint, port: endpointPort(endpoint, sp) as number };
  }

  /**
   * The request/connection to `ep` ended. Latency teaches the balancer only from answers:
   * a fast connect failure or 503 must not make a broken endpoint look attractive.
   */
  finish(ep: Endpoint, outcome: FinishOutcome, latencyMs: number): void {
    this.lb.end(ep, outcome === 'success' || outcome === 'other' || outcome === '5xx' ? latencyMs : undefined);
    this.outliers?.record(ep.ip, outcome === 'other' ? 'success' : outcome);
  }

  inFlight(ip: string): number {
    return this.lb.inFlight(ip);
  }

  get algorithm(): string {
    return this.lb.algorithm;
  }

  /** For /config_dump and metrics. */
  describe(): object {
    const inFlight: Record<string, number> = {};
    for (const e of this.service.endpoints) {
      const n = this.lb.inFlight(e.ip);
      if (n > 0) inFlight[e.ip] = n;
    }
    return {
      service: `${this.service.namespace}/${this.service.name}`,
      policy: this.policy ? `${this.policy.namespace}/${this.policy.name}` : null,
      algorithm: this.lb.algorithm,
      locality: this.policy?.loadBalancer?.locality ?? null,
      inFlight,
      panics: this.panics,
      circuitBreaker: this.breaker.describe(),
      outlierDetection: this.outliers?.describe() ?? null,
      retryBudget: this.budget?.describe() ?? null,
    };
  }
}

const createdAtOf = (p: BackendTrafficPolicy): number => {
  const t = p.createdAt ? Date.parse(p.createdAt) : Number.NaN;
  return Number.isNaN(t) ? Number.POSITIVE_INFINITY : t;
};

/** Oldest first, then namespace/name: the order in which policies on one target win. */
function policyOrder(a: BackendTrafficPolicy, b: BackendTrafficPolicy): number {
  const d = createdAtOf(a) - createdAtOf(b);
  if (d !== 0 && !Number.isNaN(d)) return d < 0 ? -1 : 1;
  const ka = `${a.namespace}/${a.name}`;
  const kb = `${b.namespace}/${b.name}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/** Backend state of every Service, kept across config snapshots. */
export class BackendStates {
  private readonly byKey = new Map<string, BackendState>();
  private byObject = new WeakMap<Service, BackendState>();
  private policies = new Map<string, BackendTrafficPolicy>();
  private zones: ReadonlyMap<string, string> = new Map();
  private lastConflicts: PolicyConflict[] = [];
  private readonly clock: Clock;

  constructor(opts: { now?: () => number; random?: () => number } = {}) {
    this.clock = { now: opts.now ?? Date.now, random: opts.random ?? Math.random };
  }

  /** One call per config snapshot. */
  update(services: readonly Service[], policies: readonly BackendTrafficPolicy[], nodes: readonly NodeInfo[]): void {
    this.zones = zonesOf(nodes);
    const byTarget = new Map<string, BackendTrafficPolicy[]>();
    for (const p of policies) {
      for (const t of new Set(p.targets)) {
        const list = byTarget.get(t);
        if (list) list.push(p);
        else byTarget.set(t, [p]);
      }
    }
    this.policies = new Map();
    this.lastConflicts = [];
    for (const [target, list] of byTarget) {
      list.sort(policyOrder);
      this.policies.set(target, list[0]!);
      if (list.length > 1) {
        this.lastConflicts.push({ target, winner: `${list[0]!.namespace}/${list[0]!.name}`, losers: list.slice(1).map((p) => `${p.namespace}/${p.name}`) });
      }
    }
    const live = new Set<string>();
    this.byObject = new WeakMap();
    for (const svc of services) {
      const key = `${svc.namespace}/${svc.name}`;
      live.add(key);
      const policy = this.policies.get(key);
      let st = this.byKey.get(key);
      if (st) st.update(svc, policy, this.zones);
      else {
        st = new BackendState(svc, policy, this.zones, this.clock);
        this.byKey.set(key, st);
      }
      this.byObject.set(svc, st);
    }
    for (const k of this.byKey.keys()) if (!live.has(k)) this.byKey.delete(k);
  }

  /** Policies that lost to an older one on the same target in the last update (for the agent to log). */
  conflicts(): readonly PolicyConflict[] {
    return this.lastConflicts;
  }

  /** The state of `svc` (created on first use for a Service the last update did not list). */
  for(svc: Service): BackendState {
    const hit = this.byObject.get(svc);
    if (hit) return hit;
    const key = `${svc.namespace}/${svc.name}`;
    let st = this.byKey.get(key);
    if (st) st.update(svc, this.policies.get(key), this.zones);
    else {
      st = new BackendState(svc, this.policies.get(key), this.zones, this.clock);
      this.byKey.set(key, st);
    }
    this.byObject.set(svc, st);
    return st;
  }

  describe(): object[] {
    return [...this.byKey.values()].map((s) => s.describe());
  }
}
