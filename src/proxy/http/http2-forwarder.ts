/**
 * HTTP/2 (h2c prior knowledge) and gRPC on the client side of the outbound proxy. One
 * Http2Server (never listening) takes every client connection classified as HTTP/2; each stream
 * is routed on its own (one endpoint choice per request) onto the per-(source, endpoint)
 * upstream HTTP/2 session. Streaming both ways with backpressure (pipe), trailers relayed,
 * trailers-only responses kept trailers-only, RST_STREAM relayed in both directions.
 *
 * Hardening: SETTINGS_MAX_CONCURRENT_STREAMS and header-list limits advertised to the client,
 * and a per-session budget of streams the client resets before their answer (the "rapid
 * reset" flood), judged by the H2AbuseGuard shared with the tunnel server: over it, the
 * session is refused at once (one GOAWAY(ENHANCE_YOUR_CALM), no further stream does any
 * routing work) and closed; other sessions are untouched.
 */
import http2 from 'node:http2';
import type { Socket } from 'node:net';
import { messageOf } from '../../errors.js';
import type { Logger } from '../../telemetry/log.js';
import { H2_MAX_REJECTED_STREAMS, H2AbuseGuard } from './h2-abuse-guard.js';
import { H2Relay, isGrpc, streamOutcome } from './h2-relay.js';
import { countBodyBytes } from './body-bytes.js';
import { gracefulGoaway } from './graceful-goaway.js';
import { h2ClientSide } from './client-side.js';
import { ManagedExchange } from './managed-exchange.js';
import type { RefusalLog } from './refusals.js';
import { type TraceHook, traceFields } from './trace-hook.js';
import { type HttpRequestRecord, type RoutedConnection, upstreamFields } from './types.js';
import type { UpstreamPool } from './upstream-pool.js';
import { HttpCode, OutboundCode } from '../codes.js';

const { NGHTTP2_REFUSED_STREAM, HTTP2_HEADER_STATUS } = http2.constants;

export interface Http2Options {
  /** SETTINGS_MAX_CONCURRENT_STREAMS advertised to clients. Default 256. */
  maxConcurrentStreams?: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE advertised to clients (bytes). Default 65536. */
  maxHeaderListSize?: number;
  /** Streams the client may reset before their answer, per window, before the session is refused. Default DEFAULT_H2_RESET_BUDGET (`--h2-reset-budget`). */
  maxClientResetsPerWindow?: number;
  /** Window of the reset budget (ms). Default 1000. */
  resetWindowMs?: number;
  /** Close client sessions idle this long (ms); 0 = never. Default 0. */
  idleTimeoutMs?: number;
  /** Request ids and client spans (trace-hook.ts); absent: requests pass as they are. */
  traceHook?: TraceHook;
}

/** Default streams an app's HTTP/2 session may reset before their answer per second (`skein agent --h2-reset-budget`). */
export const DEFAULT_H2_RESET_BUDGET = 200;

/** Per-session state, allocated with the session, small on purpose. */
interface SessionState {
  conn: RoutedConnection;
}

/**
 * 'end' of a client connection: the client is gone. The pod's listener keeps sockets half-open
 * (a faithful half-close for L4 pipes), and Node's HTTP/2 session does not watch for the FIN,
 * so a client that closed its connection left the session and its streams open — requests
 * still held upstream and their places in the pod's stream cap taken — until the next write
 * failed, or for good if none came (found by the stream-cap unit test). HTTP/2 has no
 * half-close of a connection: a client that sent FIN can send no WINDOW_UPDATE or RST_STREAM
 * any more. Destroying the socket closes the session, which closes every stream.
 */
function destroyOnClientEnd(this: Socket): void {
  this.destroy();
}

const kState = Symbol('skein.h2SessionState');
type StatefulSession = http2.ServerHttp2Session & { [kState]?: SessionState };

export class Http2Forwarder {
  private readonly server: http2.Http2Server;
  private pendingConn: RoutedConnection | undefined;
  /** Client sessions open now (a drain sends each a GOAWAY). */
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private draining = false;
  private readonly guard: H2AbuseGuard;
  private readonly relay: H2Relay;
  private readonly managed: ManagedExchange;
  private readonly traceHook: TraceHook | undefined;

  constructor(
    pool: UpstreamPool,
    private readonly refusals: RefusalLog,
    log: Logger,
    opts: Http2Options = {},
  ) {
    this.relay = new H2Relay(pool, log);
    this.managed = new ManagedExchange(pool, log);
    this.traceHook = opts.traceHook;
    this.guard = new H2AbuseGuard({
      maxResetsPerWindow: opts.maxClientResetsPerWindow ?? DEFAULT_H2_RESET_BUDGET,
      windowMs: opts.resetWindowMs ?? 1000,
      onAbusive: (session: StatefulSession, j) =>
        this.refusals.refuse(
          HttpCode.RapidReset,
          { ...session[kState]?.conn.logFields(), resets: j.resets, windowMs: j.windowMs, lastStreamId: j.lastStreamId },
          'HTTP/2 client reset too many streams before their answer; session refused',
        ),
    });
    this.server = http2.createServer({
      settings: {
        maxConcurrentStreams: opts.maxConcurrentStreams ?? 256,
        maxHeaderListSize: opts.maxHeaderListSize ?? 65_536,
        enablePush: false,
      },
      maxHeaderListPairs: 256,
      maxSessionInvalidFrames: 100,
      maxSessionRejectedStreams: H2_MAX_REJECTED_STREAMS,
    });
    if (opts.idleTimeoutMs) this.server.setTimeout(opts.idleTimeoutMs);
    // 'session' is emitted synchronously inside emit('connection'): that is how a session
    // learns its routing context without another lookup structure.
    this.server.on('session', (session: StatefulSession) => {
      this.guard.watch(session);
      this.sessions.add(session);
      session.once('close', () => this.sessions.delete(session));
      if (this.draining) gracefulGoaway(session);
      const conn = this.pendingConn;
      if (!conn) return;
      session[kState] = { conn };
    });
    this.server.on('stream', (stream, headers, flags) => this.onStream(stream, headers, flags));
    this.server.on('sessionError', (err: NodeJS.ErrnoException, session: StatefulSession) => {
      this.refusals.refuse(
        HttpCode.H2ProtocolError,
        { ...session?.[kState]?.conn.logFields(), err: messageOf(err), errCode: err.code },
        'HTTP/2 client session failed',
      );
    });
    // Node closes sessions that misbehave at the framing level; keep a record.
    this.server.on('unknownProtocol', (socket: Socket) => socket.destroy());
  }

  accept(socket: Socket, conn: RoutedConnection): void {
    socket.once('end', destroyOnClientEnd);
    this.pendingConn = conn;
    try {
      this.server.emit('connection', socket);
    } finally {
      this.pendingConn = undefined;
    }
  }

  close(): void {
    this.server.close();
  }

  /**
   * The agent is handing over: every client session gets a graceful GOAWAY (notice, then the
   * last stream id): its open streams finish, its client opens a new connection, to the next
   * agent, for the streams after.
   */
  drain(): void {
    this.draining = true;
    for (const s of this.sessions) gracefulGoaway(s);
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number): void {
    // First: a session judged abusive gets no work done for any stream it still opens.
    if (!this.guard.admit(stream)) return; // which also gave the stream its 'error' listener
    // Routed once the read that carried the HEADERS has been parsed: a stream the client reset
    // in that same read (the rapid-reset pattern: HEADERS+RST_STREAM back to back) is never
    // routed, sent upstream or logged. Routing it first cost every other pod of the node: the
    // lab e2e (h2-abuse) measured their p99 at 13 ms -> 150 ms under three 20,000-pair floods,
    // all of it the budget's 200 streams per flood routed to both nodes and cancelled.
    // The guard has counted the reset already ('aborted' is synchronous). Costs a legitimate
    // request one turn of the event loop, no closure (setImmediate passes the arguments).
    setImmediate(Http2Forwarder.routeIfOpen, this, stream, headers, flags);
  }

  /** setImmediate target of onStream: route the stream unless the client has reset it meanwhile. */
  private static routeIfOpen(fwd: Http2Forwarder, stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number): void {
    if (stream.destroyed || stream.closed || stream.session?.destroyed) return;
    fwd.route(stream, headers, flags);
  }

  private route(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number): void {
    const session = stream.session as StatefulSession | undefined;
    const state = session?.[kState];
    if (!state) {
      this.guard.closeStream(stream, NGHTTP2_REFUSED_STREAM);
      return;
    }
    const conn = state.conn;
    // The source pod's cap on requests in flight, before any work: over it the stream is
    // refused unprocessed (REFUSED_STREAM: the client may retry it, RFC 9113 §8.7). The place
    // is given back in the 'close' below, which every stream reaches however it ends.
    const streams = conn.streams;
    if (streams && !streams.take()) {
      this.refusals.refuseQuietly(
        OutboundCode.StreamLimit,
        () => ({ ...conn.logFields(), protocol: 'http2', open: streams.open, max: streams.max }),
        'pod has its maximum of requests in flight at its outbound listener; stream refused',
      );
      this.guard.closeStream(stream, NGHTTP2_REFUSED_STREAM);
      return;
    }
    const span = this.traceHook?.start(headers);
    const choice = conn.choose({
      method: String(headers[':method'] ?? ''),
      path: String(headers[':path'] ?? ''),
      authority: String(headers[':authority'] ?? headers.host ?? ''),
      headers,
    });
    const started = performance.now();
    const bytes = countBodyBytes(stream);
    stream.once('close', () => {
      streams?.release();
      const plan = choice?.plan;
      const outcome = streamOutcome(stream);
      const flags = !choice ? 'UH' : plan && plan.flags.length > 0 ? plan.flags.join(',') : outcome.status === 0 ? 'DC' : '';
      const rec: HttpRequestRecord = {
        protocol: 'http2',
        method: String(headers[':method'] ?? ''),
        path: String(headers[':path'] ?? ''),
        authority: String(headers[':authority'] ?? headers.host ?? ''),
        ...outcome,
        ...(choice && !plan?.direct ? upstreamFields(choice) : {}),
        durationMs: Math.round(performance.now() - started),
        ...(flags ? { responseFlags: flags } : {}),
        ...(plan?.route ? { route: plan.route } : {}),
        ...(plan?.tries && plan.tries > 1 ? { attempts: plan.tries } : {}),
        requestBytes: bytes.request,
        responseBytes: bytes.response,
      };
      if (this.traceHook) traceFields(rec, headers, span);
      if (span) rec.span = span;
      conn.recordRequest(rec);
    });
    if (!choice) {
      this.refusals.refuse(OutboundCode.NoHealthyUpstream, { ...conn.logFields(), path: headers[':path'] }, 'no healthy upstream');
      stream.resume();
      this.relay.respondError(stream, 503, isGrpc(headers), 'no healthy upstream');
      return;
    }
    // Expect: 100-continue is answered here, as a proxy does (the client may then send its
    // body); the expectation is not passed on.
    if (headers.expect !== undefined) {
      if (String(headers.expect).toLowerCase() === '100-continue') stream.additionalHeaders({ [HTTP2_HEADER_STATUS]: 100 });
      delete headers.expect;
    }
    if (choice.plan) {
      this.managed.run(h2ClientSide(stream, headers, flags), choice, conn.upstreamProtocol, conn.logFields());
      return;
    }
    this.relay.relay(stream, headers, flags, conn, choice);
  }
}
