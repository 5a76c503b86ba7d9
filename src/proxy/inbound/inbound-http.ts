/**
 * InboundHttp: the destination agent serving HTTP requests, one HTTP/2 request stream each,
 * that another agent (over its pod's :15008 tunnel session) or this agent's own outbound side
 * (same node: an in-memory HTTP/2 session, no TLS hop) sent for a local pod. Per request:
 *
 *   1. the mesh fields (mesh-headers.ts): `skein-dst` must name this pod (the caller checks),
 *      `skein-proto` says what the app speaks — missing or unknown => 400;
 *   2. authorize (the same hook as connections, with the request's method, path, host and
 *      headers) — denied => 403 (gRPC: PERMISSION_DENIED), SKEIN_INBOUND_REQUEST_DENIED;
 *   3. the request goes to the app on a pooled connection in the app's own protocol (HTTP/1.1
 *      keep-alive, or one h2c session per app port), `skein-*` fields removed — the app
 *      unreachable => 503 (gRPC: UNAVAILABLE);
 *   4. the response and trailers go back; one access-log line and one telemetry record
 *      (reporter destination) per request.
 *
 * The source identity is the TLS peer's (or the local source pod's), never a header.
 */
import http2 from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { canonicalIp, formatAuthority } from '../../config/address.js';
import type { SpiffeId, Workload } from '../../config/model.js';
import { SkeinError, messageOf } from '../../errors.js';
import type { Logger } from '../../telemetry/log.js';
import { ResponseFlag } from '../../telemetry/istio-metrics.js';
import { H2Relay, isGrpc, streamOutcome } from '../http/h2-relay.js';
import { appProtocolOf, decodePeer, MeshHeader, type PeerLabels } from '../http/mesh-headers.js';
import type { HttpRequestRecord, HttpVersion, RoutedConnection, UpstreamChoice } from '../http/types.js';
import { UpstreamPool } from '../http/upstream-pool.js';
import { parseAuthority } from '../tunnel/authority.js';
import { InboundCode, TunnelCode } from '../codes.js';
import { deadline } from '../deadline.js';
import { noop } from '../noop.js';
import type { AppConnector } from './types.js';
import { countBodyBytes } from '../http/body-bytes.js';
import { traceFields } from '../http/trace-hook.js';
import type { Tracing } from '../../telemetry/tracing.js';

const { NGHTTP2_REFUSED_STREAM } = http2.constants;

/** Who sent a request stream, and to which local pod. */
export interface InboundHttpContext {
  transport: 'hbone' | 'local';
  source: SpiffeId;
  /** Peer socket address (the remote node's agent); absent on the same node. */
  sourceAddress?: string;
  /** The source pod's IP, as the source agent says (`skein-src`). */
  sourceIp?: string;
  workload: Workload;
}

/** The HTTP side of an inbound request, for the authorization hook. */
export interface InboundHttpRequest {
  method: string;
  path: string;
  /** :authority (Host) as the client sent it. */
  authority: string;
  headers: http2.IncomingHttpHeaders;
}

/** Authorization of one request (same shape as the connection hook's answer). */
export type InboundHttpAuthorizer = (
  ctx: InboundHttpContext,
  port: number,
  req: InboundHttpRequest,
) => { allow: boolean; reason?: string } | Promise<{ allow: boolean; reason?: string }>;

/** Local rate limiting of one request (per destination workload and port, per source identity). */
export type InboundRateLimiter = (ctx: InboundHttpContext, port: number) => { allowed: boolean; retryAfterS: number } | undefined;

/** One finished (or refused) inbound request: access log and telemetry, reporter destination. */
export interface InboundRequestRecord extends HttpRequestRecord {
  reporter: 'destination';
  /** Istio's connection_security_policy: requests between agents are always mutual TLS (or same node). */
  connectionSecurityPolicy: 'mutual_tls';
  transport: 'hbone' | 'local';
  source: SpiffeId;
  sourceAddress?: string;
  /** `<namespace>/<name>` of the destination pod. */
  workload: string;
  destinationIdentity: SpiffeId;
  port: number;
  /** What the app speaks (skein-proto), and whether the request was gRPC. */
  appProtocol?: HttpVersion;
  grpc: boolean;
  /** Why it was refused, when it was. */
  reason?: string;
  /** The source pod's IP as the source agent says (`skein-src`); metrics check it against the peer identity. */
  sourceIp?: string;
  /** The source pod's workload/app/version as its agent says (`skein-peer`), for telemetry only. */
  sourcePeer?: PeerLabels;
  /** Request and response body bytes (the DATA frames' payload), as Istio's request/response sizes. */
  requestBytes: number;
  responseBytes: number;
  /**
   * Envoy-style response flags (telemetry/istio-metrics.ts ResponseFlag), comma-separated,
   * when this side refused or lost the request: RBAC denied, NR not this pod, DPE malformed,
   * DC the stream closed before a response, RL over the local rate limit.
   */
  responseFlags?: string;
}

export interface InboundHttpStats {
  /** Requests served or refused here, by what the app speaks (gRPC counted apart). */
  requests: { http1: number; http2: number; grpc: number };
  denied: number;
  malformed: number;
  wrongDestination: number;
  appUnreachable: number;
  /** Refused with 429 by a local rate limit. */
  rateLimited: number;
}

export interface InboundHttpOptions {
  app: AppConnector;
  authorize: InboundHttpAuthorizer;
  /** Local rate limits (BackendTrafficPolicy rateLimit); absent: none. */
  rateLimit?: InboundRateLimiter;
  log: Logger;
  /** Give up connecting to the app port after this long (answers 503). */
  appConnectTimeoutMs: number;
  onRequest: (rec: InboundRequestRecord) => void;
  /** Idle app connections kept per app port. Default 64. */
  maxIdleAppConnections?: number;
  /** Idle time before a pooled app connection is closed (ms). Default 60000. */
  appIdleTimeoutMs?: number;
  /**
   * Connected socket pairs for same-node sessions. Kernel sockets: Node's HTTP/2 over an
   * in-process duplexPair stalled bodies of 1 MB for good (Node 24). Without it,
   * `requestLocal` cannot be used.
   */
  socketPair?: () => [Duplex, Duplex];
  /** Server spans of sampled requests (telemetry/tracing.ts); absent: none. */
  tracing?: Tracing;
}

/** The app port of a local pod as an upstream: one per (pod, port), reused by every request. */
class AppUpstream implements UpstreamChoice {
  readonly key: string;
  readonly authority: string;

  constructor(
    private readonly owner: InboundHttp,
    readonly workload: Workload,
    readonly port: number,
  ) {
    this.key = `${workload.uid}|${port}`;
    this.authority = formatAuthority(workload.ips[0] ?? '0.0.0.0', port);
  }

  connect(signal?: AbortSignal): Promise<Duplex> {
    return this.owner.connectApp(this.workload, this.port, signal);
  }

  done(): void {}
}

/** One request at the destination, as the relay sees it (it never chooses: the pod is known). */
class InboundExchange implements RoutedConnection {
  constructor(
    readonly ctx: InboundHttpContext,
    readonly upstream: AppUpstream,
    readonly upstreamProtocol: HttpVersion,
  ) {}

  choose(): UpstreamChoice {
    return this.upstream;
  }

  logFields(): Record<string, unknown> {
    return { source: this.ctx.source, workload: `${this.ctx.workload.namespace}/${this.ctx.workload.name}`, port: this.upstream.port };
  }

  recordRequest(): void {}
}

/** The pod addresses a `skein-dst` may name. */
export function podAddresses(w: Workload): Set<string> {
  const out = new Set<string>();
  for (const ip of w.ips) {
    const c = canonicalIp(ip);
    if (c) out.add(c);
  }
  return out;
}

/**
 * The destination port a request stream asks for, if `skein-dst` names one of `addresses`:
 * a number, or 'malformed' / 'elsewhere'.
 */
export function meshDestinationPort(headers: http2.IncomingHttpHeaders, addresses: ReadonlySet<string>): number | 'malformed' | 'elsewhere' {
  const raw = headers[MeshHeader.Destination];
  const dst = parseAuthority(typeof raw === 'string' ? raw : undefined);
  if (!dst) return 'malformed';
  return addresses.has(dst.address) ? dst.port : 'elsewhere';
}

interface LocalSessionState {
  source: SpiffeId;
  workload: Workload;
  addresses: Set<string>;
}

export class InboundHttp {
  readonly stats: InboundHttpStats = {
    requests: { http1: 0, http2: 0, grpc: 0 },
    denied: 0,
    malformed: 0,
    wrongDestination: 0,
    appUnreachable: 0,
    rateLimited: 0,
  };
  private readonly pool: UpstreamPool;
  private readonly relay: H2Relay;
  private readonly upstreams = new Map<string, AppUpstream>();
  private readonly opts: InboundHttpOptions;
  private readonly log: Logger;
  /** Same-node request streams arrive on in-memory sessions served here. */
  private readonly localServer: http2.Http2Server;
  private readonly localSessions = new Map<string, http2.ClientHttp2Session>();
  private readonly localStates = new WeakMap<http2.Http2Session, LocalSessionState>();
  private pendingLocal: LocalSessionState | undefined;

  constructor(opts: InboundHttpOptions) {
    this.opts = opts;
    this.log = opts.log;
    this.pool = new UpstreamPool({
      logger: opts.log,
      h1MaxFreeSockets: opts.maxIdleAppConnections ?? 64,
      idleTimeoutMs: opts.appIdleTimeoutMs ?? 60_000,
    });
    this.relay = new H2Relay(this.pool, opts.log);
    this.localServer = http2.createServer({
      // The client is this agent's outbound side, which already bounds what apps may open.
      settings: { enablePush: false, maxConcurrentStreams: 4096, initialWindowSize: 1024 * 1024 },
      maxSessionMemory: 64,
    });
    this.localServer.on('session', (session: http2.ServerHttp2Session) => {
      const state = this.pendingLocal;
      if (state) this.localStates.set(session, state);
      session.on('error', noop);
      session.once('connect', () => {
        try {
          session.setLocalWindowSize(8 * 1024 * 1024);
        } catch {
          // too early or closed: the default window still works
        }
      });
    });
    this.localServer.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number) => {
      stream.on('error', noop);
      const state = stream.session ? this.localStates.get(stream.session) : undefined;
      if (!state) {
        stream.close(NGHTTP2_REFUSED_STREAM);
        return;
      }
      this.serve(stream, headers, flags, { transport: 'local', source: state.source, workload: state.workload }, state.addresses);
    });
  }

  /**
   * Serves one request stream for `ctx.workload`, whose `skein-dst` must name one of
   * `addresses` (the pod's). Never throws; every outcome is answered, logged and recorded.
   */
  serve(
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    flags: number,
    ctx: InboundHttpContext,
    addresses: ReadonlySet<string>,
  ): void {
    const started = performance.now();
    // First, so that a refused request has its span too, and the app sees the server span as its parent.
    const span = this.opts.tracing?.startServer(headers);
    const bytes = countBodyBytes(stream);
    const grpc = isGrpc(headers);
    const appProtocol = appProtocolOf(headers[MeshHeader.Protocol]);
    if (appProtocol) this.stats.requests[grpc ? 'grpc' : appProtocol]++;
    const port = meshDestinationPort(headers, addresses);
    let refusedFor: string | undefined;
    let flag: string | undefined;
    stream.once('close', () => {
      const rec = this.record(ctx, headers, stream, typeof port === 'number' ? port : 0, appProtocol, grpc, started, refusedFor);
      rec.requestBytes = bytes.request;
      rec.responseBytes = bytes.response;
      flag ??= rec.status === 0 ? ResponseFlag.DownstreamConnectionTermination : undefined;
      if (flag) rec.responseFlags = flag;
      traceFields(rec, headers, span);
      this.opts.onRequest(rec);
      if (span) this.opts.tracing?.endServer(span, rec);
    });
    if (port === 'malformed' || !appProtocol) {
      this.stats.malformed++;
      flag = ResponseFlag.DownstreamProtocolError;
      refusedFor = `${InboundCode.MeshRequestMalformed}: ${port === 'malformed' ? `bad ${MeshHeader.Destination}` : `bad ${MeshHeader.Protocol}`}`;
      stream.resume();
      this.relay.respondError(stream, 400, grpc, 'malformed mesh request', 13);
      return;
    }
    if (port === 'elsewhere') {
      this.stats.wrongDestination++;
      flag = ResponseFlag.NoRouteFound;
      refusedFor = `${TunnelCode.WrongDestination}: ${String(headers[MeshHeader.Destination])} is not this pod`;
      stream.resume();
      this.relay.respondError(stream, 403, grpc, 'destination is not this pod', 7);
      return;
    }
    const src = headers[MeshHeader.Source];
    if (typeof src === 'string') ctx.sourceIp = src;
    const req: InboundHttpRequest = {
      method: String(headers[':method'] ?? ''),
      path: String(headers[':path'] ?? ''),
      authority: String(headers[':authority'] ?? ''),
      headers,
    };
    let decision: ReturnType<InboundHttpAuthorizer>;
    try {
      decision = this.opts.authorize(ctx, port, req);
    } catch (err) {
      decision = { allow: false, reason: `authorizer failed: ${messageOf(err)}` };
    }
    const go = (d: { allow: boolean; reason?: string }): void => {
      if (stream.destroyed || stream.closed) return;
      if (!d.allow) {
        this.stats.denied++;
        flag = ResponseFlag.RbacAccessDenied;
        refusedFor = `${InboundCode.RequestDenied}: ${d.reason ?? 'denied by policy'}`;
        stream.resume();
        this.relay.respondError(stream, 403, grpc, 'access denied by destination policy', 7);
        return;
      }
      const limited = this.opts.rateLimit?.(ctx, port);
      if (limited && !limited.allowed) {
        this.stats.rateLimited++;
        flag = ResponseFlag.RateLimited;
        refusedFor = `${InboundCode.RateLimited}: over the local rate limit of ${ctx.workload.namespace}/${ctx.workload.name}:${port}`;
        stream.resume();
        if (!stream.destroyed && !stream.closed && !stream.headersSent) {
          const retryAfter = String(Math.max(1, Math.ceil(limited.retryAfterS)));
          stream.respond(
            grpc
              ? { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '8', 'grpc-message': 'rate%20limited', 'retry-after': retryAfter }
              : { ':status': 429, 'content-type': 'text/plain', 'retry-after': retryAfter },
            { endStream: grpc },
          );
          if (!grpc) stream.end('rate limited\n');
        }
        return;
      }
      const upstream = this.upstreamFor(ctx.workload, port);
      this.relay.relay(stream, headers, flags, new InboundExchange(ctx, upstream, appProtocol), upstream);
    };
    if (decision instanceof Promise) {
      decision.then(go, (err: unknown) => go({ allow: false, reason: `authorizer failed: ${messageOf(err)}` }));
    } else go(decision);
  }

  /**
   * A request stream from this agent's outbound side to local pod `workload`: on an in-memory
   * HTTP/2 session per (source identity, pod), served by `serve` like a tunnel stream.
   */
  requestLocal(source: SpiffeId, workload: Workload, headers: http2.OutgoingHttpHeaders, opts: http2.ClientSessionRequestOptions): http2.ClientHttp2Stream {
    const key = `${source}|${workload.uid}`;
    let session = this.localSessions.get(key);
    if (!session || session.closed || session.destroyed) {
      session = this.openLocal(key, { source, workload, addresses: podAddresses(workload) });
    }
    return session.request(headers, opts);
  }

  private openLocal(key: string, state: LocalSessionState): http2.ClientHttp2Session {
    const pair = this.opts.socketPair;
    if (!pair) throw new SkeinError(TunnelCode.AppUnreachable, 'same-node request sessions need socket pairs');
    const [serverEnd, clientEnd] = pair();
    this.pendingLocal = state;
    try {
      this.localServer.emit('connection', serverEnd);
    } finally {
      this.pendingLocal = undefined;
    }
    const session = http2.connect('http://local.skein', {
      createConnection: () => clientEnd as unknown as Socket,
      settings: { enablePush: false, initialWindowSize: 1024 * 1024 },
      maxSessionMemory: 64,
    });
    session.on('error', (err) => this.log.debug({ err: messageOf(err) }, 'same-node request session error'));
    // After the peer's SETTINGS, as the tunnel pool does: enlarged on 'connect', the client's
    // connection window stalled bodies of a few MB for good (Node 24).
    session.once('remoteSettings', () => {
      try {
        session.setLocalWindowSize(8 * 1024 * 1024);
      } catch {
        // closed meanwhile
      }
    });
    session.once('close', () => {
      if (this.localSessions.get(key) === session) this.localSessions.delete(key);
      serverEnd.destroy();
    });
    this.localSessions.set(key, session);
    return session;
  }

  /** Connects to the app port inside the pod; failures are SKEIN_TUNNEL_APP_UNREACHABLE. */
  async connectApp(workload: Workload, port: number, signal?: AbortSignal): Promise<Duplex> {
    const d = deadline(this.opts.appConnectTimeoutMs, signal);
    try {
      return await this.opts.app.connect(workload, port, d.signal);
    } catch (err) {
      this.stats.appUnreachable++;
      const why = d.timedOut ? 'app connect timed out' : messageOf(err);
      throw new SkeinError(TunnelCode.AppUnreachable, `app port ${port} unreachable: ${why}`, { port }, { cause: err });
    } finally {
      d.done();
    }
  }

  private upstreamFor(workload: Workload, port: number): AppUpstream {
    const key = `${workload.uid}|${port}`;
    let u = this.upstreams.get(key);
    if (!u || u.workload !== workload) {
      u = new AppUpstream(this, workload, port);
      this.upstreams.set(key, u);
    }
    return u;
  }

  /** The pod left this node (or stopped being served): its app connections and sessions close. */
  forget(uid: string): void {
    const prefix = `${uid}|`;
    for (const k of this.upstreams.keys()) if (k.startsWith(prefix)) this.upstreams.delete(k);
    this.pool.evictWhere((k) => k.startsWith(prefix));
    const suffix = `|${uid}`;
    for (const [k, s] of this.localSessions) {
      if (k.endsWith(suffix)) {
        this.localSessions.delete(k);
        s.close();
      }
    }
  }

  close(): void {
    for (const s of this.localSessions.values()) s.destroy();
    this.localSessions.clear();
    this.pool.close();
    this.localServer.close();
  }

  private record(
    ctx: InboundHttpContext,
    headers: http2.IncomingHttpHeaders,
    stream: http2.ServerHttp2Stream,
    port: number,
    appProtocol: HttpVersion | undefined,
    grpc: boolean,
    started: number,
    reason: string | undefined,
  ): InboundRequestRecord {
    const w = ctx.workload;
    const rec: InboundRequestRecord = {
      reporter: 'destination',
      connectionSecurityPolicy: 'mutual_tls',
      protocol: 'http2',
      method: String(headers[':method'] ?? ''),
      path: String(headers[':path'] ?? ''),
      authority: String(headers[':authority'] ?? ''),
      ...streamOutcome(stream),
      durationMs: Math.round(performance.now() - started),
      transport: ctx.transport,
      source: ctx.source,
      workload: `${w.namespace}/${w.name}`,
      destinationIdentity: w.identity,
      port,
      grpc,
      requestBytes: 0,
      responseBytes: 0,
    };
    if (appProtocol) rec.appProtocol = appProtocol;
    if (ctx.sourceAddress !== undefined) rec.sourceAddress = ctx.sourceAddress;
    if (ctx.sourceIp !== undefined) rec.sourceIp = ctx.sourceIp;
    const peer = decodePeer(headers[MeshHeader.Peer]);
    if (peer) rec.sourcePeer = peer;
    if (reason !== undefined) rec.reason = reason;
    return rec;
  }
}
