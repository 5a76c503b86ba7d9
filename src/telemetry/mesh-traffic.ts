/**
 * What one agent saw of the mesh, for the controller (skein top, the graph page, skein tap):
 *
 *   per edge   (reporter, source workload -> destination workload/service, protocol, mTLS):
 *              requests, errors, denials, bytes, and latency in a small fixed-bucket
 *              histogram (never every sample). `drain()` hands over what was seen since the
 *              previous drain and starts afresh, so memory is the edges of one interval.
 *   tap        sessions the controller asked for (filter, rate, time to live): matching
 *              requests become events (metadata only, the path without its query), at most
 *              `max_per_second` per session, handed to a sink in small batches.
 *
 * Bounded: at most `maxEdges` edges per interval (records of more are counted in `dropped`),
 * at most MAX_TAP_SESSIONS sessions, at most MAX_TAP_BUFFER events waiting for the sink.
 * Fed with the Istio labels the agent already resolves for its metrics (istio-metrics.ts).
 */
import type { RequestLabels } from './istio-metrics.js';

/** Upper bounds (ms, inclusive) of the latency buckets; one more bucket holds what is above. */
export const LATENCY_BOUNDS_MS: readonly number[] = [1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2500, 5000, 10000, 30000, 60000];

/** Default cap of edges an agent summarises per interval. */
export const DEFAULT_MAX_EDGES = 2000;
/** Tap sessions an agent runs at once, events per second per session at most, events waiting at most. */
export const MAX_TAP_SESSIONS = 16;
export const MAX_TAP_RATE = 100;
export const MAX_TAP_BUFFER = 1000;
/** The longest path a tap event carries. */
export const MAX_TAP_PATH = 256;

/** The Istio labels an edge is made of (what RequestTelemetry resolves per series). */
export type EdgeLabels = Pick<
  RequestLabels,
  | 'reporter'
  | 'source_workload'
  | 'source_workload_namespace'
  | 'source_principal'
  | 'destination_workload'
  | 'destination_workload_namespace'
  | 'destination_service'
  | 'destination_principal'
  | 'request_protocol'
  | 'connection_security_policy'
>;

/** One finished HTTP or gRPC request. */
export interface RequestSample {
  method?: string;
  path?: string;
  /** Status to the client; 0: broken before a response. */
  status: number;
  grpcStatus?: number;
  durationMs: number;
  /** Body bytes towards the destination and back. */
  requestBytes?: number;
  responseBytes?: number;
  /** Envoy-style flags, `-` when none. */
  flags: string;
}

/** One finished (or refused) TCP connection. */
export interface ConnectionSample {
  durationMs: number;
  /** Bytes towards the destination, and back to the source. */
  towardsDestination: number;
  towardsSource: number;
  flags: string;
}

/** Who talked to whom, as an edge summary and a tap event both name it (config.proto). */
export interface EdgeEndsData {
  reporter: string;
  source_workload: string;
  source_namespace: string;
  source_principal: string;
  destination_workload: string;
  destination_namespace: string;
  destination_service: string;
  destination_principal: string;
  protocol: string;
  mtls: boolean;
}

/** config.proto EdgeSummary (field names as the wire's). */
export interface EdgeSummaryData extends EdgeEndsData {
  requests: number;
  errors: number;
  denials: number;
  latency_counts: number[];
  latency_sum_ms: number;
  bytes_sent: number;
  bytes_received: number;
}

/** config.proto TrafficReport. */
export interface TrafficReportData {
  interval_ms: number;
  latency_bounds_ms: number[];
  edges: EdgeSummaryData[];
  dropped: number;
}

/** config.proto TapFilter. */
export interface TapFilterData {
  namespace: string;
  from: string;
  to: string;
  path: string;
}

/** config.proto TapControl. */
export interface TapControlData {
  session: string;
  stop: boolean;
  filter: TapFilterData | null;
  max_per_second: number;
  ttl_seconds: number;
}

/** config.proto TapEvent. */
export interface TapEventData extends EdgeEndsData {
  session: string;
  node: string;
  at: string;
  method: string;
  path: string;
  status: number;
  grpc_status: string;
  duration_ms: number;
  response_flags: string;
}

/** Index of the bucket `ms` falls in (LATENCY_BOUNDS_MS.length: above the last bound). */
export function latencyBucket(ms: number, bounds: readonly number[] = LATENCY_BOUNDS_MS): number {
  let lo = 0;
  let hi = bounds.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (ms <= bounds[mid]!) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * The q-quantile (0..1) of a bucketed histogram, interpolated linearly inside its bucket (as
 * Prometheus' histogram_quantile does); what is above the last bound reads as the last bound.
 * 0 when empty.
 */
export function histogramQuantile(bounds: readonly number[], counts: ArrayLike<number>, q: number): number {
  let total = 0;
  for (let i = 0; i < counts.length; i++) total += counts[i]!;
  if (total === 0) return 0;
  const rank = q * total;
  let acc = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i]!;
    if (c > 0 && acc + c >= rank) {
      if (i >= bounds.length) return bounds[bounds.length - 1] ?? 0;
      const lower = i === 0 ? 0 : bounds[i - 1]!;
      const upper = bounds[i]!;
      return lower + (upper - lower) * Math.min(1, Math.max(0, (rank - acc) / c));
    }
    acc += c;
  }
  return bounds[bounds.length - 1] ?? 0;
}

/** Does this outcome count as an error: no response, 5xx, gRPC non-OK, or anything the mesh flagged (refused, failed). */
export function isError(status: number, grpcStatus: number | undefined, flags: string): boolean {
  return status === 0 || status >= 500 || (grpcStatus !== undefined && grpcStatus !== 0) || (flags !== '-' && flags !== '');
}

/** Was it refused by authorization policy (Envoy's RBAC flag)? */
export function isDenial(flags: string): boolean {
  return flags === 'RBAC' || flags.split(',').includes('RBAC');
}

class EdgeAcc {
  requests = 0;
  errors = 0;
  denials = 0;
  latencySum = 0;
  sent = 0;
  received = 0;
  readonly latency = new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0);
  constructor(readonly labels: EdgeLabels) {}
}

function edgeKey(l: EdgeLabels): string {
  return [
    l.reporter,
    l.source_workload_namespace,
    l.source_workload,
    l.source_principal,
    l.destination_workload_namespace,
    l.destination_workload,
    l.destination_service,
    l.destination_principal,
    l.request_protocol,
    l.connection_security_policy,
  ].join('\u0000');
}

/** The workload a tap filter's NAME or NAMESPACE/NAME means, against a namespace and name. */
function namesMatch(want: string, namespace: string, name: string): boolean {
  const slash = want.indexOf('/');
  if (slash < 0) return want === name;
  return want.slice(0, slash) === namespace && want.slice(slash + 1) === name;
}

/** Does a tap filter select this request? (`to` matches the destination workload or its Service.) */
export function tapMatches(f: TapFilterData, l: EdgeLabels, path: string | undefined): boolean {
  if (f.namespace && f.namespace !== l.source_workload_namespace && f.namespace !== l.destination_workload_namespace) return false;
  if (f.from && !namesMatch(f.from, l.source_workload_namespace, l.source_workload)) return false;
  if (f.to) {
    const [svcName = '', svcNs = ''] = l.destination_service.split('.');
    if (!namesMatch(f.to, l.destination_workload_namespace, l.destination_workload) && !namesMatch(f.to, svcNs, svcName)) return false;
  }
  if (f.path && !(path ?? '').startsWith(f.path)) return false;
  return true;
}

/** The path a tap event may show: no query string, no fragment, at most MAX_TAP_PATH characters. */
export function tapPath(path: string | undefined): string {
  if (!path) return '';
  const cut = path.search(/[?#]/);
  const p = cut >= 0 ? path.slice(0, cut) : path;
  return p.length > MAX_TAP_PATH ? `${p.slice(0, MAX_TAP_PATH)}…` : p;
}

interface TapSession {
  id: string;
  filter: TapFilterData;
  rate: number;
  tokens: number;
  refilledAt: number;
  expiresAt: number;
}

export interface MeshTrafficOptions {
  /** This agent's node (in tap events). */
  node: string;
  /** Edges per interval at most (default DEFAULT_MAX_EDGES). */
  maxEdges?: number;
  /** Clock (ms), for tests. */
  now?: () => number;
  /** How long tap events wait to be sent together (ms, default 100). */
  tapFlushMs?: number;
}

export class MeshTraffic {
  private readonly now: () => number;
  private readonly maxEdges: number;
  /** Edges of this interval, by their labels object (one per metric series) and by key. */
  private byLabels = new Map<EdgeLabels, EdgeAcc>();
  private byKey = new Map<string, EdgeAcc>();
  private dropped = 0;
  private intervalStart: number;
  private readonly sessions = new Map<string, TapSession>();
  private tapBuffer: TapEventData[] = [];
  private tapTimer: NodeJS.Timeout | undefined;
  private tapSink: ((events: TapEventData[]) => void) | undefined;
  /** Tap events not sent: over a session's rate, the buffer's cap, or with nowhere to go. */
  tapDropped = 0;

  constructor(private readonly opts: MeshTrafficOptions) {
    this.now = opts.now ?? Date.now;
    this.maxEdges = opts.maxEdges ?? DEFAULT_MAX_EDGES;
    this.intervalStart = this.now();
  }

  /** One request; `labels` undefined when the agent could not label it (its metrics' series cap): counted as dropped. */
  request(labels: EdgeLabels | undefined, s: RequestSample): void {
    if (!labels) {
      this.dropped++;
      return;
    }
    const acc = this.edge(labels);
    if (acc) {
      acc.requests++;
      if (isError(s.status, s.grpcStatus, s.flags)) acc.errors++;
      if (isDenial(s.flags)) acc.denials++;
      acc.latency[latencyBucket(s.durationMs)]! += 1;
      acc.latencySum += s.durationMs;
      acc.sent += s.requestBytes ?? 0;
      acc.received += s.responseBytes ?? 0;
    }
    if (this.sessions.size > 0) this.tap(labels, s.method ?? '', s.path, s.status, s.grpcStatus, s.durationMs, s.flags);
  }

  /** One finished or refused TCP connection. */
  connection(labels: EdgeLabels | undefined, s: ConnectionSample): void {
    if (!labels) {
      this.dropped++;
      return;
    }
    const acc = this.edge(labels);
    if (acc) {
      acc.requests++;
      if (s.flags !== '-' && s.flags !== '') acc.errors++;
      if (isDenial(s.flags)) acc.denials++;
      acc.latency[latencyBucket(s.durationMs)]! += 1;
      acc.latencySum += s.durationMs;
      acc.sent += s.towardsDestination;
      acc.received += s.towardsSource;
    }
    if (this.sessions.size > 0) this.tap(labels, '', undefined, s.flags === '-' ? 200 : 0, undefined, s.durationMs, s.flags);
  }

  private edge(labels: EdgeLabels): EdgeAcc | undefined {
    let acc = this.byLabels.get(labels);
    if (acc) return acc;
    const key = edgeKey(labels);
    acc = this.byKey.get(key);
    if (!acc) {
      if (this.byKey.size >= this.maxEdges) {
        this.dropped++;
        return undefined;
      }
      acc = new EdgeAcc(labels);
      this.byKey.set(key, acc);
    }
    this.byLabels.set(labels, acc);
    return acc;
  }

  /** Edges held now (this interval). */
  get edgeCount(): number {
    return this.byKey.size;
  }

  /** What was seen since the previous drain; the next interval starts empty. */
  drain(): TrafficReportData {
    const now = this.now();
    const edges: EdgeSummaryData[] = [];
    for (const a of this.byKey.values()) {
      const l = a.labels;
      edges.push({
        reporter: l.reporter,
        source_workload: l.source_workload,
        source_namespace: l.source_workload_namespace,
        source_principal: l.source_principal,
        destination_workload: l.destination_workload,
        destination_namespace: l.destination_workload_namespace,
        destination_service: l.destination_service,
        destination_principal: l.destination_principal,
        protocol: l.request_protocol,
        mtls: l.connection_security_policy === 'mutual_tls',
        requests: a.requests,
        errors: a.errors,
        denials: a.denials,
        latency_counts: a.latency,
        latency_sum_ms: a.latencySum,
        bytes_sent: a.sent,
        bytes_received: a.received,
      });
    }
    const report: TrafficReportData = { interval_ms: Math.max(0, now - this.intervalStart), latency_bounds_ms: [...LATENCY_BOUNDS_MS], edges, dropped: this.dropped };
    this.byLabels = new Map();
    this.byKey = new Map();
    this.dropped = 0;
    this.intervalStart = now;
    return report;
  }

  // --- tap ---

  /** Where batches of tap events go (the config stream); undefined: nowhere (they are dropped). */
  setTapSink(sink: ((events: TapEventData[]) => void) | undefined): void {
    this.tapSink = sink;
  }

  /** Starts, renews or stops a session as the controller says. */
  tapControl(c: TapControlData): void {
    if (!c.session) return;
    if (c.stop) {
      this.sessions.delete(c.session);
      return;
    }
    if (!this.sessions.has(c.session) && this.sessions.size >= MAX_TAP_SESSIONS) return;
    const rate = Math.max(1, Math.min(MAX_TAP_RATE, c.max_per_second || 10));
    const now = this.now();
    this.sessions.set(c.session, {
      id: c.session,
      filter: c.filter ?? { namespace: '', from: '', to: '', path: '' },
      rate,
      tokens: rate,
      refilledAt: now,
      expiresAt: now + Math.max(1, Math.min(3600, c.ttl_seconds || 60)) * 1000,
    });
  }

  /** Ends every session (the controller is gone: a new one asks again). */
  stopTaps(): void {
    this.sessions.clear();
  }

  /** Sessions running now. */
  tapSessions(): string[] {
    return [...this.sessions.keys()];
  }

  private tap(l: EdgeLabels, method: string, path: string | undefined, status: number, grpcStatus: number | undefined, durationMs: number, flags: string): void {
    const now = this.now();
    for (const s of this.sessions.values()) {
      if (now >= s.expiresAt) {
        this.sessions.delete(s.id);
        continue;
      }
      if (!tapMatches(s.filter, l, path)) continue;
      s.tokens = Math.min(s.rate, s.tokens + ((now - s.refilledAt) / 1000) * s.rate);
      s.refilledAt = now;
      if (s.tokens < 1 || this.tapBuffer.length >= MAX_TAP_BUFFER) {
        this.tapDropped++;
        continue;
      }
      s.tokens -= 1;
      this.tapBuffer.push({
        session: s.id,
        node: this.opts.node,
        reporter: l.reporter,
        at: new Date(now).toISOString(),
        source_workload: l.source_workload,
        source_namespace: l.source_workload_namespace,
        source_principal: l.source_principal,
        destination_workload: l.destination_workload,
        destination_namespace: l.destination_workload_namespace,
        destination_service: l.destination_service,
        destination_principal: l.destination_principal,
        protocol: l.request_protocol,
        method,
        path: tapPath(path),
        status,
        grpc_status: grpcStatus === undefined ? '' : String(grpcStatus),
        duration_ms: Math.round(durationMs * 1000) / 1000,
        response_flags: flags,
        mtls: l.connection_security_policy === 'mutual_tls',
      });
      this.tapTimer ??= setTimeout(() => this.flushTap(), this.opts.tapFlushMs ?? 100);
      this.tapTimer.unref?.();
    }
  }

  /** Sends what waits (also called by the timer). */
  flushTap(): void {
    if (this.tapTimer) clearTimeout(this.tapTimer);
    this.tapTimer = undefined;
    const events = this.tapBuffer;
    if (events.length === 0) return;
    this.tapBuffer = [];
    if (!this.tapSink) {
      this.tapDropped += events.length;
      return;
    }
    this.tapSink(events);
  }

  close(): void {
    if (this.tapTimer) clearTimeout(this.tapTimer);
    this.tapTimer = undefined;
    this.sessions.clear();
    this.tapBuffer = [];
  }
}
