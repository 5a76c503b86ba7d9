/**
 * TrafficRouter: routes and traffic policy at the source agent, per request.
 *
 *   Service VIP:port + request -> GAMMA route lookup (producer/consumer routes, precedence)
 *     -> no route attached: the Service itself | no rule matched: 404 (NR)
 *     -> rule: redirect (direct answer) | weighted backend Service (+ per-backend filters)
 *   backend Service -> its BackendTrafficPolicy: fault (abort/delay), circuit breaker,
 *     endpoint pick (locality, outlier ejections, LB: RR / P2C / peak-EWMA / consistent hash)
 *   -> a RequestPlan when anything beyond "one endpoint" applies (filters, timeouts, retries,
 *      mirrors, breaker, faults); no plan otherwise, so plain Services keep the lean path.
 *
 * Compiled once per config snapshot (route table, policies by Service and by route); the per
 * request work is map lookups and the matchers of the rules attached to that Service.
 */
import type { Endpoint, MeshSnapshot, Service, ServicePort, Workload } from '../../config/model.js';
import type { BackendTrafficPolicy, ControlledMeshSnapshot, FaultInjectionPolicy, HeaderModifier, RetryPolicy, RouteFilters, RouteRule } from '../../config/policy-model.js';
import type { ConfigStore } from '../../config/store.js';
import { type BackendState, BackendStates, type PickContext } from '../../routing/backend-state.js';
import { applyHeaderModifier, redirectLocation, rewritePath, RouteTable } from '../../routing/route-table.js';
import { backoffMs, RetryBudget } from '../../routing/retry-budget.js';
import type { AttemptResult, DirectAnswer, RequestInfo, RequestPlan, RetryPlan, UpstreamChoice } from '../http/types.js';
import type { Destination } from './destination.js';
import type { ChoiceFactory, RequestRouter, Route, TrafficServiceStats } from './router.js';

/** gRPC status names a retry policy may list, by code. */
const GRPC_RETRY_ON: Record<string, number> = { cancelled: 1, 'deadline-exceeded': 4, 'resource-exhausted': 8, internal: 13, unavailable: 14 };

/** Default retry budget when a route's retry has no policy behind it: Linkerd's 20%, and 10 per second. */
const DEFAULT_BUDGET = { percent: 20, minRetriesPerSecond: 10 };
const DEFAULT_REPLAY_BYTES = 64 * 1024;
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

type Head = Record<string, string | string[] | number | undefined>;

/** HTTP status -> gRPC status for answers made here (gRPC's own mapping of HTTP errors). */
function grpcOf(status: number): number {
  if (status === 400) return 13;
  if (status === 401) return 16;
  if (status === 403) return 7;
  if (status === 404) return 12;
  if (status === 429 || status === 502 || status === 503 || status === 504) return 14;
  return 2;
}

function firstHeader(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function cookieValue(header: string | string[] | undefined, name: string): string | undefined {
  const all = Array.isArray(header) ? header.join('; ') : header;
  if (!all) return undefined;
  for (const part of all.split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

/** What a compiled snapshot knows beyond the route table: faults by route (rule). */
interface Compiled {
  table: RouteTable;
  routeFaults: Map<string, FaultInjectionPolicy>;
}

export class TrafficRouter implements RequestRouter {
  private readonly states: BackendStates;
  private compiled: Compiled = { table: RouteTable.compile([]), routeFaults: new Map() };
  /** Budgets of Services retried by a route's rule without a policy retry of their own. */
  private defaultBudgets = new Map<string, RetryBudget>();
  /** Retries sent, per destination Service (`ns/name`). */
  private readonly retriesSent = new Map<string, number>();
  private readonly now: () => number;
  private readonly plainPick: PickContext;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly store: ConfigStore,
    private readonly localNode: string,
    opts: { now?: () => number; random?: () => number } = {},
    private readonly random: () => number = opts.random ?? Math.random,
  ) {
    this.states = new BackendStates(opts);
    this.now = opts.now ?? Date.now;
    this.plainPick = { localNode };
    const snap = store.snapshot();
    if (snap) this.update(snap);
    this.unsubscribe = store.subscribe((_diff, s) => this.update(s));
  }

  close(): void {
    this.unsubscribe();
  }

  private update(snapshot: MeshSnapshot): void {
    const s = snapshot as Partial<ControlledMeshSnapshot> & MeshSnapshot;
    const policies = s.backendTrafficPolicies ?? [];
    this.states.update(s.services, policies, s.nodes);
    const routeFaults = new Map<string, FaultInjectionPolicy>();
    // Oldest policy first, so the first one seen for a route (rule) is the one in effect.
    const ordered = [...policies].sort((a, b) => ((a.createdAt ?? '') < (b.createdAt ?? '') ? -1 : 1));
    for (const p of ordered) {
      if (!p.faultInjection) continue;
      for (const t of p.routeTargets ?? []) {
        const key = `${t.kind}/${t.namespace}/${t.name}#${t.sectionName ?? ''}`;
        if (!routeFaults.has(key)) routeFaults.set(key, p.faultInjection);
      }
    }
    this.compiled = { table: RouteTable.compile(s.routes ?? []), routeFaults };
    const live = new Set(s.services.map((x) => `${x.namespace}/${x.name}`));
    for (const k of this.defaultBudgets.keys()) if (!live.has(k)) this.defaultBudgets.delete(k);
    for (const k of this.retriesSent.keys()) if (!live.has(k)) this.retriesSent.delete(k);
  }

  inFlight(svc: Service, ip: string): number {
    return this.states.for(svc).inFlight(ip);
  }

  /** What traffic policy did per Service, for the Services that have any (metrics). */
  serviceStats(): TrafficServiceStats[] {
    const out: TrafficServiceStats[] = [];
    for (const svc of this.store.snapshot()?.services ?? []) {
      const k = `${svc.namespace}/${svc.name}`;
      const st = this.states.for(svc);
      const budget = st.budget ?? this.defaultBudgets.get(k);
      if (!st.policy && !budget) continue;
      out.push({
        service: k,
        retries: this.retriesSent.get(k) ?? 0,
        budgetExhausted: budget?.exhausted ?? 0,
        ejections: st.outliers?.ejections ?? 0,
        ejectedNow: st.outliers?.ejected().length ?? 0,
        overflows: { ...st.breaker.overflows },
      });
    }
    return out;
  }

  describe(): object {
    const services: Record<string, object> = {};
    for (const svc of this.store.snapshot()?.services ?? []) {
      const st = this.states.for(svc);
      if (st.policy) services[`${svc.namespace}/${svc.name}`] = st.describe();
    }
    return { services };
  }

  choose(source: Workload, dest: Destination, req: RequestInfo | undefined, make: ChoiceFactory): UpstreamChoice | undefined {
    if (dest.kind === 'workload') return make(source, { endpoint: dest.endpoint, port: dest.port });
    if (dest.kind !== 'service') return undefined;
    const svc = dest.service;
    if (!req) {
      // L4: one endpoint per connection by the Service's balancer; routes are HTTP only.
      const st = this.states.for(svc);
      const r = this.pick(st, dest.servicePort);
      return r ? make(source, r) : undefined;
    }
    const ct = req.headers['content-type'];
    const grpc = typeof ct === 'string' && ct.startsWith('application/grpc');
    const found = this.compiled.table.lookup(source.namespace, svc, dest.servicePort.port, { method: req.method, path: req.path, headers: req.headers, grpc });
    if (found.kind === 'none') return this.toService(source, svc, dest.servicePort, req, grpc, make, undefined);
    if (found.kind === 'no-match') {
      return this.direct(source, make, { status: 404, grpcStatus: 12, text: 'no route matched', flag: 'NR' }, `${found.route.kind}/${found.route.namespace}/${found.route.name}`);
    }
    const routeName = `${found.route.kind}/${found.route.namespace}/${found.route.name}#${found.rule.name ?? found.ruleIndex}`;
    const rule = found.rule;
    const filters = rule.filters;
    if (filters?.redirect) {
      const location = redirectLocation({ scheme: 'http', host: req.authority, port: dest.servicePort.port, target: req.path }, found.matchedPrefix, filters.redirect);
      return this.direct(source, make, { status: filters.redirect.statusCode, grpcStatus: 2, text: '', headers: { location }, flag: '' }, routeName);
    }
    const backend = found.backend;
    if (!backend) return this.direct(source, make, { status: 500, grpcStatus: 13, text: 'route rule has no backend', flag: 'NR' }, routeName);
    const backendRedirect = backend.filters?.redirect;
    if (backendRedirect) {
      const location = redirectLocation({ scheme: 'http', host: req.authority, port: dest.servicePort.port, target: req.path }, found.matchedPrefix, backendRedirect);
      return this.direct(source, make, { status: backendRedirect.statusCode, grpcStatus: 2, text: '', headers: { location }, flag: '' }, routeName);
    }
    const target = this.store.service(backend.namespace, backend.name);
    const port = backend.port ?? dest.servicePort.port;
    const sp = target?.ports.find((p) => p.port === port);
    if (!target || !sp) return this.direct(source, make, { status: 500, grpcStatus: 13, text: 'route backend not found', flag: 'NR' }, routeName);
    const fault = this.compiled.routeFaults.get(`${found.route.kind}/${found.route.namespace}/${found.route.name}#${rule.name ?? ''}`) ?? this.compiled.routeFaults.get(`${found.route.kind}/${found.route.namespace}/${found.route.name}#`);
    return this.toService(source, target, sp, req, grpc, make, { rule, routeName, matchedPrefix: found.matchedPrefix, backendFilters: backend.filters, fault });
  }

  /** A choice that answers by itself (no endpoint). */
  private direct(source: Workload, make: ChoiceFactory, answer: DirectAnswer, route?: string): UpstreamChoice {
    const plan: RequestPlan = {
      direct: answer,
      flags: [],
      ...(route ? { route } : {}),
      next: () => undefined,
      finish: () => {},
      answered: () => {},
    };
    const nowhere: Endpoint = { ip: '0.0.0.0', ready: false, ports: {}, meshEnabled: false };
    return make(source, { endpoint: nowhere, port: 0 }, plan);
  }

  /** The request to Service `svc` port `sp`, with what its policy and the matched rule add. */
  private toService(
    source: Workload,
    svc: Service,
    sp: ServicePort,
    req: RequestInfo,
    grpc: boolean,
    make: ChoiceFactory,
    matched: { rule: RouteRule; routeName: string; matchedPrefix?: string; backendFilters?: RouteFilters; fault?: FaultInjectionPolicy } | undefined,
  ): UpstreamChoice | undefined {
    const st = this.states.for(svc);
    const policy = st.policy;
    const hashCtx = this.hashKey(policy, source, req);
    if (!policy && !matched) {
      // The plain path: no plan, nothing allocated beyond the choice.
      const r = this.pick(st, sp, hashCtx?.key);
      return r ? make(source, r) : undefined;
    }
    const fault = matched?.fault ?? policy?.faultInjection;
    const flags: string[] = [];
    if (fault?.abort && this.random() * 100 < fault.abort.percent) {
      const status = fault.abort.httpStatus ?? (fault.abort.grpcStatus !== undefined ? 200 : 503);
      return this.direct(source, make, { status, grpcStatus: fault.abort.grpcStatus ?? grpcOf(status), text: 'fault filter abort', flag: 'FI' }, matched?.routeName);
    }
    const breaker = st.breaker;
    if (!breaker.tryAcquire('requests')) {
      return this.direct(source, make, { status: 503, grpcStatus: 14, text: 'upstream overflow (circuit breaker: max requests)', flag: 'UO' }, matched?.routeName);
    }
    if (!breaker.tryAcquire('pending')) {
      breaker.release('requests');
      return this.direct(source, make, { status: 503, grpcStatus: 14, text: 'upstream overflow (circuit breaker: max pending requests)', flag: 'UO' }, matched?.routeName);
    }
    const first = this.pick(st, sp, hashCtx?.key);
    if (!first) {
      breaker.release('pending');
      breaker.release('requests');
      return undefined;
    }
    let pending = true;
    let over = false;
    /** Endpoints this request went to: retries go elsewhere when they can. */
    const tried = new Set<string>([first.endpoint.ip]);
    const rule = matched?.rule;
    const retry = this.retryPlan(st, svc, rule, policy?.retry, req.method, grpc);
    const plan: RequestPlan = {
      flags,
      ...(matched ? { route: matched.routeName } : {}),
      next: () => {
        const r = this.pick(st, sp, hashCtx?.key, tried);
        if (!r) return undefined;
        tried.add(r.endpoint.ip);
        return make(source, r);
      },
      answered: () => {
        if (!pending) return;
        pending = false;
        breaker.release('pending');
      },
      finish: () => {
        if (over) return;
        over = true;
        plan.answered();
        breaker.release('requests');
      },
    };
    const timeoutMs = rule?.timeoutMs ?? policy?.timeout?.requestMs;
    if (timeoutMs) plan.timeoutMs = timeoutMs;
    const tryTimeoutMs = rule?.backendTimeoutMs ?? policy?.retry?.perTryTimeoutMs;
    if (tryTimeoutMs) plan.tryTimeoutMs = tryTimeoutMs;
    if (retry) plan.retry = retry;
    if (fault?.delay && this.random() * 100 < fault.delay.percent) plan.delayMs = fault.delay.delayMs;
    const reqMods: HeaderModifier[] = [];
    const resMods: HeaderModifier[] = [];
    for (const f of [rule?.filters, matched?.backendFilters]) {
      if (f?.requestHeaders) reqMods.push(f.requestHeaders);
      if (f?.responseHeaders) resMods.push(f.responseHeaders);
    }
    const rewrite = matched?.backendFilters?.rewrite ?? rule?.filters?.rewrite;
    if (reqMods.length > 0 || rewrite) {
      const prefix = matched?.matchedPrefix;
      plan.editRequest = (head: Head) => {
        for (const m of reqMods) applyHeaderModifier(head as Record<string, string | string[] | undefined>, m);
        if (rewrite?.hostname) head[':authority'] = rewrite.hostname;
        if (rewrite?.path) head[':path'] = rewritePath(String(head[':path'] ?? '/'), prefix, rewrite.path);
      };
    }
    if (hashCtx?.setCookie) resMods.push({ add: [{ name: 'set-cookie', value: hashCtx.setCookie }] });
    if (resMods.length > 0) {
      plan.editResponse = (head: Head) => {
        for (const m of resMods) applyHeaderModifier(head as Record<string, string | string[] | undefined>, m);
      };
    }
    const mirrors = [...(rule?.filters?.mirrors ?? []), ...(matched?.backendFilters?.mirrors ?? [])];
    if (mirrors.length > 0) {
      const chosen: UpstreamChoice[] = [];
      for (const m of mirrors) {
        if (this.random() * 100 >= m.percent) continue;
        const msvc = this.store.service(m.namespace, m.name);
        const msp = msvc?.ports.find((p) => p.port === (m.port ?? sp.port));
        if (!msvc || !msp) continue;
        const r = this.pick(this.states.for(msvc), msp);
        if (r) chosen.push(make(source, r));
      }
      if (chosen.length > 0) plan.mirrors = chosen;
    }
    return make(source, first, plan);
  }

  /**
   * One endpoint of port `sp` by the Service's state (locality, ejections, balancer), not one
   * of `exclude` (IPs) when others are there; done() reports back.
   */
  private pick(st: BackendState, sp: ServicePort, hashKey?: string, exclude?: ReadonlySet<string>): Route | undefined {
    // The common case (no hash key, no retry) reuses one context: nothing allocated for it.
    const ctx = hashKey === undefined && exclude === undefined ? this.plainPick : { localNode: this.localNode, hashKey, exclude };
    const sel = st.pick(sp, ctx);
    if (!sel) return undefined;
    const started = performance.now();
    const ep = sel.endpoint;
    let released = false;
    return {
      endpoint: ep,
      port: sel.port,
      done: (result?: AttemptResult) => {
        if (released) return;
        released = true;
        st.finish(ep, outcomeOf(result), performance.now() - started);
      },
    };
  }

  /** The budget of a Service whose policy has no retry (a route's rule retries it): the default one. */
  private defaultBudget(svc: Service): RetryBudget {
    const k = `${svc.namespace}/${svc.name}`;
    let b = this.defaultBudgets.get(k);
    if (!b) {
      b = new RetryBudget(DEFAULT_BUDGET, this.now);
      this.defaultBudgets.set(k, b);
    }
    return b;
  }

  /** The consistent-hash key of a request, and a cookie to set when the affinity cookie is new. */
  private hashKey(policy: BackendTrafficPolicy | undefined, source: Workload, req: RequestInfo): { key: string; setCookie?: string } | undefined {
    const h = policy?.loadBalancer?.algorithm === 'CONSISTENT_HASH' ? policy.loadBalancer.hash : undefined;
    if (!h) return undefined;
    if (h.sourceIdentity) return { key: source.identity };
    if (h.header) {
      const v = firstHeader(req.headers[h.header.toLowerCase()]);
      return v === undefined ? undefined : { key: v };
    }
    if (h.cookie) {
      const v = cookieValue(req.headers.cookie, h.cookie.name);
      if (v !== undefined) return { key: v };
      if (h.cookie.ttlMs === undefined) return undefined;
      // No affinity yet: make one, as Envoy's generated cookie does; the client keeps it.
      const fresh = `${Math.floor(this.random() * 2 ** 48).toString(36)}${Date.now().toString(36)}`;
      return { key: fresh, setCookie: `${h.cookie.name}=${fresh}; Max-Age=${Math.max(1, Math.round(h.cookie.ttlMs / 1000))}; Path=/; HttpOnly` };
    }
    return undefined;
  }

  /** The retry plan of a request: the route's GEP-1731 retry, else the Service policy's. */
  private retryPlan(st: BackendState, svc: Service, rule: RouteRule | undefined, policy: RetryPolicy | undefined, method: string, grpc: boolean): RetryPlan | undefined {
    const routeRetry = rule?.retry;
    if (!routeRetry && !policy) return undefined;
    const attempts = routeRetry?.attempts ?? policy?.attempts ?? 0;
    if (attempts <= 0) return undefined;
    // Only requests that can be replayed safely: idempotent methods (gRPC calls are POSTs and
    // retried only on statuses saying the server did no work), unless the policy allows more.
    if (!grpc && !IDEMPOTENT.has(method) && !policy?.nonIdempotent) return undefined;
    const codes = new Set(routeRetry?.codes ?? policy?.codes ?? []);
    const on = new Set<string>(routeRetry ? ['connect-failure', 'reset'] : (policy?.retryOn ?? []));
    const grpcCodes = new Set<number>();
    for (const n of on) {
      const c = GRPC_RETRY_ON[n];
      if (c !== undefined) grpcCodes.add(c);
    }
    const base = routeRetry?.backoffMs ?? policy?.backoff.baseMs ?? 25;
    const max = policy?.backoff.maxMs ?? Math.max(base * 10, 250);
    const budget = st.budget ?? this.defaultBudget(svc);
    budget.requestStarted();
    const breaker = st.breaker;
    const key = `${svc.namespace}/${svc.name}`;
    const sent = this.retriesSent;
    return {
      attempts,
      maxReplayBytes: policy?.maxReplayBytes ?? DEFAULT_REPLAY_BYTES,
      retriable(r, reset) {
        if (r.connectFailed) return on.has('connect-failure') || on.has('reset');
        if (r.status === 0) return reset ? on.has('reset') || on.has('refused-stream') : on.has('reset');
        if (r.grpcStatus !== undefined && r.grpcStatus !== 0) return grpcCodes.has(r.grpcStatus);
        if (codes.has(r.status)) return true;
        if (r.status >= 500 && on.has('5xx')) return true;
        if ((r.status === 502 || r.status === 503 || r.status === 504) && on.has('gateway-error')) return true;
        return r.status === 409 && on.has('retriable-4xx');
      },
      backoffMs: (n) => backoffMs(n, base, max, Math.random),
      acquire() {
        if (!breaker.tryAcquire('retries')) return false;
        if (!budget.canRetry()) {
          breaker.release('retries');
          return false;
        }
        sent.set(key, (sent.get(key) ?? 0) + 1);
        return true;
      },
      release() {
        breaker.release('retries');
      },
    };
  }
}


function outcomeOf(r: AttemptResult | undefined): 'success' | '5xx' | 'gateway-error' | 'connect-failure' | 'other' {
  if (!r) return 'other';
  if (r.connectFailed) return 'connect-failure';
  if (r.status === 502 || r.status === 503 || r.status === 504) return 'gateway-error';
  if (r.status >= 500) return '5xx';
  // No answer at all — the stream was reset, the session died under it (a peer node gone),
  // the try timed out — is the upstream's failure, as Envoy counts a locally originated
  // reset: a gateway error. (A client that went away reports no result: 'other'.) Counting
  // it as a success kept a vanished node's endpoints in rotation (peer-vanish reliability test).
  if (r.status === 0) return 'gateway-error';
  if (r.grpcStatus !== undefined && (r.grpcStatus === 14 || r.grpcStatus === 4)) return 'gateway-error';
  return 'success';
}
