/**
 * Istio's standard request and TCP metrics (names, labels and buckets as Istio's, so existing
 * dashboards and alerts work), kept by skein itself and served through a prom-client registry.
 *
 * Why not prom-client's Counter and Histogram: they hash the label object on every inc() and
 * observe(), and a request touches four families. Here a series is looked up once per record
 * with a key the caller builds from the record's own fields (`lookupRequest(key)`); only
 * on a miss does the caller resolve the label values (store lookups) and `bindRequest` them.
 * Key bindings are dropped on `invalidate()` (a new config may relabel the same pods); the
 * series themselves, and their counts, stay.
 *
 * Bounded: at most `maxSeries` label sets per family (default 10,000). A record whose label set
 * would be one more is not recorded; it is counted in `skein_metrics_series_dropped_total`.
 * The key bindings are bounded too (4 x maxSeries, then forgotten and rebuilt on demand).
 */
import { Counter, type Metric, type Registry } from 'prom-client';

/** Envoy's default histogram buckets, which Istio's proxies use for all three histograms. */
export const ISTIO_BUCKETS: readonly number[] = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000];

/** Default cap of label sets per metric family. */
export const DEFAULT_MAX_SERIES = 10_000;

/** Istio's value for what is not known. */
export const UNKNOWN = 'unknown';

/** Istio's standard labels of the request metrics, in the order values are given. */
export const REQUEST_LABELS = [
  'reporter',
  'source_workload',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'destination_workload',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_service',
  'destination_service_name',
  'destination_service_namespace',
  'request_protocol',
  'response_code',
  'grpc_response_status',
  'response_flags',
  'connection_security_policy',
] as const;

/** The TCP metrics' labels: the request labels without response_code and grpc_response_status. */
export const TCP_LABELS = REQUEST_LABELS.filter((l) => l !== 'response_code' && l !== 'grpc_response_status');

export type RequestLabelName = (typeof REQUEST_LABELS)[number];
export type RequestLabels = Record<RequestLabelName, string>;
export type TcpLabels = Omit<RequestLabels, 'response_code' | 'grpc_response_status'>;

/**
 * Envoy's response flags skein sets (`-` when none). Several are joined with `,` as Envoy does.
 */
export const ResponseFlag = {
  /** No healthy upstream: no endpoint was ready. */
  NoHealthyUpstream: 'UH',
  /** Upstream connection failure (the endpoint, its agent, or the app behind it). */
  UpstreamConnectFailure: 'UF',
  /** Upstream remote reset: the upstream broke the exchange after it started. */
  UpstreamRemoteReset: 'UR',
  /** Upstream retry limit exceeded. */
  UpstreamRetryLimitExceeded: 'URX',
  /** Upstream request timeout. */
  UpstreamRequestTimeout: 'UT',
  /** Upstream overflow: circuit breaking, or a connection limit. */
  UpstreamOverflow: 'UO',
  /** Downstream connection terminated before a response. */
  DownstreamConnectionTermination: 'DC',
  /** Downstream protocol error: a malformed request. */
  DownstreamProtocolError: 'DPE',
  /** Stream idle timeout. */
  StreamIdleTimeout: 'SI',
  /** No route: the request named a destination this agent does not serve. */
  NoRouteFound: 'NR',
  /** Rate limited. */
  RateLimited: 'RL',
  /** Fault injected (abort). */
  FaultInjected: 'FI',
  /** Denied by authorization policy (Envoy's RBAC filter). */
  RbacAccessDenied: 'RBAC',
} as const;
export const NO_FLAGS = '-';

const KNOWN_FLAGS = new Set<string>(Object.values(ResponseFlag));

/** A flags value from a record: a known flag list, or `-` (never free text as a label). */
export function flagsLabel(flags: string | undefined): string {
  if (!flags || flags === NO_FLAGS) return NO_FLAGS;
  for (const f of flags.split(',')) if (!KNOWN_FLAGS.has(f)) return NO_FLAGS;
  return flags;
}

/** Counts per bucket (not cumulative), sum and count: the cumulative form is made at scrape. */
class Hist {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(v: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && v > b[i]!) i++;
    this.counts[i]! += 1;
    this.sum += v;
    this.count += 1;
  }
}

export class RequestSeries {
  requests = 0;
  readonly duration = new Hist(ISTIO_BUCKETS);
  readonly requestBytes = new Hist(ISTIO_BUCKETS);
  readonly responseBytes = new Hist(ISTIO_BUCKETS);
  constructor(readonly labels: Readonly<RequestLabels> | undefined) {}
}

export class TcpSeries {
  sent = 0;
  received = 0;
  opened = 0;
  closed = 0;
  constructor(readonly labels: Readonly<TcpLabels> | undefined) {}
}

/** prom-client's view of a metric family (its Registry only calls get() and reads name/type). */
interface FamilyValue {
  value: number;
  labels?: Record<string, string | number>;
  sharedLabels?: Record<string, string>;
  metricName?: string;
}

const LE_LABELS: Record<string, string | number>[] = [...ISTIO_BUCKETS.map((b) => ({ le: b })), { le: '+Inf' }];

function family(name: string, help: string, type: 'counter' | 'histogram', values: () => FamilyValue[]): Metric {
  const m = {
    name,
    help,
    type,
    aggregator: 'sum',
    get: async () => ({ name, help, type, aggregator: 'sum', values: values() }),
    reset: () => {},
  };
  return m as unknown as Metric;
}

function histValues(name: string, series: Iterable<RequestSeries>, pick: (s: RequestSeries) => Hist): FamilyValue[] {
  const out: FamilyValue[] = [];
  for (const s of series) {
    const h = pick(s);
    if (h.count === 0 || !s.labels) continue;
    let acc = 0;
    for (let i = 0; i < h.counts.length; i++) {
      acc += h.counts[i]!;
      out.push({ value: acc, labels: LE_LABELS[i]!, sharedLabels: s.labels, metricName: `${name}_bucket` });
    }
    out.push({ value: h.sum, sharedLabels: s.labels, metricName: `${name}_sum` });
    out.push({ value: h.count, sharedLabels: s.labels, metricName: `${name}_count` });
  }
  return out;
}

/** The labels in Istio's order (the exposition shows them as given). */
function inOrder(names: readonly string[], labels: object): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of names) out[n] = (labels as Record<string, string>)[n] ?? UNKNOWN;
  return out;
}

export interface IstioMetricsOptions {
  registry: Registry;
  /** Label sets per family at most (default 10,000). */
  maxSeries?: number;
}

export class IstioMetrics {
  readonly maxSeries: number;
  /** Label sets, by their values joined: the series Prometheus sees. */
  private readonly requestSeries = new Map<string, RequestSeries>();
  private readonly tcpSeries = new Map<string, TcpSeries>();
  /** The callers' record keys, bound to a series (or to the drop sentinel). */
  private readonly requestKeys = new Map<string, RequestSeries>();
  private readonly tcpKeys = new Map<string, TcpSeries>();
  /** Where records of label sets over the cap go: counted, never exported. */
  private readonly droppedRequest = new RequestSeries(undefined);
  private readonly droppedTcp = new TcpSeries(undefined);

  constructor(opts: IstioMetricsOptions) {
    this.maxSeries = opts.maxSeries ?? DEFAULT_MAX_SERIES;
    const { registry } = opts;
    const req = () => this.requestSeries.values();
    const tcp = () => this.tcpSeries.values();
    const counter = (name: string, help: string, all: () => Iterable<{ labels: object | undefined }>, pick: (s: never) => number) =>
      registry.registerMetric(
        family(name, help, 'counter', () => {
          const out: FamilyValue[] = [];
          for (const s of all()) {
            const v = pick(s as never);
            if (v > 0 && s.labels) out.push({ value: v, sharedLabels: s.labels as Record<string, string> });
          }
          return out;
        }),
      );
    counter('istio_requests_total', 'Requests (HTTP, gRPC) by Istio\'s standard labels, at each reporter', req, (s: RequestSeries) => s.requests);
    registry.registerMetric(family('istio_request_duration_milliseconds', 'Request duration (ms) by Istio\'s standard labels', 'histogram', () => histValues('istio_request_duration_milliseconds', req(), (s) => s.duration)));
    registry.registerMetric(family('istio_request_bytes', 'Request body sizes (bytes) by Istio\'s standard labels', 'histogram', () => histValues('istio_request_bytes', req(), (s) => s.requestBytes)));
    registry.registerMetric(family('istio_response_bytes', 'Response body sizes (bytes) by Istio\'s standard labels', 'histogram', () => histValues('istio_response_bytes', req(), (s) => s.responseBytes)));
    counter('istio_tcp_sent_bytes_total', 'Bytes sent to the downstream (towards the client) on TCP connections, counted when they close', tcp, (s: TcpSeries) => s.sent);
    counter('istio_tcp_received_bytes_total', 'Bytes received from the downstream (the client) on TCP connections, counted when they close', tcp, (s: TcpSeries) => s.received);
    counter('istio_tcp_connections_opened_total', 'TCP connections opened (counted when they close or are refused)', tcp, (s: TcpSeries) => s.opened);
    counter('istio_tcp_connections_closed_total', 'TCP connections closed', tcp, (s: TcpSeries) => s.closed);
    const dropped = this.droppedRequest;
    const droppedTcp = this.droppedTcp;
    new Counter({
      name: 'skein_metrics_series_dropped_total',
      help: 'Records not counted in Istio\'s metrics because their label set would exceed the cap of series per family',
      labelNames: ['family'] as const,
      registers: [registry],
      collect() {
        this.reset();
        this.inc({ family: 'request' }, dropped.requests);
        this.inc({ family: 'tcp' }, droppedTcp.closed);
      },
    });
  }

  /** Hot path: the series a record key was bound to (undefined: resolve, then bindRequest). */
  lookupRequest(key: string): RequestSeries | undefined {
    return this.requestKeys.get(key);
  }

  /** Binds a record key to the series of `labels` (made if new and under the cap). */
  bindRequest(key: string, labels: RequestLabels): RequestSeries {
    const id = REQUEST_LABELS.map((l) => labels[l]).join('\u0000');
    let s = this.requestSeries.get(id);
    if (!s) {
      if (this.requestSeries.size >= this.maxSeries) s = this.droppedRequest;
      else {
        s = new RequestSeries(Object.freeze(inOrder(REQUEST_LABELS, labels)) as RequestLabels);
        this.requestSeries.set(id, s);
      }
    }
    if (this.requestKeys.size >= 4 * this.maxSeries) this.requestKeys.clear();
    this.requestKeys.set(key, s);
    return s;
  }

  lookupTcp(key: string): TcpSeries | undefined {
    return this.tcpKeys.get(key);
  }

  bindTcp(key: string, labels: TcpLabels): TcpSeries {
    const id = TCP_LABELS.map((l) => labels[l as keyof TcpLabels]).join('\u0000');
    let s = this.tcpSeries.get(id);
    if (!s) {
      if (this.tcpSeries.size >= this.maxSeries) s = this.droppedTcp;
      else {
        s = new TcpSeries(Object.freeze(inOrder(TCP_LABELS, labels)) as TcpLabels);
        this.tcpSeries.set(id, s);
      }
    }
    if (this.tcpKeys.size >= 4 * this.maxSeries) this.tcpKeys.clear();
    this.tcpKeys.set(key, s);
    return s;
  }

  /** One finished request. Byte counts are observed only when the reporter knows them. */
  request(s: RequestSeries, durationMs: number, requestBytes: number | undefined, responseBytes: number | undefined): void {
    s.requests += 1;
    if (s === this.droppedRequest) return;
    s.duration.observe(durationMs);
    if (requestBytes !== undefined) s.requestBytes.observe(requestBytes);
    if (responseBytes !== undefined) s.responseBytes.observe(responseBytes);
  }

  /** One finished (or refused) TCP connection: opened, closed, and its bytes. */
  connection(s: TcpSeries, received: number, sent: number): void {
    s.opened += 1;
    s.closed += 1;
    s.received += received;
    s.sent += sent;
  }

  /** Forgets the record keys' bindings (a new config may label the same records otherwise). */
  invalidate(): void {
    this.requestKeys.clear();
    this.tcpKeys.clear();
  }

  /** Series held now (tests, status). */
  seriesCount(): { request: number; tcp: number } {
    return { request: this.requestSeries.size, tcp: this.tcpSeries.size };
  }
}
