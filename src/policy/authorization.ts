/**
 * Authorization at the destination, with Istio's AuthorizationPolicy semantics, compiled once
 * per local workload when a config is applied and evaluated per connection (L4) or per
 * request (L7):
 *
 *   1. any DENY policy that matches denies;
 *   2. AUDIT policies that match are reported (they never change the decision);
 *   3. if any ALLOW policy applies to the workload, the request must match one, else it is
 *      denied; with no ALLOW policy it is allowed.
 *
 * A policy matches when one of its rules does; a rule when one of its `from` sources (or no
 * `from`), one of its `to` operations (or no `to`) and every `when` condition match. An ALLOW
 * policy without rules matches nothing: it denies everything (allow-nothing); a rule `{}`
 * matches everything. Inside a source or an operation every field given must match; `notX`
 * fields must not. Strings match exactly, or with one `*` as a prefix (`*abc`), suffix
 * (`abc*`) or alone (`*`: anything present).
 *
 * A connection (no HTTP) cannot be checked against HTTP fields (methods, paths, hosts, request
 * headers): like ztunnel, fail safe — such a rule matches in a DENY policy (the port is
 * denied) and never matches in an ALLOW policy.
 */
import { BlockList, isIPv4, isIPv6 } from 'node:net';
import type { SpiffeId, Workload } from '../config/model.js';
import type { AuthorizationPolicy, AuthorizationRule, PolicyAction } from '../config/policy-model.js';
import { selectorMatches } from '../config/policy-model.js';

/** What is known of one connection or request at the destination. */
export interface AuthzRequest {
  /** Authenticated SPIFFE identity of the source; absent for plaintext. */
  source?: SpiffeId;
  sourceIp?: string;
  /** Destination (app) port. */
  port: number;
  /** Set for an HTTP request (L7); absent for a connection (L4). */
  http?: {
    method: string;
    path: string;
    /** :authority (Host) as the client sent it; `hosts` match it. */
    authority: string;
    headers: Record<string, string | string[] | undefined>;
  };
}

export interface AuthzMatch {
  /** `namespace/name` of the policy. */
  policy: string;
  /** Index of the rule that matched. */
  rule: number;
  action: PolicyAction;
  dryRun: boolean;
}

export interface AuthzDecision {
  allow: boolean;
  /** Why, for logs: the policy that decided, or why none did. */
  reason: string;
  /** The deciding match (DENY or ALLOW), when a policy decided. */
  decidedBy?: AuthzMatch;
  /** AUDIT matches, and what dry-run policies would have done. */
  audits: AuthzMatch[];
}

/**
 * What the predicates read, derived once per evaluation (not once per rule): the principal
 * without its scheme, the source namespace, the path without its query, the host in lower case.
 */
interface ReqView {
  req: AuthzRequest;
  principal: string | undefined;
  namespace: string | undefined;
  path: string | undefined;
  host: string | undefined;
}

function viewOf(req: AuthzRequest): ReqView {
  const path = req.http?.path;
  const q = path === undefined ? -1 : path.indexOf('?');
  return {
    req,
    principal: principalOf(req.source),
    namespace: namespaceOf(req.source),
    path: path === undefined || q < 0 ? path : path.slice(0, q),
    host: req.http?.authority.toLowerCase(),
  };
}

type Pred = (v: ReqView) => boolean;
/** A compiled condition: true/false, or 'http' when it needs HTTP and the request has none. */
type Cond = (v: ReqView) => boolean | 'http';

const always: Pred = () => true;

/** Istio's string match: exact, `*`, `prefix*`, `*suffix`. */
export function stringMatcher(pattern: string, caseInsensitive = false): (v: string) => boolean {
  const p = caseInsensitive ? pattern.toLowerCase() : pattern;
  const norm = caseInsensitive ? (v: string) => v.toLowerCase() : (v: string) => v;
  if (p === '*') return (v) => v.length > 0;
  if (p.startsWith('*')) {
    const suffix = p.slice(1);
    return (v) => norm(v).endsWith(suffix);
  }
  if (p.endsWith('*')) {
    const prefix = p.slice(0, -1);
    return (v) => norm(v).startsWith(prefix);
  }
  return (v) => norm(v) === p;
}

function anyOf(patterns: readonly string[] | undefined, caseInsensitive = false): ((v: string | undefined) => boolean) | undefined {
  if (!patterns || patterns.length === 0) return undefined;
  const ms = patterns.map((p) => stringMatcher(p, caseInsensitive));
  return (v) => v !== undefined && ms.some((m) => m(v));
}

/** `cluster.local/ns/x/sa/y`: Istio writes principals without the scheme; both forms are accepted. */
function principalOf(id: string | undefined): string | undefined {
  return id?.startsWith('spiffe://') ? id.slice('spiffe://'.length) : id;
}
function normalizePrincipals(list: readonly string[] | undefined): string[] | undefined {
  return list?.map((p) => principalOf(p) as string);
}

/** The namespace of a SPIFFE identity `spiffe://td/ns/<ns>/sa/<sa>`. */
export function namespaceOf(id: SpiffeId | undefined): string | undefined {
  if (!id) return undefined;
  const m = /\/ns\/([^/]+)\//.exec(id);
  return m?.[1];
}

function cidrMatcher(blocks: readonly string[] | undefined): ((ip: string | undefined) => boolean) | undefined {
  if (!blocks || blocks.length === 0) return undefined;
  const list = new BlockList();
  for (const b of blocks) {
    const [addr = '', len] = b.split('/');
    const type = isIPv6(addr) ? 'ipv6' : 'ipv4';
    if (len === undefined) list.addAddress(addr, type);
    else list.addSubnet(addr, Number(len), type);
  }
  return (ip) => {
    if (!ip) return false;
    const v4mapped = ip.startsWith('::ffff:') && isIPv4(ip.slice(7)) ? ip.slice(7) : ip;
    return list.check(v4mapped, isIPv6(v4mapped) ? 'ipv6' : 'ipv4');
  };
}

/** A positive list (must match one) and a negative list (must match none), as one predicate. */
function both<T>(pos: ((v: T) => boolean) | undefined, neg: ((v: T) => boolean) | undefined, get: (r: ReqView) => T): Pred | undefined {
  if (!pos && !neg) return undefined;
  return (r) => {
    const v = get(r);
    return (!pos || pos(v)) && !neg?.(v);
  };
}

function allOf(preds: (Pred | undefined)[]): Pred {
  const ps = preds.filter((p): p is Pred => p !== undefined);
  if (ps.length === 0) return always;
  return (r) => ps.every((p) => p(r));
}

function header(r: AuthzRequest, name: string): string | undefined {
  const v = r.http?.headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}

/** The value a `when` key names, and whether it needs HTTP. */
export function whenKey(key: string): { get: (v: ReqView) => string | undefined; http: boolean } | undefined {
  const h = /^request\.headers\[([^\]]+)\]$/.exec(key);
  if (h) {
    const name = (h[1] as string).toLowerCase();
    return { get: (v) => header(v.req, name), http: true };
  }
  switch (key) {
    case 'source.principal':
      return { get: (v) => v.principal, http: false };
    case 'source.namespace':
      return { get: (v) => v.namespace, http: false };
    case 'source.ip':
      return { get: (v) => v.req.sourceIp, http: false };
    case 'destination.port':
      return { get: (v) => String(v.req.port), http: false };
    default:
      return undefined;
  }
}

/** The `when` keys skein evaluates (anything else is refused by the controller). */
export const WHEN_KEYS = ['request.headers[<name>]', 'source.principal', 'source.namespace', 'source.ip', 'destination.port'];

function compileRule(rule: AuthorizationRule): Cond {
  const sources = rule.from.map((s) => {
    const principals = normalizePrincipals(s.principals);
    const notPrincipals = normalizePrincipals(s.notPrincipals);
    return allOf([
      both(anyOf(principals), anyOf(notPrincipals), (v) => v.principal),
      both(anyOf(s.namespaces), anyOf(s.notNamespaces), (v) => v.namespace),
      both(cidrMatcher(s.ipBlocks), cidrMatcher(s.notIpBlocks), (v) => v.req.sourceIp),
    ]);
  });
  const operations = rule.to.map((o) => {
    const l4 = allOf([
      o.ports?.length ? (v) => (o.ports as number[]).includes(v.req.port) : undefined,
      o.notPorts?.length ? (v) => !(o.notPorts as number[]).includes(v.req.port) : undefined,
    ]);
    const methods = both(anyOf(o.methods), anyOf(o.notMethods), (v) => v.req.http?.method);
    const paths = both(anyOf(o.paths), anyOf(o.notPaths), (v) => v.path);
    // The host is lower-cased once per request (viewOf); the patterns were at compile time.
    const hosts = both(anyOf(o.hosts?.map((h) => h.toLowerCase())), anyOf(o.notHosts?.map((h) => h.toLowerCase())), (v) => v.host);
    const l7 = [methods, paths, hosts].filter((p): p is Pred => p !== undefined);
    return (v: ReqView): boolean | 'http' => {
      if (!l4(v)) return false;
      if (l7.length === 0) return true;
      if (!v.req.http) return 'http';
      return l7.every((p) => p(v));
    };
  });
  const conditions = rule.when.map((w) => {
    const k = whenKey(w.key);
    if (!k) return (): boolean => false; // the controller refuses unknown keys; never match one
    const pos = anyOf(w.values);
    const neg = anyOf(w.notValues);
    return (r: ReqView): boolean | 'http' => {
      if (k.http && !r.req.http) return 'http';
      const v = k.get(r);
      return (!pos || pos(v)) && !neg?.(v);
    };
  });
  return (r) => {
    if (sources.length > 0 && !sources.some((s) => s(r))) return false;
    let needsHttp = false;
    if (operations.length > 0) {
      let any = false;
      for (const op of operations) {
        const m = op(r);
        if (m === true) {
          any = true;
          break;
        }
        if (m === 'http') needsHttp = true;
      }
      if (!any && !needsHttp) return false;
      if (any) needsHttp = false;
    }
    for (const c of conditions) {
      const m = c(r);
      if (m === false) return false;
      if (m === 'http') needsHttp = true;
    }
    return needsHttp ? 'http' : true;
  };
}

interface CompiledPolicy {
  name: string;
  action: PolicyAction;
  dryRun: boolean;
  rules: Cond[];
}

/** The policies of one workload, compiled. */
export class WorkloadAuthorizer {
  private readonly deny: CompiledPolicy[] = [];
  private readonly allow: CompiledPolicy[] = [];
  private readonly audit: CompiledPolicy[] = [];
  /** `namespace/name` of every policy that applies (for /config_dump and tests). */
  readonly policies: string[];

  constructor(policies: readonly AuthorizationPolicy[]) {
    this.policies = policies.map((p) => `${p.namespace}/${p.name}`);
    for (const p of policies) {
      const c: CompiledPolicy = { name: `${p.namespace}/${p.name}`, action: p.action, dryRun: p.dryRun === true, rules: p.rules.map(compileRule) };
      if (c.dryRun || p.action === 'AUDIT') this.audit.push(c);
      else if (p.action === 'DENY') this.deny.push(c);
      else this.allow.push(c);
    }
  }

  get empty(): boolean {
    return this.deny.length === 0 && this.allow.length === 0 && this.audit.length === 0;
  }

  evaluate(req: AuthzRequest): AuthzDecision {
    const view = viewOf(req);
    const audits: AuthzMatch[] = [];
    for (const p of this.audit) {
      const i = firstMatch(p, view, p.action === 'DENY');
      if (i >= 0) audits.push({ policy: p.name, rule: i, action: p.action, dryRun: p.dryRun });
    }
    for (const p of this.deny) {
      const i = firstMatch(p, view, true);
      if (i >= 0) {
        const decidedBy: AuthzMatch = { policy: p.name, rule: i, action: 'DENY', dryRun: false };
        return { allow: false, reason: `denied by ${p.name} rule ${i}`, decidedBy, audits };
      }
    }
    if (this.allow.length === 0) return { allow: true, reason: 'no ALLOW policy applies', audits };
    for (const p of this.allow) {
      const i = firstMatch(p, view, false);
      if (i >= 0) return { allow: true, reason: `allowed by ${p.name} rule ${i}`, decidedBy: { policy: p.name, rule: i, action: 'ALLOW', dryRun: false }, audits };
    }
    return { allow: false, reason: `no rule of the ALLOW policies (${this.allow.map((p) => p.name).join(', ')}) matched`, audits };
  }
}

/** Index of the first rule that matches; an HTTP-only rule on a connection matches only if `httpMatches`. */
function firstMatch(p: CompiledPolicy, view: ReqView, httpMatches: boolean): number {
  for (let i = 0; i < p.rules.length; i++) {
    const m = (p.rules[i] as Cond)(view);
    if (m === true || (m === 'http' && httpMatches)) return i;
  }
  return -1;
}

/**
 * The policies that apply to `w`: those of its namespace, and mesh-wide ones (from the root
 * namespace), whose selector matches its labels.
 */
export function policiesFor(w: Workload, all: readonly AuthorizationPolicy[]): AuthorizationPolicy[] {
  return all.filter((p) => (p.meshWide || p.namespace === w.namespace) && selectorMatches(p.selector, w.labels));
}

/** Indexes of the rules that need HTTP (methods, paths, hosts, request headers): on a TCP connection they fail safe. */
export function httpOnlyRules(p: AuthorizationPolicy): number[] {
  const out: number[] = [];
  p.rules.forEach((r, i) => {
    const op = r.to.some((o) => o.methods?.length || o.notMethods?.length || o.paths?.length || o.notPaths?.length || o.hosts?.length || o.notHosts?.length);
    const when = r.when.some((w) => whenKey(w.key)?.http);
    if (op || when) out.push(i);
  });
  return out;
}

/** What a policy's status says about its HTTP rules on TCP connections (empty when none). */
export function tcpNote(p: AuthorizationPolicy): string {
  const rules = httpOnlyRules(p);
  if (rules.length === 0 || p.action === 'AUDIT') return '';
  const which = `rule${rules.length > 1 ? 's' : ''} ${rules.join(', ')}`;
  return p.action === 'DENY'
    ? `${which} check HTTP fields: on a TCP connection (or a WebSocket) they cannot be checked and deny it, on the ports they cover`
    : `${which} check HTTP fields: they never allow a TCP connection (or a WebSocket)`;
}
