/**
 * The lab's client and load generator. Sends `count` requests (bounded also by `duration`)
 * over HTTP/1.1, h2c, gRPC, WebSocket or raw TCP and prints one JSON summary: how many
 * succeeded, the errors by code, which pods and nodes answered, and latency percentiles.
 * With `--rate`, requests are sent open-loop at their intended times and latency is measured
 * from the intended send time, so queueing is not hidden (no coordinated omission).
 * `--idle` just stays up, for pods that tests `lab exec` into.
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import WebSocket from 'ws';
import { type EchoReply, echoService } from './echo-proto.js';

export type ClientProtocol = 'http1' | 'h2c' | 'grpc' | 'tcp' | 'ws';

export interface ClientOptions {
  protocol: ClientProtocol;
  host: string;
  port: number;
  path: string;
  count: number;
  concurrency: number;
  /** Requests per second, open loop; 0 = closed loop as fast as `concurrency` allows. */
  rate: number;
  durationMs: number;
  /** Request body bytes (POST /echo for HTTP: the reply must carry the same bytes back). */
  size: number;
  /** HTTP/1.1: a new TCP connection per request (spreads over kube-proxy style DNAT). */
  newConnection: boolean;
  grpcCall: 'unary' | 'server-stream' | 'client-stream' | 'bidi';
  timeoutMs: number;
  /** h2c and gRPC: requests round-robin over this many connections (sessions, channels). */
  connections: number;
  /** Extra request header fields (HTTP) or metadata (gRPC), lower-case names. */
  headers?: Record<string, string>;
}

export interface ClientSummary {
  protocol: ClientProtocol;
  target: string;
  requests: number;
  ok: number;
  failed: number;
  errors: Record<string, number>;
  byPod: Record<string, number>;
  /** Failed requests by the pod that answered them (its `x-skein-pod`, in trailers for gRPC). */
  failedByPod: Record<string, number>;
  byNode: Record<string, number>;
  latencyMs: { p50: number; p90: number; p99: number; max: number };
  durationMs: number;
  /**
   * The first failures, each with when it was sent (ms after the run began) and its reason,
   * so a test can bound failures in time (e.g. to a fault's detection window). Bounded to
   * MAX_FAILURES_RECORDED; `failed` still counts all of them.
   */
  failures?: { atMs: number; reason: string }[];
  /** Wall-clock time (ms since the epoch) the run began: `failures[].atMs` is relative to it. */
  startedAtMs?: number;
}

export const MAX_FAILURES_RECORDED = 500;

interface Answer {
  pod?: string;
  node?: string;
}

/** Longest a load runs (the reliability suite's 30-minute soak included; was 10 min, which cut the soak's long form at 600 s). */
const MAX_DURATION_MS = 3_600_000;

export async function runClient(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      idle: { type: 'boolean', default: false },
      protocol: { type: 'string', default: 'http1' },
      target: { type: 'string' },
      path: { type: 'string', default: '/' },
      count: { type: 'string', default: '10' },
      concurrency: { type: 'string', default: '1' },
      rate: { type: 'string', default: '0' },
      duration: { type: 'string', default: '60' },
      size: { type: 'string', default: '0' },
      'new-connection': { type: 'boolean', default: false },
      'grpc-call': { type: 'string', default: 'unary' },
      timeout: { type: 'string', default: '5' },
      connections: { type: 'string', default: '1' },
      header: { type: 'string', multiple: true, default: [] },
    },
  });
  if (values.idle || !values.target) {
    if (process.env.SKEIN_READY_FILE) writeFileSync(process.env.SKEIN_READY_FILE, `${process.pid}\n`);
    // Signal listeners alone do not keep Node's event loop alive; a timer does.
    const keepAlive = setInterval(() => {}, 1 << 30);
    await new Promise<void>((resolve) => {
      process.once('SIGTERM', resolve);
      process.once('SIGINT', resolve);
    });
    clearInterval(keepAlive);
    return 0;
  }
  const [host, portStr] = splitHostPort(values.target);
  const opts: ClientOptions = {
    protocol: values.protocol as ClientProtocol,
    host,
    port: Number(portStr),
    path: values.path!,
    count: Number(values.count),
    concurrency: Math.max(1, Number(values.concurrency)),
    rate: Number(values.rate),
    durationMs: Math.min(MAX_DURATION_MS, Number(values.duration) * 1000),
    size: Number(values.size),
    newConnection: values['new-connection']!,
    grpcCall: values['grpc-call'] as ClientOptions['grpcCall'],
    timeoutMs: Number(values.timeout) * 1000,
    connections: Math.max(1, Number(values.connections)),
    headers: headerArgs(values.header ?? []),
  };
  if (!['http1', 'h2c', 'grpc', 'tcp', 'ws'].includes(opts.protocol)) throw new Error(`--protocol must be http1, h2c, grpc, tcp or ws, not ${opts.protocol}`);
  const summary = await runLoad(opts);
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  return summary.failed > 0 ? 1 : 0;
}

/** `--header 'name: value'` (repeatable) as request fields. */
function headerArgs(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const h of list) {
    const i = h.indexOf(':');
    if (i <= 0) throw new Error(`--header must be 'name: value', got ${h}`);
    out[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
  }
  return out;
}

function splitHostPort(target: string): [string, string] {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(target.replace(/^[a-z0-9]+:\/\//, '').replace(/\/.*$/, ''));
  if (!m) throw new Error(`--target must be host:port, got ${target}`);
  return [m[1]!, m[2]!];
}

export async function runLoad(opts: ClientOptions): Promise<ClientSummary> {
  const send = makeSender(opts);
  const latencies: number[] = [];
  const summary: ClientSummary = {
    protocol: opts.protocol,
    target: `${opts.host}:${opts.port}`,
    requests: 0,
    ok: 0,
    failed: 0,
    errors: {},
    byPod: {},
    failedByPod: {},
    byNode: {},
    latencyMs: { p50: 0, p90: 0, p99: 0, max: 0 },
    durationMs: 0,
    failures: [],
  };
  const t0 = performance.now();
  summary.startedAtMs = Date.now();
  const deadline = t0 + opts.durationMs;
  let next = 0;
  const one = async (intended: number) => {
    summary.requests += 1;
    try {
      const a = await withTimeout(send(), opts.timeoutMs);
      summary.ok += 1;
      const pod = a.pod ?? 'unknown';
      summary.byPod[pod] = (summary.byPod[pod] ?? 0) + 1;
      const node = a.node ?? 'unknown';
      summary.byNode[node] = (summary.byNode[node] ?? 0) + 1;
    } catch (err) {
      summary.failed += 1;
      const code = (err as { code?: string | number }).code ?? (err as Error).message;
      summary.errors[String(code)] = (summary.errors[String(code)] ?? 0) + 1;
      if (summary.failures!.length < MAX_FAILURES_RECORDED) summary.failures!.push({ atMs: Math.round(intended - t0), reason: String(code) });
      const pod = (err as { pod?: string }).pod;
      if (pod) summary.failedByPod[pod] = (summary.failedByPod[pod] ?? 0) + 1;
    }
    latencies.push(performance.now() - intended);
  };
  if (opts.rate > 0) {
    const inflight = new Set<Promise<void>>();
    for (let i = 0; i < opts.count; i++) {
      const intended = t0 + (i * 1000) / opts.rate;
      if (intended > deadline) break;
      const wait = intended - performance.now();
      if (wait > 0) await sleep(wait);
      const p = one(intended).finally(() => inflight.delete(p));
      inflight.add(p);
    }
    await Promise.all(inflight);
  } else {
    const worker = async () => {
      while (next < opts.count && performance.now() < deadline) {
        next += 1;
        await one(performance.now());
      }
    };
    await Promise.all(Array.from({ length: Math.min(opts.concurrency, opts.count) }, worker));
  }
  await send.close();
  summary.durationMs = Math.round(performance.now() - t0);
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => (latencies.length ? Number(latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))]!.toFixed(3)) : 0);
  summary.latencyMs = { p50: pct(0.5), p90: pct(0.9), p99: pct(0.99), max: pct(1) };
  return summary;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

type Sender = (() => Promise<Answer>) & { close: () => Promise<void> };

function payload(size: number): Buffer {
  return Buffer.alloc(size, 'skein-client-');
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function makeSender(opts: ClientOptions): Sender {
  switch (opts.protocol) {
    case 'http1':
      return http1Sender(opts);
    case 'h2c':
      return h2cSender(opts);
    case 'grpc':
      return grpcSender(opts);
    case 'tcp':
      return tcpSender(opts);
    case 'ws':
      return wsSender(opts);
  }
}

function answerOf(headers: http.IncomingHttpHeaders): Answer {
  const pod = headers['x-skein-pod'];
  const node = headers['x-skein-node'];
  return { pod: typeof pod === 'string' ? pod : undefined, node: typeof node === 'string' ? node : undefined };
}

function http1Sender(opts: ClientOptions): Sender {
  const agent = new http.Agent({ keepAlive: !opts.newConnection, maxSockets: opts.concurrency });
  const body = payload(opts.size);
  const send = () =>
    new Promise<Answer>((resolve, reject) => {
      const req = http.request(
        {
          host: opts.host,
          port: opts.port,
          path: opts.size > 0 ? '/echo' : opts.path,
          method: opts.size > 0 ? 'POST' : 'GET',
          agent,
          headers: { ...opts.headers, ...(opts.newConnection ? { connection: 'close' } : {}) },
        },
        (res) => {
          const h = createHash('sha256');
          res.on('data', (c: Buffer) => h.update(c));
          res.on('end', () => {
            const bad = statusFailure(res.statusCode);
            if (bad) return reject(Object.assign(bad, { pod: answerOf(res.headers).pod }));
            if (opts.size > 0 && h.digest('hex') !== sha(body)) return reject(Object.assign(new Error('body mismatch'), { code: 'BODY_MISMATCH' }));
            resolve(answerOf(res.headers));
          });
          // A response cut off mid-body never emits 'end'; without this the request would hang to its timeout.
          res.on('close', () => {
            if (!res.complete) reject(Object.assign(new Error('response cut off'), { code: 'RESPONSE_CUT' }));
          });
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(opts.size > 0 ? body : undefined);
    });
  return Object.assign(send, { close: async () => agent.destroy() });
}

/** Round-robin over `n` lazily made connections. */
function roundRobin<T>(n: number, make: () => T): { next: () => T; all: () => T[] } {
  const made: T[] = [];
  let i = 0;
  return {
    next: () => {
      const k = i++ % n;
      made[k] ??= make();
      return made[k]!;
    },
    all: () => made.filter(Boolean),
  };
}

/** A request fails unless a final status arrived and said 2xx/3xx; a missing status is a failure too. */
export function statusFailure(status: number | undefined): Error | undefined {
  if (status === undefined || !Number.isInteger(status) || status < 100) return Object.assign(new Error('no response status'), { code: 'NO_RESPONSE' });
  if (status < 200 || status >= 400) return Object.assign(new Error(`HTTP ${status}`), { code: `HTTP_${status}` });
  return undefined;
}

function h2cSender(opts: ClientOptions): Sender {
  const sessions = roundRobin(opts.connections, () => {
    const s = http2.connect(`http://${opts.host.includes(':') ? `[${opts.host}]` : opts.host}:${opts.port}`);
    s.on('error', () => {});
    return s;
  });
  const body = payload(opts.size);
  const send = () =>
    new Promise<Answer>((resolve, reject) => {
      const req = sessions.next().request({ ...opts.headers, ':method': opts.size > 0 ? 'POST' : 'GET', ':path': opts.size > 0 ? '/echo' : opts.path });
      let headers: http2.IncomingHttpHeaders | undefined;
      let ended = false;
      const h = createHash('sha256');
      req.on('response', (hd) => {
        headers = hd;
      });
      let received = 0;
      req.on('data', (c: Buffer) => {
        received += c.length;
        h.update(c);
      });
      // A stream can end with no response at all: RST_STREAM(NO_ERROR) or the connection
      // closing both end it cleanly in Node, so 'end' alone proves nothing.
      req.on('end', () => {
        ended = true;
        const bad = statusFailure(headers ? Number(headers[':status']) : undefined);
        if (bad && headers) Object.assign(bad, { pod: answerOf(headers).pod });
        if (bad) return reject(req.rstCode ? Object.assign(bad, { message: `${bad.message} (stream reset, code ${req.rstCode})` }) : bad);
        // A lost connection also ends the readable side, mid-body, with rstCode CANCEL on one
        // stream and 0 on another: a declared length is the check that always holds.
        const declared = headers?.['content-length'];
        if (req.rstCode || (declared !== undefined && Number(declared) !== received)) {
          return reject(Object.assign(new Error(`response cut off (${received} bytes, stream code ${req.rstCode})`), { code: 'RESPONSE_CUT' }));
        }
        if (opts.size > 0 && h.digest('hex') !== sha(body)) return reject(Object.assign(new Error('body mismatch'), { code: 'BODY_MISMATCH' }));
        resolve(answerOf(headers as http.IncomingHttpHeaders));
      });
      req.on('close', () => {
        if (!ended) reject(Object.assign(new Error('stream closed before its response ended'), { code: headers ? 'RESPONSE_CUT' : 'NO_RESPONSE' }));
      });
      req.on('error', reject);
      req.end(opts.size > 0 ? body : undefined);
    });
  return Object.assign(send, {
    close: async () => {
      for (const x of sessions.all()) x.close();
    },
  });
}

function grpcSender(opts: ClientOptions): Sender {
  const Echo = echoService();
  type EchoClient = Record<string, (...a: unknown[]) => unknown> & grpc.Client;
  // A local subchannel pool per client: otherwise grpc-js shares one connection among them.
  const clients = roundRobin(
    opts.connections,
    () => new Echo(`${opts.host}:${opts.port}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }) as unknown as EchoClient,
  );
  const body = payload(opts.size);
  const toAnswer = (r: EchoReply): Answer => ({ pod: `${r.namespace}/${r.pod}`, node: r.node });
  const fail = (err: grpc.ServiceError) => {
    const pod = err.metadata?.get('x-skein-pod')[0];
    return Object.assign(new Error(err.details), { code: `GRPC_${err.code}`, ...(pod ? { pod: String(pod) } : {}) });
  };
  const metadata = (): grpc.Metadata => {
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(opts.headers ?? {})) md.set(k, v);
    return md;
  };
  const send = (): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const client = clients.next();
      switch (opts.grpcCall) {
        case 'unary':
          client.Unary!({ payload: body }, metadata(), (err: grpc.ServiceError | null, r: EchoReply) => (err ? reject(fail(err)) : resolve(toAnswer(r))));
          return;
        case 'server-stream': {
          const call = client.ServerStream!({ count: 3, size: Math.max(1, opts.size) }, metadata()) as grpc.ClientReadableStream<EchoReply>;
          let last: EchoReply | undefined;
          let n = 0;
          call.on('data', (r: EchoReply) => {
            last = r;
            n += 1;
          });
          call.on('error', (e: grpc.ServiceError) => reject(fail(e)));
          call.on('end', () => (last && n === 3 ? resolve(toAnswer(last)) : reject(Object.assign(new Error(`got ${n} of 3 messages`), { code: 'STREAM_SHORT' }))));
          return;
        }
        case 'client-stream': {
          const call = client.ClientStream!((err: grpc.ServiceError | null, r: EchoReply) => {
            if (err) return reject(fail(err));
            if (r.receivedSha256 !== sha(Buffer.concat([body, body, body]))) return reject(Object.assign(new Error('digest mismatch'), { code: 'BODY_MISMATCH' }));
            resolve(toAnswer(r));
          }) as grpc.ClientWritableStream<unknown>;
          for (let i = 0; i < 3; i++) call.write({ payload: body });
          call.end();
          return;
        }
        case 'bidi': {
          const call = client.Bidi!() as grpc.ClientDuplexStream<unknown, EchoReply>;
          let n = 0;
          let last: EchoReply | undefined;
          call.on('data', (r: EchoReply) => {
            n += 1;
            last = r;
          });
          call.on('error', (e: grpc.ServiceError) => reject(fail(e)));
          call.on('end', () => (last && n === 3 ? resolve(toAnswer(last)) : reject(Object.assign(new Error(`got ${n} of 3 replies`), { code: 'STREAM_SHORT' }))));
          for (let i = 0; i < 3; i++) call.write({ payload: body });
          call.end();
          return;
        }
      }
    });
  return Object.assign(send, {
    close: async () => {
      for (const c of clients.all()) c.close();
    },
  });
}

/** TCP: WHOAMI, then `size` bytes that must come back verbatim, then half-close. */
function tcpSender(opts: ClientOptions): Sender {
  const body = payload(opts.size);
  const send = () =>
    new Promise<Answer>((resolve, reject) => {
      const sock = net.connect({ host: opts.host, port: opts.port, allowHalfOpen: true });
      const chunks: Buffer[] = [];
      sock.on('connect', () => {
        sock.write('WHOAMI\n');
        sock.end(body);
      });
      sock.on('data', (c: Buffer) => chunks.push(c));
      sock.on('error', reject);
      sock.on('end', () => {
        const all = Buffer.concat(chunks);
        const nl = all.indexOf(10);
        if (nl < 0) return reject(Object.assign(new Error('no WHOAMI reply'), { code: 'NO_REPLY' }));
        const who = JSON.parse(all.subarray(0, nl).toString()) as { namespace: string; pod: string; node: string };
        if (!all.subarray(nl + 1).equals(body)) return reject(Object.assign(new Error('echo mismatch'), { code: 'BODY_MISMATCH' }));
        sock.destroy();
        resolve({ pod: `${who.namespace}/${who.pod}`, node: who.node });
      });
    });
  return Object.assign(send, { close: async () => {} });
}

function wsSender(opts: ClientOptions): Sender {
  const body = payload(Math.max(1, opts.size));
  const send = () =>
    new Promise<Answer>((resolve, reject) => {
      const ws = new WebSocket(`ws://${opts.host}:${opts.port}/ws`);
      let who: { namespace: string; pod: string; node: string } | undefined;
      ws.on('message', (data: Buffer) => {
        if (!who) {
          who = JSON.parse(data.toString());
          ws.send(body);
          return;
        }
        ws.close();
        if (!Buffer.from(data).equals(body)) return reject(Object.assign(new Error('echo mismatch'), { code: 'BODY_MISMATCH' }));
        resolve({ pod: `${who.namespace}/${who.pod}`, node: who.node });
      });
      ws.on('error', reject);
    });
  return Object.assign(send, { close: async () => {} });
}
