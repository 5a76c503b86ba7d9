/**
 * A cap on the requests (HTTP/1) and streams (HTTP/2) one pod listener has in flight at once:
 * the pod's outbound 15001 (`skein agent --max-outbound-streams`) and its tunnel port 15008
 * (`--max-tunnel-streams`). connection-cap.ts bounds connections; this bounds what they carry,
 * since one HTTP/2 connection holds hundreds of streams and each one costs an upstream stream,
 * buffers and routing work. One pod holding its whole budget of slow requests is then refused
 * its next one, while the other pods of the node keep theirs.
 *
 * One integer per listener, one increment and one decrement per request: nothing is allocated.
 * The caller takes a place before any work for the request, gives it back exactly once when
 * the request ends however it ends (answered, reset by either side, connection lost), and
 * answers a refusal in its protocol: RST_STREAM(REFUSED_STREAM) for HTTP/2 (RFC 9113 §8.7:
 * not processed, safe to retry), 503 for HTTP/1.
 */

/** Default requests/streams in flight per pod listener: as many as connections, well above one pod's legitimate need. */
export const DEFAULT_MAX_STREAMS_PER_LISTENER = 16_384;

export class StreamCap {
  /** In flight now (places taken and not given back). */
  open = 0;

  constructor(readonly max: number = DEFAULT_MAX_STREAMS_PER_LISTENER) {}

  /** Whether the next request would be over the cap. */
  get full(): boolean {
    return this.open >= this.max;
  }

  /** Takes a place for one request; false (nothing taken) when the listener is at its cap. */
  take(): boolean {
    if (this.open >= this.max) return false;
    this.open++;
    return true;
  }

  /** Gives back a place `take` gave: once per successful take, when the request has ended. */
  release(): void {
    this.open--;
  }
}
