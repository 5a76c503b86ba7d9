/**
 * Gateway API routes attached to Services (the GAMMA mesh profile), compiled once per config
 * snapshot and looked up per request.
 *
 * Which routes apply (GEP-1426): a route attaches to each Service in its parents, to one port
 * when the parent names a port. A route in the Service's namespace is a producer route and
 * applies to every client; a route in another namespace is a consumer route and applies only
 * to clients in its own namespace. A client whose namespace has consumer routes for the
 * Service port uses those, and only those; other clients use the producer routes. Within that
 * set, GRPCRoutes win over HTTPRoutes for the Service port (GEP-1426's route type
 * precedence: the HTTPRoutes there are conflicted and ignored), so a non-gRPC request to a
 * port that has GRPCRoutes matches nothing and is answered 404. `hostnames` are ignored: the
 * GEP says meshes SHOULD NOT infer anything from them.
 *
 * Precedence (HTTPRoute spec) across every rule of the applicable routes, per match: Exact
 * path, then (implementation-specific, as Envoy Gateway) RegularExpression paths, longer
 * patterns first, then PathPrefix by length; then a method match; then more header matches;
 * then more query matches; then the older route, then `namespace/name`; then rule order.
 * GRPCRoute: longer service, then longer method (Exact matches; a regular expression counts as
 * less specific than any exact name), then more header matches, then the same route order.
 *
 * The per-request path is allocation-free on the common path: results are prebuilt per
 * (rule, backend) and weighted choice keeps its state per compiled rule.
 */
import type { HeaderModifier, MeshRoute, PathModifier, RouteBackend, RouteFilters, RouteMatch, RouteRule } from '../config/policy-model.js';

export interface RequestAttrs {
  method: string;
  /** Request target including `?query`. */
  path: string;
  /** Lower-case names. */
  headers: Record<string, string | string[] | undefined>;
  grpc: boolean;
}

export type RouteLookup =
  /** No route attached to the Service port for this client: plain Service behaviour. */
  | { readonly kind: 'none' }
  /** Routes attached, none matched: the proxy answers 404. */
  | { readonly kind: 'no-match'; readonly route: MeshRoute }
  | {
      readonly kind: 'match';
      readonly route: MeshRoute;
      readonly ruleIndex: number;
      readonly rule: RouteRule;
      /** Undefined when the rule has no backend with a non-zero weight: the proxy answers 500. */
      readonly backend: RouteBackend | undefined;
      /** The PathPrefix value that matched (for ReplacePrefixMatch); undefined for other path matches. */
      readonly matchedPrefix: string | undefined;
    };

export type RouteMatchResult = Extract<RouteLookup, { kind: 'match' }>;

const NONE: RouteLookup = Object.freeze({ kind: 'none' });

/** A regular expression compiled for full matches; undefined when it does not compile (never matches). */
function fullRegex(pattern: string): RegExp | undefined {
  try {
    return new RegExp(`^(?:${pattern})$`);
  } catch {
    return undefined;
  }
}

interface StringTest {
  name: string;
  exact?: string;
  /** null: a regular expression that did not compile, so the match never matches. */
  regex?: RegExp | null;
}

function stringTest(m: { name: string; value: string; type: 'Exact' | 'RegularExpression' }, name: string): StringTest {
  return m.type === 'Exact' ? { name, exact: m.value } : { name, regex: fullRegex(m.value) ?? null };
}

function testValue(t: StringTest, v: string): boolean {
  if (t.exact !== undefined) return v === t.exact;
  return t.regex ? t.regex.test(v) : false;
}

/** Weighted backend choice per rule: nginx's smooth weighted round robin (exact over every window of sum(weights) picks). */
class WeightedChoice {
  private readonly current: Float64Array;
  private readonly total: number;

  constructor(private readonly weights: readonly number[]) {
    this.current = new Float64Array(weights.length);
    this.total = weights.reduce((a, w) => a + w, 0);
  }

  /** Index of the next backend, -1 when every weight is zero. */
  next(): number {
    if (this.total <= 0) return -1;
    if (this.weights.length === 1) return 0;
    let best = -1;
    let bestValue = Number.NEGATIVE_INFINITY;
    for (let i = 0; i < this.weights.length; i++) {
      const w = this.weights[i]!;
      if (w <= 0) continue;
      const c = this.current[i]! + w;
      this.current[i] = c;
      if (c > bestValue) {
        bestValue = c;
        best = i;
      }
    }
    this.current[best]! -= this.total;
    return best;
  }
}

interface CompiledRule {
  route: MeshRoute;
  ruleIndex: number;
  rule: RouteRule;
  choice: WeightedChoice;
}

/** Order of routes when matches tie: older first, then namespace/name. */
function routeOrder(a: MeshRoute, b: MeshRoute): number {
  const ta = a.createdAt ? Date.parse(a.createdAt) : Number.POSITIVE_INFINITY;
  const tb = b.createdAt ? Date.parse(b.createdAt) : Number.POSITIVE_INFINITY;
  const na = Number.isNaN(ta) ? Number.POSITIVE_INFINITY : ta;
  const nb = Number.isNaN(tb) ? Number.POSITIVE_INFINITY : tb;
  if (na !== nb) return na < nb ? -1 : 1;
  const ka = `${a.namespace}/${a.name}`;
  const kb = `${b.namespace}/${b.name}`;
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

enum PathKind {
  Exact = 3,
  Regex = 2,
  Prefix = 1,
}

/** One match of one rule, ready to test, with its precedence key. */
interface CompiledMatch {
  rule: CompiledRule;
  matchIndex: number;
  // HTTP
  pathKind: PathKind;
  pathValue: string;
  /** PathPrefix without trailing slashes ('' for '/'). */
  prefix: string;
  pathRegex: RegExp | null;
  method: string | undefined;
  // gRPC
  grpcService: StringTest | undefined;
  grpcMethod: StringTest | undefined;
  headers: StringTest[];
  query: StringTest[];
  /** Prebuilt results, one per backend index, and [backends.length] for "no backend". */
  results: RouteMatchResult[];
}

/** Keeps the first entry per name (the spec ignores later entries with an equivalent name). */
function firstPerName<T extends { name: string }>(list: readonly T[] | undefined, norm: (n: string) => string): { entry: T; name: string }[] {
  const seen = new Set<string>();
  const out: { entry: T; name: string }[] = [];
  for (const e of list ?? []) {
    const name = norm(e.name);
    if (seen.has(name)) continue;
    seen.add(name);
    out.push({ entry: e, name });
  }
  return out;
}

function compileMatch(rule: CompiledRule, m: RouteMatch, matchIndex: number): CompiledMatch {
  const path = m.path ?? { type: 'PathPrefix' as const, value: '/' };
  const pathKind = path.type === 'Exact' ? PathKind.Exact : path.type === 'RegularExpression' ? PathKind.Regex : PathKind.Prefix;
  const prefix = pathKind === PathKind.Prefix ? path.value.replace(/\/+$/, '') : '';
  const grpcTest = (value: string | undefined): StringTest | undefined => {
    if (value === undefined || !m.grpc) return undefined;
    return m.grpc.type === 'Exact' ? { name: '', exact: value } : { name: '', regex: fullRegex(value) ?? null };
  };
  const cm: CompiledMatch = {
    rule,
    matchIndex,
    pathKind,
    pathValue: path.value,
    prefix,
    pathRegex: pathKind === PathKind.Regex ? (fullRegex(path.value) ?? null) : null,
    method: m.method,
    grpcService: grpcTest(m.grpc?.service),
    grpcMethod: grpcTest(m.grpc?.method),
    headers: firstPerName(m.headers, (n) => n.toLowerCase()).map(({ entry, name }) => stringTest(entry, name)),
    query: firstPerName(m.queryParams, (n) => n).map(({ entry, name }) => stringTest(entry, name)),
    results: [],
  };
  const r = rule.rule;
  const matchedPrefix = pathKind === PathKind.Prefix ? path.value : undefined;
  const base = { kind: 'match' as const, route: rule.route, ruleIndex: rule.ruleIndex, rule: r, matchedPrefix };
  cm.results = r.backends.map((backend) => Object.freeze({ ...base, backend }));
  cm.results.push(Object.freeze({ ...base, backend: undefined }));
  return cm;
}

/** HTTPRoute precedence between two matches (negative: `a` first). */
function httpPrecedence(a: CompiledMatch, b: CompiledMatch): number {
  if (a.pathKind !== b.pathKind) return b.pathKind - a.pathKind;
  if (a.pathKind !== PathKind.Exact && a.pathValue.length !== b.pathValue.length) return b.pathValue.length - a.pathValue.length;
  const ma = a.method !== undefined ? 1 : 0;
  const mb = b.method !== undefined ? 1 : 0;
  if (ma !== mb) return mb - ma;
  if (a.headers.length !== b.headers.length) return b.headers.length - a.headers.length;
  if (a.query.length !== b.query.length) return b.query.length - a.query.length;
  return tieBreak(a, b);
}

function exactLength(t: StringTest | undefined): number {
  return t?.exact !== undefined ? t.exact.length : 0;
}

/** GRPCRoute precedence between two matches (negative: `a` first). */
function grpcPrecedence(a: CompiledMatch, b: CompiledMatch): number {
  const d = exactLength(b.grpcService) - exactLength(a.grpcService) || exactLength(b.grpcMethod) - exactLength(a.grpcMethod);
  if (d !== 0) return d;
  // A regular expression still says more than no constraint at all.
  const ra = (a.grpcService ? 1 : 0) + (a.grpcMethod ? 1 : 0);
  const rb = (b.grpcService ? 1 : 0) + (b.grpcMethod ? 1 : 0);
  if (ra !== rb) return rb - ra;
  if (a.headers.length !== b.headers.length) return b.headers.length - a.headers.length;
  return tieBreak(a, b);
}

function tieBreak(a: CompiledMatch, b: CompiledMatch): number {
  if (a.rule.route !== b.rule.route) {
    const r = routeOrder(a.rule.route, b.rule.route);
    if (r !== 0) return r;
  }
  return a.rule.ruleIndex - b.rule.ruleIndex || a.matchIndex - b.matchIndex;
}

/** The applicable routes for one (Service port, client namespace, protocol), matches in precedence order. */
interface MatchSet {
  /** What a request that matches nothing gets. */
  noMatch: RouteLookup;
  matches: CompiledMatch[];
  grpc: boolean;
}

interface Attachment {
  route: MeshRoute;
  port: number | undefined;
  /** Consumer route: the route's namespace differs from the Service's. */
  consumer: boolean;
  /** Compiled matches of the route (shared by every set it is in). */
  http: CompiledMatch[];
  grpc: CompiledMatch[];
}

interface ServiceRoutes {
  namespace: string;
  attachments: Attachment[];
  /** port -> client namespace -> [http set, grpc set] */
  sets: Map<number, Map<string, [MatchSet | undefined, MatchSet | undefined]>>;
}

function compileRoute(route: MeshRoute): { http: CompiledMatch[]; grpc: CompiledMatch[] } {
  const matches: CompiledMatch[] = [];
  route.rules.forEach((rule, ruleIndex) => {
    const cr: CompiledRule = { route, ruleIndex, rule, choice: new WeightedChoice(rule.backends.map((b) => Math.max(0, b.weight))) };
    // A rule without matches matches every request (HTTPRoute: PathPrefix "/"; GRPCRoute: everything).
    const list = rule.matches.length > 0 ? rule.matches : [{}];
    list.forEach((m, i) => {
      matches.push(compileMatch(cr, m, i));
    });
  });
  return route.kind === 'GRPCRoute' ? { http: [], grpc: matches } : { http: matches, grpc: [] };
}

export class RouteTable {
  /** Service namespace -> name -> its routes. */
  private constructor(private readonly services: Map<string, Map<string, ServiceRoutes>>) {}

  static compile(routes: readonly MeshRoute[]): RouteTable {
    const services = new Map<string, Map<string, ServiceRoutes>>();
    for (const route of routes) {
      const compiled = compileRoute(route);
      for (const parent of route.parents) {
        let byName = services.get(parent.namespace);
        if (!byName) {
          byName = new Map();
          services.set(parent.namespace, byName);
        }
        let sr = byName.get(parent.name);
        if (!sr) {
          sr = { namespace: parent.namespace, attachments: [], sets: new Map() };
          byName.set(parent.name, sr);
        }
        // A route naming the same Service twice (two ports, or a port and none) attaches once per parent entry.
        sr.attachments.push({ route, port: parent.port, consumer: route.namespace !== parent.namespace, ...compiled });
      }
    }
    return new RouteTable(services);
  }

  /** Routes attached to a Service (any port, any client): for status and config dumps. */
  attached(svc: { namespace: string; name: string }): MeshRoute[] {
    const sr = this.services.get(svc.namespace)?.get(svc.name);
    return sr ? [...new Set(sr.attachments.map((a) => a.route))] : [];
  }

  lookup(clientNamespace: string, svc: { namespace: string; name: string }, port: number, req: RequestAttrs): RouteLookup {
    const sr = this.services.get(svc.namespace)?.get(svc.name);
    if (!sr) return NONE;
    const set = this.matchSet(sr, port, clientNamespace, req.grpc);
    if (!set) return NONE;
    const target = req.path;
    const q = target.indexOf('?');
    const h = target.indexOf('#');
    const end = q >= 0 ? q : h >= 0 ? h : target.length;
    const path = end === target.length ? target : target.slice(0, end);
    const query = q >= 0 ? target.slice(q + 1, h > q ? h : target.length) : '';
    for (const m of set.matches) {
      if (set.grpc ? grpcMatches(m, path, req) : httpMatches(m, path, query, req)) {
        const i = m.rule.choice.next();
        return m.results[i < 0 ? m.results.length - 1 : i]!;
      }
    }
    return set.noMatch;
  }

  private matchSet(sr: ServiceRoutes, port: number, clientNs: string, grpc: boolean): MatchSet | undefined {
    let byClient = sr.sets.get(port);
    if (!byClient) {
      byClient = new Map();
      sr.sets.set(port, byClient);
    }
    let pair = byClient.get(clientNs);
    if (!pair) {
      pair = this.buildSets(sr, port, clientNs);
      byClient.set(clientNs, pair);
    }
    // With GRPCRoutes on the port, pair[0] is an empty set: a non-gRPC request matches nothing.
    return grpc && pair[1] ? pair[1] : pair[0];
  }

  private buildSets(sr: ServiceRoutes, port: number, clientNs: string): [MatchSet | undefined, MatchSet | undefined] {
    const onPort = sr.attachments.filter((a) => a.port === undefined || a.port === port);
    const consumer = clientNs === sr.namespace ? [] : onPort.filter((a) => a.consumer && a.route.namespace === clientNs);
    const chosen = consumer.length > 0 ? consumer : onPort.filter((a) => !a.consumer);
    if (chosen.length === 0) return [undefined, undefined];
    const grpcRoutes = chosen.filter((a) => a.route.kind === 'GRPCRoute');
    const build = (list: Attachment[], isGrpc: boolean): MatchSet => {
      const seen = new Set<MeshRoute>();
      const matches: CompiledMatch[] = [];
      for (const a of list) {
        if (seen.has(a.route)) continue; // one route attached through two parent entries counts once
        seen.add(a.route);
        matches.push(...(isGrpc ? a.grpc : a.http));
      }
      matches.sort(isGrpc ? grpcPrecedence : httpPrecedence);
      const first = [...seen].sort(routeOrder)[0]!;
      return { noMatch: Object.freeze({ kind: 'no-match', route: first }), matches, grpc: isGrpc };
    };
    if (grpcRoutes.length > 0) {
      const set = build(grpcRoutes, true);
      return [{ noMatch: set.noMatch, matches: [], grpc: false }, set];
    }
    return [build(chosen, false), undefined];
  }
}

function pathMatches(m: CompiledMatch, path: string): boolean {
  switch (m.pathKind) {
    case PathKind.Exact:
      return path === m.pathValue;
    case PathKind.Regex:
      return m.pathRegex ? m.pathRegex.test(path) : false;
    default: {
      // Element-wise: the prefix, then the end of the path or a '/'.
      const p = m.prefix;
      if (p.length === 0) return path.startsWith('/') || path.length === 0 || path === '*';
      return path.startsWith(p) && (path.length === p.length || path.charCodeAt(p.length) === 47 /* '/' */);
    }
  }
}

function headerMatches(t: StringTest, headers: RequestAttrs['headers']): boolean {
  const v = headers[t.name];
  if (v === undefined) return false;
  if (typeof v === 'string') return testValue(t, v);
  // A repeated header: any of its values, or the values combined as one (RFC 9110 5.3).
  for (const x of v) if (testValue(t, x)) return true;
  return v.length > 1 && testValue(t, v.join(', '));
}

function httpMatches(m: CompiledMatch, path: string, query: string, req: RequestAttrs): boolean {
  if (!pathMatches(m, path)) return false;
  if (m.method !== undefined && m.method !== req.method) return false;
  for (const t of m.headers) if (!headerMatches(t, req.headers)) return false;
  for (const t of m.query) {
    const v = firstQueryValue(query, t.name);
    if (v === undefined || !testValue(t, v)) return false;
  }
  return true;
}

function grpcMatches(m: CompiledMatch, path: string, req: RequestAttrs): boolean {
  if (m.grpcService || m.grpcMethod) {
    // `/package.Service/Method`
    if (path.charCodeAt(0) !== 47) return false;
    const slash = path.indexOf('/', 1);
    if (slash < 0 || path.indexOf('/', slash + 1) >= 0) return false;
    if (m.grpcService && !testValue(m.grpcService, path.slice(1, slash))) return false;
    if (m.grpcMethod && !testValue(m.grpcMethod, path.slice(slash + 1))) return false;
  }
  for (const t of m.headers) if (!headerMatches(t, req.headers)) return false;
  return true;
}

function decode(s: string): string {
  if (s.indexOf('%') < 0 && s.indexOf('+') < 0) return s;
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

/**
 * The first value of query parameter `name` in `query` (no leading '?'), percent-decoded; the
 * spec leaves repeated parameters open and recommends the first value.
 */
export function firstQueryValue(query: string, name: string): string | undefined {
  let start = 0;
  while (start <= query.length) {
    let amp = query.indexOf('&', start);
    if (amp < 0) amp = query.length;
    if (amp > start) {
      const eq = query.indexOf('=', start);
      const keyEnd = eq >= 0 && eq < amp ? eq : amp;
      const key = query.slice(start, keyEnd);
      if (key === name || (key.length >= name.length && decode(key) === name)) {
        return keyEnd === amp ? '' : decode(query.slice(keyEnd + 1, amp));
      }
    }
    start = amp + 1;
  }
  return undefined;
}

/** Splits a request target into path and the rest (`?query`, kept verbatim). */
function splitTarget(target: string): [string, string] {
  const q = target.indexOf('?');
  return q < 0 ? [target, ''] : [target.slice(0, q), target.slice(q)];
}

/**
 * The request target after a URLRewrite/RequestRedirect path modifier; the query is kept.
 * ReplacePrefixMatch replaces the matched prefix element-wise (`/foo` + `/foo/bar` -> `/xyz/bar`,
 * replacement `/` strips it); it needs the PathPrefix that matched and leaves the path alone
 * without one.
 */
export function rewritePath(target: string, matchedPrefix: string | undefined, mod: PathModifier): string {
  const [path, rest] = splitTarget(target);
  if (mod.type === 'ReplaceFullPath') return (mod.value || '/') + rest;
  if (matchedPrefix === undefined) return target;
  const prefix = matchedPrefix.replace(/\/+$/, '');
  if (!(path.startsWith(prefix) && (path.length === prefix.length || path.charCodeAt(prefix.length) === 47))) return target;
  const replaced = mod.value.replace(/\/+$/, '') + path.slice(prefix.length);
  return (replaced.length === 0 ? '/' : replaced.startsWith('/') ? replaced : `/${replaced}`) + rest;
}

export interface RedirectRequest {
  scheme: 'http' | 'https';
  /** The request's Host / :authority (a port in it is ignored). */
  host: string;
  /** The port the request was sent to (the Service port). */
  port: number;
  /** Request target including `?query`. */
  target: string;
}

function hostnameOf(host: string): string {
  if (host.startsWith('[')) {
    const close = host.indexOf(']');
    return close >= 0 ? host.slice(0, close + 1) : host;
  }
  const colon = host.lastIndexOf(':');
  return colon >= 0 && host.indexOf(':') === colon ? host.slice(0, colon) : host;
}

/**
 * The Location of a RequestRedirect. Port, as the spec says: the redirect's port when set;
 * else the scheme's well-known port when the redirect sets a scheme; else the port the request
 * came to. The port is left out when it is the scheme's default (80 for http, 443 for https).
 */
export function redirectLocation(req: RedirectRequest, matchedPrefix: string | undefined, redirect: NonNullable<RouteFilters['redirect']>): string {
  const scheme = redirect.scheme ?? req.scheme;
  const host = redirect.hostname ?? hostnameOf(req.host);
  const port = redirect.port ?? (redirect.scheme ? (scheme === 'https' ? 443 : 80) : req.port);
  const target = redirect.path ? rewritePath(req.target, matchedPrefix, redirect.path) : req.target;
  const defaultPort = scheme === 'https' ? 443 : 80;
  return `${scheme}://${host}${port === defaultPort ? '' : `:${port}`}${target}`;
}

/**
 * Applies a RequestHeaderModifier/ResponseHeaderModifier to lower-case-keyed headers, in place:
 * `set` replaces, `add` appends a value, `remove` deletes (applied in that order).
 */
export function applyHeaderModifier(headers: Record<string, string | string[] | undefined>, mod: HeaderModifier): void {
  for (const { name, value } of mod.set ?? []) headers[name.toLowerCase()] = value;
  for (const { name, value } of mod.add ?? []) {
    const k = name.toLowerCase();
    const cur = headers[k];
    if (cur === undefined) headers[k] = value;
    else if (typeof cur === 'string') headers[k] = [cur, value];
    else cur.push(value);
  }
  for (const name of mod.remove ?? []) delete headers[name.toLowerCase()];
}
