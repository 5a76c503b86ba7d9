/**
 * H2Relay: one HTTP/2 server stream (a request) relayed to its upstream, and the response,
 * trailers and resets relayed back. Both HTTP/2 servers of the data path use it:
 * - the outbound forwarder (apps speaking h2c or gRPC), towards the chosen endpoint;
 * - the inbound side (a request stream from another agent, or from this agent's outbound side
 *   for a same-node pod), towards the app inside the destination pod.
 *
 * Which upstream, in order:
 * - `choice.request` (a skein agent serves the endpoint): one HTTP/2 request stream to that
 *   agent, with the mesh-headers.ts fields saying where and in which protocol;
 * - the upstream speaks HTTP/1.1: a request on the pooled keep-alive upstream (:authority ->
 *   Host), the response back as HTTP/2;
 * - else a stream on the pooled HTTP/2 upstream session.
 *
 * Semantics kept: bodies streamed both ways with backpressure; request and response trailers;
 * trailers-only responses stay trailers-only; a reset on either side is relayed to the other
 * (a reset never turns into a clean, truncated END_STREAM); HEAD, 204 and 304 carry no body.
 */
import type http from 'node:http';
import http2 from 'node:http2';
import { messageOf } from '../../errors.js';
import type { Logger } from '../../telemetry/log.js';
import { closeStreamLocally, keptTrailers } from './h2-abuse-guard.js';
import { endToEndH2Headers, endToEndRawHeaders, h2ToRaw, rawPairs, rawToH2 } from './headers.js';
import { MeshHeader } from './mesh-headers.js';
import { type MeshRequestOpener, type RoutedConnection, type UpstreamChoice, upstreamFailure } from './types.js';
import { pooledHttp1Request, type UpstreamPool } from './upstream-pool.js';

const { NGHTTP2_FLAG_END_STREAM, NGHTTP2_NO_ERROR, NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, HTTP2_HEADER_STATUS, HTTP2_HEADER_CONTENT_TYPE } =
  http2.constants;

export function isGrpc(headers: http2.IncomingHttpHeaders): boolean {
  const ct = headers[HTTP2_HEADER_CONTENT_TYPE];
  return typeof ct === 'string' && ct.startsWith('application/grpc');
}

/** A stream that has not been reset (an 'end' from it means a real END_STREAM). */
function cleanSoFar(s: http2.Http2Stream): boolean {
  return s.rstCode === undefined || s.rstCode === NGHTTP2_NO_ERROR;
}

/** Trailers as HTTP/2 headers, without what may not be relayed. */
function trailersOf(t: http2.IncomingHttpHeaders | undefined): http2.OutgoingHttpHeaders {
  return t ? endToEndH2Headers(t) : {};
}

/** What a finished server stream tells the access log: status and gRPC status sent. */
export function streamOutcome(stream: http2.ServerHttp2Stream): { status: number; grpcStatus?: number } {
  const sent = stream.headersSent ? stream.sentHeaders : undefined;
  const grpcStatus = stream.sentTrailers?.['grpc-status'] ?? sent?.['grpc-status'];
  const status = Number(sent?.[HTTP2_HEADER_STATUS] ?? 0);
  return grpcStatus !== undefined ? { status, grpcStatus: Number(grpcStatus) } : { status };
}

export class H2Relay {
  /** Streams answered 503 because their endpoint could not be reached (outlier detection tells them apart). */
  private readonly connectFailed = new WeakSet<http2.ServerHttp2Stream>();

  constructor(
    private readonly pool: UpstreamPool,
    private readonly log: Logger,
  ) {}

  /**
   * Relays `stream` (whose request `headers` arrived with `flags`) to `choice`, as
   * `conn.upstreamProtocol` says. `choice.done()` runs once the stream closes.
   */
  relay(
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    flags: number,
    conn: RoutedConnection,
    choice: UpstreamChoice,
  ): void {
    const endStream = (flags & NGHTTP2_FLAG_END_STREAM) !== 0;
    stream.once('close', () => {
      const o = streamOutcome(stream);
      choice.done(o.status === 503 && this.connectFailed.has(stream) ? { ...o, connectFailed: true } : o);
    });
    // Trailers may arrive before the upstream is open: keep them from the start.
    let reqTrailers: http2.IncomingHttpHeaders | undefined;
    if (!endStream) {
      stream.once('trailers', (t: http2.IncomingHttpHeaders) => {
        reqTrailers = t;
      });
    }
    const trailers = (): http2.IncomingHttpHeaders | undefined => reqTrailers ?? keptTrailers(stream);
    const grpc = isGrpc(headers);
    const mesh = choice.request;
    if (mesh) {
      const out = endToEndH2Headers(headers);
      out[MeshHeader.Destination] = choice.authority;
      out[MeshHeader.Protocol] = conn.upstreamProtocol;
      this.toHttp2(stream, out, endStream, grpc, mesh, trailers, conn, choice);
    } else if (conn.upstreamProtocol === 'http1') {
      this.toHttp1(stream, headers, endStream, trailers, conn, choice);
    } else {
      const open: MeshRequestOpener = (h, o) => this.pool.h2SessionFor(choice).then((s) => s.request(h, o));
      this.toHttp2(stream, endToEndH2Headers(headers), endStream, grpc, open, trailers, conn, choice);
    }
  }

  respondError(stream: http2.ServerHttp2Stream, status: number, grpc: boolean, message: string, grpcStatus = 14): void {
    if (stream.destroyed || stream.closed) return;
    if (stream.headersSent) {
      closeStreamLocally(stream, NGHTTP2_INTERNAL_ERROR);
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

  private failed(stream: http2.ServerHttp2Stream, grpc: boolean, conn: RoutedConnection, choice: UpstreamChoice, err: NodeJS.ErrnoException): void {
    if (stream.destroyed || stream.closed) return;
    if (stream.headersSent) {
      closeStreamLocally(stream, NGHTTP2_INTERNAL_ERROR);
      return;
    }
    const f = upstreamFailure(err.code);
    if (f.status === 503) this.connectFailed.add(stream);
    this.log.info({ ...conn.logFields(), upstream: choice.authority, code: err.code, status: f.status, err: messageOf(err) }, 'upstream failed');
    stream.resume();
    this.respondError(stream, f.status, grpc, f.text, f.grpcStatus);
  }

  /**
   * Towards an upstream speaking HTTP/1.1: the stream becomes a request on the pooled
   * keep-alive upstream (:authority -> Host); the response returns as HTTP/2.
   */
  private toHttp1(
    stream: http2.ServerHttp2Stream,
    headers: http2.IncomingHttpHeaders,
    endStream: boolean,
    trailers: () => http2.IncomingHttpHeaders | undefined,
    conn: RoutedConnection,
    choice: UpstreamChoice,
  ): void {
    const up = pooledHttp1Request(this.pool, choice, headers, !endStream);
    // 1xx the app sends on its own (103 Early Hints, 102) go on to the client (RFC 9110 §15.2).
    up.on('information', (info: http.InformationEvent) => {
      if (info.statusCode === 101 || stream.destroyed || stream.closed || stream.headersSent) return;
      stream.additionalHeaders(rawToH2(endToEndRawHeaders(info.rawHeaders), { [HTTP2_HEADER_STATUS]: info.statusCode }));
    });
    up.on('response', (upRes) => {
      if (stream.destroyed || stream.closed) {
        upRes.destroy();
        return;
      }
      stream.respond(rawToH2(endToEndRawHeaders(upRes.rawHeaders), { [HTTP2_HEADER_STATUS]: upRes.statusCode ?? 502 }), { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers(rawToH2(endToEndRawHeaders(upRes.rawTrailers))));
      upRes.pipe(stream, { end: false });
      upRes.once('end', () => {
        if (!stream.destroyed) stream.end();
      });
      upRes.once('close', () => {
        if (!upRes.complete && !stream.closed) closeStreamLocally(stream, NGHTTP2_INTERNAL_ERROR);
      });
    });
    up.on('error', (err: NodeJS.ErrnoException) => this.failed(stream, isGrpc(headers), conn, choice, err));
    stream.once('close', () => {
      if (!up.destroyed && stream.rstCode !== NGHTTP2_NO_ERROR) up.destroy();
    });
    const endUp = (): void => {
      if (!cleanSoFar(stream)) return;
      const t = trailers();
      if (t) up.addTrailers(rawPairs(endToEndRawHeaders(h2ToRaw(t))));
      up.end();
    };
    if (endStream || stream.readableEnded) endUp();
    else {
      stream.pipe(up, { end: false });
      stream.once('end', endUp);
    }
  }

  /** Towards an HTTP/2 upstream (a pooled session, or a skein agent through `open`). */
  private toHttp2(
    stream: http2.ServerHttp2Stream,
    out: http2.OutgoingHttpHeaders,
    endStream: boolean,
    grpc: boolean,
    open: MeshRequestOpener,
    trailers: () => http2.IncomingHttpHeaders | undefined,
    conn: RoutedConnection,
    choice: UpstreamChoice,
  ): void {
    let opened: Promise<http2.ClientHttp2Stream>;
    try {
      opened = open(out, { endStream, waitForTrailers: !endStream });
    } catch (err) {
      opened = Promise.reject(err);
    }
    opened.then(
      (up) => {
        up.on('error', () => {}); // reported through 'close' / rstCode
        if (stream.destroyed || stream.closed) {
          if (!up.closed) up.close(NGHTTP2_CANCEL);
          return;
        }
        this.exchange(stream, up, endStream, grpc, trailers);
      },
      (err: NodeJS.ErrnoException) => this.failed(stream, grpc, conn, choice, err),
    );
  }

  /** Both directions of one HTTP/2 <-> HTTP/2 exchange, once the upstream stream exists. */
  private exchange(
    stream: http2.ServerHttp2Stream,
    up: http2.ClientHttp2Stream,
    endStream: boolean,
    grpc: boolean,
    trailers: () => http2.IncomingHttpHeaders | undefined,
  ): void {
    // Request direction: body with backpressure, then the client's trailers (if any).
    if (!endStream) {
      up.once('wantTrailers', () => up.sendTrailers(trailersOf(trailers())));
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
    // Informational responses (103 Early Hints...) before the final one go on as they came.
    up.on('headers', (info: http2.IncomingHttpHeaders) => {
      const status = Number(info[HTTP2_HEADER_STATUS]);
      if (status >= 100 && status < 200 && status !== 101 && !stream.destroyed && !stream.closed && !stream.headersSent) {
        stream.additionalHeaders(endToEndH2Headers(info));
      }
    });
    up.once('response', (resHeaders, resFlags) => {
      if (stream.destroyed || stream.closed) return;
      const h = endToEndH2Headers(resHeaders);
      if ((resFlags & NGHTTP2_FLAG_END_STREAM) !== 0) {
        stream.respond(h, { endStream: true }); // trailers-only (gRPC errors) or empty body
        return;
      }
      stream.respond(h, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers(trailersOf(resTrailers)));
      up.pipe(stream, { end: false });
      up.once('end', () => {
        if (cleanSoFar(up)) {
          if (!stream.destroyed) stream.end();
          return;
        }
        closeStreamLocally(stream, up.rstCode as number);
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
      closeStreamLocally(stream, code === NGHTTP2_NO_ERROR ? NGHTTP2_INTERNAL_ERROR : code);
    });
    // Client reset or vanished: cancel upstream too.
    stream.once('close', () => {
      if (up.closed || up.destroyed) return;
      if (!up.readableEnded || stream.rstCode !== NGHTTP2_NO_ERROR) up.close(NGHTTP2_CANCEL);
    });
  }
}
