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
import http from 'node:http';
import http2 from 'node:http2';
import type { Socket } from 'node:net';
import { messageOf } from '../../errors.js';
import type { Logger } from '../../telemetry/log.js';
import { H2_MAX_REJECTED_STREAMS, H2AbuseGuard } from './h2-abuse-guard.js';
import { endToEndH2Headers, endToEndRawHeaders, rawPairs } from './headers.js';
import type { RefusalLog } from './refusals.js';
import { type RoutedConnection, type UpstreamChoice, upstreamFailure } from './types.js';
import { OPENER_OPTION, type UpstreamPool } from './upstream-pool.js';
import { HttpCode, OutboundCode } from '../codes.js';

const {
  NGHTTP2_FLAG_END_STREAM,
  NGHTTP2_NO_ERROR,
  NGHTTP2_CANCEL,
  NGHTTP2_REFUSED_STREAM,
  HTTP2_HEADER_STATUS,
  HTTP2_HEADER_CONTENT_TYPE,
} = http2.constants;

export interface Http2Options {
  /** SETTINGS_MAX_CONCURRENT_STREAMS advertised to clients. Default 256. */
  maxConcurrentStreams?: number;
  /** SETTINGS_MAX_HEADER_LIST_SIZE advertised to clients (bytes). Default 65536. */
  maxHeaderListSize?: number;
  /** Streams the client may reset before their answer, per window, before the session is refused. Default 200. */
  maxClientResetsPerWindow?: number;
  /** Window of the reset budget (ms). Default 1000. */
  resetWindowMs?: number;
  /** Close client sessions idle this long (ms); 0 = never. Default 0. */
  idleTimeoutMs?: number;
}

/** Per-session state, allocated with the session, small on purpose. */
interface SessionState {
  conn: RoutedConnection;
}

const kState = Symbol('skein.h2SessionState');
type StatefulSession = http2.ServerHttp2Session & { [kState]?: SessionState };

function isGrpc(headers: http2.IncomingHttpHeaders): boolean {
  const ct = headers[HTTP2_HEADER_CONTENT_TYPE];
  return typeof ct === 'string' && ct.startsWith('application/grpc');
}

/** A stream that has not been reset (an 'end' from it means a real END_STREAM). */
function cleanSoFar(s: http2.Http2Stream): boolean {
  return s.rstCode === undefined || s.rstCode === NGHTTP2_NO_ERROR;
}

export class Http2Forwarder {
  private readonly server: http2.Http2Server;
  private pendingConn: RoutedConnection | undefined;
  private readonly guard: H2AbuseGuard;

  constructor(
    private readonly pool: UpstreamPool,
    private readonly refusals: RefusalLog,
    private readonly log: Logger,
    opts: Http2Options = {},
  ) {
    this.guard = new H2AbuseGuard({
      maxResetsPerWindow: opts.maxClientResetsPerWindow ?? 200,
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

  private respondError(stream: http2.ServerHttp2Stream, status: number, grpc: boolean, message: string, grpcStatus = 14): void {
    if (stream.destroyed || stream.closed) return;
    if (stream.headersSent) {
      this.guard.closeStream(stream, http2.constants.NGHTTP2_INTERNAL_ERROR);
      return;
    }
    if (grpc) {
      // Trailers-only: what a gRPC server itself would send (UNAVAILABLE, PERMISSION_DENIED).
      stream.respond(
        {
          [HTTP2_HEADER_STATUS]: 200,
          [HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc',
          'grpc-status': String(grpcStatus),
          'grpc-message': encodeURIComponent(message),
        },
        { endStream: true },
      );
    } else {
      stream.respond({ [HTTP2_HEADER_STATUS]: status, [HTTP2_HEADER_CONTENT_TYPE]: 'text/plain' });
      stream.end(`${message}\n`);
    }
  }

  private onStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number): void {
    // First: a session judged abusive gets no work done for any stream it still opens.
    if (!this.guard.admit(stream)) return;
    const session = stream.session as StatefulSession | undefined;
    const state = session?.[kState];
    const grpc = isGrpc(headers);
    stream.on('error', () => {}); // reported through 'close' / rstCode
    if (!state) {
      this.guard.closeStream(stream, NGHTTP2_REFUSED_STREAM);
      return;
    }
    const choice = state.conn.choose();
    const started = performance.now();
    stream.once('close', () => {
      const sent = stream.headersSent ? stream.sentHeaders : undefined;
      const grpcStatus = stream.sentTrailers?.['grpc-status'] ?? sent?.['grpc-status'];
      state.conn.recordRequest({
        protocol: 'http2',
        method: String(headers[':method'] ?? ''),
        path: String(headers[':path'] ?? ''),
        authority: String(headers[':authority'] ?? headers.host ?? ''),
        status: Number(sent?.[HTTP2_HEADER_STATUS] ?? 0),
        ...(grpcStatus !== undefined ? { grpcStatus: Number(grpcStatus) } : {}),
        ...(choice ? { upstream: choice.authority } : {}),
        durationMs: Math.round(performance.now() - started),
      });
    });
    if (!choice) {
      this.refusals.refuse(OutboundCode.NoHealthyUpstream, { ...state.conn.logFields(), path: headers[':path'] }, 'no healthy upstream');
      stream.resume();
      this.respondError(stream, 503, grpc, 'no healthy upstream');
      return;
    }
    const endStream = (flags & NGHTTP2_FLAG_END_STREAM) !== 0;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      choice.done();
    };
    stream.once('close', release);
    if (state.conn.upstreamProtocol === 'http1') {
      this.toHttp1(stream, headers, endStream, choice, state);
      return;
    }
    this.pool.h2SessionFor(choice).then(
      (upSession) => this.forward(stream, headers, endStream, grpc, upSession, choice, state),
      (err: NodeJS.ErrnoException) => {
        release();
        this.log.info(
          { ...state.conn.logFields(), upstream: choice.authority, code: err.code, err: messageOf(err) },
          'upstream connect failed',
        );
        stream.resume();
        const f = upstreamFailure(err.code);
        this.respondError(stream, f.status, grpc, f.text, f.grpcStatus);
      },
    );
  }

  /**
   * An HTTP/2 client calling a port declared HTTP/1.1: each stream becomes a request on the
   * pooled keep-alive upstream (:authority -> Host); the response returns as HTTP/2.
   */
  private toHttp1(
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    endStream: boolean,
    choice: UpstreamChoice,
    state: SessionState,
  ): void {
    const out: string[] = [];
    for (const [k, v] of Object.entries(headers)) {
      if (v === undefined || k.startsWith(':')) continue;
      for (const one of Array.isArray(v) ? v : [String(v)]) out.push(k, one);
    }
    const authority = headers[':authority'];
    if (authority) out.unshift('host', String(authority));
    const filtered = endToEndRawHeaders(out);
    if (!endStream && headers['content-length'] === undefined) filtered.push('transfer-encoding', 'chunked');
    const up = http.request({
      agent: this.pool.agentFor(choice),
      method: String(headers[':method'] ?? 'GET'),
      path: String(headers[':path'] ?? '/'),
      headers: filtered as unknown as http.OutgoingHttpHeaders,
      setHost: false,
      host: '127.0.0.1',
      port: 1,
      [OPENER_OPTION]: () => choice.connect(),
    } as http.RequestOptions);
    up.on('response', (upRes) => {
      if (stream.destroyed || stream.closed) {
        upRes.destroy();
        return;
      }
      const h: http2.OutgoingHttpHeaders = { [HTTP2_HEADER_STATUS]: upRes.statusCode ?? 502 };
      const raw = endToEndRawHeaders(upRes.rawHeaders);
      for (let i = 0; i < raw.length; i += 2) {
        const name = (raw[i] as string).toLowerCase();
        const prev = h[name];
        const value = raw[i + 1] as string;
        h[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [String(prev), value];
      }
      stream.respond(h, { waitForTrailers: true });
      stream.once('wantTrailers', () => {
        const t: http2.OutgoingHttpHeaders = {};
        for (const [k, v] of rawPairs(upRes.rawTrailers)) t[k.toLowerCase()] = v;
        stream.sendTrailers(t);
      });
      upRes.pipe(stream, { end: false });
      upRes.once('end', () => {
        if (!stream.destroyed) stream.end();
      });
      upRes.once('close', () => {
        if (!upRes.complete && !stream.closed) this.guard.closeStream(stream, http2.constants.NGHTTP2_INTERNAL_ERROR);
      });
    });
    up.on('error', (err: NodeJS.ErrnoException) => {
      if (stream.destroyed || stream.closed) return;
      if (stream.headersSent) {
        this.guard.closeStream(stream, http2.constants.NGHTTP2_INTERNAL_ERROR);
        return;
      }
      const f = upstreamFailure(err.code);
      this.log.info({ ...state.conn.logFields(), upstream: choice.authority, code: err.code, err: messageOf(err) }, 'upstream failed');
      stream.resume();
      this.respondError(stream, f.status, isGrpc(headers), f.text, f.grpcStatus);
    });
    stream.once('close', () => {
      if (!up.destroyed && stream.rstCode !== NGHTTP2_NO_ERROR) up.destroy();
    });
    if (endStream || stream.readableEnded) up.end();
    else {
      stream.pipe(up, { end: false });
      stream.once('end', () => {
        if (cleanSoFar(stream)) up.end();
      });
    }
  }

  private forward(
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    endStream: boolean,
    grpc: boolean,
    upSession: http2.ClientHttp2Session,
    choice: UpstreamChoice,
    state: SessionState,
  ): void {
    if (stream.destroyed || stream.closed) return;
    let up: http2.ClientHttp2Stream;
    try {
      up = upSession.request(endToEndH2Headers(headers), { endStream, waitForTrailers: !endStream });
    } catch (err) {
      this.log.info({ ...state.conn.logFields(), upstream: choice.authority, err: messageOf(err) }, 'upstream request failed');
      this.respondError(stream, 503, grpc, 'upstream unavailable');
      return;
    }
    up.on('error', () => {}); // reported through 'close' / rstCode
    // Request direction: body with backpressure, then the client's trailers (if any).
    if (!endStream) {
      let reqTrailers: http2.IncomingHttpHeaders | undefined;
      stream.once('trailers', (t: http2.IncomingHttpHeaders) => {
        reqTrailers = t;
      });
      up.once('wantTrailers', () => {
        up.sendTrailers(reqTrailers ? endToEndH2Headers(reqTrailers) : {});
      });
      // Not pipe's own end: a reset stream also emits 'end', and passing that on as a clean
      // END_STREAM would turn a broken upload into a truncated one.
      const endUp = (): void => {
        if (cleanSoFar(stream) && !up.destroyed) up.end();
      };
      // An empty body (END_STREAM on an empty DATA frame) may have ended the stream already.
      if (stream.readableEnded) endUp();
      else {
        stream.pipe(up, { end: false });
        stream.once('end', endUp);
      }
    }
    // Response direction.
    let resTrailers: http2.IncomingHttpHeaders | undefined;
    up.once('trailers', (t: http2.IncomingHttpHeaders) => {
      resTrailers = t;
    });
    up.once('response', (resHeaders, resFlags) => {
      if (stream.destroyed || stream.closed) return;
      const h = endToEndH2Headers(resHeaders);
      if ((resFlags & NGHTTP2_FLAG_END_STREAM) !== 0) {
        stream.respond(h, { endStream: true }); // trailers-only (gRPC errors) or empty body
        return;
      }
      stream.respond(h, { waitForTrailers: true });
      stream.once('wantTrailers', () => {
        stream.sendTrailers(resTrailers ? endToEndH2Headers(resTrailers) : {});
      });
      up.pipe(stream, { end: false });
      up.once('end', () => {
        if (cleanSoFar(up)) {
          if (!stream.destroyed) stream.end();
          return;
        }
        this.guard.closeStream(stream, up.rstCode as number);
      });
    });
    up.once('close', () => {
      if (stream.destroyed || stream.closed) return;
      const code = up.rstCode ?? NGHTTP2_NO_ERROR;
      if (code === NGHTTP2_NO_ERROR && up.readableEnded) return; // normal end; pipe finishes the client side
      if (!stream.headersSent && !grpc) {
        this.respondError(stream, 502, false, 'upstream reset');
        return;
      }
      // Relay the reset: the client learns the exchange broke, with the upstream's reason.
      this.guard.closeStream(stream, code === NGHTTP2_NO_ERROR ? http2.constants.NGHTTP2_INTERNAL_ERROR : code);
    });
    // Client reset or vanished: cancel upstream too.
    stream.once('close', () => {
      if (up.closed || up.destroyed) return;
      if (!up.readableEnded || stream.rstCode !== NGHTTP2_NO_ERROR) up.close(NGHTTP2_CANCEL);
    });
  }
}
