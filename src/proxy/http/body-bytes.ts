/**
 * Body bytes of one HTTP/2 request stream, both ways, counted where the stream itself moves
 * them (its readable side's push, its writable side's _write/_writev), so counting neither
 * reads, pauses nor buffers anything: whoever relays the stream (h2-relay.ts) is untouched.
 */
import type http2 from 'node:http2';

export interface BodyBytes {
  /** Request body bytes received from the peer. */
  request: number;
  /** Response body bytes written towards the peer. */
  response: number;
}

type WriteCb = (err?: Error | null) => void;
interface StreamInternals {
  push(chunk: unknown, encoding?: BufferEncoding): boolean;
  _write(chunk: unknown, encoding: BufferEncoding, cb: WriteCb): void;
  _writev?(chunks: { chunk: unknown; encoding: BufferEncoding }[], cb: WriteCb): void;
}

function sizeOf(chunk: unknown, encoding?: BufferEncoding): number {
  if (typeof chunk === 'string') return Buffer.byteLength(chunk, encoding);
  return (chunk as { byteLength?: number } | null)?.byteLength ?? 0;
}

/** Starts counting `stream`'s body bytes; read the returned object once the stream closed. */
export function countBodyBytes(stream: http2.ServerHttp2Stream): BodyBytes {
  // What was pushed before counting began is still buffered, unread: streams are routed a turn
  // after they open (the HTTP/2 abuse guard's deferral), and a small body has arrived by then
  // (found by the metrics e2e: request bytes counted only on the same-node path).
  const bytes: BodyBytes = { request: stream.readableLength, response: 0 };
  const s = stream as unknown as StreamInternals;
  const push = s.push;
  s.push = function (this: StreamInternals, chunk, encoding) {
    if (chunk !== null) bytes.request += sizeOf(chunk, encoding);
    return push.call(this, chunk, encoding);
  };
  const write = s._write;
  s._write = function (this: StreamInternals, chunk, encoding, cb) {
    bytes.response += sizeOf(chunk, encoding);
    write.call(this, chunk, encoding, cb);
  };
  const writev = s._writev;
  if (writev) {
    s._writev = function (this: StreamInternals, chunks, cb) {
      for (const c of chunks) bytes.response += sizeOf(c.chunk, c.encoding);
      writev.call(this, chunks, cb);
    };
  }
  return bytes;
}

interface ResponseInternals {
  write(chunk: unknown, encoding?: unknown, cb?: unknown): boolean;
  end(chunk?: unknown, encoding?: unknown, cb?: unknown): unknown;
}

/**
 * The same for an HTTP/1.x exchange: the request's body as its parser pushes it, the
 * response's as it is written (before chunked framing), by wrapping this one response's
 * write/end — nothing is read, paused or buffered.
 */
export function countHttp1BodyBytes(req: { push(chunk: unknown, encoding?: BufferEncoding): boolean }, res: object): BodyBytes {
  const bytes: BodyBytes = { request: 0, response: 0 };
  const r = req as unknown as StreamInternals;
  const push = r.push;
  r.push = function (this: StreamInternals, chunk, encoding) {
    if (chunk !== null) bytes.request += sizeOf(chunk, encoding);
    return push.call(this, chunk, encoding);
  };
  const o = res as ResponseInternals;
  const write = o.write;
  o.write = function (this: ResponseInternals, chunk, encoding, cb) {
    if (chunk !== undefined && chunk !== null && typeof chunk !== 'function') bytes.response += sizeOf(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : undefined);
    return write.call(this, chunk, encoding, cb);
  };
  const end = o.end;
  o.end = function (this: ResponseInternals, chunk, encoding, cb) {
    if (chunk !== undefined && chunk !== null && typeof chunk !== 'function') bytes.response += sizeOf(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : undefined);
    return end.call(this, chunk, encoding, cb);
  };
  return bytes;
}
