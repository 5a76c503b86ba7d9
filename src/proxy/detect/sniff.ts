/**
 * Protocol detection from a connection's first bytes, for ports that do not declare an
 * appProtocol. Bounded twice: in time (a server-speaks-first protocol — MySQL, SMTP, a Redis
 * greeting — sends nothing until it hears the server, so silence must mean "opaque TCP, now")
 * and in bytes. Whatever was read is put back on the socket, so the chosen handler sees the
 * stream from its first byte.
 */
import { METHODS } from 'node:http';
import type { Socket } from 'node:net';

export type DetectedProtocol = 'http1' | 'http2' | 'tcp';

export interface SniffResult {
  protocol: DetectedProtocol;
  /** Why: 'preface', 'request-line', 'timeout', 'mismatch', 'eof', 'limit'. */
  reason: 'preface' | 'request-line' | 'timeout' | 'mismatch' | 'eof' | 'limit';
  /** Bytes seen (already unshifted back onto the socket, unless `leftover` holds them). */
  bytes: number;
  /**
   * Bytes read before the client's end of stream: a stream that has emitted 'end' cannot
   * take them back (Node refuses an unshift after 'end'), so the caller must send them on
   * before anything else. Set only with reason 'eof'.
   */
  leftover?: Buffer;
}

export interface SniffOptions {
  /** How long to wait for the client's first bytes (ms). */
  timeoutMs: number;
  /** Longest HTTP/1 request line accepted as HTTP (bytes). Default 8192. */
  maxRequestLine?: number;
}

export const HTTP2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');
const METHOD_SET = new Set(METHODS);
const LONGEST_METHOD = Math.max(...METHODS.map((m) => m.length));
const REQUEST_LINE_RE = /^[A-Z][A-Z-]* [\x21-\x7e]+ HTTP\/1\.[01]\r?$/;

/** Classifies a prefix of a stream; undefined means "need more bytes". */
export function classify(buf: Buffer, maxRequestLine = 8192): { protocol: DetectedProtocol; reason: SniffResult['reason'] } | undefined {
  const n = Math.min(buf.length, HTTP2_PREFACE.length);
  if (buf.compare(HTTP2_PREFACE, 0, n, 0, n) === 0) {
    return n === HTTP2_PREFACE.length ? { protocol: 'http2', reason: 'preface' } : undefined;
  }
  const sp = buf.indexOf(0x20);
  const head = buf.toString('latin1', 0, Math.min(buf.length, LONGEST_METHOD + 1));
  if (sp < 0 || sp > LONGEST_METHOD) {
    if (sp < 0 && buf.length <= LONGEST_METHOD && /^[A-Z-]*$/.test(head) && METHODS.some((m) => m.startsWith(head))) {
      return undefined;
    }
    return { protocol: 'tcp', reason: 'mismatch' };
  }
  if (!METHOD_SET.has(buf.toString('latin1', 0, sp))) return { protocol: 'tcp', reason: 'mismatch' };
  // A known method and a space: still could be a text protocol ("GET key" in Redis inline
  // syntax), so require a whole HTTP/1.x request line.
  const lf = buf.indexOf(0x0a);
  if (lf < 0) return buf.length >= maxRequestLine ? { protocol: 'tcp', reason: 'limit' } : undefined;
  const line = buf.toString('latin1', 0, lf);
  return REQUEST_LINE_RE.test(line) ? { protocol: 'http1', reason: 'request-line' } : { protocol: 'tcp', reason: 'mismatch' };
}

/**
 * Waits (bounded) for enough bytes to tell HTTP/1.x, HTTP/2 (prior knowledge) or other.
 * Never rejects: errors and EOF resolve as 'tcp' so the L4 path handles (and propagates) them.
 */
export function sniffProtocol(socket: Socket, opts: SniffOptions): Promise<SniffResult> {
  const maxLine = opts.maxRequestLine ?? 8192;
  return new Promise((resolve) => {
    let buf: Buffer | undefined;
    let done = false;
    const finish = (protocol: DetectedProtocol, reason: SniffResult['reason'], ended = false): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.off('readable', onReadable);
      socket.off('end', onEnd);
      socket.off('error', onEnd);
      socket.off('close', onEnd);
      const result: SniffResult = { protocol, reason, bytes: buf?.length ?? 0 };
      if (buf && buf.length > 0) {
        if (ended) result.leftover = buf;
        else socket.unshift(buf);
      }
      resolve(result);
    };
    const onReadable = (): void => {
      let chunk: Buffer | null;
      // biome-ignore lint/suspicious/noAssignInExpressions: the canonical read loop
      while ((chunk = socket.read() as Buffer | null) !== null) {
        buf = buf ? Buffer.concat([buf, chunk]) : chunk;
        const c = classify(buf, maxLine);
        if (c) {
          finish(c.protocol, c.reason);
          return;
        }
      }
    };
    const onEnd = (): void => {
      const c = buf ? classify(buf, maxLine) : undefined;
      // Decided only now: the stream has ended, so what was read cannot go back on it.
      finish(c?.protocol ?? 'tcp', c?.reason ?? 'eof', true);
    };
    const timer = setTimeout(() => finish('tcp', 'timeout'), opts.timeoutMs);
    socket.on('readable', onReadable);
    socket.once('end', onEnd);
    socket.once('error', onEnd);
    socket.once('close', onEnd);
    onReadable();
  });
}
