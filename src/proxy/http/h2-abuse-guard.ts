/**
 * H2AbuseGuard: the one place every HTTP/2 server of skein (the outbound :15001 forwarder for
 * apps speaking h2c/gRPC, the :15008 tunnel server) judges a client session abusive and
 * refuses it early.
 *
 * The judgment: streams the peer resets before they were answered (the "rapid reset" pattern,
 * CVE-2023-44487), counted per session in a fixed window. Counting happens on Node's
 * `http2.server.stream.close` diagnostics channel, published synchronously while nghttp2
 * parses the RST_STREAM, so the budget trips in the middle of a flood rather than after the
 * whole socket read was turned into streams (counting on 'close', a tick later, let every one
 * of 20,000 HEADERS+RST_STREAM pairs start routing work first). Not the stream's 'aborted'
 * event: a listener for it can only be added on 'stream', which Node emits on the next tick,
 * and while Node parses bytes already buffered when the session starts (what protocol
 * sniffing read: up to 64 KiB, ~1,000 pairs) no tick runs, so a whole buffer of pairs was
 * reset unheard — nghttp2's own limiter then closed the session at 1,000 resets with
 * GOAWAY(INTERNAL_ERROR), counted as a protocol error (the lab flood e2e).
 *
 * Once judged abusive, a session is refused at once: every stream it still opens is refused
 * without work (`admit` answers false, RST_STREAM(REFUSED_STREAM)), and ONE GOAWAY
 * (ENHANCE_YOUR_CALM) names the highest stream this server admitted. Submitting it also keeps
 * nghttp2's own reset limiter from queueing a GOAWAY of its own with a higher id. Node only
 * terminates a session after the read buffer it is parsing, so `session.destroy()` is called
 * once our GOAWAY has left nghttp2's queue: its terminal GOAWAY is then capped by nghttp2 at
 * the id already sent. (goaway() then a blind destroy() 50 ms later, as before, sent a
 * second GOAWAY with nghttp2's last processed stream id, 401 -> 1115: RFC 9113 §6.8 forbids a
 * GOAWAY's last-stream-id to increase.) If the peer does not read, so the GOAWAY cannot
 * leave, the connection is reset instead.
 *
 * Streams the server itself resets (upstream failures relayed, refusals) must be closed through
 * `closeStream` so they never count against the peer.
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import http2 from 'node:http2';
import { noop } from '../noop.js';

const { NGHTTP2_ENHANCE_YOUR_CALM, NGHTTP2_REFUSED_STREAM } = http2.constants;


/**
 * `maxSessionRejectedStreams` for every server using the guard. Node rejects streams beyond
 * the concurrency limit in C++ (RST_STREAM, no JS work) and, past this many, fails the session
 * with its own GOAWAY carrying nghttp2's last processed stream id. During a flood the streams
 * refused after the judgment linger until the read buffer is parsed, so Node's default (100)
 * fired in that same buffer and its GOAWAY followed ours with a higher id. The guard bounds
 * the flood instead; this only has to stay above what one read buffer can hold.
 */
export const H2_MAX_REJECTED_STREAMS = 10_000;

export interface H2AbuseGuardOptions {
  /** Streams the peer may reset before an answer, per window, before the session is refused. */
  maxResetsPerWindow: number;
  /** Window of that budget (ms). */
  windowMs: number;
  /**
   * Called once per session judged abusive, before it is terminated: log and count it there
   * with the server's own refusal code.
   */
  onAbusive: (session: http2.ServerHttp2Session, judgment: AbuseJudgment) => void;
}

export interface AbuseJudgment {
  /** Streams reset by the peer in the current window when the budget tripped. */
  resets: number;
  windowMs: number;
  /** Highest stream id this server had seen on the session. */
  lastStreamId: number;
}

interface SessionAbuseState {
  windowStart: number;
  resets: number;
  lastStreamId: number;
  abusive: boolean;
}

const kLocalReset = Symbol('skein.h2LocalReset');
type MarkedStream = http2.ServerHttp2Stream & { [kLocalReset]?: true };

/**
 * Reset a server stream from this side (an upstream failure relayed, a refusal): marked so no
 * guard ever counts it against the peer. Needs no guard instance, so code that only relays
 * streams (h2-relay.ts) uses it directly.
 */
export function closeStreamLocally(stream: http2.ServerHttp2Stream, code: number): void {
  (stream as MarkedStream)[kLocalReset] = true;
  stream.close(code);
}

/** Which guard watches a session: one channel subscriber for every guard of the process. */
const guardOf = new WeakMap<http2.ServerHttp2Session, H2AbuseGuard>();
let subscribed = false;

/**
 * `http2.server.stream.close`, published by Node in closeStream() right after it marked a
 * stream aborted (closed while its response was still open) and before it is destroyed, so
 * `stream.session` is still there. Every server stream of the process passes here once.
 */
function onServerStreamClose(message: unknown): void {
  const stream = (message as { stream?: MarkedStream }).stream;
  if (!stream?.aborted) return;
  const session = stream.session as http2.ServerHttp2Session | undefined;
  const guard = session ? guardOf.get(session) : undefined;
  if (session && guard) guard.peerReset(session, stream);
}

export class H2AbuseGuard {
  private readonly states = new WeakMap<http2.ServerHttp2Session, SessionAbuseState>();

  constructor(private readonly opts: H2AbuseGuardOptions) {
    if (!subscribed) {
      diagnosticsChannel.subscribe('http2.server.stream.close', onServerStreamClose);
      subscribed = true;
    }
  }

  /**
   * Call first in the server's 'session' handler: from then on the session's streams that the
   * peer resets before their answer count against its budget. Entries are weak: a session that
   * ends takes its state with it.
   */
  watch(session: http2.ServerHttp2Session): void {
    this.stateOf(session);
    guardOf.set(session, this);
  }

  /** A stream of a watched session closed by the peer before its answer (the channel above). */
  peerReset(session: http2.ServerHttp2Session, stream: MarkedStream): void {
    const state = this.states.get(session);
    if (!state) return;
    // Named in the GOAWAY: nghttp2 processed it (no 'stream' event reached admit() for the
    // streams of an already-buffered read).
    const id = stream.id ?? 0;
    if (!state.abusive && id > state.lastStreamId) state.lastStreamId = id;
    this.onAborted(session, state, stream);
  }

  /**
   * Call first in the server's 'stream' handler. False: the session was judged abusive and
   * this stream has been refused (REFUSED_STREAM), or it is gone already; do no work for it.
   * Either way the stream has an 'error' listener from here on.
   */
  admit(stream: http2.ServerHttp2Stream): boolean {
    // First, whatever follows: Node emits 'stream' on the next tick after the HEADERS, so a
    // stream may already be destroyed here — e.g. closed by nghttp2 with REFUSED_STREAM when
    // our GOAWAY left in the same read (ids above its last-stream-id) — and its 'error' is
    // queued. Without a listener that error was an uncaught exception in the agent (found by
    // the lab flood e2e: the next flood then got GOAWAY(INTERNAL_ERROR) with a higher id).
    // Callers report streams through 'close' / rstCode.
    stream.on('error', noop);
    const session = stream.session as http2.ServerHttp2Session | undefined;
    if (!session || stream.destroyed) return false;
    const state = this.stateOf(session);
    if (state.abusive || session.destroyed) {
      this.closeStream(stream, NGHTTP2_REFUSED_STREAM);
      return false;
    }
    const id = stream.id ?? 0;
    if (id > state.lastStreamId) state.lastStreamId = id;
    keepTrailers(stream);
    return true;
  }

  /** Reset a stream from this side (not the peer's doing: never counted against it). */
  closeStream(stream: http2.ServerHttp2Stream, code: number): void {
    closeStreamLocally(stream, code);
  }

  private stateOf(session: http2.ServerHttp2Session): SessionAbuseState {
    let state = this.states.get(session);
    if (!state) {
      state = { windowStart: performance.now(), resets: 0, lastStreamId: 0, abusive: false };
      this.states.set(session, state);
    }
    return state;
  }

  private onAborted(session: http2.ServerHttp2Session, state: SessionAbuseState, stream: MarkedStream): void {
    // Ours, answered already, or the whole connection going away: not a peer's rapid reset.
    if (stream[kLocalReset] || stream.headersSent || state.abusive || session.destroyed || session.closed) return;
    if ((session.socket as { destroyed?: boolean } | undefined)?.destroyed) return;
    const now = performance.now();
    if (now - state.windowStart > this.opts.windowMs) {
      state.windowStart = now;
      state.resets = 0;
    }
    if (++state.resets <= this.opts.maxResetsPerWindow) return;
    state.abusive = true;
    try {
      this.opts.onAbusive(session, { resets: state.resets, windowMs: this.opts.windowMs, lastStreamId: state.lastStreamId });
    } finally {
      session.goaway(NGHTTP2_ENHANCE_YOUR_CALM, state.lastStreamId);
      setImmediate(() => this.terminate(session, 0));
    }
  }

  /** Destroy the session once its GOAWAY left nghttp2 (see the header comment); bounded. */
  private terminate(session: http2.ServerHttp2Session, tries: number): void {
    if (session.destroyed) return;
    let queued = 0;
    try {
      queued = session.state.outboundQueueSize ?? 0;
    } catch {
      queued = 0;
    }
    if (queued === 0) {
      session.destroy(null as unknown as Error, NGHTTP2_ENHANCE_YOUR_CALM);
      return;
    }
    if (tries < FLUSH_TRIES) {
      setTimeout(() => this.terminate(session, tries + 1), FLUSH_POLL_MS).unref();
      return;
    }
    // The peer does not read: no frame can reach it any more; cut the connection.
    (session.socket as unknown as { resetAndDestroy?: () => void }).resetAndDestroy?.();
    session.destroy(null as unknown as Error, NGHTTP2_ENHANCE_YOUR_CALM);
  }
}

/**
 * How long (FLUSH_TRIES x FLUSH_POLL_MS) the GOAWAY of an abusive session may take to leave.
 * The session does no work meanwhile (every stream refused), so waiting costs little; cutting
 * it short does: the reset makes the peer's kernel drop the GOAWAY it had not read yet. 100 ms
 * was too short on a loaded node (the lab flood e2e, 2 busy cores: one flood in three ended in
 * a bare reset).
 */
const FLUSH_TRIES = 100;
const FLUSH_POLL_MS = 10;

const KEPT_TRAILERS = Symbol('skein.h2.keptTrailers');
type WithKeptTrailers = { [KEPT_TRAILERS]?: http2.IncomingHttpHeaders };

/**
 * Keeps a stream's request trailers from its first moment. Streams admitted here are routed a
 * turn of the event loop later, and 'trailers' is an event, not buffered like the body: a
 * request whose HEADERS, DATA and trailers came in one read had its trailers emitted before
 * anyone listened, and they were lost across nodes (found by the l7-semantics e2e).
 */
export function keepTrailers(stream: http2.ServerHttp2Stream): void {
  stream.once('trailers', (t: http2.IncomingHttpHeaders) => {
    (stream as WithKeptTrailers)[KEPT_TRAILERS] = t;
  });
}

/** The trailers keepTrailers saw (undefined: none yet, or the stream was not admitted by a guard). */
export function keptTrailers(stream: http2.ServerHttp2Stream): http2.IncomingHttpHeaders | undefined {
  return (stream as WithKeptTrailers)[KEPT_TRAILERS];
}
