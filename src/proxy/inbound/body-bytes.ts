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
  const bytes: BodyBytes = { request: 0, response: 0 };
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
