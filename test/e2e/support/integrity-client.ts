/**
 * The integrity matrix's client, run inside a lab pod (so the agent captures it): sends every
 * request shape of the matrix to one target and checks what the lab's echo app says it
 * received (method, path, body size and sha256) — every request must arrive byte for byte.
 *
 * HTTP/1 requests are written by hand on raw sockets so the framing is exactly what the matrix
 * names (HTTP/1.0 or 1.1, Content-Length or chunked, head and body in one write or split), the
 * way curl and other clients put them on the wire. Prints one JSON summary line.
 *
 * usage: integrity-client.ts http1|h2c|grpc|tcp HOST PORT
 */
import { createHash, randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { echoService, type EchoReply } from '../../../src/lab/workloads/echo-proto.js';
import { h2Post } from '../../support/h2-post.js';
import { bodyOf, connect, readResponse, requestBytes, type Shape, writeSplit } from '../../support/raw-http1.js';

/** 0-300 bytes one by one, then every power of two ± 1 up to 1 MiB. */
export function matrixSizes(): number[] {
  const sizes = new Set<number>();
  for (let n = 0; n <= 300; n++) sizes.add(n);
  for (let p = 1; p <= 1 << 20; p *= 2) for (const n of [p - 1, p, p + 1]) sizes.add(n);
  return [...sizes].sort((a, b) => a - b);
}

/** How many requests (TCP: connections) a run of `protocol` makes. */
export function matrixCount(protocol: 'http1' | 'h2c' | 'grpc' | 'tcp'): number {
  if (protocol === 'http1') return matrixSizes().length * BODY_SHAPES.length + BODYLESS.length;
  if (protocol === 'tcp') return tcpSizes().length + tcpShortPayloads().length;
  return matrixSizes().length;
}

/** TCP gets fewer sizes (one connection each): the powers of two ± 1 and a handful of small ones. */
function tcpSizes(): number[] {
  return matrixSizes().filter((n) => n > 300 || n % 37 === 1);
}

/**
 * Short TCP payloads that protocol detection must not swallow on a port with no declared
 * appProtocol: every single byte, and every prefix of every HTTP method, each followed at once
 * by the client's FIN (a partial method then end of stream once lost its bytes).
 */
export function tcpShortPayloads(): Buffer[] {
  const out: Buffer[] = [];
  for (let b = 0; b < 256; b++) out.push(Buffer.from([b]));
  for (const m of ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'PATCH', 'CONNECT', 'TRACE', 'PRI * HTTP/2.0']) {
    for (let n = 2; n <= m.length; n++) out.push(Buffer.from(m.slice(0, n), 'latin1'));
  }
  return out;
}

interface Summary {
  protocol: string;
  target: string;
  checked: number;
  /** How many failed; `failures` lists the first 20. */
  failed?: number;
  failures: string[];
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

const BODY_SHAPES: Shape[] = [
  { name: 'post-cl', version: '1.1', method: 'POST', framing: 'length' },
  { name: 'put-chunked', version: '1.1', method: 'PUT', framing: 'chunked' },
  { name: 'get-cl', version: '1.1', method: 'GET', framing: 'length' },
  { name: 'patch-cl-1.0', version: '1.0', method: 'PATCH', framing: 'length' },
];
const BODYLESS: Shape[] = ['GET', 'HEAD', 'DELETE', 'OPTIONS'].flatMap((method) =>
  (['1.0', '1.1'] as const).map((version) => ({ name: `${method.toLowerCase()}-${version}`, version, method, framing: 'none' as const })),
);

async function http1Matrix(host: string, port: number): Promise<Summary> {
  const out: Summary = { protocol: 'http1', target: `${host}:${port}`, checked: 0, failures: [] };
  const cases: { shape: Shape; size: number }[] = [];
  for (const size of matrixSizes()) for (const shape of BODY_SHAPES) cases.push({ shape, size });
  for (const shape of BODYLESS) cases.push({ shape, size: 0 });
  let sock: net.Socket | undefined;
  const buffered = { rest: Buffer.alloc(0) };
  let onConn = 0;
  for (const [i, c] of cases.entries()) {
    const path = `/integrity/${c.shape.name}/${c.size}/${i}?q=${i % 7}`;
    const body = bodyOf(c.size, i);
    const bytes = requestBytes(c.shape, path, host, body);
    const headLen = bytes.length - (c.shape.framing === 'length' ? body.length : 0);
    // One write (the shape curl sends small requests in), head and body apart, or random cuts.
    const cuts = i % 3 === 0 ? [] : i % 3 === 1 ? [headLen] : [1 + (i % Math.max(1, bytes.length - 1)), Math.floor(bytes.length / 2)];
    try {
      // HTTP/1.0 without keep-alive: one connection per request, closed by the server.
      if (!sock || c.shape.version === '1.0' || onConn >= 100) {
        sock?.destroy();
        sock = await connect(host, port);
        buffered.rest = Buffer.alloc(0);
        onConn = 0;
      }
      onConn++;
      await writeSplit(sock, bytes, cuts);
      const res = await readResponse(sock, c.shape.method === 'HEAD', buffered);
      out.checked++;
      if (res.status !== 200) throw new Error(`status ${res.status}: ${res.body.toString('latin1').slice(0, 120)}`);
      if (c.shape.method !== 'HEAD') {
        const seen = JSON.parse(res.body.toString('utf8')) as { method: string; path: string; body: { bytes: number; sha256: string } };
        const want = { method: c.shape.method, path, bytes: body.length, sha256: sha(body) };
        const got = { method: seen.method, path: seen.path, bytes: seen.body.bytes, sha256: seen.body.sha256 };
        if (JSON.stringify(got) !== JSON.stringify(want)) throw new Error(`app saw ${JSON.stringify(got)}`);
      }
      if (c.shape.version === '1.0') {
        sock.destroy();
        sock = undefined;
      }
    } catch (err) {
      out.failures.push(`${c.shape.name} ${c.size} B (${cuts.length ? `cuts ${cuts}` : 'one write'}): ${(err as Error).message}`);
      sock?.destroy();
      sock = undefined;
    }
  }
  sock?.destroy();
  return out;
}

async function h2cMatrix(host: string, port: number): Promise<Summary> {
  const out: Summary = { protocol: 'h2c', target: `${host}:${port}`, checked: 0, failures: [] };
  const session = http2.connect(`http://${host}:${port}`);
  session.on('error', () => {});
  try {
    for (const [i, size] of matrixSizes().entries()) {
      const body = bodyOf(size, i);
      const path = `/integrity/h2c/${size}/${i}`;
      try {
        // Odd sizes go in two writes, to vary the DATA frames.
        const text = await h2Post(session, path, body, size % 2 === 1 && size > 2 ? [size >> 1] : []);
        out.checked++;
        const seen = JSON.parse(text) as { method: string; path: string; body: { bytes: number; sha256: string } };
        if (seen.method !== 'POST' || seen.path !== path || seen.body.bytes !== size || seen.body.sha256 !== sha(body)) {
          throw new Error(`app saw ${JSON.stringify({ m: seen.method, p: seen.path, b: seen.body })}`);
        }
      } catch (err) {
        out.failures.push(`h2c ${size} B: ${(err as Error).message}`);
      }
    }
  } finally {
    session.destroy();
  }
  return out;
}

async function grpcMatrix(host: string, port: number): Promise<Summary> {
  const out: Summary = { protocol: 'grpc', target: `${host}:${port}`, checked: 0, failures: [] };
  const Echo = echoService();
  const client = new Echo(`${host}:${port}`, grpc.credentials.createInsecure(), {
    'grpc.max_receive_message_length': 8 << 20,
    'grpc.max_send_message_length': 8 << 20,
  });
  try {
    for (const [i, size] of matrixSizes().entries()) {
      const payload = bodyOf(size, i);
      try {
        const reply = await new Promise<EchoReply>((resolve, reject) => {
          (client as unknown as { Unary: (m: unknown, o: grpc.CallOptions, cb: (e: Error | null, r: EchoReply) => void) => void }).Unary(
            { payload },
            { deadline: Date.now() + 20_000 },
            (e, r) => (e ? reject(e) : resolve(r)),
          );
        });
        out.checked++;
        if (Number(reply.receivedBytes) !== size || reply.receivedSha256 !== sha(payload)) throw new Error(`app saw ${reply.receivedBytes} B ${reply.receivedSha256}`);
        if (!Buffer.from(reply.payload).equals(payload)) throw new Error('the echoed payload differs');
      } catch (err) {
        out.failures.push(`grpc ${size} B: ${(err as Error).message}`);
      }
    }
  } finally {
    client.close();
  }
  return out;
}

async function tcpMatrix(host: string, port: number): Promise<Summary> {
  const out: Summary = { protocol: 'tcp', target: `${host}:${port}`, checked: 0, failures: [] };
  const payloads = [...tcpSizes().map((size) => randomBytes(size)), ...tcpShortPayloads()];
  for (const payload of payloads) {
    const size = payload.length;
    try {
      const back = await new Promise<Buffer>((resolve, reject) => {
        const s = net.connect({ host, port, allowHalfOpen: true });
        const got: Buffer[] = [];
        s.on('data', (c: Buffer) => got.push(c));
        s.on('end', () => {
          s.end();
          resolve(Buffer.concat(got));
        });
        s.on('error', reject);
        s.setTimeout(20_000, () => s.destroy(new Error('no echo within 20 s')));
        s.once('connect', () => {
          // In pieces of random sizes, then half-close: the echo app ends after echoing.
          let at = 0;
          while (at < size) {
            const n = 1 + Math.floor(Math.random() * Math.min(size - at, 70_000));
            s.write(payload.subarray(at, at + n));
            at += n;
          }
          s.end();
        });
      });
      out.checked++;
      if (sha(back) !== sha(payload)) throw new Error(`sent ${size} B ${sha(payload).slice(0, 12)}, got back ${back.length} B ${sha(back).slice(0, 12)}`);
    } catch (err) {
      out.failures.push(`tcp ${size} B${size <= 16 ? ` (${payload.toString('hex')})` : ''}: ${(err as Error).message}`);
    }
  }
  return out;
}

const RUNNERS: Record<string, (host: string, port: number) => Promise<Summary>> = {
  http1: http1Matrix,
  h2c: h2cMatrix,
  grpc: grpcMatrix,
  tcp: tcpMatrix,
};

if (process.argv[1] === import.meta.filename) {
  const [protocol = '', host = '', port = ''] = process.argv.slice(2);
  const run = RUNNERS[protocol];
  if (!run || !host || !Number(port)) {
    process.stderr.write('usage: integrity-client.ts http1|h2c|grpc|tcp HOST PORT\n');
    process.exit(2);
  }
  const summary = await run(host, Number(port));
  summary.failed = summary.failures.length;
  summary.failures = summary.failures.slice(0, 20);
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  process.exit(0);
}
