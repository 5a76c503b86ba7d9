/**
 * Gateway API HTTPRoute/GRPCRoute (the GAMMA mesh profile: parents are Services) -> MeshRoute.
 * Runs after the schema check (kinds.ts); refuses here what a schema cannot say, with the
 * field and the reason, so that what is accepted is exactly what agents can enforce:
 * regexes that do not compile (or use what RE2 lacks), a filter type twice, a redirect with
 * a rewrite, ReplacePrefixMatch without a PathPrefix match, backendRequest > request, retry
 * codes outside 400-599, weights summing to 0. Cross-object checks (parents, backends and
 * mirrors exist; conflicts) are route-checks.ts's, in the index's global pass.
 */
import type { HeaderModifier, MeshRoute, PathModifier, RouteBackend, RouteFilters, RouteMatch, RouteRule } from '../config/policy-model.js';
import { type Any, ObjectProblem, strip } from './object-problem.js';
import { regexProblem } from './regex-check.js';
import { durationMs } from './schema.js';

/** RFC 9110 token: what a header name may be. */
const HEADER_NAME = /^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$/;
/** Gateway API's checks of an Exact gRPC service / method name. */
const GRPC_SERVICE = /^\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$/i;
const GRPC_METHOD = /^[A-Za-z_][A-Za-z_0-9]*$/;

/** Filter type -> the field that carries its configuration. */
const FILTER_FIELD: Record<string, string> = {
  RequestHeaderModifier: 'requestHeaderModifier',
  ResponseHeaderModifier: 'responseHeaderModifier',
  RequestRedirect: 'requestRedirect',
  URLRewrite: 'urlRewrite',
  RequestMirror: 'requestMirror',
};

function checkRegex(field: string, pattern: string): void {
  const why = regexProblem(pattern);
  if (why) throw new ObjectProblem(field, why);
}

/** Gateway duration -> ms; "0s" means no timeout (absent). */
function gatewayMs(v: unknown): number | undefined {
  if (typeof v !== 'string') return undefined;
  const n = durationMs(v);
  return n > 0 ? n : undefined;
}

function isService(ref: Any): boolean {
  return (ref.kind ?? 'Service') === 'Service' && (ref.group ?? '') === '';
}

/** A translated route and, per mirror (`<filters path>#<k-th mirror>`), the field of its backendRef. */
export interface TranslatedRoute {
  value: MeshRoute;
  mirrorFields: Map<string, string>;
}

export function translateRoute(o: Any, namespace: string, name: string, spec: Any): TranslatedRoute {
  const mirrorFields = new Map<string, string>();
  const kind = o.kind as MeshRoute['kind'];
  const parents = ((spec.parentRefs ?? []) as Any[]).map((p, i) => {
    const pkind = p.kind ?? 'Gateway';
    const group = p.group ?? (pkind === 'Service' ? '' : 'gateway.networking.k8s.io');
    if (pkind !== 'Service' || group !== '') {
      throw new ObjectProblem(`spec.parentRefs[${i}]`, `skein attaches routes to Services only (GAMMA); got ${group || 'core'}/${pkind}`);
    }
    if (p.sectionName !== undefined) {
      throw new ObjectProblem(`spec.parentRefs[${i}].sectionName`, 'not supported on a Service parent: name the Service port with `port`');
    }
    return strip({ namespace: p.namespace ?? namespace, name: String(p.name), port: p.port as number | undefined });
  });
  if (parents.length === 0) throw new ObjectProblem('spec.parentRefs', 'missing: a mesh route must name the Service it attaches to');
  const names = new Set<string>();
  const rules: RouteRule[] = ((spec.rules ?? []) as Any[]).map((r, i) => {
    const at = `spec.rules[${i}]`;
    const rule: RouteRule = { matches: translateMatches(kind, r, at), backends: [] };
    if (r.name !== undefined) {
      if (names.has(r.name)) throw new ObjectProblem(`${at}.name`, `rule name ${JSON.stringify(r.name)} is used twice in this route`);
      names.add(r.name);
      rule.name = r.name;
    }
    rule.backends = ((r.backendRefs ?? []) as Any[]).map((b, j): RouteBackend => {
      if (!isService(b)) throw new ObjectProblem(`${at}.backendRefs[${j}]`, `only Service backends are supported; got ${b.group || 'core'}/${b.kind}`);
      const filters = b.filters ? translateFilters(kind, b.filters, `${at}.backendRefs[${j}].filters`, rule.matches, namespace, mirrorFields) : undefined;
      return strip({ namespace: b.namespace ?? namespace, name: String(b.name), port: b.port as number | undefined, weight: b.weight ?? 1, filters });
    });
    if (rule.backends.length > 0 && rule.backends.every((b) => b.weight === 0)) {
      throw new ObjectProblem(`${at}.backendRefs`, 'weights sum to 0: the rule could never send a request anywhere');
    }
    if (r.filters) {
      const filters = translateFilters(kind, r.filters, `${at}.filters`, rule.matches, namespace, mirrorFields);
      if (filters) rule.filters = filters;
    }
    const timeout = gatewayMs(r.timeouts?.request);
    const backendTimeout = gatewayMs(r.timeouts?.backendRequest);
    if (timeout !== undefined && backendTimeout !== undefined && backendTimeout > timeout) {
      throw new ObjectProblem(`${at}.timeouts.backendRequest`, `${r.timeouts.backendRequest} is longer than timeouts.request ${r.timeouts.request}: each try must fit in the whole request`);
    }
    if (timeout !== undefined) rule.timeoutMs = timeout;
    if (backendTimeout !== undefined) rule.backendTimeoutMs = backendTimeout;
    if (r.retry) {
      const codes = (r.retry.codes ?? []) as number[];
      for (const [k, c] of codes.entries()) {
        if (c < 400 || c > 599) throw new ObjectProblem(`${at}.retry.codes[${k}]`, `${c} is not a retriable status: codes must be 400-599`);
      }
      // GEP-1731 leaves the default attempts to implementations: one retry, as Envoy's.
      rule.retry = strip({ codes: [...new Set(codes)], attempts: r.retry.attempts ?? 1, backoffMs: typeof r.retry.backoff === 'string' ? durationMs(r.retry.backoff) : undefined });
    }
    return rule;
  });
  const createdAt = o.metadata.creationTimestamp as string | undefined;
  return { value: strip({ kind, namespace, name, parents, hostnames: [...(spec.hostnames ?? [])], rules, createdAt }), mirrorFields };
}

function translateMatches(kind: MeshRoute['kind'], r: Any, at: string): RouteMatch[] {
  const matches = ((r.matches ?? []) as Any[]).map((m, j) => {
    const here = `${at}.matches[${j}]`;
    const out: RouteMatch = {};
    if (kind === 'GRPCRoute') {
      if (m.method) {
        const type = m.method.type ?? 'Exact';
        if (m.method.service === undefined && m.method.method === undefined) throw new ObjectProblem(`${here}.method`, 'needs service, method or both');
        for (const part of ['service', 'method'] as const) {
          const v = m.method[part];
          if (v === undefined) continue;
          if (type === 'RegularExpression') checkRegex(`${here}.method.${part}`, v);
          else if (!(part === 'service' ? GRPC_SERVICE : GRPC_METHOD).test(v)) {
            throw new ObjectProblem(`${here}.method.${part}`, `not a gRPC ${part} name: ${JSON.stringify(v)}`);
          }
        }
        out.grpc = strip({ type, service: m.method.service, method: m.method.method });
      }
    } else {
      if (m.path) {
        const type = m.path.type ?? 'PathPrefix';
        const value = m.path.value ?? '/';
        if (type === 'RegularExpression') checkRegex(`${here}.path.value`, value);
        else if (!value.startsWith('/')) throw new ObjectProblem(`${here}.path.value`, `must start with "/": ${JSON.stringify(value)}`);
        out.path = { type, value };
      }
      if (m.method) out.method = m.method;
      if (m.queryParams) {
        // The spec: of entries with the same name, only the first counts (names are case-sensitive).
        const seen = new Set<string>();
        out.queryParams = [];
        for (const [k, q] of (m.queryParams as Any[]).entries()) {
          if (q.type === 'RegularExpression') checkRegex(`${here}.queryParams[${k}].value`, q.value);
          if (seen.has(q.name)) continue;
          seen.add(q.name);
          out.queryParams.push({ name: String(q.name), value: String(q.value), type: q.type ?? 'Exact' });
        }
      }
    }
    if (m.headers) {
      // Header names are case-insensitive; of equal names only the first counts (the spec).
      const seen = new Set<string>();
      out.headers = [];
      for (const [k, h] of (m.headers as Any[]).entries()) {
        if (!HEADER_NAME.test(h.name)) throw new ObjectProblem(`${here}.headers[${k}].name`, `not a header name: ${JSON.stringify(h.name)}`);
        if (h.type === 'RegularExpression') checkRegex(`${here}.headers[${k}].value`, h.value);
        const lower = String(h.name).toLowerCase();
        if (seen.has(lower)) continue;
        seen.add(lower);
        out.headers.push({ name: lower, value: String(h.value), type: h.type ?? 'Exact' });
      }
    }
    return out;
  });
  if (matches.length > 0) return matches;
  return [kind === 'GRPCRoute' ? {} : { path: { type: 'PathPrefix', value: '/' } }];
}

function headerModifier(m: Any, at: string): HeaderModifier {
  const out: HeaderModifier = {};
  for (const list of ['set', 'add'] as const) {
    if (!m[list]) continue;
    const seen = new Set<string>();
    out[list] = (m[list] as Any[]).map((h, k) => {
      const lower = String(h.name).toLowerCase();
      if (!HEADER_NAME.test(h.name)) throw new ObjectProblem(`${at}.${list}[${k}].name`, `not a header name: ${JSON.stringify(h.name)}`);
      if (seen.has(lower)) throw new ObjectProblem(`${at}.${list}[${k}].name`, `header ${JSON.stringify(h.name)} appears twice in ${list}`);
      seen.add(lower);
      return { name: String(h.name), value: String(h.value) };
    });
  }
  if (m.remove) {
    const seen = new Set<string>();
    out.remove = (m.remove as string[]).map((n, k) => {
      const lower = n.toLowerCase();
      if (!HEADER_NAME.test(n)) throw new ObjectProblem(`${at}.remove[${k}]`, `not a header name: ${JSON.stringify(n)}`);
      if (seen.has(lower)) throw new ObjectProblem(`${at}.remove[${k}]`, `header ${JSON.stringify(n)} appears twice in remove`);
      seen.add(lower);
      return lower;
    });
  }
  return out;
}

function pathModifier(p: Any, at: string, matches: RouteMatch[]): PathModifier {
  const want = p.type === 'ReplaceFullPath' ? 'replaceFullPath' : 'replacePrefixMatch';
  const other = p.type === 'ReplaceFullPath' ? 'replacePrefixMatch' : 'replaceFullPath';
  if (p[want] === undefined) throw new ObjectProblem(`${at}.${want}`, `missing: type ${p.type} needs ${want}`);
  if (p[other] !== undefined) throw new ObjectProblem(`${at}.${other}`, `not allowed with type ${p.type}`);
  if (p.type === 'ReplacePrefixMatch') {
    const j = matches.findIndex((m) => m.path?.type !== 'PathPrefix');
    if (j >= 0) throw new ObjectProblem(`${at}.type`, `ReplacePrefixMatch needs every match of the rule to be a PathPrefix path match; matches[${j}] is not`);
  }
  return { type: p.type, value: String(p[want]) };
}

function translateFilters(
  kind: MeshRoute['kind'],
  list: Any[],
  at: string,
  matches: RouteMatch[],
  namespace: string,
  mirrorFields: Map<string, string>,
): RouteFilters | undefined {
  const out: RouteFilters = {};
  const seen = new Map<string, number>();
  for (const [k, f] of list.entries()) {
    const here = `${at}[${k}]`;
    const type = String(f.type);
    const field = FILTER_FIELD[type]!;
    if (type !== 'RequestMirror' && seen.has(type)) {
      throw new ObjectProblem(`${here}.type`, `${type} appears twice (also ${at}[${seen.get(type)}]): each filter type may appear once, RequestMirror excepted`);
    }
    seen.set(type, k);
    for (const f2 of Object.values(FILTER_FIELD)) {
      if (f2 !== field && f[f2] !== undefined) throw new ObjectProblem(`${here}.${f2}`, `not allowed with type ${type} (it takes ${field})`);
    }
    const cfg = f[field] as Any | undefined;
    if (cfg === undefined) throw new ObjectProblem(`${here}.${field}`, `missing: type ${type} needs ${field}`);
    switch (type) {
      case 'RequestHeaderModifier':
        out.requestHeaders = headerModifier(cfg, `${here}.${field}`);
        break;
      case 'ResponseHeaderModifier':
        out.responseHeaders = headerModifier(cfg, `${here}.${field}`);
        break;
      case 'RequestRedirect':
        out.redirect = strip({
          scheme: cfg.scheme,
          hostname: cfg.hostname,
          path: cfg.path ? pathModifier(cfg.path, `${here}.${field}.path`, matches) : undefined,
          port: cfg.port,
          statusCode: cfg.statusCode ?? 302,
        });
        break;
      case 'URLRewrite':
        out.rewrite = strip({ hostname: cfg.hostname, path: cfg.path ? pathModifier(cfg.path, `${here}.${field}.path`, matches) : undefined });
        break;
      case 'RequestMirror': {
        const b = cfg.backendRef as Any;
        if (!isService(b)) throw new ObjectProblem(`${here}.${field}.backendRef`, `only Service backends are supported; got ${b.group || 'core'}/${b.kind}`);
        if (cfg.percent !== undefined && cfg.fraction !== undefined) throw new ObjectProblem(`${here}.${field}`, 'percent and fraction exclude each other');
        let percent = cfg.percent ?? 100;
        if (cfg.fraction) {
          const den = cfg.fraction.denominator ?? 100;
          if (cfg.fraction.numerator > den) throw new ObjectProblem(`${here}.${field}.fraction`, `numerator ${cfg.fraction.numerator} is greater than denominator ${den}`);
          percent = (cfg.fraction.numerator / den) * 100;
        }
        out.mirrors ??= [];
        mirrorFields.set(`${at}#${out.mirrors.length}`, `${here}.${field}.backendRef`);
        out.mirrors.push(strip({ namespace: b.namespace ?? namespace, name: String(b.name), port: b.port as number | undefined, percent }));
        break;
      }
    }
  }
  if (out.redirect && out.rewrite) {
    throw new ObjectProblem(`${at}[${seen.get('URLRewrite')}].type`, `URLRewrite cannot be combined with RequestRedirect (${at}[${seen.get('RequestRedirect')}])`);
  }
  if (kind === 'GRPCRoute' && (out.redirect || out.rewrite)) throw new ObjectProblem(at, 'GRPCRoute has no redirect or rewrite filters');
  return Object.keys(out).length > 0 ? out : undefined;
}

/** A canonical string of a match, to find two routes claiming the same traffic. */
export function matchKey(m: RouteMatch): string {
  return JSON.stringify([
    m.path?.type,
    m.path?.value,
    m.method,
    m.grpc?.type,
    m.grpc?.service,
    m.grpc?.method,
    (m.headers ?? []).map((h) => [h.name, h.type, h.value]).sort(),
    (m.queryParams ?? []).map((q) => [q.name, q.type, q.value]).sort(),
  ]);
}
