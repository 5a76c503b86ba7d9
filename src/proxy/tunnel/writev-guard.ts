/**
 * Guards an HTTP/2 stream against a Node core use-after-free that corrupted bytes in flight.
 *
 * Node's Http2Stream queues each chunk of a writev separately and ties the write request
 * (which owns the native copy of every *string* chunk of that writev) to the LAST chunk only.
 * When that last chunk is empty, nghttp2's data callback pops it off the queue and completes
 * the request as soon as the chunks before it were handed to nghttp2 without copy — before
 * they reach the socket. The string copies are freed, and the bytes sent are whatever the
 * allocator left there (glibc's tcache writes 16 bytes of bookkeeping at the start of a freed
 * block: the first 16 bytes of an HTTP/1.1 request line).
 *
 * Node's own HTTP/1 client produces exactly that writev: `ClientRequest.end()` corks the head
 * (a latin1 string), a Buffer body written before it, and a trailing `''`. Every tunnel stream
 * skein hands to a writer it does not control goes through `guardWritev`: empty chunks are
 * dropped before the native writev, so the write request stays on a chunk with bytes and
 * completes only once they have been sent.
 */
import type { Duplex } from 'node:stream';

interface WritevChunk {
  chunk: Buffer | string;
  encoding: BufferEncoding;
}

/** What Writable hands `_writev` (it marks whether every chunk is a Buffer). */
type WritevChunks = WritevChunk[] & { allBuffers?: boolean };

type WritevFn = (chunks: WritevChunks, cb: (err?: Error | null) => void) => void;

/** The stream's own `_writev` (Node's), which the guard calls with the empties dropped. */
const kNodeWritev = Symbol('skein.nodeWritev');

type Guarded = Duplex & { _writev?: WritevFn; [kNodeWritev]?: WritevFn };

/**
 * One function for every guarded stream (no closure per stream: tunnel streams are per
 * connection). Nothing to drop, or nothing but empties (no string bytes to lose): as Node would.
 */
function guardedWritev(this: Guarded, chunks: WritevChunks, cb: (err?: Error | null) => void): void {
  const nodeWritev = this[kNodeWritev] as WritevFn;
  let empty = 0;
  for (const c of chunks) if (c.chunk.length === 0) empty++;
  if (empty === 0 || empty === chunks.length) {
    nodeWritev.call(this, chunks, cb);
    return;
  }
  const kept: WritevChunks = chunks.filter((c) => c.chunk.length > 0);
  kept.allBuffers = chunks.allBuffers === true || kept.every((c) => typeof c.chunk !== 'string');
  nodeWritev.call(this, kept, cb);
}

/** Drops empty chunks from every writev on `stream` (an Http2Stream); returns the stream. */
export function guardWritev<T extends Duplex>(stream: T): T {
  const s = stream as T & Guarded;
  if (typeof s._writev !== 'function' || s._writev === guardedWritev) return stream;
  s[kNodeWritev] = s._writev;
  s._writev = guardedWritev;
  return stream;
}
