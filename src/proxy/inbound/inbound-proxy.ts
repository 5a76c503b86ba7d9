/**
 * InboundProxy: the one path every connection INTO a local pod takes, whichever way it came —
 * an HBONE CONNECT stream from another node (TunnelServer), a same-node connection handed over
 * by the outbound side (`openLocal`, the TLS hop skipped), or captured plaintext on 15006
 * (PlaintextListener, PERMISSIVE only). Steps, in order:
 *
 *   1. authorize (hook; the policy engine plugs in here) — refused => 401 / SKEIN_TUNNEL_SOURCE_DENIED
 *   2. connect to the app port inside the pod (AppConnector) — failed => 503 / SKEIN_TUNNEL_APP_UNREACHABLE
 *   3. pipe bytes both ways (L4 pipe), then one access-log line and one telemetry record.
 *
 * Keeping the three transports on this one path is what makes same-node traffic get the same
 * policy and telemetry as cross-node traffic.
 */
import type { ClientHttp2Stream, ClientSessionRequestOptions, OutgoingHttpHeaders } from 'node:http2';
import { type Duplex, duplexPair } from 'node:stream';
import type { SpiffeId, Workload } from '../../config/model.js';
import { SkeinError, hasCode, messageOf } from '../../errors.js';
import { ResponseFlag } from '../../telemetry/istio-metrics.js';
import { type AccessLogPolicy, accessLogAdmits, type Logger, silentLogger, writeAccessLine } from '../../telemetry/log.js';
import type { Tracing } from '../../telemetry/tracing.js';
import { type PipeResult, pipeBidirectional } from '../tcp/l4-pipe.js';
import type { AppConnector, LocalInbound } from './types.js';
import { TunnelCode } from '../codes.js';
import { deadline } from '../deadline.js';
import { InboundHttp, type InboundHttpRequest, type InboundRateLimiter, type InboundHttpStats, type InboundRequestRecord } from './inbound-http.js';

export type InboundTransport = 'hbone' | 'local' | 'plaintext';

/** What a transport does at each outcome of InboundProxy.accept. */
export interface InboundAcceptHooks {
  /** Aborts the admission (besides the downstream closing). */
  signal?: AbortSignal;
  /** The app is connected; nothing has been piped yet. */
  admitted?: () => void;
  /** The pipe to the app is in place. */
  serving?: () => void;
  /** Refused (policy, app unreachable) or aborted; already logged and recorded. */
  refused: (err: unknown) => void;
}

export interface InboundRequest {
  transport: InboundTransport;
  /** Authenticated source identity (mTLS peer, or the local source pod); absent for plaintext. */
  source?: SpiffeId;
  /** Peer socket address (the remote node's agent, or the plaintext client). */
  sourceAddress?: string;
  sourcePort?: number;
  /**
   * The source pod's IP: the client's address for plaintext; for mesh traffic what the source
   * agent says (`Forwarded: for=` on a CONNECT, `skein-src` on a request). See sourceIpOf.
   */
  sourceIp?: string;
  workload: Workload;
  /** Destination (app) port inside the pod. */
  port: number;
  /** Request headers of the CONNECT (traceparent, forwarded-for...), when any. */
  headers?: Record<string, string>;
  /** Set for one HTTP request (L7, authorized per request); absent for a connection (L4). */
  http?: InboundHttpRequest;
}

export interface InboundDecision {
  allow: boolean;
  /** Why, for the log (policy name, "STRICT"...). */
  reason?: string;
}

/** Authorization hook: the policy engine implements it; the default allows everything. */
export type InboundAuthorizer = (req: InboundRequest) => InboundDecision | Promise<InboundDecision>;

/** What is known about one inbound connection once it ended (or was refused). */
export interface InboundConnectionRecord {
  reporter: 'destination';
  /** Istio's connection_security_policy: mutual_tls for tunnel and same-node, none for plaintext. */
  connectionSecurityPolicy: 'mutual_tls' | 'none';
  transport: InboundTransport;
  source?: SpiffeId;
  sourceAddress?: string;
  /** The source pod's IP (see sourceIpOf); metrics check it against the peer identity. */
  sourceIp?: string;
  workload: string;
  destinationIdentity: SpiffeId;
  port: number;
  /**
   * Envoy-style response flags (telemetry/istio-metrics.ts ResponseFlag) of a refused or
   * broken connection: RBAC refused by policy or STRICT, UF app unreachable, NR not this pod,
   * DPE malformed, SI idle timeout.
   */
  responseFlags?: string;
  /** HBONE-style status: 200 served, 401 refused by policy, 503 app unreachable. */
  status: number;
  reason?: string;
  /** Bytes from the client towards the app. */
  bytesReceived: number;
  /** Bytes from the app back to the client. */
  bytesSent: number;
  durationMs: number;
  /** How the piped connection ended: complete, reset, idle-timeout, aborted. */
  end?: PipeResult['reason'];
}

export interface InboundProxyOptions {
  app: AppConnector;
  authorize?: InboundAuthorizer;
  /** Local rate limits of HTTP requests (per destination workload and port); absent: none. */
  rateLimit?: InboundRateLimiter;
  logger?: Logger;
  /** Close a piped connection after this long without a byte either way; 0 = never (default). */
  idleTimeoutMs?: number;
  /** Give up connecting to the app port after this long (answers 503). Default 5 s. */
  appConnectTimeoutMs?: number;
  /** Telemetry hook (metrics): called once per connection, served or refused. */
  onConnection?: (rec: InboundConnectionRecord) => void;
  /**
   * A connected pair of kernel stream sockets (the agent: an AF_UNIX socketpair). With it,
   * same-node HTTP requests travel as request streams on in-memory HTTP/2 sessions over such
   * pairs; without it, they go over `openLocal` byte streams (no per-request hooks).
   */
  socketPair?: () => [Duplex, Duplex];
  /** Telemetry hook: called once per HTTP request served (or refused) here, reporter destination. */
  onRequest?: (rec: InboundRequestRecord) => void;
  /** Server spans of sampled HTTP requests (telemetry/tracing.ts); absent: none. */
  tracing?: Tracing;
  /** Which access-log lines are written (default: all). */
  accessLog?: AccessLogPolicy;
}

export interface InboundStats {
  /** Connections (L4, upgrades) piped now, served, refused, app unreachable. */
  active: number;
  served: number;
  refused: number;
  unavailable: number;
  /** HTTP requests from other agents and same-node pods (L7). */
  http: InboundHttpStats;
}

const allowAll: InboundAuthorizer = () => ({ allow: true });

export class InboundProxy implements LocalInbound {
  private readonly app: AppConnector;
  private readonly authorize: InboundAuthorizer;
  private readonly log: Logger;
  private readonly idleTimeoutMs: number;
  private readonly appConnectTimeoutMs: number;
  private readonly onConnection: ((rec: InboundConnectionRecord) => void) | undefined;
  private readonly onRequest: ((rec: InboundRequestRecord) => void) | undefined;
  readonly stats: InboundStats;
  /** The L7 side: request streams from other agents and from this agent's outbound side. */
  readonly http: InboundHttp;
  private readonly accessLog: AccessLogPolicy | undefined;

  constructor(opts: InboundProxyOptions) {
    this.app = opts.app;
    this.authorize = opts.authorize ?? allowAll;
    this.log = (opts.logger ?? silentLogger()).child({ component: 'inbound' });
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 0;
    this.appConnectTimeoutMs = opts.appConnectTimeoutMs ?? 5_000;
    this.onConnection = opts.onConnection;
    this.onRequest = opts.onRequest;
    this.http = new InboundHttp({
      app: this.app,
      log: this.log,
      appConnectTimeoutMs: this.appConnectTimeoutMs,
      authorize: (ctx, port, http) => {
        const req: InboundRequest = { transport: ctx.transport, source: ctx.source, workload: ctx.workload, port, http };
        if (ctx.sourceAddress !== undefined) req.sourceAddress = ctx.sourceAddress;
        if (ctx.sourceIp !== undefined) req.sourceIp = ctx.sourceIp;
        return this.authorize(req);
      },
      onRequest: (rec) => this.emitRequest(rec),
      ...(opts.rateLimit ? { rateLimit: opts.rateLimit } : {}),
      ...(opts.socketPair ? { socketPair: opts.socketPair } : {}),
      ...(opts.tracing ? { tracing: opts.tracing } : {}),
    });
    this.accessLog = opts.accessLog;
    if (!opts.socketPair) this.requestLocal = undefined;
    this.stats = { active: 0, served: 0, refused: 0, unavailable: 0, http: this.http.stats };
  }

  /**
   * Same-node L7: one request stream to local pod `workload`, served by `http` with the same
   * hooks. Undefined when no socket pairs were given (see `socketPair`).
   */
  requestLocal?: (source: SpiffeId, workload: Workload, headers: OutgoingHttpHeaders, opts: ClientSessionRequestOptions) => Promise<ClientHttp2Stream> = (
    source,
    workload,
    headers,
    opts,
  ) => Promise.resolve(this.http.requestLocal(source, workload, headers, opts));

  /** A local pod is no longer served: close its pooled app connections and sessions. */
  forgetWorkload(uid: string): void {
    this.http.forget(uid);
  }

  close(): void {
    this.http.close();
  }

  private emitRequest(rec: InboundRequestRecord): void {
    const failed = rec.status === 0 || rec.status >= 500 || rec.reason !== undefined;
    if (accessLogAdmits(this.accessLog, failed)) writeAccessLine(this.log, failed ? 'warn' : 'info', 'inbound request', rec);
    try {
      this.onRequest?.(rec);
    } catch (err) {
      this.log.error({ err: messageOf(err) }, 'inbound telemetry hook threw');
    }
  }

  /**
   * Steps 1 and 2: authorize, then connect to the app. Resolves with the app-side stream;
   * rejects with SKEIN_TUNNEL_SOURCE_DENIED or SKEIN_TUNNEL_APP_UNREACHABLE (refusals are
   * logged and recorded here, so callers only translate the code to their transport).
   */
  async admit(req: InboundRequest, signal?: AbortSignal): Promise<Duplex> {
    const started = performance.now();
    req.sourceIp ??= sourceIpOf(req);
    let decision: InboundDecision;
    try {
      decision = await this.authorize(req);
    } catch (err) {
      decision = { allow: false, reason: `authorizer failed: ${messageOf(err)}` };
    }
    if (!decision.allow) {
      this.stats.refused++;
      this.finishRefused(req, 401, decision.reason ?? 'denied by policy', started);
      throw new SkeinError(TunnelCode.SourceDenied, 'inbound connection refused by policy', {
        reason: decision.reason,
        source: req.source,
      });
    }
    const connect = deadline(this.appConnectTimeoutMs, signal);
    try {
      const app = await this.app.connect(req.workload, req.port, connect.signal);
      if (signal?.aborted) {
        // The downstream went away while we were connecting; do not leave the app socket open.
        app.destroy();
        throw new SkeinError(TunnelCode.Aborted, 'downstream closed before the app connection was up');
      }
      return app;
    } catch (err) {
      if (hasCode(err, TunnelCode.Aborted)) throw err;
      this.stats.unavailable++;
      const why = connect.timedOut ? 'app connect timed out' : messageOf(err);
      this.finishRefused(req, 503, why, started);
      throw new SkeinError(TunnelCode.AppUnreachable, `app port ${req.port} unreachable: ${why}`, { port: req.port }, { cause: err });
    } finally {
      connect.done();
    }
  }

  /**
   * The whole inbound path for one downstream connection, whichever transport brought it:
   * admit (authorize, connect the app), then serve. The downstream closing first, or
   * `hooks.signal`, aborts the admission. `admitted` runs once the app is connected and
   * before a byte flows (the tunnel answers 200 there), `serving` once the pipe is in place
   * (plaintext resumes its paused socket there), `refused` with the error of a refusal that
   * is already logged and recorded here.
   */
  accept(req: InboundRequest, downstream: Duplex, hooks: InboundAcceptHooks): void {
    const closed = new AbortController();
    const onEarlyClose = (): void => closed.abort();
    downstream.once('close', onEarlyClose);
    const signal = hooks.signal ? AbortSignal.any([hooks.signal, closed.signal]) : closed.signal;
    this.admit(req, signal).then(
      (app) => {
        downstream.removeListener('close', onEarlyClose);
        if (downstream.destroyed || (downstream as { closed?: boolean }).closed) {
          app.destroy();
          return;
        }
        hooks.admitted?.();
        this.serve(req, downstream, app);
        hooks.serving?.();
      },
      (err: unknown) => {
        downstream.removeListener('close', onEarlyClose);
        hooks.refused(err);
      },
    );
  }

  /** Step 3: pipe `downstream` <-> `app`, then log and record the connection. */
  serve(req: InboundRequest, downstream: Duplex, app: Duplex): void {
    this.stats.active++;
    this.stats.served++;
    pipeBidirectional(downstream, app, {
      idleTimeoutMs: this.idleTimeoutMs,
      onDone: (r) => {
        this.stats.active--;
        const rec = this.record(req, 200, r.bytesAtoB, r.bytesBtoA, r.durationMs);
        rec.end = r.reason;
        if (r.reason === 'idle-timeout') rec.responseFlags = ResponseFlag.StreamIdleTimeout;
        if (r.reason === 'reset' && r.resetBy) rec.reason = `reset by ${r.resetBy === 'a' ? 'downstream' : 'app'}`;
        this.emit(rec);
      },
    });
  }

  /**
   * Same-node entry for the outbound side: identical policy and telemetry, no TLS hop. The
   * returned Duplex is one end of an in-memory pair whose other end is piped to the app, so
   * bytes are counted and the access log line is written here just as for a tunnel stream.
   */
  async openLocal(
    source: SpiffeId,
    workload: Workload,
    port: number,
    opts: { signal?: AbortSignal; headers?: Record<string, string> } = {},
  ): Promise<Duplex> {
    const req: InboundRequest = { transport: 'local', source, workload, port };
    if (opts.headers) req.headers = opts.headers;
    const [ours, theirs] = duplexPair();
    return new Promise<Duplex>((resolve, reject) => {
      this.accept(req, ours, {
        ...(opts.signal ? { signal: opts.signal } : {}),
        admitted: () => resolve(theirs),
        refused: (err) => {
          ours.destroy();
          reject(err);
        },
      });
    });
  }

  /**
   * Record a connection refused before it reached `admit` (400 malformed, 403 wrong
   * destination, STRICT plaintext...): same access log and telemetry as everything else.
   */
  recordRefusal(req: InboundRequest, status: number, reason: string): void {
    this.stats.refused++;
    this.finishRefused(req, status, reason, performance.now());
  }

  private finishRefused(req: InboundRequest, status: number, reason: string, started: number): void {
    const rec = this.record(req, status, 0, 0, Math.round(performance.now() - started));
    rec.reason = reason;
    rec.responseFlags = refusalFlag(status);
    this.emit(rec);
  }

  private record(req: InboundRequest, status: number, received: number, sent: number, durationMs: number): InboundConnectionRecord {
    const rec: InboundConnectionRecord = {
      reporter: 'destination',
      connectionSecurityPolicy: req.transport === 'plaintext' ? 'none' : 'mutual_tls',
      transport: req.transport,
      workload: `${req.workload.namespace}/${req.workload.name}`,
      destinationIdentity: req.workload.identity,
      port: req.port,
      status,
      bytesReceived: received,
      bytesSent: sent,
      durationMs,
    };
    if (req.source !== undefined) rec.source = req.source;
    if (req.sourceAddress !== undefined) rec.sourceAddress = req.sourceAddress;
    const sourceIp = req.sourceIp ?? sourceIpOf(req);
    if (sourceIp !== undefined) rec.sourceIp = sourceIp;
    return rec;
  }

  private emit(rec: InboundConnectionRecord): void {
    // One access-log line per connection.
    const level = rec.status === 200 ? 'info' : 'warn';
    if (accessLogAdmits(this.accessLog, level === 'warn')) writeAccessLine(this.log, level, 'inbound connection', rec);
    try {
      this.onConnection?.(rec);
    } catch (err) {
      this.log.error({ err: messageOf(err) }, 'inbound telemetry hook threw');
    }
  }
}

/** The flag of a refused connection, by its HBONE-style status. */
function refusalFlag(status: number): string {
  if (status === 401) return ResponseFlag.RbacAccessDenied; // policy, STRICT, peer identity
  if (status === 503) return ResponseFlag.UpstreamConnectFailure;
  if (status === 403) return ResponseFlag.NoRouteFound;
  return ResponseFlag.DownstreamProtocolError;
}

/** The source pod's IP of a connection: the client itself for plaintext, `Forwarded: for=` for mesh traffic. */
export function sourceIpOf(req: InboundRequest): string | undefined {
  if (req.transport === 'plaintext') return req.sourceAddress;
  const fwd = req.headers?.forwarded;
  const m = fwd ? /(?:^|[;,\s])for="?\[?([0-9a-fA-F:.]+)\]?"?/i.exec(fwd) : null;
  return m?.[1];
}
