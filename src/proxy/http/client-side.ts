/**
 * ClientSide adapters: an HTTP/1.1 request/response pair or an HTTP/2 server stream, presented
 * the one way ManagedExchange serves them (HTTP/2-form heads, a body stream, trailers).
 */
import type http from 'node:http';
import http2 from 'node:http2';
import { closeStreamLocally, keptTrailers } from './h2-abuse-guard.js';
import { isGrpc } from './h2-relay.js';
import { endToEndH2Headers, endToEndRawHeaders, h2ToRaw, rawPairs, rawToH2 } from './headers.js';
import type { ClientSide, H2Head } from './managed-exchange.js';

const { NGHTTP2_FLAG_END_STREAM, NGHTTP2_INTERNAL_ERROR, HTTP2_HEADER_STATUS, HTTP2_HEADER_CONTENT_TYPE } = http2.constants;

/** An HTTP/2 client's stream (h2c or gRPC app). */
export function h2ClientSide(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number): ClientSide {
  const endStream = (flags & NGHTTP2_FLAG_END_STREAM) !== 0;
  let trailers: H2Head | undefined;
  if (!endStream) {
    stream.once('trailers', (t: http2.IncomingHttpHeaders) => {
      trailers = t;
    });
  }
  const grpc = isGrpc(headers);
  return {
    grpc,
    head: endToEndH2Headers(headers),
    body: endStream || stream.readableEnded ? undefined : stream,
    trailers: () => trailers ?? keptTrailers(stream),
    respond(head, end) {
      if (stream.destroyed || stream.closed) return undefined;
      if (end) {
        stream.respond(head as http2.OutgoingHttpHeaders, { endStream: true });
        return undefined;
      }
      stream.respond(head as http2.OutgoingHttpHeaders, { waitForTrailers: true });
      return stream;
    },
    finish(t) {
      if (stream.destroyed || stream.closed) return;
      stream.once('wantTrailers', () => stream.sendTrailers(t ? endToEndH2Headers(t as http2.IncomingHttpHeaders) : {}));
      stream.end();
    },
    answer(status, grpcStatus, text, extra) {
      if (stream.destroyed || stream.closed) return;
      if (stream.headersSent) {
        closeStreamLocally(stream, NGHTTP2_INTERNAL_ERROR);
        return;
      }
      stream.resume();
      if (grpc) {
        stream.respond(
          { [HTTP2_HEADER_STATUS]: 200, [HTTP2_HEADER_CONTENT_TYPE]: 'application/grpc', 'grpc-status': String(grpcStatus), 'grpc-message': encodeURIComponent(text), ...extra },
          { endStream: true },
        );
        return;
      }
      const body = text ? `${text}\n` : '';
      stream.respond({ [HTTP2_HEADER_STATUS]: status, [HTTP2_HEADER_CONTENT_TYPE]: 'text/plain', 'content-length': Buffer.byteLength(body), ...extra });
      stream.end(body);
    },
    reset() {
      if (!stream.closed) closeStreamLocally(stream, NGHTTP2_INTERNAL_ERROR);
    },
    get gone() {
      return stream.destroyed || stream.closed;
    },
    onGone(cb) {
      stream.once('close', cb);
    },
  };
}

/** An HTTP/1.x client's request and response (the request may be answered in HTTP/1.x only). */
export function h1ClientSide(req: http.IncomingMessage, res: http.ServerResponse, grpc: boolean): ClientSide {
  const hasBody = req.headers['content-length'] !== undefined ? req.headers['content-length'] !== '0' : req.headers['transfer-encoding'] !== undefined;
  const head = h2HeadOf(req);
  if (!hasBody) req.resume();
  return {
    grpc,
    head,
    body: hasBody ? req : undefined,
    trailers: () => (req.rawTrailers.length > 0 ? rawToH2(endToEndRawHeaders(req.rawTrailers)) : undefined),
    respond(h, end) {
      if (res.destroyed) return undefined;
      res.writeHead(Number(h[HTTP2_HEADER_STATUS]) || 502, endToEndRawHeaders(h2ToRaw(h)) as unknown as http.OutgoingHttpHeaders);
      if (end) {
        res.end();
        return undefined;
      }
      return res;
    },
    finish(t) {
      if (res.destroyed) return;
      if (t) {
        const kept = endToEndRawHeaders(h2ToRaw(t));
        if (kept.length > 0) res.addTrailers(rawPairs(kept));
      }
      res.end();
    },
    answer(status, _grpcStatus, text, extra) {
      if (res.headersSent || res.destroyed) {
        res.destroy();
        return;
      }
      const body = text ? `${text}\n` : '';
      res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), ...extra });
      res.end(body);
    },
    reset() {
      res.destroy();
    },
    get gone() {
      return res.destroyed;
    },
    onGone(cb) {
      res.once('close', cb);
    },
  };
}

/**
 * An HTTP/1.x request's head in HTTP/2 form: end-to-end fields (TE: trailers kept), Host ->
 * :authority (an absolute-form target's authority wins, as RFC 9112 says), the target in
 * origin-form. Expect is dropped: Node's server answered 100 Continue already (a proxy's job,
 * as Envoy does by default).
 */
export function h2HeadOf(req: http.IncomingMessage): H2Head {
  const target = originForm(req.url ?? '/');
  const head: H2Head = rawToH2(endToEndRawHeaders(req.rawHeaders, { keepTeTrailers: true }), {
    ':method': req.method ?? 'GET',
    ':path': target.path,
    ':scheme': 'http',
  });
  const host = head.host;
  delete head.host;
  const authority = target.authority ?? (Array.isArray(host) ? host[0] : host);
  if (authority !== undefined) head[':authority'] = String(authority);
  delete head.expect;
  return head;
}

/**
 * The request target in origin-form: an absolute-form target (`GET http://host/p`, which a
 * server must accept) is split into its authority and path, as an HTTP/2 request carries them.
 */
function originForm(target: string): { path: string; authority?: string } {
  if (target.charCodeAt(0) === 47 /* / */ || target === '*') return { path: target };
  const m = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)([^#]*)/i.exec(target);
  if (!m) return { path: target };
  const path = m[2] === '' ? '/' : (m[2] as string);
  return { path: path.startsWith('?') ? `/${path}` : path, authority: m[1] as string };
}
