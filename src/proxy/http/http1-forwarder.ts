/**
 * HTTP/1.1 on the client side of the outbound proxy. One http.Server (never listening) takes
 * every client connection the outbound side classified as HTTP/1; each request is routed on
 * its own (one endpoint choice per request) and forwarded through the per-(source, endpoint)
 * keep-alive pool.
 *
 * Upgrades: only the protocols allowed (`upgradeProtocols`, WebSocket by default) are taken
 * out of HTTP, and only once the upstream agreed: the request goes to one endpoint as the
 * client wrote it, and the byte pipe starts after a 101, with the 101 relayed. Any other
 * answer (400, 426, 200...) is returned as an ordinary response and the connection closes
 * after it, so nothing reaches the upstream outside per-request routing and telemetry. An
 * `Upgrade` the forwarder does not allow (h2c, anything not listed, or any upgrade towards an
 * HTTP/2 upstream) is an ordinary request: the Upgrade, Connection and HTTP2-Settings fields
 * are removed as hop-by-hop and the connection stays HTTP/1.1.
 *
 * Client-facing hardening comes from Node's strict llhttp parser (never insecureHTTPParser):
 * Content-Length with Transfer-Encoding, bad chunk framing, oversized heads and slow heads are
 * refused before anything reaches an upstream; `clientError` turns them into 400/431/408,
 * logged and counted.
 */
import http from 'node:http';
import http2 from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { messageOf } from '../../errors.js';
import type { Logger } from '../../telemetry/log.js';
import { pipeBidirectional } from '../tcp/l4-pipe.js';
import { endToEndRawHeaders, h2ToRaw, rawPairs, rawToH2 } from './headers.js';
import { countHttp1BodyBytes } from './body-bytes.js';
import { h1ClientSide, h2HeadOf } from './client-side.js';
import { ManagedExchange } from './managed-exchange.js';
import type { RefusalLog } from './refusals.js';
import { MeshHeader } from './mesh-headers.js';
import { type TraceHook, traceFields } from './trace-hook.js';
import { type HttpRequestRecord, type MeshRequestOpener, type RequestInfo, type RoutedConnection, type UpstreamChoice, upstreamFailure, upstreamFields } from './types.js';
import { OPENER_OPTION, type UpstreamPool } from './upstream-pool.js';
import { HttpCode, OutboundCode } from '../codes.js';
import type { StreamCap } from '../stream-cap.js';

export interface Http1Options {
  /** Largest request head accepted (bytes); beyond it 431. Default 16384. */
  maxHeaderSize?: number;
  /** Time allowed to receive a request head (ms). Default 30000. */
  headersTimeoutMs?: number;
  /** Time allowed to receive a whole request (ms); 0 = no limit (long uploads, streaming). Default 0. */
  requestTimeoutMs?: number;
  /** Idle time of a client keep-alive connection between requests (ms). Default 60000. */
  keepAliveTimeoutMs?: number;
  /** Period of the shared sweep that enforces the two timeouts above (ms). Default 1000. */
  checkIntervalMs?: number;
  /** `Upgrade` protocols that may become a byte pipe after a 101 (case-insensitive). Default ['websocket']. */
  upgradeProtocols?: readonly string[];
  /** Request ids and client spans (trace-hook.ts); absent: requests pass as they are. */
  traceHook?: TraceHook;
}

const kConn = Symbol('skein.routedConnection');

type SocketWithConn = Socket & { [kConn]?: RoutedConnection };

/** Response field naming the stable code of a refusal the agent answered itself. */
export const CODE_FIELD = 'skein-code';
/** Body of the 503 over the stream cap (built once: the refusal path allocates no text). */
const STREAM_LIMIT_BODY = Buffer.from(`too many requests in flight from this pod (${OutboundCode.StreamLimit})\n`);

/** Status text per refusal, for the minimal responses written on a refused connection. */
const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' };

export class Http1Forwarder {
  private readonly server: http.Server;
  /** Responses not finished yet (a drain marks those whose head is not out). */
  private readonly inFlight = new Set<http.ServerResponse>();
  private draining = false;
  private readonly upgradeProtocols: ReadonlySet<string>;
  private readonly managed: ManagedExchange;
  private readonly traceHook: TraceHook | undefined;

  constructor(
    private readonly pool: UpstreamPool,
    private readonly refusals: RefusalLog,
    private readonly log: Logger,
    opts: Http1Options = {},
  ) {
    this.managed = new ManagedExchange(pool, log);
    this.traceHook = opts.traceHook;
    this.upgradeProtocols = new Set((opts.upgradeProtocols ?? ['websocket']).map((p) => p.toLowerCase()));
    const headersTimeout = opts.headersTimeoutMs ?? 30_000;
    const requestTimeout = opts.requestTimeoutMs ?? 0;
    this.server = http.createServer({
      maxHeaderSize: opts.maxHeaderSize ?? 16_384,
      // Node requires requestTimeout >= headersTimeout when both are set.
      headersTimeout: requestTimeout > 0 ? Math.min(headersTimeout, requestTimeout) : headersTimeout,
      requestTimeout,
      keepAliveTimeout: opts.keepAliveTimeoutMs ?? 60_000,
      connectionsCheckingInterval: opts.checkIntervalMs ?? 1000,
      insecureHTTPParser: false,
      requireHostHeader: false,
      // The request's own Date/Connection logic stays with the upstream's response.
      noDelay: true,
      // Only allowed upgrades leave HTTP ('upgrade' event); the rest are ordinary requests.
      shouldUpgradeCallback: (req: http.IncomingMessage) => this.upgradeAllowed(req),
    } as http.ServerOptions);
    this.server.on('request', (req, res) => {
      if (this.draining) res.shouldKeepAlive = false;
      this.inFlight.add(res);
      res.once('close', () => this.inFlight.delete(res));
      this.onRequest(req, res);
    });
    this.server.on('upgrade', (req: http.IncomingMessage, socket: Socket, head: Buffer) =>
      this.onUpgrade(req, socket, head),
    );
    this.server.on('connect', (req: http.IncomingMessage, socket: Socket) => {
      this.refusals.refuse(HttpCode.ConnectMethod, this.fields(socket), 'CONNECT method refused on outbound');
      socket.end('HTTP/1.1 405 Method Not Allowed\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      void req;
    });
    // Node enforces headersTimeout/requestTimeout with one sweep over the connections a server
    // tracks, and starts tracking on 'listening'. This server never listens (connections are
    // handed over), so announce it: one shared interval instead of a timer per connection.
    this.server.emit('listening');
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.onClientError(err, socket as Socket));
  }

  /** Takes a client connection (its first bytes may have been unshifted back by detection). */
  accept(socket: Socket, conn: RoutedConnection): void {
    (socket as SocketWithConn)[kConn] = conn;
    this.server.emit('connection', socket);
  }

  close(): void {
    this.server.closeAllConnections();
    this.server.close();
  }

  /**
   * The agent is handing over: every response from now on (and those in flight whose head is
   * not out yet) says `Connection: close` and its connection closes after it, so keep-alive
   * clients reconnect, to the next agent, between two requests: never in the middle of one.
   */
  drain(): void {
    this.draining = true;
    for (const res of this.inFlight) if (!res.headersSent) res.shouldKeepAlive = false;
  }

  /** Keep-alive connections with no request since the drain began (the drain's last step). */
  closeIdle(): void {
    this.server.closeIdleConnections();
  }

  private fields(socket: Socket): Record<string, unknown> {
    return (socket as SocketWithConn)[kConn]?.logFields() ?? {};
  }

  private onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
    const code = err.code ?? '';
    if (code === 'ECONNRESET' || code === 'EPIPE' || !socket.writable) {
      socket.destroy();
      return;
    }
    let status = 400;
    let refusal: string = HttpCode.RequestMalformed;
    if (code === 'HPE_HEADER_OVERFLOW') {
      status = 431;
      refusal = HttpCode.HeadersTooLarge;
    } else if (code === 'HPE_HEADERS_TIMEOUT' || code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      status = 408;
      refusal = HttpCode.SlowClient;
    } else if (
      code === 'HPE_UNEXPECTED_CONTENT_LENGTH' ||
      code === 'HPE_INVALID_TRANSFER_ENCODING' ||
      code === 'HPE_INVALID_CONTENT_LENGTH' ||
      code === 'HPE_INVALID_CHUNK_SIZE'
    ) {
      refusal = HttpCode.Smuggling;
    }
    this.refusals.refuse(refusal, { ...this.fields(socket), status, parserError: code, reason: err.message }, 'HTTP/1 request refused');
    // A response only if none has started on this connection (else the framing is unknowable).
    const inFlight = (socket as Socket & { _httpMessage?: http.ServerResponse })._httpMessage;
    if (!inFlight?.headersSent) {
      socket.end(`HTTP/1.1 ${status} ${STATUS_TEXT[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      // Do not wait for the client to read it: a slow or hostile client must not pin the socket.
      socket.setTimeout?.(1000, () => socket.destroy());
    } else socket.destroy();
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const conn = (req.socket as SocketWithConn)[kConn];
    // The source pod's cap on requests in flight, before any work. The place is given back in
    // the response's 'close' below: emitted once the response is done or the connection is
    // gone (a client that left mid-request included), so it never leaks.
    const streams = conn?.streams;
    if (streams && !streams.take()) {
      this.refuseOverCap(req, res, streams);
      return;
    }
    const span = conn ? this.traceHook?.start(req.headers, req.rawHeaders) : undefined;
    const choice = conn?.choose(requestInfoOf(req));
    if (conn) {
      const started = performance.now();
      const bytes = countHttp1BodyBytes(req, res);
      res.once('close', () => {
        streams?.release();
        const plan = choice?.plan;
        const flags = !choice ? 'UH' : plan && plan.flags.length > 0 ? plan.flags.join(',') : res.headersSent ? '' : 'DC';
        const rec: HttpRequestRecord = {
          protocol: 'http1',
          method: req.method ?? '',
          path: req.url ?? '',
          authority: req.headers.host ?? '',
          status: res.headersSent ? res.statusCode : 0,
          ...(choice && !plan?.direct ? upstreamFields(choice) : {}),
          durationMs: Math.round(performance.now() - started),
          ...(flags ? { responseFlags: flags } : {}),
          ...(plan?.route ? { route: plan.route } : {}),
          ...(plan?.tries && plan.tries > 1 ? { attempts: plan.tries } : {}),
          requestBytes: bytes.request,
          responseBytes: bytes.response,
        };
        if (this.traceHook) traceFields(rec, req.headers, span);
        if (span) rec.span = span;
        conn.recordRequest(rec);
      });
    }
    if (!conn || !choice) {
      this.refusals.refuse(OutboundCode.NoHealthyUpstream, { ...this.fields(req.socket), path: req.url }, 'no healthy upstream');
      req.resume();
      this.respondError(res, 503, 'no healthy upstream');
      return;
    }
    // Routes or traffic policy shape this request: filters, timeouts, retries, mirrors, faults.
    if (choice.plan) {
      this.managed.run(h1ClientSide(req, res, false), choice, conn.upstreamProtocol, conn.logFields());
      return;
    }
    // Between agents every request is its own HTTP/2 stream, whatever the app speaks.
    if (choice.request) {
      this.toHttp2(req, res, conn, choice, choice.request, true);
      return;
    }
    if (conn.upstreamProtocol === 'http2') {
      this.toHttp2(req, res, conn, choice, (h, o) => this.pool.h2SessionFor(choice).then((s) => s.request(h, o)), false);
      return;
    }
    let released = false;
    let connectFailed = false;
    const release = (): void => {
      if (released) return;
      released = true;
      choice.done({ status: res.headersSent ? res.statusCode : connectFailed ? 503 : 0, connectFailed });
    };
    const up = http.request({
      agent: this.pool.agentFor(choice),
      method: req.method,
      path: req.url,
      headers: endToEndRawHeaders(req.rawHeaders, { keepChunked: true }) as unknown as http.OutgoingHttpHeaders,
      setHost: false,
      // Only the pool key matters to the agent; host/port keep Node's bookkeeping sane.
      host: '127.0.0.1',
      port: 1,
      [OPENER_OPTION]: () => choice.connect(),
    } as http.RequestOptions);
    up.on('information', (info: http.InformationEvent) => relayInformational(res, info.statusCode, info.headers));
    up.on('response', (upRes) => {
      const headers = endToEndRawHeaders(upRes.rawHeaders);
      res.writeHead(upRes.statusCode ?? 502, upRes.statusMessage, headers as unknown as http.OutgoingHttpHeaders);
      upRes.on('end', () => {
        if (upRes.rawTrailers.length > 0) res.addTrailers(rawPairs(upRes.rawTrailers));
      });
      upRes.pipe(res);
      upRes.on('error', () => res.destroy());
      upRes.on('close', () => {
        // Upstream died mid-body: the client must see a broken response, not a short one.
        if (!upRes.complete) res.destroy();
      });
    });
    up.on('error', (err: NodeJS.ErrnoException) => {
      connectFailed = !res.headersSent && upstreamFailure(err.code).status === 503;
      release();
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const f = upstreamFailure(err.code);
      this.log.info(
        { ...conn.logFields(), upstream: choice.authority, code: err.code, status: f.status, err: messageOf(err) },
        'upstream failed before response',
      );
      req.unpipe(up);
      req.resume();
      this.respondError(res, f.status, f.text);
    });
    up.on('close', release);
    res.on('close', () => {
      release();
      // The client went away before the exchange completed: stop the upstream request too.
      if (!res.writableFinished) up.destroy();
    });
    req.on('end', () => {
      if (req.rawTrailers.length > 0) up.addTrailers(rawPairs(req.rawTrailers));
    });
    req.pipe(up);
  }

  /**
   * The request as an HTTP/2 stream: to a skein agent (`mesh`: with the mesh-headers.ts
   * fields; the agent talks to the app in `conn.upstreamProtocol`), or to an app that speaks
   * HTTP/2 (h2c, gRPC) on a port the client calls with HTTP/1.1. Host -> :authority, an
   * absolute-form target becomes origin-form; the response comes back as HTTP/1.x, trailers
   * included when the response is chunked.
   */
  private toHttp2(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    conn: RoutedConnection,
    choice: UpstreamChoice,
    open: MeshRequestOpener,
    mesh: boolean,
  ): void {
    let released = false;
    let connectFailed = false;
    const release = (): void => {
      if (released) return;
      released = true;
      choice.done({ status: res.headersSent ? res.statusCode : connectFailed ? 503 : 0, connectFailed });
    };
    res.once('close', release);
    const headers = h2HeadOf(req) as http2.OutgoingHttpHeaders;
    if (mesh) {
      headers[MeshHeader.Destination] = choice.authority;
      headers[MeshHeader.Protocol] = conn.upstreamProtocol;
    }
    const hasBody = req.headers['content-length'] !== undefined ? req.headers['content-length'] !== '0' : req.headers['transfer-encoding'] !== undefined;
    req.pause();
    let opened: Promise<http2.ClientHttp2Stream>;
    try {
      opened = open(headers, { endStream: !hasBody, waitForTrailers: hasBody });
    } catch (err) {
      opened = Promise.reject(err);
    }
    opened.then(
      (up) => {
        up.on('error', () => {});
        if (res.destroyed) {
          if (!up.closed) up.close(http2.constants.NGHTTP2_CANCEL);
          return;
        }
        this.exchangeHttp2(req, res, up, hasBody);
      },
      (err: NodeJS.ErrnoException) => {
        const f = upstreamFailure(err.code);
        connectFailed = f.status === 503;
        release();
        this.log.info({ ...conn.logFields(), upstream: choice.authority, code: err.code, status: f.status, err: messageOf(err) }, 'upstream failed before response');
        req.resume();
        this.respondError(res, f.status, f.text);
      },
    );
  }

  private exchangeHttp2(req: http.IncomingMessage, res: http.ServerResponse, up: http2.ClientHttp2Stream, hasBody: boolean): void {
    if (hasBody) {
      up.once('wantTrailers', () => up.sendTrailers(rawToH2(endToEndRawHeaders(req.rawTrailers))));
      req.pipe(up);
    } else req.resume();
    let trailers: http2.IncomingHttpHeaders | undefined;
    up.once('trailers', (t) => {
      trailers = t;
    });
    // Informational responses the app sent on its own: 103 Early Hints and 102 are what an
    // HTTP/1.1 response can relay (Node writes no other 1xx); 100 was answered here already.
    up.on('headers', (info: http2.IncomingHttpHeaders) => relayInformational(res, Number(info[':status']), info));
    up.once('response', (h) => {
      res.writeHead(Number(h[':status']) || 502, endToEndRawHeaders(h2ToRaw(h)) as unknown as http.OutgoingHttpHeaders);
      up.pipe(res, { end: false });
      up.once('end', () => {
        if (up.rstCode !== undefined && up.rstCode !== http2.constants.NGHTTP2_NO_ERROR) {
          res.destroy();
          return;
        }
        if (trailers) {
          const kept = endToEndRawHeaders(h2ToRaw(trailers));
          if (kept.length > 0) res.addTrailers(rawPairs(kept));
        }
        res.end();
      });
    });
    up.once('close', () => {
      if (res.writableEnded) return;
      if (!res.headersSent) this.respondError(res, 502, 'upstream reset');
      else res.destroy();
    });
    res.once('close', () => {
      if (!up.closed && !res.writableFinished) up.close(http2.constants.NGHTTP2_CANCEL);
    });
  }

  /**
   * Over the pod's cap: 503 naming the code (`skein-code` field and body), nothing sent
   * upstream. The request body, if any, is read and dropped, so the connection stays usable
   * (keep-alive) like after any other answer; no `Connection: close` is needed.
   */
  private refuseOverCap(req: http.IncomingMessage, res: http.ServerResponse, streams: StreamCap): void {
    this.refusals.refuseQuietly(
      OutboundCode.StreamLimit,
      () => ({ ...this.fields(req.socket), protocol: 'http1', open: streams.open, max: streams.max }),
      'pod has its maximum of requests in flight at its outbound listener; request refused',
    );
    req.resume();
    res.writeHead(503, { 'content-type': 'text/plain', 'content-length': STREAM_LIMIT_BODY.length, [CODE_FIELD]: OutboundCode.StreamLimit });
    res.end(STREAM_LIMIT_BODY);
  }

  private respondError(res: http.ServerResponse, status: number, text: string): void {
    if (res.headersSent || res.destroyed) return;
    const body = `${text}\n`;
    res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  }

  /** Whether an `Upgrade` request may leave HTTP: every protocol it offers is allowed, towards an HTTP/1 upstream. */
  private upgradeAllowed(req: http.IncomingMessage): boolean {
    const conn = (req.socket as SocketWithConn)[kConn];
    if (conn?.upstreamProtocol !== 'http1') return false;
    const offered = String(req.headers.upgrade ?? '')
      .split(',')
      .map((p) => (p.split('/')[0] ?? '').trim().toLowerCase())
      .filter((p) => p !== '');
    return offered.length > 0 && offered.every((p) => this.upgradeProtocols.has(p));
  }

  /**
   * An allowed upgrade: the request goes to one endpoint on a connection of its own; a 101
   * turns that into a byte pipe, any other answer is relayed and the client connection closed.
   */
  private onUpgrade(req: http.IncomingMessage, socket: Socket, head: Buffer): void {
    const conn = (socket as SocketWithConn)[kConn];
    const span = conn ? this.traceHook?.start(req.headers, req.rawHeaders) : undefined;
    const choice = conn?.choose(requestInfoOf(req));
    const started = performance.now();
    let recorded = false;
    const record = (status: number): void => {
      if (recorded || !conn) return;
      recorded = true;
      const rec: HttpRequestRecord = {
        protocol: 'http1',
        method: req.method ?? '',
        path: req.url ?? '',
        authority: req.headers.host ?? '',
        status,
        ...(choice ? upstreamFields(choice) : {}),
        durationMs: Math.round(performance.now() - started),
      };
      if (this.traceHook) traceFields(rec, req.headers, span);
      if (span) rec.span = span;
      conn.recordRequest(rec);
    };
    if (!conn || !choice) {
      this.refusals.refuse(OutboundCode.NoHealthyUpstream, { ...this.fields(socket), path: req.url }, 'no healthy upstream');
      record(503);
      socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    // A route's answer without an upstream (no rule matched, redirect, fault abort, overflow).
    const direct = choice.plan?.direct;
    if (direct) {
      choice.done();
      choice.plan?.finish();
      record(direct.status);
      let text = `HTTP/1.1 ${direct.status} ${http.STATUS_CODES[direct.status] ?? ''}\r\n`;
      for (const [k, v] of Object.entries(direct.headers ?? {})) text += `${k}: ${v}\r\n`;
      socket.end(`${text}Content-Length: 0\r\nConnection: close\r\n\r\n`);
      return;
    }
    // A WebSocket becomes a byte pipe to the chosen endpoint: filters, retries and timeouts of a
    // route do not apply to it (as in Envoy, where a timeout on an upgraded stream is disabled).
    socket.once('close', () => choice.plan?.finish());
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      choice.done();
    };
    socket.pause();
    choice.connect().then(
      (upstream) => {
        if (socket.destroyed) {
          release();
          record(0);
          upstream.destroy();
          return;
        }
        this.exchangeUpgrade(req, socket, head, upstream, conn, choice, release, record);
      },
      (err: NodeJS.ErrnoException) => {
        release();
        const f = upstreamFailure(err.code);
        this.log.info({ ...conn.logFields(), upstream: choice.authority, code: err.code, err: messageOf(err) }, 'upgrade: upstream connect failed');
        record(f.status);
        socket.end(closingResponse(f.status, f.text));
      },
    );
  }

  private exchangeUpgrade(
    req: http.IncomingMessage,
    socket: Socket,
    head: Buffer,
    upstream: Duplex,
    conn: RoutedConnection,
    choice: UpstreamChoice,
    release: () => void,
    record: (status: number) => void,
  ): void {
    let answered = false;
    // Sent as the client wrote it: Connection/Upgrade belong to both hops of an upgrade.
    const up = http.request({
      createConnection: () => upstream as Socket,
      method: req.method,
      path: req.url,
      headers: req.rawHeaders as unknown as http.OutgoingHttpHeaders,
      setHost: false,
      host: '127.0.0.1',
      port: 1,
    });
    up.on('upgrade', (res: http.IncomingMessage, upSocket: Duplex, upHead: Buffer) => {
      answered = true;
      if (socket.destroyed) {
        release();
        record(0);
        upSocket.destroy();
        return;
      }
      // 101: the connection now belongs to the upgraded protocol, on both sides.
      let text = `HTTP/1.1 101 ${res.statusMessage || 'Switching Protocols'}\r\n`;
      for (let i = 0; i < res.rawHeaders.length; i += 2) text += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`;
      socket.write(`${text}\r\n`);
      if (upHead.length > 0) socket.write(upHead);
      if (head.length > 0) upSocket.write(head);
      pipeBidirectional(socket, upSocket, {
        onDone: () => {
          release();
          record(101);
        },
      });
      socket.resume();
    });
    up.on('response', (res: http.IncomingMessage) => {
      answered = true;
      // Refused (or ignored) upgrade: an ordinary response, then the connection closes (it left
      // the HTTP server when the upgrade was accepted, so it cannot carry another request).
      let text = `HTTP/1.1 ${res.statusCode ?? 502} ${res.statusMessage ?? ''}\r\n`;
      const raw = endToEndRawHeaders(res.rawHeaders);
      for (let i = 0; i < raw.length; i += 2) {
        if ((raw[i] as string).toLowerCase() === 'content-length') continue; // the close delimits the body
        text += `${raw[i]}: ${raw[i + 1]}\r\n`;
      }
      socket.write(`${text}Connection: close\r\n\r\n`);
      res.pipe(socket);
      res.once('end', () => {
        release();
        record(res.statusCode ?? 502);
        upstream.destroy();
      });
      res.once('close', () => {
        if (!res.complete) socket.destroy();
      });
      // Whatever the client sends meanwhile is dropped: it would otherwise bypass routing.
      socket.resume();
    });
    up.on('error', (err: NodeJS.ErrnoException) => {
      release();
      if (answered) {
        socket.destroy();
        return;
      }
      answered = true;
      const f = upstreamFailure(err.code);
      this.log.info({ ...conn.logFields(), upstream: choice.authority, code: err.code, err: messageOf(err) }, 'upgrade: upstream failed before answering');
      record(f.status);
      socket.end(closingResponse(f.status, f.text));
    });
    socket.once('close', () => {
      if (answered) return;
      // The client left before the upstream answered.
      release();
      record(0);
      up.destroy();
    });
    up.end();
  }
}

/** A complete response on a connection that closes after it. */
function closingResponse(status: number, text: string): string {
  const body = `${text}\n`;
  return `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
}

/** The socket of a client connection held by the forwarder carries its routing context. */
export function routedConnectionOf(socket: Socket): RoutedConnection | undefined {
  return (socket as SocketWithConn)[kConn];
}

/** Relays a 102 or 103 (with its Link fields) to an HTTP/1.1 client before the final response. */
function relayInformational(res: http.ServerResponse, status: number, headers: Record<string, string | string[] | undefined>): void {
  if (res.headersSent || res.destroyed) return;
  if (status === 103) {
    const link = headers.link;
    if (link === undefined) return;
    const hints: Record<string, string | string[]> = { link };
    for (const [k, v] of Object.entries(headers)) {
      if (k.startsWith(':') || k === 'link' || v === undefined) continue;
      hints[k] = v;
    }
    res.writeEarlyHints(hints);
  } else if (status === 102) res.writeProcessing();
}

/** The request as routing sees it. */
function requestInfoOf(req: http.IncomingMessage): RequestInfo {
  return { method: req.method ?? '', path: req.url ?? '', authority: req.headers.host ?? '', headers: req.headers };
}
