/**
 * Distributed tracing of the requests the agents carry: one CLIENT span per request at the
 * source agent, one SERVER span at the destination agent, exported over OTLP with the
 * OpenTelemetry JS SDK.
 *
 * Context in (first found wins): W3C `traceparent` (+ `tracestate`), B3 single `b3`, B3 multi
 * `x-b3-traceid`/`x-b3-spanid`/`x-b3-sampled`. Sampling is parent-based, as Envoy's: a parent's
 * sampled flag is obeyed; a request without context starts a trace with probability `sampling`.
 *
 * Context out (sampled requests only): the request sent on carries the new span as its parent
 * — `traceparent` always, and `b3` / `x-b3-*` rewritten too when the request carries them;
 * `tracestate` passes unchanged. So the destination's server span is the client span's child,
 * and the app at the destination sees the SERVER span as its parent (Envoy's behaviour).
 *
 * Unsampled requests cost one header read (and a parse when there is one): no span object,
 * no header written; the context the app sent passes through untouched.
 */
import { type Attributes, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, TraceFlags, type Tracer, trace } from '@opentelemetry/api';
import { ExportResultCode, TraceState } from '@opentelemetry/core';
import { OTLPTraceExporter as OtlpGrpcExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { OTLPTraceExporter as OtlpProtoExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { AlwaysOnSampler, BatchSpanProcessor, type ReadableSpan, type SpanExporter, TracerProvider } from '@opentelemetry/sdk-trace';
import { SkeinError } from '../errors.js';
import { TelemetryCode } from './codes.js';
import type { Logger } from './log.js';

/** Request headers as Node gives them (HTTP/1 `req.headers`, HTTP/2 stream headers): lower-case names. */
export type HeaderBag = Record<string, string | string[] | number | undefined>;
/**
 * Sets request header `name` (lower-case) on what is sent on: in `h`, and in `raw` (an HTTP/1
 * request's raw [name, value, ...] list, which is what the forwarders relay) when given,
 * replacing every value it had.
 */
export function setHeader(h: HeaderBag, raw: string[] | undefined, name: string, value: string): void {
  h[name] = value;
  if (!raw) return;
  let found = false;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i] as string;
    if (k.length !== name.length || k.toLowerCase() !== name) continue;
    if (found) {
      raw.splice(i, 2);
      i -= 2;
    } else {
      raw[i + 1] = value;
      found = true;
    }
  }
  if (!found) raw.push(name, value);
}

/** A trace context read from a request. */
export interface ParentContext {
  traceId: string;
  spanId: string;
  sampled: boolean;
  tracestate?: string;
  /** The B3 form it came in, when it was B3. */
  b3?: 'single' | 'multi';
}

const HEX32 = /^[0-9a-f]{32}$/;
const HEX16 = /^[0-9a-f]{16}$/;
const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-|$)/;
const ZERO32 = '00000000000000000000000000000000';
const ZERO16 = '0000000000000000';

function one(v: string | string[] | number | undefined): string | undefined {
  return typeof v === 'string' ? v : Array.isArray(v) ? v[0] : undefined;
}

/** W3C traceparent (version 00, and later versions read as 00 says); undefined when invalid. */
export function parseTraceparent(v: string): ParentContext | undefined {
  const m = TRACEPARENT.exec(v);
  if (!m) return undefined;
  const version = m[1] as string;
  if (version === 'ff' || (version === '00' && v.length !== 55)) return undefined;
  const traceId = m[2] as string;
  const spanId = m[3] as string;
  if (traceId === ZERO32 || spanId === ZERO16) return undefined;
  return { traceId, spanId, sampled: (Number.parseInt(m[4] as string, 16) & 1) === 1 };
}

/** A B3 trace id (64 or 128 bits) as 128 bits, as OpenTelemetry's B3 propagator reads it. */
function b3TraceId(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  const id = v.length === 16 ? `${ZERO16}${v}` : v;
  return HEX32.test(id) && id !== ZERO32 ? id : undefined;
}

/** B3 single: `{traceid}-{spanid}[-{sampled}[-{parentspanid}]]`; a bare `0`/`d` has no ids. */
export function parseB3Single(v: string): ParentContext | undefined {
  const parts = v.split('-');
  if (parts.length < 2) return undefined;
  const traceId = b3TraceId(parts[0]);
  const spanId = parts[1];
  if (!traceId || !spanId || !HEX16.test(spanId) || spanId === ZERO16) return undefined;
  const s = parts[2];
  // Absent sampling state: defer to the receiver, which for a proxy means "the parent is sampled".
  return { traceId, spanId, sampled: s === undefined || s === '1' || s === 'd', b3: 'single' };
}

/** B3 multi: x-b3-traceid, x-b3-spanid, x-b3-sampled (or x-b3-flags: 1 = debug). */
export function parseB3Multi(h: HeaderBag): ParentContext | undefined {
  const traceId = b3TraceId(one(h['x-b3-traceid']));
  const spanId = one(h['x-b3-spanid']);
  if (!traceId || !spanId || !HEX16.test(spanId) || spanId === ZERO16) return undefined;
  const s = one(h['x-b3-sampled']);
  const sampled = one(h['x-b3-flags']) === '1' || s === undefined || s === '1' || s === 'true';
  return { traceId, spanId, sampled, b3: 'multi' };
}

/** The trace context a request carries, if any (traceparent, then b3, then x-b3-*). */
export function readParent(h: HeaderBag): ParentContext | undefined {
  const tp = one(h.traceparent);
  if (tp !== undefined) {
    const p = parseTraceparent(tp);
    if (p) {
      const ts = one(h.tracestate);
      if (ts) p.tracestate = ts;
      return p;
    }
  }
  const b3 = one(h.b3);
  if (b3 !== undefined) {
    const p = parseB3Single(b3);
    if (p) return p;
  }
  return h['x-b3-traceid'] !== undefined ? parseB3Multi(h) : undefined;
}

/** The trace id a request carries (for the access log), without building a context. */
export function traceIdOf(h: HeaderBag): string | undefined {
  const tp = one(h.traceparent);
  if (tp !== undefined && tp.length >= 55 && tp.charCodeAt(2) === 45 /* - */) return tp.slice(3, 35);
  return readParent(h)?.traceId;
}

/** One sampled request's span, between its start and its record. */
export class RequestSpan {
  constructor(
    readonly span: Span,
    readonly traceId: string,
    readonly spanId: string,
    readonly grpc: boolean,
  ) {}
}

/** What a finished request tells both kinds of span (the fields of the proxies' records). */
export interface HttpSpanFacts {
  method?: string;
  path?: string;
  authority?: string;
  status?: number;
  grpcStatus?: number;
  protocol?: 'http1' | 'http2';
  responseFlags?: string;
  route?: string;
  requestBytes?: number;
  responseBytes?: number;
  requestId?: string;
}

/** The source agent's record of a request (OutboundRecord's fields). */
export interface ClientSpanFacts extends HttpSpanFacts {
  /** Source principal (SPIFFE id) and `<namespace>/<name>` of the source pod. */
  source: string;
  sourceWorkload: string;
  /** Original destination `ip:port`. */
  destination: string;
  destinationService?: string;
  upstream?: string;
  destinationPrincipal?: string;
  attempts?: number;
}

/** The destination agent's record of a request (InboundRequestRecord's fields). */
export interface ServerSpanFacts extends HttpSpanFacts {
  source: string;
  sourceIp?: string;
  /** `<namespace>/<name>` of the destination pod, its principal and the app port. */
  workload: string;
  destinationIdentity: string;
  port: number;
  reason?: string;
}

export interface TracingOptions {
  /** Probability that a request without a trace context starts a sampled trace (0..1). */
  sampling: number;
  exporter: SpanExporter;
  /** Resource attributes (service.name defaults to skein-agent). */
  resource?: Attributes;
  /** BatchSpanProcessor: export delay (ms, default 1000) and queue bound (default 2048 spans; beyond it spans are dropped). */
  exportDelayMs?: number;
  maxQueueSize?: number;
}

/** gRPC status codes a server reports as errors (OpenTelemetry's RPC conventions). */
const GRPC_SERVER_ERRORS = new Set([2, 4, 12, 13, 14, 15]);

export class Tracing {
  private readonly provider: TracerProvider;
  private readonly tracer: Tracer;
  private readonly sampling: number;

  constructor(opts: TracingOptions) {
    if (!(opts.sampling >= 0 && opts.sampling <= 1)) throw new SkeinError(TelemetryCode.TracingConfig, `trace sampling must be within 0..1, got ${opts.sampling}`);
    this.sampling = opts.sampling;
    this.provider = new TracerProvider({
      // The decision is made here before any span exists (unsampled requests allocate nothing).
      sampler: new AlwaysOnSampler(),
      resource: resourceFromAttributes({ 'service.name': 'skein-agent', ...opts.resource }),
      spanProcessors: [
        new BatchSpanProcessor({ exporter: opts.exporter, scheduledDelayMillis: opts.exportDelayMs ?? 1000, maxQueueSize: opts.maxQueueSize ?? 2048 }),
      ],
    });
    this.tracer = this.provider.getTracer('skein');
  }

  /** Source agent, at request start: the client span (sampled), its context written on the request (setHeader). */
  startClient(h: HeaderBag, raw?: string[]): RequestSpan | undefined {
    return this.start(SpanKind.CLIENT, h, raw);
  }

  /** Destination agent, at request start: the server span (sampled); the app sees it as its parent. */
  startServer(h: HeaderBag, raw?: string[]): RequestSpan | undefined {
    return this.start(SpanKind.SERVER, h, raw);
  }

  private start(kind: SpanKind, h: HeaderBag, raw: string[] | undefined): RequestSpan | undefined {
    const parent = readParent(h);
    if (parent ? !parent.sampled : !(this.sampling > 0 && Math.random() < this.sampling)) return undefined;
    const ctx = parent
      ? trace.setSpanContext(ROOT_CONTEXT, {
          traceId: parent.traceId,
          spanId: parent.spanId,
          traceFlags: TraceFlags.SAMPLED,
          isRemote: true,
          ...(parent.tracestate ? { traceState: new TraceState(parent.tracestate) } : {}),
        })
      : ROOT_CONTEXT;
    const span = this.tracer.startSpan('HTTP', { kind }, ctx);
    const sc = span.spanContext();
    setHeader(h, raw, 'traceparent', `00-${sc.traceId}-${sc.spanId}-01`);
    // B3 forms the request carries are kept in step (an app reading B3 sees the same parent).
    if (h.b3 !== undefined) setHeader(h, raw, 'b3', `${sc.traceId}-${sc.spanId}-1`);
    if (h['x-b3-traceid'] !== undefined) {
      setHeader(h, raw, 'x-b3-traceid', sc.traceId);
      setHeader(h, raw, 'x-b3-spanid', sc.spanId);
      if (parent) setHeader(h, raw, 'x-b3-parentspanid', parent.spanId);
      setHeader(h, raw, 'x-b3-sampled', '1');
    }
    const ct = one(h['content-type']);
    return new RequestSpan(span, sc.traceId, sc.spanId, ct?.startsWith('application/grpc') === true);
  }

  /** Ends a client span with what the source agent recorded. */
  endClient(s: RequestSpan, f: ClientSpanFacts): void {
    const a = httpAttributes(s, f);
    const dstPort = portOf(f.destination);
    if (a['server.port'] === undefined && dstPort !== undefined) a['server.port'] = dstPort;
    if (f.upstream) {
      const [ip, port] = splitAuthority(f.upstream);
      a['network.peer.address'] = ip;
      if (port !== undefined) a['network.peer.port'] = port;
    }
    a['skein.source.principal'] = f.source;
    a['skein.source.workload'] = f.sourceWorkload;
    if (f.destinationPrincipal) a['skein.destination.principal'] = f.destinationPrincipal;
    if (f.destinationService) a['skein.destination.service'] = f.destinationService;
    if (f.attempts !== undefined) a['skein.attempts'] = f.attempts;
    this.finish(s, f, a, s.grpc ? f.grpcStatus !== undefined && f.grpcStatus !== 0 : false);
  }

  /** Ends a server span with what the destination agent recorded. */
  endServer(s: RequestSpan, f: ServerSpanFacts): void {
    const a = httpAttributes(s, f);
    if (a['server.port'] === undefined && f.port) a['server.port'] = f.port;
    if (f.sourceIp) a['client.address'] = f.sourceIp;
    a['skein.source.principal'] = f.source;
    a['skein.destination.principal'] = f.destinationIdentity;
    a['skein.destination.workload'] = f.workload;
    if (f.reason) a['skein.refusal'] = f.reason;
    this.finish(s, f, a, s.grpc ? f.grpcStatus !== undefined && GRPC_SERVER_ERRORS.has(f.grpcStatus) : false);
  }

  private finish(s: RequestSpan, f: HttpSpanFacts, a: Attributes, grpcError: boolean): void {
    const status = f.status ?? 0;
    const span = s.span;
    span.updateName(s.grpc ? rpcName(f.path ?? '') : (f.method ?? 'HTTP'));
    span.setAttributes(a);
    if (status === 0 || status >= 500 || grpcError) {
      span.setAttribute('error.type', grpcError ? String(f.grpcStatus) : status === 0 ? (f.responseFlags ?? '_OTHER') : String(status));
      span.setStatus({ code: SpanStatusCode.ERROR });
    }
    span.end();
  }

  /** Exports what is queued (tests, shutdown). */
  flush(): Promise<void> {
    return this.provider.forceFlush();
  }

  shutdown(): Promise<void> {
    return this.provider.shutdown();
  }
}

/** OpenTelemetry's HTTP (and RPC, for gRPC) attributes of one request. */
function httpAttributes(s: RequestSpan, f: HttpSpanFacts): Attributes {
  const path = f.path ?? '';
  const q = path.indexOf('?');
  const a: Attributes = {
    'http.request.method': f.method ?? '',
    'url.path': q < 0 ? path : path.slice(0, q),
    'url.scheme': 'http',
    'http.response.status_code': f.status ?? 0,
    'network.protocol.name': 'http',
    'network.protocol.version': f.protocol === 'http1' ? '1.1' : '2',
  };
  if (f.authority) {
    const [host, port] = splitAuthority(f.authority);
    a['server.address'] = host;
    if (port !== undefined) a['server.port'] = port;
  }
  if (s.grpc) {
    a['rpc.system'] = 'grpc';
    const slash = path.lastIndexOf('/');
    if (slash > 0) {
      a['rpc.service'] = path.slice(1, slash);
      a['rpc.method'] = path.slice(slash + 1);
    }
    if (f.grpcStatus !== undefined) a['rpc.grpc.status_code'] = f.grpcStatus;
  }
  if (f.requestBytes !== undefined) a['http.request.body.size'] = f.requestBytes;
  if (f.responseBytes !== undefined) a['http.response.body.size'] = f.responseBytes;
  if (f.requestId) a['http.request.header.x-request-id'] = [f.requestId];
  if (f.responseFlags) a['skein.response_flags'] = f.responseFlags;
  if (f.route) a['skein.route'] = f.route;
  return a;
}

/** `/pkg.Service/Method` -> `pkg.Service/Method` (the RPC span name). */
function rpcName(path: string): string {
  return path.charCodeAt(0) === 47 ? path.slice(1) : path;
}

/** Host and port of `host[:port]` / `[v6]:port` / a bare IPv6 address. */
function splitAuthority(v: string): [string, number | undefined] {
  const m = /^\[([^\]]*)\](?::(\d+))?$/.exec(v) ?? /^([^:]*)(?::(\d+))?$/.exec(v);
  if (!m) return [v, undefined];
  return [m[1] as string, m[2] !== undefined ? Number(m[2]) : undefined];
}

function portOf(v: string): number | undefined {
  return splitAuthority(v)[1];
}

export type OtlpProtocol = 'grpc' | 'http/protobuf';

/**
 * The OTLP exporter for `endpoint`: gRPC (`http://collector:4317`) or HTTP/protobuf
 * (`http://collector:4318/v1/traces`). Failed exports are logged (rate-limited) with
 * SKEIN_TELEMETRY_TRACE_EXPORT_FAILED; the spans are dropped, traffic never waits.
 */
export function otlpExporter(endpoint: string, protocol: OtlpProtocol, log: Logger): SpanExporter {
  if (!/^https?:\/\/[^/]+/.test(endpoint)) throw new SkeinError(TelemetryCode.TracingConfig, `OTLP endpoint must be an http:// or https:// URL, got "${endpoint}"`);
  let inner: SpanExporter;
  if (protocol === 'grpc') inner = new OtlpGrpcExporter({ url: endpoint });
  else if (protocol === 'http/protobuf') inner = new OtlpProtoExporter({ url: endpoint });
  else throw new SkeinError(TelemetryCode.TracingConfig, `OTLP protocol must be grpc or http/protobuf, got "${String(protocol)}"`);
  return new LoggedExporter(inner, log);
}

/** An exporter whose failures are logged, once per 10 s at most, with a stable code. */
export class LoggedExporter implements SpanExporter {
  failed = 0;
  exported = 0;
  private lastLog = 0;

  constructor(
    private readonly inner: SpanExporter,
    private readonly log: Logger,
  ) {}

  export(spans: ReadableSpan[], done: Parameters<SpanExporter['export']>[1]): void {
    this.inner.export(spans, (r) => {
      if (r.code === ExportResultCode.SUCCESS) this.exported += spans.length;
      else {
        this.failed += spans.length;
        const now = Date.now();
        if (now - this.lastLog > 10_000) {
          this.lastLog = now;
          this.log.warn({ code: TelemetryCode.TraceExportFailed, spans: spans.length, failedSoFar: this.failed, err: r.error?.message }, 'trace export failed; spans dropped');
        }
      }
      done(r);
    });
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve();
  }
}
