/**
 * Steady, bounded load from inside a lab pod (so the agent captures it), for the reliability
 * tests: a fixed total request rate split over the protocols asked for, for a fixed time, and
 * every failure recorded with its wall-clock start and end (ms since the epoch; the pod and
 * the test share the machine's clock), so a test can say *when* requests failed.
 *
 *   http1  GET /bytes/64 over a keep-alive pool (node:http Agent, at most 8 connections)
 *   h2c    GET /bytes/64 as streams of one HTTP/2 session, a new session when the old one is
 *          closed or got GOAWAY (what any HTTP/2 client does)
 *   grpc   ServerStream calls of 4 replies each (@grpc/grpc-js)
 *   tcp    one long TCP stream: 1 KiB every 20 ms to the echo port, echoes counted; records
 *          whether it ended by a FIN from the other side, a reset, or ran to the end
 *
 * Nothing is retried, with one exception every HTTP/2 client makes (grpc-js, Envoy, browsers;
 * RFC 9113 §8.7): a stream refused with REFUSED_STREAM was not processed, and is sent again
 * once on a new session; those retries are counted (h2cRefusedRetried). Anything else that
 * fails counts as failed.
 * Bounded: --duration-ms (at most 10 min) and --rate (at most 2000/s); in-flight requests are
 * capped (256), and the ones the cap held back are counted as skipped, not sent later.
 *
 * usage: node --import tsx steady-load.ts --host H [--http1 PORT] [--h2c PORT] [--grpc PORT]
 *        [--tcp PORT] --rate N --duration-ms MS
 * Prints one JSON line (LoadSummary).
 */
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { echoService } from '../../../src/lab/workloads/echo-proto.js';

export type LoadKind = 'http1' | 'h2c' | 'grpc';

export interface LoadFailure {
  kind: LoadKind;
  start: number;
  end: number;
  error: string;
}

export interface TcpStreamResult {
  connected: boolean;
  bytesSent: number;
  bytesEchoed: number;
  /** ran: still open at the end of the run (we closed it); fin: the other side ended it cleanly; reset: ECONNRESET or another error. */
  ended: 'ran' | 'fin' | 'reset' | 'never';
  endedAt?: number;
  error?: string;
}

export interface LoadSummary {
  startedAt: number;
  endedAt: number;
  rate: number;
  byKind: Record<string, { sent: number; ok: number; failed: number; skipped: number; errors: Record<string, number> }>;
  sent: number;
  ok: number;
  failed: number;
  /** Up to 500 failures, in order. */
  failures: LoadFailure[];
  /** h2c streams refused unprocessed (REFUSED_STREAM, e.g. queued as a GOAWAY arrived) and sent again. */
  h2cRefusedRetried: number;
  /** Latency of the successful requests (ms). */
  latencyMs: { p50: number; p99: number; max: number };
  tcp?: TcpStreamResult;
  achievedRate: number;
}

/** Requests in flight at most (a stall of the path under test shows as latency up to this many). */
const MAX_IN_FLIGHT = 2000;

/** Parses the pod's last stdout line. */
export function parseLoadSummary(stdout: string): LoadSummary {
  const last = stdout.trim().split('\n').pop() ?? '';
  return JSON.parse(last) as LoadSummary;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      host: { type: 'string' },
      http1: { type: 'string' },
      h2c: { type: 'string' },
      grpc: { type: 'string' },
      tcp: { type: 'string' },
      rate: { type: 'string', default: '200' },
      'duration-ms': { type: 'string', default: '10000' },
    },
  });
  const host = values.host;
  if (!host) throw new Error('--host is required');
  const rate = Math.min(2000, Number(values.rate));
  const durationMs = Math.min(600_000, Number(values['duration-ms']));
  const kinds = (['http1', 'h2c', 'grpc'] as const).filter((k) => values[k]);
  const summary: LoadSummary = { startedAt: Date.now(), endedAt: 0, rate, byKind: {}, sent: 0, ok: 0, failed: 0, failures: [], h2cRefusedRetried: 0, latencyMs: { p50: 0, p99: 0, max: 0 }, achievedRate: 0 };
  const latencies: number[] = [];
  for (const k of kinds) summary.byKind[k] = { sent: 0, ok: 0, failed: 0, skipped: 0, errors: {} };
  let inFlight = 0;

  const record = (kind: LoadKind, start: number, err?: unknown): void => {
    const s = summary.byKind[kind]!;
    if (err === undefined) {
      latencies.push(Date.now() - start);
      s.ok++;
      summary.ok++;
      return;
    }
    const code = (err as { code?: string }).code ?? (err instanceof Error ? err.message : String(err));
    s.failed++;
    summary.failed++;
    s.errors[code] = (s.errors[code] ?? 0) + 1;
    if (summary.failures.length < 500) summary.failures.push({ kind, start, end: Date.now(), error: code });
  };

  // HTTP/1 keep-alive.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const http1 = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const req = http.get({ host, port: Number(values.http1), path: '/bytes/64', agent, timeout: 10_000 }, (res) => {
        res.resume();
        res.once('end', () => (res.statusCode === 200 ? resolve() : reject(Object.assign(new Error(`status ${res.statusCode}`), { code: `HTTP_${res.statusCode}` }))));
        res.once('error', reject);
      });
      req.once('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
      req.once('error', reject);
    });

  // h2c: one session at a time; a fresh one once it is closing.
  let session: http2.ClientHttp2Session | undefined;
  const h2session = (): http2.ClientHttp2Session => {
    if (!session || session.closed || session.destroyed) {
      const s = http2.connect(`http://${host}:${values.h2c}`);
      s.on('error', () => {});
      s.on('goaway', () => {
        if (session === s) session = undefined;
      });
      session = s;
    }
    return session;
  };
  const h2cOnce = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const req = h2session().request({ ':path': '/bytes/64' });
      let status = 0;
      req.setTimeout(10_000, () => req.close(http2.constants.NGHTTP2_CANCEL));
      req.on('response', (h) => {
        status = Number(h[':status']);
      });
      req.on('data', () => {});
      req.once('end', () => (status === 200 ? resolve() : reject(Object.assign(new Error(`status ${status}`), { code: status ? `HTTP_${status}` : `RST_${req.rstCode}` }))));
      // A new error each time: node:http2 may hand one session error to several streams.
      req.once('error', (err: NodeJS.ErrnoException) => reject(Object.assign(new Error(err.message), { rstCode: req.rstCode, code: `${err.code}${req.rstCode ? `_RST_${req.rstCode}` : ''}` })));
      req.end();
    });
  const h2c = (): Promise<void> =>
    h2cOnce().catch((err: { rstCode?: number }) => {
      if (err.rstCode !== http2.constants.NGHTTP2_REFUSED_STREAM) throw err;
      summary.h2cRefusedRetried++;
      return h2cOnce();
    });

  // gRPC server streams.
  const Echo = echoService();
  // grpc-js fails every call at once while its channel waits out its own reconnect back-off
  // (1 s, then x1.6, jittered) after a refused connect: with the default, calls kept failing
  // up to ~700 ms after a restarted agent was ready (agent-restart e2e, ready 1.9 s after the
  // kill), a measure of the client's back-off, not of the mesh. A short one here, so the
  // figures are the agent's.
  const grpcOpts = { 'grpc.initial_reconnect_backoff_ms': 100, 'grpc.max_reconnect_backoff_ms': 200 };
  const grpcClient = values.grpc ? new Echo(`${host}:${values.grpc}`, grpc.credentials.createInsecure(), grpcOpts) : undefined;
  const grpcStream = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const call = (grpcClient as unknown as { serverStream(req: object, opts: object): grpc.ClientReadableStream<unknown> }).serverStream({ count: 4, size: 32 }, { deadline: Date.now() + 10_000 });
      let n = 0;
      call.on('data', () => {
        n++;
      });
      call.on('error', (err: grpc.ServiceError) => reject(Object.assign(err, { code: `GRPC_${err.code}` })));
      call.on('end', () => (n === 4 ? resolve() : reject(Object.assign(new Error(`${n} of 4 replies`), { code: 'GRPC_SHORT' }))));
    });

  const runners: Record<LoadKind, () => Promise<void>> = { http1, h2c, grpc: grpcStream };

  // The long TCP stream.
  let tcp: TcpStreamResult | undefined;
  let tcpSocket: net.Socket | undefined;
  let tcpTimer: NodeJS.Timeout | undefined;
  if (values.tcp) {
    const result: TcpStreamResult = { connected: false, bytesSent: 0, bytesEchoed: 0, ended: 'never' };
    tcp = result;
    const chunk = Buffer.alloc(1024, 0x61);
    const sock = net.connect({ host, port: Number(values.tcp), allowHalfOpen: true });
    tcpSocket = sock;
    sock.on('connect', () => {
      result.connected = true;
      result.ended = 'ran';
      tcpTimer = setInterval(() => {
        if (sock.writable) {
          sock.write(chunk);
          result.bytesSent += chunk.length;
        }
      }, 20);
    });
    sock.on('data', (d: Buffer) => {
      result.bytesEchoed += d.length;
    });
    sock.on('end', () => {
      // The other side finished cleanly (FIN): stop sending and finish ours.
      if (result.ended === 'ran') {
        result.ended = 'fin';
        result.endedAt = Date.now();
      }
      clearInterval(tcpTimer);
      sock.end();
    });
    sock.on('error', (err: NodeJS.ErrnoException) => {
      clearInterval(tcpTimer);
      if (result.ended === 'ran' || result.ended === 'never') {
        result.ended = 'reset';
        result.endedAt = Date.now();
        result.error = err.code ?? err.message;
      }
    });
  }

  // Paced: request i of the run is due at i/rate seconds, round-robin over the kinds.
  const t0 = Date.now();
  let due = 0;
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      const elapsed = Date.now() - t0;
      if (elapsed >= durationMs) {
        clearInterval(tick);
        resolve();
        return;
      }
      const target = Math.floor((elapsed * rate) / 1000);
      while (due < target) {
        const kind = kinds[due % kinds.length]!;
        due++;
        if (inFlight >= MAX_IN_FLIGHT) {
          summary.byKind[kind]!.skipped++;
          continue;
        }
        inFlight++;
        summary.sent++;
        summary.byKind[kind]!.sent++;
        const start = Date.now();
        runners[kind]().then(
          () => record(kind, start),
          (err: unknown) => record(kind, start, err),
        ).finally(() => {
          inFlight--;
        });
      }
    }, 5);
  });
  // Let what is in flight finish (bounded).
  for (let i = 0; i < 200 && inFlight > 0; i++) await new Promise((r) => setTimeout(r, 50));
  summary.endedAt = Date.now();
  latencies.sort((a, b) => a - b);
  const q = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? 0;
  summary.latencyMs = { p50: q(0.5), p99: q(0.99), max: latencies[latencies.length - 1] ?? 0 };
  summary.achievedRate = Math.round((summary.sent * 1000) / (summary.endedAt - summary.startedAt));
  if (tcpSocket && tcp) {
    clearInterval(tcpTimer);
    if (tcp.ended === 'ran') {
      // Still open: close it ourselves, and wait for the echo of our FIN.
      const sock = tcpSocket;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 3000);
        sock.once('close', () => {
          clearTimeout(t);
          resolve();
        });
        sock.end();
      });
    }
  }
  if (tcp) summary.tcp = tcp;
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  agent.destroy();
  session?.close();
  grpcClient?.close();
  tcpSocket?.destroy();
  process.exit(0);
}

// Run only as a program (the tests import the types and parseLoadSummary).
if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  main().catch((err) => {
    process.stderr.write(`steady-load: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
  });
}
