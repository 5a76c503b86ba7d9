/**
 * HTTP/1 on raw sockets for tests that must control the exact bytes on the wire (version,
 * framing, how a request is cut into writes) and read responses without Node's client in the
 * way: the integrity matrix (e2e) and the byte-path property tests (unit).
 */
import net from 'node:net';

/** A deterministic body for a size: never all one byte, so a shifted or swapped run shows. */
export function bodyOf(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = (seed * 2654435761) >>> 0;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

export interface Parsed {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/**
 * Reads one HTTP/1 response from `sock` (Content-Length, chunked, or until close); `head`
 * says the request was HEAD (no body whatever the headers say).
 */
export function readResponse(sock: net.Socket, head: boolean, buffered: { rest: Buffer }): Promise<Parsed> {
  return new Promise((resolve, reject) => {
    let buf = buffered.rest;
    buffered.rest = Buffer.alloc(0);
    let parsed: { status: number; headers: Record<string, string>; bodyStart: number } | undefined;
    const finish = (body: Buffer, rest: Buffer): void => {
      cleanup();
      buffered.rest = rest;
      resolve({ status: parsed!.status, headers: parsed!.headers, body });
    };
    const tryParse = (ended: boolean): void => {
      if (!parsed) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) {
          if (ended) fail(new Error(`connection ended before a response head (${buf.length} bytes)`));
          return;
        }
        const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
        const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '')?.[1]);
        const headers: Record<string, string> = {};
        for (const l of lines.slice(1)) {
          const i = l.indexOf(':');
          headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
        }
        parsed = { status, headers, bodyStart: end + 4 };
      }
      const body = buf.subarray(parsed.bodyStart);
      if (head || parsed.status === 204 || parsed.status === 304) {
        finish(Buffer.alloc(0), body);
        return;
      }
      const cl = parsed.headers['content-length'];
      if (cl !== undefined) {
        if (body.length >= Number(cl)) finish(body.subarray(0, Number(cl)), body.subarray(Number(cl)));
        else if (ended) fail(new Error(`body cut at ${body.length} of ${cl}`));
        return;
      }
      if (/chunked/i.test(parsed.headers['transfer-encoding'] ?? '')) {
        const chunks: Buffer[] = [];
        let at = 0;
        for (;;) {
          const eol = body.indexOf('\r\n', at);
          if (eol < 0) break;
          const size = Number.parseInt(body.subarray(at, eol).toString('latin1'), 16);
          if (size === 0) {
            const end = body.indexOf('\r\n\r\n', eol);
            if (end >= 0) {
              finish(Buffer.concat(chunks), body.subarray(end + 4));
              return;
            }
            break;
          }
          if (body.length < eol + 2 + size + 2) break;
          chunks.push(body.subarray(eol + 2, eol + 2 + size));
          at = eol + 2 + size + 2;
        }
        if (ended) fail(new Error('chunked body cut'));
        return;
      }
      if (ended) finish(body, Buffer.alloc(0));
    };
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      tryParse(false);
    };
    const onEnd = (): void => tryParse(true);
    const fail = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const onClose = (): void => fail(new Error('connection closed before the response completed'));
    const timer = setTimeout(() => fail(new Error('no response within 20 s')), 20_000);
    const cleanup = (): void => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('end', onEnd);
      sock.off('error', fail);
      sock.off('close', onClose);
    };
    sock.on('data', onData);
    sock.on('end', onEnd);
    sock.on('error', fail);
    sock.on('close', onClose);
    if (buf.length > 0) tryParse(false);
  });
}

export function connect(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, noDelay: true });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** Writes `bytes` in one write, or split at the given offsets (each piece its own write, a tick apart). */
export async function writeSplit(sock: net.Socket, bytes: Buffer, cuts: number[]): Promise<void> {
  let at = 0;
  for (const cut of [...cuts.filter((c) => c > 0 && c < bytes.length).sort((a, b) => a - b), bytes.length]) {
    if (cut <= at) continue;
    sock.write(bytes.subarray(at, cut));
    at = cut;
    if (cut < bytes.length) await new Promise((r) => setImmediate(r));
  }
}

export interface Shape {
  name: string;
  version: '1.0' | '1.1';
  method: string;
  framing: 'length' | 'chunked' | 'none';
}

export function requestBytes(shape: Shape, path: string, host: string, body: Buffer): Buffer {
  let head = `${shape.method} ${path} HTTP/${shape.version}\r\nHost: ${host}\r\nUser-Agent: skein-integrity\r\n`;
  if (shape.version === '1.1') head += 'Connection: keep-alive\r\n';
  if (shape.framing === 'length') return Buffer.concat([Buffer.from(`${head}Content-Length: ${body.length}\r\n\r\n`, 'latin1'), body]);
  if (shape.framing === 'none') return Buffer.from(`${head}\r\n`, 'latin1');
  // Chunked: the body in chunks of up to 7000 bytes, so big bodies carry several.
  const parts: Buffer[] = [Buffer.from(`${head}Transfer-Encoding: chunked\r\n\r\n`, 'latin1')];
  for (let at = 0; at < body.length; at += 7000) {
    const c = body.subarray(at, at + 7000);
    parts.push(Buffer.from(`${c.length.toString(16)}\r\n`, 'latin1'), c, Buffer.from('\r\n', 'latin1'));
  }
  parts.push(Buffer.from('0\r\n\r\n', 'latin1'));
  return Buffer.concat(parts);
}

