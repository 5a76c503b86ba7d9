/**
 * Header hygiene between the client and the upstream. A mesh proxy is invisible to the app:
 * it removes what belongs to one hop (RFC 9110 §7.6.1: Connection and the fields it names,
 * Keep-Alive, Proxy-Connection, TE except "trailers", Transfer-Encoding framing, Upgrade
 * outside an upgrade), keeps Host / :authority exactly as the client wrote them, and adds no
 * X-Forwarded-* of its own: the app called a Service over plaintext HTTP and the server should
 * see exactly that. Who the caller is travels on the tunnel (the source certificate), where
 * it cannot be forged by a header, and the inbound side attaches it. Two fields are the
 * exception, as in Envoy/Istio and only when the agent is told to: `x-request-id` (generated
 * when the app sent none; `--request-id passthrough` turns that off) and, for sampled traces,
 * `traceparent`/B3 rewritten to the mesh's spans (trace-hook.ts).
 *
 * `skein-*` fields are reserved for the hop between two agents (mesh-headers.ts): an app may
 * not send them (they are removed from every request and response the proxy relays, like
 * hop-by-hop fields), so only an agent can set them and none ever reaches an app.
 */

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'te',
  'upgrade',
  'http2-settings',
]);

/** Prefix of the fields reserved for the agent-to-agent hop. */
export const RESERVED_PREFIX = 'skein-';

/** A field the proxy never relays: hop-by-hop, or reserved for the agents. */
function isReserved(lower: string): boolean {
  return lower.charCodeAt(0) === 115 /* s */ && lower.startsWith(RESERVED_PREFIX);
}

/** Tokens listed in Connection headers (those fields are hop-by-hop too). */
function connectionTokens(raw: readonly string[]): Set<string> | undefined {
  let tokens: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    if ((raw[i] as string).toLowerCase() !== 'connection') continue;
    for (const t of (raw[i + 1] as string).split(',')) {
      const v = t.trim().toLowerCase();
      if (!v) continue;
      tokens ??= new Set();
      tokens.add(v);
    }
  }
  return tokens;
}

export interface FilterOptions {
  /** Keep `Transfer-Encoding: chunked` so the outgoing side frames the body the same way. */
  keepChunked?: boolean;
  /** Keep `TE: trailers` (gRPC needs it end to end). */
  keepTeTrailers?: boolean;
}

/**
 * Filters a flat raw header list ([name, value, name, value...], as Node's rawHeaders) down to
 * end-to-end fields, preserving order, case and repeated fields (Set-Cookie).
 */
export function endToEndRawHeaders(raw: readonly string[], opts: FilterOptions = {}): string[] {
  const named = connectionTokens(raw);
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const value = raw[i + 1] as string;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || named?.has(lower) || isReserved(lower)) {
      if (opts.keepChunked && lower === 'transfer-encoding' && /(^|,)\s*chunked\s*$/i.test(value)) {
        out.push(name, 'chunked');
      } else if (opts.keepTeTrailers && lower === 'te' && /(^|,)\s*trailers\s*(,|$)/i.test(value)) {
        out.push(name, 'trailers');
      }
      continue;
    }
    out.push(name, value);
  }
  return out;
}

/**
 * HTTP/2 fields that must never be forwarded on an HTTP/2 hop (RFC 9113 §8.2.2), and skein-*.
 * Runs for every HTTP/2 request and response on both agents: a plain for-in over the (already
 * lower-case) names, no intermediate arrays.
 */
export function endToEndH2Headers(headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const k in headers) {
    const v = headers[k];
    if (v === undefined || isReserved(k)) continue;
    if (HOP_BY_HOP.has(k)) {
      if (k === 'te' && typeof v === 'string' && /(^|,)\s*trailers\s*(,|$)/i.test(v)) out[k] = 'trailers';
      continue;
    }
    out[k] = v;
  }
  return out;
}

/** Raw headers as an array of [name, value] pairs (what addTrailers accepts). */
export function rawPairs(raw: readonly string[]): [string, string][] {
  const out: [string, string][] = [];
  for (let i = 0; i < raw.length; i += 2) out.push([raw[i] as string, raw[i + 1] as string]);
  return out;
}

/** HTTP/2 headers as a flat raw list (no pseudo-headers, repeated values expanded), for an HTTP/1 hop. */
export function h2ToRaw(headers: Record<string, string | string[] | number | undefined>): string[] {
  const out: string[] = [];
  for (const k in headers) {
    if (k.charCodeAt(0) === 58 /* : */) continue;
    const v = headers[k];
    if (v === undefined) continue;
    if (Array.isArray(v)) for (const one of v) out.push(k, one);
    else out.push(k, String(v));
  }
  return out;
}

/**
 * A flat raw list folded into HTTP/2 headers (lower-case names, a repeated field as an
 * array), added to `into` (pseudo-headers such as :status go there first).
 */
export function rawToH2(raw: readonly string[], into: Record<string, string | string[] | number> = {}): Record<string, string | string[] | number> {
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    const value = raw[i + 1] as string;
    const prev = into[name];
    into[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [String(prev), value];
  }
  return into;
}
