/**
 * L4 pipe: copies bytes both ways between two Duplexes (client socket, HTTP/2 CONNECT stream,
 * app socket) the way a TCP proxy should:
 *
 * - backpressure: a side that cannot take more pauses the other (no unbounded buffering);
 * - half-close: an `end` (FIN / END_STREAM) on one side ends only the other side's writable
 *   half, and the opposite direction keeps flowing until it ends too;
 * - resets: a side that dies without both halves finishing (ECONNRESET, RST_STREAM, destroy)
 *   aborts the other side with a reset where the transport has one — TCP RST via
 *   `resetAndDestroy()`, RST_STREAM(CONNECT_ERROR) on an HTTP/2 stream (RFC 9113 §8.5);
 * - byte counters and an optional idle timeout.
 *
 * Memory: a handful of closures and two counters per pipe, no buffers of its own — an idle
 * connection costs what its two streams cost and little more.
 */
import { constants as h2constants } from 'node:http2';
import type { Duplex } from 'node:stream';
import { noop } from '../noop.js';

export type PipeEndReason = 'complete' | 'reset' | 'idle-timeout' | 'aborted';

export interface PipeResult {
  reason: PipeEndReason;
  /** Bytes read from `a` and written to `b`. */
  bytesAtoB: number;
  /** Bytes read from `b` and written to `a`. */
  bytesBtoA: number;
  /** Which side ended the pipe abnormally, when reason is 'reset'. */
  resetBy?: 'a' | 'b';
  /** The error that side reported, when it reported one. */
  error?: Error;
  durationMs: number;
}

export interface PipeOptions {
  /** Close both sides after this long with no byte either way; 0 or absent = never. */
  idleTimeoutMs?: number;
  /** Called once when both sides are closed. */
  onDone?: (result: PipeResult) => void;
}

/**
 * Every pipe still open in this process. An agent handing over to its successor lets L4
 * connections run on until its drain timeout, then ends them all with a FIN (never a reset):
 * they are bytes of apps' own protocols, which only the apps can close at a clean point.
 */
const livePipes = new Set<{ end(): void }>();

/** Ends every open pipe cleanly (FIN / END_STREAM both ways); returns how many there were. */
export function endLivePipes(): number {
  const n = livePipes.size;
  for (const p of [...livePipes]) p.end();
  return n;
}

/** Pipes open now (the drain waits for them). */
export function livePipeCount(): number {
  return livePipes.size;
}

export interface PipeHandle {
  /** Live counters (telemetry may read them before the pipe ends). */
  readonly bytesAtoB: number;
  readonly bytesBtoA: number;
  /** Tear the pipe down now, resetting both sides. */
  abort(): void;
}

/** An HTTP/2 stream, told apart by duck typing: node:http2 does not export its stream classes. */
interface Http2StreamLike extends Duplex {
  rstCode?: number;
  aborted?: boolean;
  close(code?: number): void;
  session?: unknown;
}

function isHttp2Stream(s: Duplex): s is Http2StreamLike {
  const x = s as Partial<Http2StreamLike>;
  return typeof x.close === 'function' && 'rstCode' in x && 'session' in x;
}

/**
 * Abort one side "with a reset": the peer of that transport learns the connection did not end
 * cleanly, as it would have if there were no proxy in between.
 */
export function resetStream(s: Duplex): void {
  if (s.destroyed) return;
  if (isHttp2Stream(s)) {
    s.close(h2constants.NGHTTP2_CONNECT_ERROR);
    return;
  }
  const sock = s as Duplex & { resetAndDestroy?: () => void };
  if (typeof sock.resetAndDestroy === 'function') {
    try {
      // Throws for sockets whose handle is not TCP (TLS, pipes); a plain destroy then.
      sock.resetAndDestroy();
      return;
    } catch {
      // fall through
    }
  }
  // Anything else (in-memory pairs, TLS sockets): destroy with an ECONNRESET-coded error, which
  // is what a reset looks like to a reader, and what makes duplexPair() pass it to its twin
  // (a plain destroy() does not).
  if (s.listenerCount('error') === 0) s.on('error', noop);
  s.destroy(Object.assign(new Error('connection reset by the other side of the proxy'), { code: 'ECONNRESET' }));
}

/** True when `s` closed after both its halves finished (FIN both ways / END_STREAM both ways). */
function closedCleanly(s: Duplex): boolean {
  if (s.errored) return false;
  if (isHttp2Stream(s) && (s.aborted || (s.rstCode !== undefined && s.rstCode !== h2constants.NGHTTP2_NO_ERROR))) return false;
  return s.readableEnded && s.writableFinished;
}

/**
 * Start piping `a` <-> `b`. Both sides must allow half-open (net.Socket created with
 * `allowHalfOpen: true`, or HTTP/2 streams, which always do); the flag is set here as well,
 * since Node reads it only when the readable side ends.
 */
export function pipeBidirectional(a: Duplex, b: Duplex, opts: PipeOptions = {}): PipeHandle {
  const started = performance.now();
  let bytesAtoB = 0;
  let bytesBtoA = 0;
  let finished = false;
  let reason: PipeEndReason = 'complete';
  let resetBy: 'a' | 'b' | undefined;
  let firstError: Error | undefined;
  let closedCount = 0;
  let idleTimer: NodeJS.Timeout | undefined;

  a.allowHalfOpen = true;
  b.allowHalfOpen = true;

  const touch = (): void => {
    idleTimer?.refresh();
  };

  const forward = (src: Duplex, dst: Duplex, count: (n: number) => void): void => {
    src.on('data', (chunk: Buffer) => {
      count(chunk.length);
      touch();
      if (dst.destroyed || dst.writableEnded) return;
      if (!dst.write(chunk)) src.pause();
    });
    dst.on('drain', () => {
      if (!src.destroyed) src.resume();
    });
    const onEnd = (): void => {
      // An HTTP/2 stream ends its readable side on RST_STREAM too ('aborted' comes first);
      // that is a reset, handled on 'close', not a FIN to pass on.
      if (isHttp2Stream(src) && src.aborted) return;
      // Half-close: only this direction is done.
      if (!dst.destroyed && !dst.writableEnded) dst.end();
    };
    // A side may arrive already ended (a client that connected and sent FIN with no byte
    // while the upstream was being opened): its 'end' has fired and will not fire again.
    if (src.readableEnded) process.nextTick(onEnd);
    else src.on('end', onEnd);
  };

  forward(a, b, (n) => {
    bytesAtoB += n;
  });
  forward(b, a, (n) => {
    bytesBtoA += n;
  });

  const onError = (side: 'a' | 'b') => (err: Error) => {
    firstError ??= err;
    resetBy ??= side;
  };
  a.on('error', onError('a'));
  b.on('error', onError('b'));

  const live = {
    end(): void {
      // Half-close both ways, as if both peers had sent FIN: data still arriving is read and
      // dropped (a reset would follow unread data), and each side closes once its peer ends.
      for (const s of [a, b]) if (!s.destroyed && !s.writableEnded) s.end();
    },
  };
  livePipes.add(live);

  const done = (): void => {
    if (finished) return;
    finished = true;
    livePipes.delete(live);
    if (idleTimer) clearTimeout(idleTimer);
    const result: PipeResult = { reason, bytesAtoB, bytesBtoA, durationMs: Math.round(performance.now() - started) };
    if (reason === 'reset' && resetBy) result.resetBy = resetBy;
    if (firstError) result.error = firstError;
    opts.onDone?.(result);
  };

  const seen = { a: false, b: false };
  const onClose = (side: 'a' | 'b', self: Duplex, other: Duplex) => () => {
    if (seen[side]) return;
    seen[side] = true;
    closedCount++;
    if (!closedCleanly(self) && reason === 'complete') {
      reason = 'reset';
      resetBy = side;
    }
    if (!other.destroyed) {
      if (reason === 'complete') {
        // This side finished both halves; the other has already been ended by `forward` and
        // closes on its own once its peer ends. Nothing to do.
      } else {
        resetStream(other);
      }
    }
    if (closedCount === 2) done();
  };
  const closeA = onClose('a', a, b);
  const closeB = onClose('b', b, a);
  a.once('close', closeA);
  b.once('close', closeB);
  // A side may already be closed when handed over (the peer vanished in between): its
  // 'close' has fired and will not fire again.
  if (a.closed) process.nextTick(closeA);
  if (b.closed) process.nextTick(closeB);

  if (opts.idleTimeoutMs && opts.idleTimeoutMs > 0) {
    idleTimer = setTimeout(() => {
      if (finished) return;
      reason = 'idle-timeout';
      resetStream(a);
      resetStream(b);
    }, opts.idleTimeoutMs);
    idleTimer.unref();
  }

  return {
    get bytesAtoB() {
      return bytesAtoB;
    },
    get bytesBtoA() {
      return bytesBtoA;
    },
    abort() {
      if (finished) return;
      if (reason === 'complete') reason = 'aborted';
      resetStream(a);
      resetStream(b);
    },
  };
}
