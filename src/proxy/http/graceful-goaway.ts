/**
 * Closing an HTTP/2 session without losing a request (RFC 9113 §6.8): first a GOAWAY with the
 * largest stream id (a shutdown notice: "open no new streams"), then, once the peer has had
 * time to see it, the real GOAWAY with the last stream id processed, and the session closes
 * when its open streams end. Every stream the peer opened before it saw the notice is served.
 * What remains is a stream the peer queued at the very instant the notice arrived: its own
 * HTTP/2 stack refuses it unprocessed (REFUSED_STREAM), which a client sends again (RFC 9113
 * §8.7; skein's managed exchange does). A single GOAWAY refuses every stream opened while it
 * was on the wire. Last-stream-id only goes down.
 */
import { constants, type Http2Session } from 'node:http2';

/** The largest stream id: the shutdown notice's last-stream-id. */
const MAX_STREAM_ID = 2 ** 31 - 1;

/** Default wait between the notice and the real GOAWAY: a generous round trip inside a node. */
export const GOAWAY_NOTICE_MS = 200;

export function gracefulGoaway(session: Http2Session, noticeMs = GOAWAY_NOTICE_MS): void {
  if (session.closed || session.destroyed) return;
  try {
    session.goaway(constants.NGHTTP2_NO_ERROR, MAX_STREAM_ID);
  } catch {
    // the session ended in between
  }
  const t = setTimeout(() => {
    if (!session.closed && !session.destroyed) session.close();
  }, noticeMs);
  t.unref();
}
