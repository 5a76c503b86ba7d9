/**
 * The outbound data path, top to bottom, for one captured connection:
 *
 *   original destination -> Service (VIP:port) | workload (pod IP) | unknown (passthrough)
 *   -> protocol: the Service port's appProtocol, else detected from the first bytes (bounded)
 *   -> L7 (HTTP/1.1, HTTP/2, gRPC): one endpoint choice per request, pooled upstreams
 *   -> L4: one endpoint per connection, a faithful byte pipe (half-close, resets)
 *
 * The agent calls `handleConnection` for every connection accepted on a pod's 15001 listener,
 * with the source workload (known from which listener accepted it, never from an IP) and the
 * original destination read back from capture.
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { formatAuthority, type OriginalDestination } from '../../config/address.js';
import type { Endpoint, SpiffeId, Workload } from '../../config/model.js';
import type { ConfigStore } from '../../config/store.js';
import { messageOf } from '../../errors.js';
import type { Logger } from '../../telemetry/log.js';
import { type AccessLogPolicy, accessLogAdmits, silentLogger, writeAccessLine } from '../../telemetry/log.js';
import type { Tracing } from '../../telemetry/tracing.js';
import { TraceHook } from '../http/trace-hook.js';
import { sniffProtocol } from '../detect/sniff.js';
import { type Http1Options, Http1Forwarder } from '../http/http1-forwarder.js';
import { type Http2Options, Http2Forwarder } from '../http/http2-forwarder.js';
import { RefusalLog } from '../http/refusals.js';
import type { AttemptResult, HttpRequestRecord, HttpVersion, MeshRequestOpener, RequestPlan, RoutedConnection, UpstreamChoice } from '../http/types.js';
import { UpstreamPool, type UpstreamPoolOptions } from '../http/upstream-pool.js';
import { type PipeResult, pipeBidirectional, resetStream } from '../tcp/l4-pipe.js';
import { type Destination, resolveDestination } from './destination.js';
import { EndpointConnector, type EndpointConnectorOptions } from './endpoint-connector.js';
import type { ChoiceFactory, RequestInfo, RequestRouter, Route, TrafficServiceStats } from './router.js';
import { TrafficRouter } from './traffic-router.js';
import { OutboundCode } from '../codes.js';
import { noop } from '../noop.js';
import type { PodLoad } from '../load-share.js';
import type { StreamCap } from '../stream-cap.js';

export interface OutboundConnectionContext {
  source: Workload;
  /** Where the app's connection was going (capture reads it back; its address family is not needed here). */
  originalDst: Pick<OriginalDestination, 'address' | 'port'>;
  /** The source pod's share of the agent (load-share.ts): each request is charged to it. */
  load?: PodLoad;
  /** The source pod listener's cap on requests/streams in flight (stream-cap.ts); absent: none. */
  streams?: StreamCap;
}

export interface OutboundProxyOptions extends EndpointConnectorOptions {
  store: ConfigStore;
  /** Unknown destinations: pass through as plain TCP (true) or refuse with a reset (false). Default true. */
  passthroughUnknown?: boolean;
  /**
   * How long to wait for a client's first bytes when the port declares no appProtocol (ms).
   * Silence past it means opaque TCP, so server-speaks-first protocols wait at most this long
   * for their banner. Default 100.
   */
  detectTimeoutMs?: number;
  /** Close L4 connections idle (no byte either way) this long (ms); 0 = never. Default 0. */
  tcpIdleTimeoutMs?: number;
  http1?: Http1Options;
  http2?: Http2Options;
  upstream?: Omit<UpstreamPoolOptions, 'logger'>;
  logger?: Logger;
  /** Telemetry hook (metrics): once per finished request (L7) or connection (L4), reporter source. */
  onRecord?: (rec: OutboundRecord) => void;
  /** Routing hook: where each request or connection goes. Default: a TrafficRouter on `store`. */
  router?: RequestRouter;
  /** Client spans of sampled requests (telemetry/tracing.ts); absent: none. */
  tracing?: Tracing;
  /** Generate `x-request-id` on requests that carry none (Envoy's behaviour). Default false (the agent turns it on). */
  requestIds?: boolean;
  /** Which access-log lines are written (default: all). */
  accessLog?: AccessLogPolicy;
}

/** One finished outbound request (L7) or connection (L4): access log line and telemetry hook. */
export interface OutboundRecord {
  reporter: 'source';
  kind: 'http' | 'tcp' | 'passthrough';
  protocol?: HttpVersion;
  source: SpiffeId;
  /** `<namespace>/<name>` of the source pod. */
  sourceWorkload: string;
  /** Original destination `ip:port`. */
  destination: string;
  /** Service hostname when the destination was a Service VIP. */
  destinationService?: string;
  /** Endpoint chosen (`ip:port`), when one was. */
  upstream?: string;
  /** SPIFFE identity the chosen endpoint must present (meshed endpoints). */
  destinationPrincipal?: SpiffeId;
  /** Istio's connection_security_policy: mutual_tls towards a meshed endpoint, none otherwise. */
  connectionSecurityPolicy: 'mutual_tls' | 'none';
  method?: string;
  path?: string;
  authority?: string;
  /** HTTP status to the client (0: broken before a response). */
  status?: number;
  grpcStatus?: number;
  /** L4: bytes client -> upstream and back, and how the pipe ended. */
  bytesSent?: number;
  bytesReceived?: number;
  end?: string;
  durationMs: number;
  /** Envoy-style response flags (UH, UF, UT, URX, UO, NR, FI, DI, DC, ...), comma-separated. */
  responseFlags?: string;
  /** Route rule that matched (`HTTPRoute/ns/name#rule`). */
  route?: string;
  /** Tries sent upstream, when retried. */
  attempts?: number;
  /** HTTP: request and response body bytes (Istio's request/response sizes). */
  requestBytes?: number;
  responseBytes?: number;
  /** HTTP: trace id (this request's span's, or the app's on an unsampled request), this agent's span id, x-request-id. */
  traceId?: string;
  spanId?: string;
  requestId?: string;
}

export interface OutboundStats {
  connections: Record<'http1' | 'http2' | 'tcp' | 'passthrough' | 'refused', number>;
  refusals: Record<string, number>;
  upstreams: { h1Agents: number; h2Sessions: number };
}

/** One request's (or L4 connection's) upstream. Allocated per request, never per idle connection. */
class Choice implements UpstreamChoice {
  readonly key: string;
  readonly authority: string;
  readonly identity: SpiffeId | undefined;
  private released = false;

  constructor(
    protected readonly proxy: OutboundProxy,
    protected readonly source: Workload,
    protected readonly route: Route,
    readonly plan: RequestPlan | undefined,
  ) {
    const { endpoint, port } = route;
    this.key = `${source.identity}|${endpoint.ip}|${port}`;
    this.authority = formatAuthority(endpoint.ip, port);
    this.identity = endpoint.meshEnabled ? endpoint.identity : undefined;
  }

  connect(signal?: AbortSignal): Promise<Duplex> {
    return this.proxy.connector.connect(this.source, this.route.endpoint, this.route.port, signal);
  }

  done(result?: AttemptResult): void {
    if (this.released) return;
    this.released = true;
    this.route.done?.(result);
  }
}

/** An upstream served by a skein agent: each HTTP request is its own request stream to it. */
class MeshChoice extends Choice {
  readonly request: MeshRequestOpener;

  constructor(proxy: OutboundProxy, source: Workload, route: Route, plan: RequestPlan | undefined) {
    super(proxy, source, route, plan);
    this.request = (headers, o) => proxy.connector.request(source, route.endpoint, route.port, headers, o);
  }
}

/** A client connection to a Service or a pod: re-resolved per request so config updates apply. */
/** Header fields of a request, counted without allocating. */
function fieldCount(headers: RequestInfo['headers']): number {
  let n = 0;
  for (const _ in headers) n++;
  return n;
}

class Routed implements RoutedConnection {
  constructor(
    private readonly proxy: OutboundProxy,
    readonly source: Workload,
    readonly dst: OutboundConnectionContext['originalDst'],
    readonly upstreamProtocol: HttpVersion,
    readonly streams: StreamCap | undefined,
    private readonly load: PodLoad | undefined,
    private readonly socket: Socket | undefined,
  ) {}

  choose(req?: RequestInfo): UpstreamChoice | undefined {
    if (this.load && req) this.load.chargeRequest(fieldCount(req.headers), this.socket);
    return this.proxy.choose(this.source, resolveDestination(this.proxy.store, this.dst.address, this.dst.port), req);
  }

  logFields(): Record<string, unknown> {
    return { source: this.source.identity, sourceWorkload: `${this.source.namespace}/${this.source.name}`, dst: formatAuthority(this.dst.address, this.dst.port) };
  }

  recordRequest(r: HttpRequestRecord): void {
    const svc = this.proxy.store.serviceByVip(this.dst.address, this.dst.port);
    const rec: OutboundRecord = {
      reporter: 'source',
      kind: 'http',
      protocol: r.protocol,
      source: this.source.identity,
      sourceWorkload: `${this.source.namespace}/${this.source.name}`,
      destination: formatAuthority(this.dst.address, this.dst.port),
      method: r.method,
      path: r.path,
      authority: r.authority,
      status: r.status,
      durationMs: r.durationMs,
      connectionSecurityPolicy: 'none',
    };
    if (svc) rec.destinationService = svc.service.hostname;
    if (r.upstream) rec.upstream = r.upstream;
    if (r.upstreamIdentity) rec.destinationPrincipal = r.upstreamIdentity;
    rec.connectionSecurityPolicy = r.upstreamIdentity ? 'mutual_tls' : 'none';
    if (r.grpcStatus !== undefined) rec.grpcStatus = r.grpcStatus;
    if (r.responseFlags) rec.responseFlags = r.responseFlags;
    if (r.route) rec.route = r.route;
    if (r.attempts !== undefined) rec.attempts = r.attempts;
    if (r.requestBytes !== undefined) rec.requestBytes = r.requestBytes;
    if (r.responseBytes !== undefined) rec.responseBytes = r.responseBytes;
    if (r.traceId !== undefined) rec.traceId = r.traceId;
    if (r.spanId !== undefined) rec.spanId = r.spanId;
    if (r.requestId !== undefined) rec.requestId = r.requestId;
    this.proxy.emitRecord(rec);
    if (r.span) this.proxy.tracing?.endClient(r.span, rec);
  }
}

export class OutboundProxy {
  readonly store: ConfigStore;
  readonly connector: EndpointConnector;
  private readonly router: RequestRouter;
  private readonly ownRouter: TrafficRouter | undefined;
  private readonly make: ChoiceFactory;
  private readonly pool: UpstreamPool;
  private readonly refusals: RefusalLog;
  private readonly h1: Http1Forwarder;
  private readonly h2: Http2Forwarder;
  private readonly log: Logger;
  private readonly opts: OutboundProxyOptions;
  private readonly unsubscribe: () => void;
  private readonly counts = { http1: 0, http2: 0, tcp: 0, passthrough: 0, refused: 0 };
  readonly tracing: Tracing | undefined;

  constructor(opts: OutboundProxyOptions) {
    this.opts = opts;
    this.store = opts.store;
    this.log = opts.logger ?? silentLogger();
    this.connector = new EndpointConnector(opts);
    this.ownRouter = opts.router ? undefined : new TrafficRouter(opts.store, opts.localNode);
    this.router = opts.router ?? (this.ownRouter as TrafficRouter);
    this.make = (source, route, plan) => (this.connector.servesRequests(route.endpoint) ? new MeshChoice(this, source, route, plan) : new Choice(this, source, route, plan));
    this.refusals = new RefusalLog(this.log);
    this.pool = new UpstreamPool({ ...opts.upstream, logger: this.log });
    this.tracing = opts.tracing;
    const traceHook = opts.tracing || opts.requestIds ? new TraceHook(opts.tracing, opts.requestIds === true) : undefined;
    this.h1 = new Http1Forwarder(this.pool, this.refusals, this.log, traceHook ? { ...opts.http1, traceHook } : opts.http1);
    this.h2 = new Http2Forwarder(this.pool, this.refusals, this.log, traceHook ? { ...opts.http2, traceHook } : opts.http2);
    this.unsubscribe = this.store.subscribe((_diff, snapshot) => {
      // Upstreams to endpoints that left the config are closed (gracefully for HTTP/2)...
      const live = new Set<string>();
      for (const s of snapshot.services) for (const e of s.endpoints) live.add(e.ip);
      for (const w of snapshot.workloads) for (const ip of w.ips) live.add(ip);
      // ...and so are upstreams opened for a source identity no local pod has any more (they
      // carry that identity's certificate).
      const sources = new Set(this.store.localWorkloads(opts.localNode).map((w) => w.identity));
      const evicted = this.pool.evictWhere((key) => {
        const [identity = '', ip = ''] = key.split('|');
        return !live.has(ip) || !sources.has(identity);
      });
      if (evicted > 0) this.log.debug({ evicted }, 'upstreams to removed endpoints closed');
    });
  }

  /** Entry point: one connection accepted on a pod's outbound listener. Never throws. */
  handleConnection(socket: Socket, ctx: OutboundConnectionContext): void {
    socket.on('error', noop); // each stage below reports errors its own way
    const { address, port } = ctx.originalDst;
    const dest = resolveDestination(this.store, address, port);
    if (dest.kind === 'unknown' || ctx.source.excludeOutboundPorts.includes(port)) {
      this.passthrough(socket, ctx);
      return;
    }
    const declared = dest.kind === 'service' ? dest.appProtocol : undefined;
    if (declared === 'tcp') {
      this.l4(socket, ctx, dest);
      return;
    }
    // Declared HTTP: the upstream protocol is known, the client's is still sniffed (an
    // HTTP/1.1 client may call an h2c/gRPC port and the reverse); silence or anything else
    // is handed to the declared protocol's parser, which refuses what is not HTTP.
    const upstream: HttpVersion | undefined = declared === 'http' ? 'http1' : declared ? 'http2' : undefined;
    sniffProtocol(socket, { timeoutMs: this.opts.detectTimeoutMs ?? 100 }).then((r) => {
      if (socket.destroyed) return;
      // A declared HTTP port whose client sent only part of a method and then ended: not a
      // request; the HTTP side sees the end and closes.
      if (r.protocol !== 'tcp') this.l7(socket, ctx, r.protocol, upstream ?? r.protocol);
      else if (upstream) this.l7(socket, ctx, upstream, upstream);
      else this.l4(socket, ctx, dest, r.leftover);
    });
  }

  /** Picks an endpoint for `dest` (and counts it in-flight); undefined when none is ready. */
  choose(source: Workload, dest: Destination, req?: RequestInfo): UpstreamChoice | undefined {
    return this.router.choose(source, dest, req, this.make);
  }

  /** Routes, policies in effect and ejections (admin /config_dump). */
  describeRouting(): object {
    return this.router.describe();
  }

  /** Retries, budget refusals, ejections and breaker overflows per Service (metrics). */
  trafficStats(): TrafficServiceStats[] {
    return this.router.serviceStats?.() ?? [];
  }

  private l7(socket: Socket, ctx: OutboundConnectionContext, protocol: HttpVersion, upstream: HttpVersion): void {
    this.counts[protocol]++;
    const conn = new Routed(this, ctx.source, ctx.originalDst, upstream, ctx.streams, ctx.load, ctx.load ? socket : undefined);
    if (protocol === 'http1') this.h1.accept(socket, conn);
    else this.h2.accept(socket, conn);
  }

  /** `leftover`: bytes detection read before the client's end of stream, sent first. */
  private l4(socket: Socket, ctx: OutboundConnectionContext, dest: Destination, leftover?: Buffer): void {
    this.counts.tcp++;
    const choice = this.choose(ctx.source, dest);
    if (!choice) {
      this.refusals.refuse(
        OutboundCode.NoHealthyUpstream,
        { source: ctx.source.identity, dst: formatAuthority(ctx.originalDst.address, ctx.originalDst.port) },
        'no healthy upstream for TCP connection',
      );
      resetStream(socket);
      return;
    }
    this.connectAndPipe(socket, ctx, 'tcp', () => choice.connect(), (r) => choice.done(r), choice.authority, leftover, choice.identity);
  }

  private passthrough(socket: Socket, ctx: OutboundConnectionContext): void {
    const { address, port } = ctx.originalDst;
    if (this.opts.passthroughUnknown === false) {
      this.counts.refused++;
      this.refusals.refuse(
        OutboundCode.PassthroughRefused,
        { source: ctx.source.identity, dst: formatAuthority(address, port) },
        'unknown destination refused',
      );
      resetStream(socket);
      return;
    }
    this.counts.passthrough++;
    const source = ctx.source;
    const endpoint: Endpoint = { ip: address, ready: true, ports: {}, meshEnabled: false };
    this.connectAndPipe(socket, ctx, 'passthrough', () => this.connector.connect(source, endpoint, port), noop, formatAuthority(address, port));
  }

  private connectAndPipe(
    socket: Socket,
    ctx: OutboundConnectionContext,
    kind: 'tcp' | 'passthrough',
    open: () => Promise<Duplex>,
    done: (r?: AttemptResult) => void,
    upstream: string,
    leftover?: Buffer,
    identity?: SpiffeId,
  ): void {
    socket.pause();
    const started = performance.now();
    const record = (status: number, extra: Partial<OutboundRecord>): void => {
      const { address, port } = ctx.originalDst;
      const rec: OutboundRecord = {
        reporter: 'source',
        connectionSecurityPolicy: identity ? 'mutual_tls' : 'none',
        ...(identity ? { destinationPrincipal: identity } : {}),
        kind,
        source: ctx.source.identity,
        sourceWorkload: `${ctx.source.namespace}/${ctx.source.name}`,
        destination: formatAuthority(address, port),
        upstream,
        status,
        durationMs: Math.round(performance.now() - started),
        ...extra,
      };
      const svc = this.store.serviceByVip(address, port);
      if (svc) rec.destinationService = svc.service.hostname;
      this.emitRecord(rec);
    };
    open().then(
      (up) => {
        if (socket.destroyed) {
          done({ status: 200 });
          up.destroy();
          return;
        }
        const idle = this.opts.tcpIdleTimeoutMs ?? 0;
        const onDone = (r: PipeResult): void => {
          done({ status: 200 });
          record(200, { bytesSent: r.bytesAtoB + (leftover?.length ?? 0), bytesReceived: r.bytesBtoA, end: r.reason });
        };
        // Bytes the client sent before its end of stream, read while detecting the protocol:
        // first on the wire, before the pipe passes the end on.
        if (leftover && leftover.length > 0) up.write(leftover);
        pipeBidirectional(socket, up, idle > 0 ? { onDone, idleTimeoutMs: idle } : { onDone });
        socket.resume();
      },
      (err: unknown) => {
        done({ status: 503, connectFailed: true });
        record(503, { end: 'connect-failed', responseFlags: 'UF' });
        this.log.info({ source: ctx.source.identity, upstream, err: messageOf(err) }, 'TCP upstream connect failed');
        // A reset is what the app would have seen from a refused connection.
        resetStream(socket);
      },
    );
  }

  /** One access-log line and the telemetry hook, per finished request or connection. */
  emitRecord(rec: OutboundRecord): void {
    const failed = rec.status === 0 || (rec.status !== undefined && rec.status >= 500);
    if (accessLogAdmits(this.opts.accessLog, failed)) writeAccessLine(this.log, failed ? 'warn' : 'info', 'outbound', rec);
    try {
      this.opts.onRecord?.(rec);
    } catch (err) {
      this.log.error({ err: messageOf(err) }, 'outbound telemetry hook threw');
    }
  }

  stats(): OutboundStats {
    return { connections: { ...this.counts }, refusals: this.refusals.snapshot(), upstreams: this.pool.stats() };
  }

  /** Requests/connections in flight to endpoint `ip` of a service (admin, tests). */
  inFlight(namespace: string, name: string, ip: string): number {
    const svc = this.store.service(namespace, name);
    return svc ? this.router.inFlight(svc, ip) : 0;
  }

  /** Count of refusals with `code` (tests, metrics). */
  refusalCount(code: string): number {
    return this.refusals.count(code);
  }

  /**
   * The agent is handing over to its successor: HTTP/1 keep-alive connections close after
   * their next response (`Connection: close`), HTTP/2 sessions get a graceful GOAWAY. L4 pipes
   * run on (the agent ends them at its drain timeout, l4-pipe's endLivePipes).
   */
  drain(): void {
    this.h1.drain();
    this.h2.drain();
  }

  /** The drain's last step: keep-alive connections that sent nothing since it began. */
  closeIdleHttp1(): void {
    this.h1.closeIdle();
  }

  async close(): Promise<void> {
    this.unsubscribe();
    this.ownRouter?.close();
    this.h1.close();
    this.h2.close();
    this.pool.close();
  }
}
