/**
 * ManagedExchange: one client request served under a RequestPlan — what routes and traffic
 * policy add to "forward to one endpoint": direct answers (redirects, fault aborts, no route,
 * overflow), injected delay, head edits, a timeout over the whole exchange and per try,
 * retries with a bounded replay buffer, and mirrors whose answers are dropped.
 *
 * Requests without a plan never come here: the forwarders' plain paths stay as lean as they
 * were. Both client sides (HTTP/1 and HTTP/2) reach this through a ClientSide adapter, and
 * every upstream kind (a skein agent's request stream, a pooled h2c session, a pooled
 * HTTP/1.1 keep-alive connection) through an Attempt, so retry and timeout logic exists once.
 *
 * A response is committed (relayed to the client) once one try answers with something that
 * is not retried; before that, a try's answer is read only as far as its head and dropped.
 * gRPC statuses are judged only when they come in the head (trailers-only answers, which is
 * how servers refuse before doing work); a status in the trailers comes after the body has
 * been relayed and cannot be retried.
 */
import type http from 'node:http';
import http2 from 'node:http2';
import type { Readable, Writable } from 'node:stream';
import { messageOf } from '../../errors.js';
import type { Logger } from '../../telemetry/log.js';
import { OutboundCode, TunnelCode } from '../codes.js';
import { endToEndH2Headers, endToEndRawHeaders, h2ToRaw, rawPairs, rawToH2 } from './headers.js';
import { MeshHeader } from './mesh-headers.js';
import { type AttemptResult, type DirectAnswer, type RequestPlan, type UpstreamChoice, upstreamFailure } from './types.js';
import { pooledHttp1Request, type UpstreamPool } from './upstream-pool.js';
import type { HttpVersion } from './types.js';

const { NGHTTP2_CANCEL, NGHTTP2_NO_ERROR, NGHTTP2_FLAG_END_STREAM, NGHTTP2_REFUSED_STREAM } = http2.constants;

/**
 * On answers skein makes itself (timeouts, overflow, faults, no route), the response flag, as
 * Envoy marks its own 503s (x-envoy-overloaded): a client can tell the mesh's answer from the app's.
 */
export const FLAGS_HEADER = 'x-skein-response-flags';

/** Requests with larger bodies are not mirrored (the copy is held in memory until sent). */
export const MIRROR_MAX_BODY = 64 * 1024;

export type H2Head = Record<string, string | string[] | number | undefined>;

/** The client half of one request, as HTTP/1 and HTTP/2 clients both present it. */
export interface ClientSide {
  readonly grpc: boolean;
  /** Request head in HTTP/2 form (:method, :path, :authority, :scheme and end-to-end fields); edits apply to it. */
  readonly head: H2Head;
  /** The client's request body; undefined when the request has none. Paused until read. */
  readonly body: Readable | undefined;
  /** The client's request trailers, once its body ended. */
  trailers(): H2Head | undefined;
  /** Starts the response; returns where the body goes (undefined when endStream). */
  respond(head: H2Head, endStream: boolean): Writable | undefined;
  /** Ends a started response, with trailers when there are any. */
  finish(trailers: H2Head | undefined): void;
  /** A complete answer made here (error, redirect, fault). */
  answer(status: number, grpcStatus: number, text: string, headers?: Record<string, string>): void;
  /** The response broke after it started (or the exchange must stop): reset/close the client side. */
  reset(): void;
  readonly gone: boolean;
  onGone(cb: () => void): void;
}

/** Where a try's request body comes from. */
interface BodySource {
  /** Sends the body to `sink`; `end` runs once all of it was written. */
  attach(sink: Writable, end: () => void): void;
}

/** The client's body, replayable while it stays under the plan's bound. */
class BodyReplay implements BodySource {
  private chunks: Buffer[] = [];
  private size = 0;
  replayable = true;
  private started = false;
  ended: boolean;
  private sink: Writable | undefined;
  private onEnd: (() => void) | undefined;

  constructor(
    private readonly src: Readable | undefined,
    private readonly max: number,
  ) {
    this.ended = src === undefined;
    if (!src) return;
    src.on('data', (chunk: Buffer) => {
      this.started = true;
      if (this.replayable) {
        this.size += chunk.length;
        if (this.size > this.max) {
          this.replayable = false;
          this.chunks = [];
        } else this.chunks.push(chunk);
      }
      const sink = this.sink;
      if (sink && !sink.destroyed && !sink.write(chunk)) {
        src.pause();
        sink.once('drain', () => {
          if (this.sink === sink) src.resume();
        });
      }
    });
    src.once('end', () => {
      this.ended = true;
      this.onEnd?.();
    });
    src.pause();
  }

  /** Whether a new try can still get the whole body. */
  canReplay(): boolean {
    return this.replayable || !this.started;
  }

  /** Sends the body to `sink` (what was read so far, then the rest); `end` runs once it is all there. */
  attach(sink: Writable, end: () => void): void {
    this.sink = sink;
    this.onEnd = end;
    for (const c of this.chunks) sink.write(c);
    if (this.ended) end();
    else this.src?.resume();
  }

  detach(): void {
    this.sink = undefined;
    this.onEnd = undefined;
    this.src?.pause();
  }

  /** The whole body, once ended and kept (mirrors). */
  copy(): Buffer[] | undefined {
    return this.ended && this.replayable ? this.chunks : undefined;
  }
}

/** One try towards one endpoint. */
interface Attempt {
  /** The upstream's response head (:status included) and whether it ended the stream. */
  onHead(cb: (head: H2Head, endStream: boolean) => void): void;
  onFail(cb: (err: NodeJS.ErrnoException, reset: boolean) => void): void;
  /** The response body once the head arrived. */
  body(): Readable;
  trailers(): H2Head | undefined;
  /** Whether the response body ended cleanly (not reset). */
  clean(): boolean;
  cancel(): void;
}

function isConnectFailure(code: string | undefined): boolean {
  return code === OutboundCode.UpstreamConnectFailed || code === TunnelCode.AppUnreachable || code === TunnelCode.ConnectFailed || code === 'ECONNREFUSED';
}

/** An attempt over an HTTP/2 request stream (a skein agent, or a pooled h2c session). */
function h2Attempt(opened: Promise<http2.ClientHttp2Stream>, body: BodySource, trailers: () => H2Head | undefined, hasBody: boolean): Attempt {
  let headCb: ((h: H2Head, e: boolean) => void) | undefined;
  let failCb: ((e: NodeJS.ErrnoException, reset: boolean) => void) | undefined;
  let stream: http2.ClientHttp2Stream | undefined;
  let resTrailers: H2Head | undefined;
  let cancelled = false;
  let answered = false;
  const fail = (err: NodeJS.ErrnoException, reset: boolean): void => {
    if (answered || cancelled) return;
    answered = true;
    failCb?.(err, reset);
  };
  opened.then(
    (up) => {
      stream = up;
      up.on('error', () => {});
      if (cancelled) {
        up.close(NGHTTP2_CANCEL);
        return;
      }
      if (hasBody) {
        up.once('wantTrailers', () => up.sendTrailers(endToEndH2Headers((trailers() ?? {}) as http2.IncomingHttpHeaders)));
        body.attach(up, () => {
          if (!up.destroyed) up.end();
        });
      }
      up.once('trailers', (t) => {
        resTrailers = t;
      });
      up.once('response', (h, flags) => {
        if (answered || cancelled) return;
        answered = true;
        headCb?.(h, (flags & NGHTTP2_FLAG_END_STREAM) !== 0);
      });
      up.once('close', () => {
        const err = Object.assign(new Error(`upstream stream closed (${up.rstCode ?? 0})`), { code: 'ERR_STREAM_RESET', rstCode: up.rstCode });
        fail(err, true);
      });
    },
    (err: NodeJS.ErrnoException) => fail(err, false),
  );
  return {
    onHead: (cb) => {
      headCb = cb;
    },
    onFail: (cb) => {
      failCb = cb;
    },
    body: () => stream as http2.ClientHttp2Stream,
    trailers: () => resTrailers,
    clean: () => stream !== undefined && (stream.rstCode === undefined || stream.rstCode === NGHTTP2_NO_ERROR),
    cancel: () => {
      cancelled = true;
      if (stream && !stream.closed) stream.close(NGHTTP2_CANCEL);
    },
  };
}

/** An attempt over the pooled HTTP/1.1 keep-alive upstream. */
function h1Attempt(pool: UpstreamPool, choice: UpstreamChoice, head: H2Head, body: BodySource, trailers: () => H2Head | undefined, hasBody: boolean): Attempt {
  let headCb: ((h: H2Head, e: boolean) => void) | undefined;
  let failCb: ((e: NodeJS.ErrnoException, reset: boolean) => void) | undefined;
  let res: http.IncomingMessage | undefined;
  let answered = false;
  let cancelled = false;
  const up = pooledHttp1Request(pool, choice, head, hasBody);
  up.on('response', (r) => {
    res = r;
    if (answered || cancelled) {
      r.destroy();
      return;
    }
    answered = true;
    headCb?.(rawToH2(endToEndRawHeaders(r.rawHeaders), { ':status': r.statusCode ?? 502 }), false);
  });
  up.on('error', (err: NodeJS.ErrnoException) => {
    if (answered || cancelled) return;
    answered = true;
    failCb?.(err, err.code === 'ECONNRESET');
  });
  if (hasBody) {
    body.attach(up, () => {
      const t = trailers();
      if (t) up.addTrailers(rawPairs(endToEndRawHeaders(h2ToRaw(t))));
      up.end();
    });
  } else up.end();
  return {
    onHead: (cb) => {
      headCb = cb;
    },
    onFail: (cb) => {
      failCb = cb;
    },
    body: () => res as http.IncomingMessage,
    trailers: () => (res && res.rawTrailers.length > 0 ? rawToH2(endToEndRawHeaders(res.rawTrailers)) : undefined),
    clean: () => res?.complete === true,
    cancel: () => {
      cancelled = true;
      up.destroy();
    },
  };
}

export class ManagedExchange {
  constructor(
    private readonly pool: UpstreamPool,
    private readonly log: Logger,
  ) {}

  /**
   * Serves one request under `first.plan`. `upstreamProtocol` is what the app behind the
   * endpoints speaks; `logFields` names the connection in logs.
   */
  run(client: ClientSide, first: UpstreamChoice, upstreamProtocol: HttpVersion, logFields: Record<string, unknown>): void {
    const plan = first.plan as RequestPlan;
    const mark = (flag: string): void => {
      if (flag && !plan.flags.includes(flag)) plan.flags.push(flag);
    };
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      plan.finish();
    };
    client.onGone(finish);
    if (plan.direct) {
      first.done();
      plan.answered();
      this.answerDirect(client, plan.direct);
      mark(plan.direct.flag);
      finish();
      return;
    }
    plan.editRequest?.(client.head);
    // Kept for retries (their bound) and for mirrors (which are sent once the body is whole).
    const maxReplay = Math.max(plan.retry && plan.retry.attempts > 0 ? plan.retry.maxReplayBytes : 0, plan.mirrors?.length ? MIRROR_MAX_BODY : 0);
    const body = new BodyReplay(client.body, maxReplay);
    const hasBody = client.body !== undefined;
    let current: Attempt | undefined;
    let currentChoice: UpstreamChoice | undefined;
    let committed = false;
    let overallTimer: NodeJS.Timeout | undefined;
    let tryTimer: NodeJS.Timeout | undefined;
    const clearTimers = (): void => {
      if (overallTimer) clearTimeout(overallTimer);
      if (tryTimer) clearTimeout(tryTimer);
    };
    client.onGone(() => {
      clearTimers();
      if (!committed) {
        mark('DC');
        current?.cancel();
        currentChoice?.done();
        plan.answered();
      }
    });
    const fail = (status: number, grpcStatus: number, text: string, flag: string): void => {
      if (committed || client.gone) return;
      committed = true;
      clearTimers();
      plan.answered();
      mark(flag);
      client.answer(status, grpcStatus, text, flag ? { [FLAGS_HEADER]: flag } : undefined);
      finish();
    };
    if (plan.timeoutMs !== undefined && plan.timeoutMs > 0) {
      overallTimer = setTimeout(() => {
        if (committed) {
          // The answer was streaming when time ran out: the exchange breaks, as Envoy does.
          mark('UT');
          current?.cancel();
          client.reset();
          return;
        }
        current?.cancel();
        currentChoice?.done({ status: 504 });
        currentChoice = undefined;
        fail(504, 4, 'upstream request timeout', 'UT');
      }, plan.timeoutMs);
    }

    const mirror = (): void => {
      for (const m of plan.mirrors ?? []) this.mirror(m, client.head, body, client.trailers, upstreamProtocol);
    };

    // A stream refused unprocessed (REFUSED_STREAM: the peer's, or our own session's once a
    // GOAWAY arrived before its HEADERS left) is sent again once, whatever the retry policy:
    // RFC 9113 §8.7 says it was not processed, and grpc-js and Envoy do the same. A draining
    // agent's GOAWAY (upgrade) is the usual cause.
    let refusedResent = false;
    const attempt = (choice: UpstreamChoice, n: number): void => {
      if (committed || client.gone) {
        choice.done();
        return;
      }
      plan.tries = n + 1;
      currentChoice = choice;
      const a = this.open(choice, { ...client.head }, body, client.trailers, hasBody, upstreamProtocol);
      current = a;
      if (plan.tryTimeoutMs !== undefined && plan.tryTimeoutMs > 0) {
        if (tryTimer) clearTimeout(tryTimer);
        tryTimer = setTimeout(() => {
          if (current !== a || committed) return;
          a.cancel();
          body.detach();
          ended({ status: 0 }, false, 'timeout');
        }, plan.tryTimeoutMs);
      }
      const ended = (r: AttemptResult, reset: boolean, why: 'timeout' | 'failed' | 'answered', head?: H2Head, endStream?: boolean, err?: NodeJS.ErrnoException): void => {
        if (tryTimer) clearTimeout(tryTimer);
        if (why === 'failed' && (err as { rstCode?: number } | undefined)?.rstCode === NGHTTP2_REFUSED_STREAM && !refusedResent && body.canReplay() && !client.gone) {
          refusedResent = true;
          choice.done(r);
          body.detach();
          const next = plan.next();
          if (next) {
            attempt(next, n);
            return;
          }
        }
        const retry = plan.retry;
        const again =
          retry !== undefined &&
          n < retry.attempts &&
          body.canReplay() &&
          !client.gone &&
          (why === 'timeout' || retry.retriable(r, reset)) &&
          retry.acquire();
        if (why !== 'answered' || again) {
          choice.done(r);
          if (why === 'answered') a.cancel();
        }
        if (again) {
          body.detach();
          const next = plan.next();
          if (!next) {
            retry.release();
            fail(503, 14, 'no healthy upstream', 'UH');
            return;
          }
          const wait = retry.backoffMs(n + 1);
          const go = (): void => {
            retry.release();
            attempt(next, n + 1);
          };
          if (wait > 0) setTimeout(go, wait);
          else go();
          return;
        }
        if (why === 'answered' && head) {
          this.commit(client, a, choice, head, endStream === true, plan, r);
          committed = true;
          plan.answered();
          if (n > 0 && r.status >= 500) mark('URX');
          const onEnd = (): void => {
            clearTimers();
            finish();
          };
          if (endStream) onEnd();
          else a.body().once('close', onEnd);
          return;
        }
        if (n > 0) mark('URX');
        if (why === 'timeout') {
          fail(504, 4, 'upstream request timeout', 'UT');
          return;
        }
        const f = upstreamFailure(err?.code);
        this.log.info({ ...logFields, upstream: choice.authority, code: err?.code, status: f.status, err: err ? messageOf(err) : undefined }, 'upstream failed');
        fail(f.status, f.grpcStatus, f.text, r.connectFailed ? 'UF' : reset ? 'UR' : '');
      };
      a.onHead((h, endStream) => {
        const status = Number(h[':status']) || 502;
        const gs = h['grpc-status'];
        const r: AttemptResult = gs !== undefined ? { status, grpcStatus: Number(gs) } : { status };
        ended(r, false, 'answered', h, endStream);
      });
      a.onFail((err, reset) => {
        const connectFailed = isConnectFailure(err.code);
        const f = upstreamFailure(err.code);
        ended(connectFailed ? { status: f.status, connectFailed: true } : { status: 0 }, reset && !connectFailed, 'failed', undefined, undefined, err);
      });
      if (n === 0 && plan.mirrors && plan.mirrors.length > 0) {
        // Mirrors go once the body is complete (they need all of it), never ahead of the real try.
        if (body.ended) setImmediate(mirror);
        else client.body?.once('end', () => setImmediate(mirror));
      }
    };

    const start = (): void => attempt(first, 0);
    if (plan.delayMs !== undefined && plan.delayMs > 0) {
      mark('DI');
      const t = setTimeout(start, plan.delayMs);
      client.onGone(() => clearTimeout(t));
    } else start();
  }

  /** Relays a try's answer to the client: head (edited), body, trailers, resets. */
  private commit(client: ClientSide, a: Attempt, choice: UpstreamChoice, head: H2Head, endStream: boolean, plan: RequestPlan, r: AttemptResult): void {
    const out: H2Head = endToEndH2Headers(head as http2.IncomingHttpHeaders);
    plan.editResponse?.(out);
    const sink = client.respond(out, endStream);
    if (endStream || !sink) {
      choice.done(r);
      return;
    }
    const up = a.body();
    client.onGone(() => {
      if (!up.readableEnded) a.cancel();
    });
    up.pipe(sink, { end: false });
    up.once('end', () => {
      if (!a.clean()) {
        client.reset();
        return;
      }
      client.finish(a.trailers());
    });
    up.once('close', () => {
      choice.done(r);
      if (!up.readableEnded) client.reset();
    });
  }

  /** One try to `choice`, in the way its upstream is reached. */
  private open(choice: UpstreamChoice, head: H2Head, body: BodySource, trailers: () => H2Head | undefined, hasBody: boolean, upstreamProtocol: HttpVersion): Attempt {
    const opts = { endStream: !hasBody, waitForTrailers: hasBody };
    if (choice.request) {
      const request = choice.request;
      head[MeshHeader.Destination] = choice.authority;
      head[MeshHeader.Protocol] = upstreamProtocol;
      return h2Attempt(openSafely(() => request(head as http2.OutgoingHttpHeaders, opts)), body, trailers, hasBody);
    }
    if (upstreamProtocol === 'http2') {
      return h2Attempt(openSafely(() => this.pool.h2SessionFor(choice).then((s) => s.request(head as http2.OutgoingHttpHeaders, opts))), body, trailers, hasBody);
    }
    return h1Attempt(this.pool, choice, head, body, trailers, hasBody);
  }

  private answerDirect(client: ClientSide, d: DirectAnswer): void {
    client.answer(d.status, d.grpcStatus, d.text, d.flag ? { ...d.headers, [FLAGS_HEADER]: d.flag } : d.headers);
  }

  /** A copy of the request to `choice`; its answer is read and dropped, its failures ignored. */
  private mirror(choice: UpstreamChoice, head: H2Head, body: BodyReplay, trailers: () => H2Head | undefined, upstreamProtocol: HttpVersion): void {
    const chunks = body.copy();
    if (!chunks) {
      choice.done();
      return; // a body too large to keep (or a broken one) is not mirrored
    }
    const h: H2Head = { ...head };
    const hasBody = chunks.length > 0;
    const source: BodySource = {
      attach: (sink, end) => {
        for (const c of chunks) sink.write(c);
        end();
      },
    };
    const a = this.open(choice, h, source, trailers, hasBody, upstreamProtocol);
    a.onHead((head2, endStream) => {
      choice.done({ status: Number(head2[':status']) || 0 });
      if (!endStream) a.body().resume();
    });
    a.onFail(() => choice.done({ status: 0 }));
  }
}

function openSafely(open: () => Promise<http2.ClientHttp2Stream>): Promise<http2.ClientHttp2Stream> {
  try {
    return open();
  } catch (err) {
    return Promise.reject(err);
  }
}
