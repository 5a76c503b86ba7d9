/**
 * The lab's echo server: HTTP/1.1 and h2c on one port, gRPC on another, raw TCP on a third.
 * Every answer names the pod that gave it, so tests and the demo see where traffic went.
 *
 * HTTP routes: GET /bytes/<n> streams n bytes; POST|PUT /echo streams the body back;
 * GET /status/<code> answers that status (200..599); GET /delay/<ms> answers after ms
 * (at most 60000); GET /headers answers the request's header fields as JSON; GET /ws
 * upgrades to a WebSocket echo; `/sem/...` routes serve the HTTP-semantics tests (see
 * `handleSemantics`); `/_echo/...` are the pod's control routes (see `control`); anything
 * else answers JSON describing the request (pod, protocol, headers, body size and sha256).
 * Every HTTP answer carries `x-skein-pod: <namespace>/<pod>` and `x-skein-node`.
 * Faults (echo-faults.ts: `--fail-status`, `--fail-ratio`, `--delay-ms`, or `/_echo/fail`
 * and `/_echo/delay` at run time) apply to every HTTP request but the control routes and
 * WebSocket upgrades, and to every gRPC call (failing UNAVAILABLE); raw TCP is untouched.
 * TCP: echoes bytes; a connection whose first line is `WHOAMI` gets a JSON line first.
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import http2, { type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import net from 'node:net';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { WebSocketServer } from 'ws';
import { echoService } from './echo-proto.js';
import { EchoFaults, type FaultSettings, faultsFromFlags, GRPC_FAIL_CODE, MAX_DELAY_MS, validDelay, validFailStatus, validRatio } from './echo-faults.js';
import { type PodIdentity, podIdentity } from './identity.js';

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const PATTERN = Buffer.alloc(64 * 1024, 'skein-lab-echo-');

export interface EchoOptions {
  http: number;
  grpc: number;
  tcp: number;
  host: string;
  /** Faults from the start (`--fail-status`, `--fail-ratio`, `--delay-ms`). */
  faults?: FaultSettings;
}

type Req = IncomingMessage | Http2ServerRequest;
type Res = ServerResponse | Http2ServerResponse;

/** The echo's command line (a scenario's container `args`) as options; throws on a bad flag. */
export function echoOptionsFromArgs(argv: string[]): EchoOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      http: { type: 'string', default: '8080' },
      grpc: { type: 'string', default: '9090' },
      tcp: { type: 'string', default: '7070' },
      host: { type: 'string', default: '0.0.0.0' },
      'fail-status': { type: 'string' },
      'fail-ratio': { type: 'string' },
      'delay-ms': { type: 'string' },
    },
  });
  const faults = faultsFromFlags({ failStatus: values['fail-status'], failRatio: values['fail-ratio'], delayMs: values['delay-ms'] });
  return { http: Number(values.http), grpc: Number(values.grpc), tcp: Number(values.tcp), host: values.host!, faults };
}

export async function runEcho(argv: string[]): Promise<number> {
  const opts = echoOptionsFromArgs(argv);
  const stop = await startEcho(opts);
  if (process.env.SKEIN_READY_FILE) writeFileSync(process.env.SKEIN_READY_FILE, `${process.pid}\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  await stop();
  return 0;
}

/** Starts the servers; resolves with a function that stops them. Port 0 disables one. */
export async function startEcho(opts: EchoOptions): Promise<() => Promise<void>> {
  const on = (p: number) => (p ? p : undefined);
  const s = await startEchoServers({ host: opts.host, http: on(opts.http), grpc: on(opts.grpc), tcp: on(opts.tcp), faults: opts.faults });
  return s.stop;
}

export interface EchoServers {
  /** The ports listened on (the chosen ones when asked for port 0). */
  ports: { http?: number; grpc?: number; tcp?: number };
  /** The pod's faults and counters, shared by HTTP and gRPC (what `/_echo/` changes). */
  faults: EchoFaults;
  stop: () => Promise<void>;
}

/** Starts the servers asked for (undefined: not started; 0: any free port). */
export async function startEchoServers(opts: {
  host: string;
  http?: number;
  grpc?: number;
  tcp?: number;
  faults?: FaultSettings;
  identity?: PodIdentity;
}): Promise<EchoServers> {
  const who = opts.identity ?? podIdentity();
  const faults = new EchoFaults(opts.faults);
  const stops: (() => Promise<void>)[] = [];
  const ports: EchoServers['ports'] = {};
  try {
    if (opts.http !== undefined) {
      const s = await startHttp(opts.host, opts.http, who, faults);
      stops.push(s.stop);
      ports.http = s.port;
    }
    if (opts.grpc !== undefined) {
      const s = await startGrpc(opts.host, opts.grpc, who, faults);
      stops.push(s.stop);
      ports.grpc = s.port;
    }
    if (opts.tcp !== undefined) {
      const s = await startTcp(opts.host, opts.tcp, who);
      stops.push(s.stop);
      ports.tcp = s.port;
    }
  } catch (err) {
    await Promise.all(stops.map((s) => s()));
    throw err;
  }
  return {
    ports,
    faults,
    stop: async () => {
      await Promise.all(stops.map((s) => s()));
    },
  };
}

function listen(server: net.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

type Started = { port: number; stop: () => Promise<void> };

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

async function startHttp(host: string, port: number, who: PodIdentity, faults: EchoFaults): Promise<Started> {
  const handler = (req: Req, res: Res) => handleHttp(req, res, who, faults);
  const h1 = http.createServer(handler);
  const h2 = http2.createServer(handler as (req: Http2ServerRequest, res: Http2ServerResponse) => void);
  const wss = new WebSocketServer({ noServer: true });
  h1.on('upgrade', (req, socket, head) => {
    if (req.url !== '/ws') {
      socket.end(`HTTP/1.1 404 Not Found\r\nx-skein-pod: ${who.namespace}/${who.pod}\r\nconnection: close\r\n\r\n`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.send(JSON.stringify({ ...who, protocol: 'websocket' }));
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    });
  });
  // One port, two protocols: the HTTP/2 connection preface marks h2c with prior knowledge.
  const sockets = new Set<net.Socket>();
  const front = net.createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    let seen = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      seen = Buffer.concat([seen, chunk]);
      const n = Math.min(seen.length, H2_PREFACE.length);
      const isH2 = seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
      if (isH2 && seen.length < H2_PREFACE.length) return; // need more bytes to decide
      socket.off('data', onData);
      socket.pause();
      socket.unshift(seen);
      if (isH2) {
        // The HTTP/2 session reads what is buffered on the next tick; resuming here would
        // emit it to nobody.
        h2.emit('connection', socket);
      } else {
        h1.emit('connection', socket);
        socket.resume();
      }
    };
    socket.on('data', onData);
    socket.on('error', () => socket.destroy());
  });
  const bound = await listen(front, host, port);
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on('session', (s) => {
    sessions.add(s);
    s.once('close', () => sessions.delete(s));
  });
  return {
    port: bound,
    stop: async () => {
      wss.close();
      h1.closeAllConnections();
      for (const s of sessions) s.destroy();
      for (const s of sockets) s.destroy();
      await closeServer(front);
      await Promise.all([closeServer(h1), new Promise<void>((r) => h2.close(() => r()))]);
    },
  };
}

function handleHttp(req: Req, res: Res, who: PodIdentity, faults: EchoFaults): void {
  // Every answer (errors, faults and control routes included) says which pod gave it.
  res.setHeader('x-skein-pod', `${who.namespace}/${who.pod}`);
  res.setHeader('x-skein-node', who.node);
  const url = parseTarget(req.url);
  if (url.pathname.startsWith('/_echo/')) {
    handleControl(req, res, url, faults);
    return;
  }
  // Counted once the answer is handed to the kernel ('finish'), before the client can read
  // it, so a stats request after it sees it; 'close' without 'finish' is a cut answer.
  let counted = false;
  const count = (status: number | 'aborted') => {
    if (counted) return;
    counted = true;
    faults.countHttp(status);
  };
  res.once('finish', () => count(res.statusCode));
  res.once('close', () => count(res.headersSent ? res.statusCode : 'aborted'));
  const failWith = faults.decide();
  const serve = () => {
    if (failWith !== undefined) {
      res.setHeader('x-skein-echo-fault', 'injected');
      req.resume();
      sendJson(req, res, failWith, { ...who, fault: 'injected', status: failWith });
    } else {
      route(req, res, who, url);
    }
  };
  after(res, faults.delayMs, serve);
}

function parseTarget(target: string | undefined): URL {
  try {
    return new URL(target ?? '/', 'http://x');
  } catch {
    return new URL('http://x/');
  }
}

/** Runs `fn` after `ms` (now when 0), not at all if the client went away meanwhile. */
function after(res: Res, ms: number, fn: () => void): void {
  if (ms <= 0) {
    fn();
    return;
  }
  const timer = setTimeout(fn, ms);
  res.once('close', () => clearTimeout(timer));
}

function route(req: Req, res: Res, who: PodIdentity, url: URL): void {
  const protocol = req.httpVersion === '2.0' ? 'h2c' : `http/${req.httpVersion}`;
  const path = req.url ?? '/';
  if (path.startsWith('/sem/') && handleSemantics(req, res, who, protocol)) return;
  const bytes = /^\/bytes\/(\d+)$/.exec(path);
  if (bytes && req.method === 'GET') {
    streamBytes(res, Number(bytes[1]));
    return;
  }
  if (path === '/echo' && (req.method === 'POST' || req.method === 'PUT')) {
    res.setHeader('content-type', 'application/octet-stream');
    (req as NodeJS.ReadableStream).pipe(res as unknown as NodeJS.WritableStream);
    return;
  }
  if (url.pathname === '/headers') {
    req.resume();
    sendJson(req, res, 200, receivedHeaders(req));
    return;
  }
  let status = 200;
  let delayMs = 0;
  const statusMatch = /^\/status\/(\d+)$/.exec(url.pathname);
  if (statusMatch) {
    status = Number(statusMatch[1]);
    if (!validFailStatus(status)) {
      req.resume();
      sendJson(req, res, 400, { ...who, error: `status must be between 200 and 599, got ${statusMatch[1]}` });
      return;
    }
  }
  const delayMatch = /^\/delay\/(\d+)$/.exec(url.pathname);
  if (delayMatch) {
    delayMs = Number(delayMatch[1]);
    if (!validDelay(delayMs)) {
      req.resume();
      sendJson(req, res, 400, { ...who, error: `delay must be between 0 and ${MAX_DELAY_MS} ms, got ${delayMatch[1]}` });
      return;
    }
  }
  digestBody(req, (digest) => {
    const body = {
      ...who,
      protocol,
      method: req.method,
      path,
      host: req.headers.host ?? req.headers[':authority'],
      headers: req.headers,
      body: digest,
    };
    after(res, delayMs, () => sendJson(req, res, status, body));
  });
}

/**
 * The request's header fields as received: lower-case names, a string for a field sent once
 * and an array (in order) for one sent several times. HTTP/2 pseudo-headers are left out, so
 * HTTP/1.1 and h2c requests read the same.
 */
export function receivedHeaders(req: { rawHeaders: string[] }): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  const raw = req.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (name.startsWith(':')) continue;
    const value = raw[i + 1]!;
    const had = out[name];
    if (had === undefined) out[name] = value;
    else if (Array.isArray(had)) had.push(value);
    else out[name] = [had, value];
  }
  return out;
}

/** A JSON answer; no body where the status or method forbids one (204, 205, 304, HEAD). */
function sendJson(req: Req, res: Res, status: number, body: unknown): void {
  if (res.headersSent || res.writableEnded) return;
  res.statusCode = status;
  if (status === 204 || status === 205 || status === 304 || req.method === 'HEAD') {
    res.end();
    return;
  }
  res.setHeader('content-type', 'application/json');
  res.end(`${JSON.stringify(body)}\n`);
}

/**
 * The pod's control routes, never failed, delayed or counted themselves:
 * - `PUT /_echo/fail?status=S&ratio=R`: fail the share R (default 1) of requests with S
 *   (default 503; gRPC calls fail UNAVAILABLE); answers the settings;
 * - `DELETE /_echo/fail`: stop failing (204);
 * - `PUT /_echo/delay?ms=N`: delay every answer N ms; `DELETE /_echo/delay` (204);
 * - `GET /_echo/config`: the settings;
 * - `GET /_echo/stats`: requests served, by HTTP status and gRPC code; `DELETE` zeroes them (204).
 */
function handleControl(req: Req, res: Res, url: URL, faults: EchoFaults): void {
  req.resume();
  const [status, body] = control(`${req.method} ${url.pathname}`, url.searchParams, faults);
  sendJson(req, res, status, body);
}

function control(key: string, q: URLSearchParams, faults: EchoFaults): [number, unknown] {
  switch (key) {
    case 'PUT /_echo/fail':
    case 'POST /_echo/fail': {
      const status = Number(q.get('status') ?? 503);
      const ratio = Number(q.get('ratio') ?? 1);
      if (!validFailStatus(status)) return [400, { error: `status must be between 200 and 599, got ${q.get('status')}` }];
      if (!validRatio(ratio)) return [400, { error: `ratio must be between 0 and 1, got ${q.get('ratio')}` }];
      faults.setFail(status, ratio);
      return [200, faults.settings()];
    }
    case 'DELETE /_echo/fail':
      faults.clearFail();
      return [204, undefined];
    case 'PUT /_echo/delay':
    case 'POST /_echo/delay': {
      const ms = Number(q.get('ms') ?? Number.NaN);
      if (!validDelay(ms)) return [400, { error: `ms must be an integer between 0 and ${MAX_DELAY_MS}, got ${q.get('ms')}` }];
      faults.setDelay(ms);
      return [200, faults.settings()];
    }
    case 'DELETE /_echo/delay':
      faults.setDelay(0);
      return [204, undefined];
    case 'GET /_echo/config':
      return [200, faults.settings()];
    case 'GET /_echo/stats':
      return [200, faults.snapshot()];
    case 'DELETE /_echo/stats':
      faults.resetStats();
      return [204, undefined];
    default:
      return [404, { error: `no control route ${key}` }];
  }
}

/** Reads the request body to its end: its size and sha256. */
function digestBody(req: Req, done: (digest: { bytes: number; sha256: string }) => void): void {
  const hash = createHash('sha256');
  let bytes = 0;
  req.on('data', (c: Buffer) => {
    bytes += c.length;
    hash.update(c);
  });
  req.on('end', () => done({ bytes, sha256: hash.digest('hex') }));
}

/** Request ids whose response the client abandoned (`/sem/hold/<id>`), and those that finished. */
const held = new Map<string, 'holding' | 'aborted' | 'finished'>();

/**
 * Server behaviour the HTTP-semantics tests need (test/e2e/mesh/l7-semantics.test.ts):
 * - `/sem/info[?trailers]`: JSON of what arrived (raw headers, trailers, body size and sha256);
 *   answers with two Set-Cookie fields and a reserved `skein-x` field (which no client may
 *   see); `?trailers` sends the answer chunked with response trailers;
 * - `/sem/len/<n>`: n bytes with a Content-Length (HEAD: the length, no body);
 * - `/sem/status/<code>`: that status without a body (204, 304...);
 * - `/sem/slow?pieces=P&ms=M`: P pieces, M ms apart;
 * - `/sem/hold/<id>`: one piece, then nothing until the client goes away (recorded) or 30 s;
 * - `/sem/aborted/<id>`: whether the client abandoned `/sem/hold/<id>`;
 * - `/sem/hints`: 103 Early Hints (a Link field), then 200;
 * - `/sem/reset`: 16 KiB of a body without a length, then the response is destroyed.
 * Returns false for an unknown `/sem/` path (the default JSON answers it).
 */
function handleSemantics(req: Req, res: Res, who: PodIdentity, protocol: string): boolean {
  const url = new URL(req.url ?? '/', 'http://x');
  const parts = url.pathname.split('/');
  const route = parts[2] ?? '';
  const arg = parts[3] ?? '';
  const h1 = res as ServerResponse;
  if (route === 'info') {
    digestBody(req, (digest) => {
      const body = `${JSON.stringify({
        ...who,
        protocol,
        method: req.method,
        path: req.url,
        host: req.headers.host ?? req.headers[':authority'],
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        trailers: req.trailers,
        body: digest,
      })}\n`;
      res.statusCode = 200;
      res.setHeader('content-type', 'application/json');
      res.setHeader('set-cookie', ['a=1; Path=/', 'b=2; Path=/']);
      res.setHeader('skein-x', 'from-the-app');
      if (url.searchParams.has('trailers')) {
        if (protocol !== 'h2c') res.setHeader('trailer', 'x-res-trailer');
        h1.write(body);
        res.addTrailers({ 'x-res-trailer': 'done', 'x-res-trailer-2': 'also' });
        res.end();
      } else {
        res.setHeader('content-length', String(Buffer.byteLength(body)));
        res.end(body);
      }
    });
    return true;
  }
  if (route === 'len') {
    const n = Number(arg);
    req.resume();
    res.statusCode = 200;
    res.setHeader('content-type', 'application/octet-stream');
    res.setHeader('content-length', String(n));
    if (req.method === 'HEAD') res.end();
    else res.end(PATTERN.subarray(0, Math.min(n, PATTERN.length)));
    return true;
  }
  if (route === 'status') {
    req.resume();
    res.statusCode = Number(arg);
    if (res.statusCode === 304) res.setHeader('etag', '"v1"');
    res.end();
    return true;
  }
  if (route === 'slow') {
    const pieces = Math.min(100, Number(url.searchParams.get('pieces') ?? 10));
    const ms = Math.min(1000, Number(url.searchParams.get('ms') ?? 100));
    req.resume();
    res.statusCode = 200;
    res.setHeader('content-type', 'text/plain');
    let i = 0;
    let gone = false;
    res.once('close', () => {
      gone = true;
    });
    const next = (): void => {
      if (gone) return;
      h1.write(`piece ${i} at ${Date.now()}\n`);
      i += 1;
      if (i < pieces) setTimeout(next, ms);
      else res.end();
    };
    next();
    return true;
  }
  if (route === 'hold') {
    req.resume();
    held.set(arg, 'holding');
    res.statusCode = 200;
    res.setHeader('content-type', 'text/plain');
    h1.write('held until you go away\n');
    // Our own flag: Http2ServerResponse reports writableFinished once its stream closed, reset or not.
    let ended = false;
    const timer = setTimeout(() => {
      ended = true;
      res.end();
    }, 30_000);
    res.once('close', () => {
      clearTimeout(timer);
      held.set(arg, ended ? 'finished' : 'aborted');
    });
    return true;
  }
  if (route === 'aborted') {
    req.resume();
    res.statusCode = 200;
    res.setHeader('content-type', 'application/json');
    res.end(`${JSON.stringify({ id: arg, state: held.get(arg) ?? 'unknown' })}\n`);
    return true;
  }
  if (route === 'hints') {
    req.resume();
    (res as ServerResponse).writeEarlyHints({ link: '</style.css>; rel=preload' });
    setTimeout(() => {
      res.statusCode = 200;
      res.setHeader('content-type', 'text/plain');
      res.end('after the hints\n');
    }, 100);
    return true;
  }
  if (route === 'reset') {
    req.resume();
    res.statusCode = 200;
    res.setHeader('content-type', 'application/octet-stream');
    h1.write(PATTERN.subarray(0, 16 * 1024));
    setTimeout(() => res.destroy(new Error('the app resets this response')), 200);
    return true;
  }
  return false;
}

function streamBytes(res: Res, total: number): void {
  res.setHeader('content-type', 'application/octet-stream');
  res.setHeader('content-length', String(total));
  let left = total;
  const write = () => {
    while (left > 0) {
      const n = Math.min(left, PATTERN.length);
      left -= n;
      if (!(res as ServerResponse).write(PATTERN.subarray(0, n))) {
        res.once('drain', write);
        return;
      }
    }
    res.end();
  };
  write();
}

/**
 * gRPC: the four call shapes of src/api/lab/echo.proto. Faults apply per call: a failed call
 * ends UNAVAILABLE (trailers-only, with `x-skein-pod` in the trailers), and `--delay-ms` holds
 * the call's first answer (or its failure). Every call is counted by its status code.
 */
/** What the fault gate needs of any gRPC server call. */
type CallLike = { readonly cancelled: boolean; once(event: 'cancelled', f: () => void): unknown };

async function startGrpc(host: string, port: number, who: PodIdentity, faults: EchoFaults): Promise<Started> {
  const server = new grpc.Server();
  const base = { pod: who.pod, namespace: who.namespace, node: who.node, ip: who.ip };
  type Msg = { payload: Buffer; failWithCode?: number };
  const summary = (msgs: Buffer[]) => {
    const h = createHash('sha256');
    let n = 0;
    for (const m of msgs) {
      h.update(m);
      n += m.length;
    }
    return { receivedBytes: n, receivedSha256: h.digest('hex'), messages: msgs.length };
  };
  const podMetadata = () => {
    const md = new grpc.Metadata();
    md.set('x-skein-pod', `${who.namespace}/${who.pod}`);
    md.set('x-skein-node', who.node);
    return md;
  };
  const failure = (code: number, details: string): Partial<grpc.StatusObject> => ({ code, details, metadata: podMetadata() });
  /**
   * Decides a call: `serve()` runs after the pod's delay unless the call was cancelled; a
   * call to fail gets `fail(status)` instead. `done(code)` counts the call once.
   */
  const gate = (call: CallLike, serve: () => void, fail: (status: Partial<grpc.StatusObject>) => void): void => {
    const injected = faults.decide() !== undefined;
    const run = () => {
      if (call.cancelled) return;
      if (injected) fail(failure(GRPC_FAIL_CODE, `injected failure by ${who.namespace}/${who.pod}`));
      else serve();
    };
    const ms = faults.delayMs;
    if (ms <= 0) {
      run();
      return;
    }
    const timer = setTimeout(run, ms);
    call.once('cancelled', () => clearTimeout(timer));
  };
  const counter = (call: CallLike) => {
    let counted = false;
    const done = (code: number) => {
      if (counted) return;
      counted = true;
      faults.countGrpc(code);
    };
    call.once('cancelled', () => done(grpc.status.CANCELLED));
    return done;
  };
  server.addService(echoService().service, {
    Unary: (call: grpc.ServerUnaryCall<Msg, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      const done = counter(call);
      const fail = (st: Partial<grpc.StatusObject>) => {
        done(st.code ?? grpc.status.UNKNOWN);
        cb(st);
      };
      gate(
        call,
        () => {
          if (call.request.failWithCode) {
            fail(failure(call.request.failWithCode, `failed on request by ${who.namespace}/${who.pod}`));
            return;
          }
          call.sendMetadata(podMetadata());
          done(grpc.status.OK);
          cb(null, { ...base, payload: call.request.payload, ...summary([call.request.payload]) });
        },
        fail,
      );
    },
    ServerStream: (call: grpc.ServerWritableStream<{ count: number; size: number }, unknown>) => {
      const done = counter(call);
      gate(
        call,
        () => {
          call.sendMetadata(podMetadata());
          const chunk = Buffer.alloc(call.request.size, 'x');
          let i = 0;
          const next = () => {
            while (i < call.request.count) {
              i += 1;
              if (!call.write({ ...base, payload: chunk, messages: i })) {
                call.once('drain', next);
                return;
              }
            }
            done(grpc.status.OK);
            call.end();
          };
          next();
        },
        (st) => {
          done(st.code!);
          call.emit('error', st);
        },
      );
    },
    ClientStream: (call: grpc.ServerReadableStream<Msg, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      const done = counter(call);
      const got: Buffer[] = [];
      call.on('data', (m: Msg) => got.push(m.payload));
      call.on('end', () =>
        gate(
          call,
          () => {
            call.sendMetadata(podMetadata());
            done(grpc.status.OK);
            cb(null, { ...base, ...summary(got) });
          },
          (st) => {
            done(st.code!);
            cb(st);
          },
        ),
      );
    },
    Bidi: (call: grpc.ServerDuplexStream<Msg, unknown>) => {
      const done = counter(call);
      let n = 0;
      let open = false;
      let ended = false;
      const queued: Msg[] = [];
      const reply = (m: Msg) => {
        n += 1;
        call.write({ ...base, payload: m.payload, ...summary([m.payload]), messages: n });
      };
      call.on('data', (m: Msg) => {
        if (open) reply(m);
        else queued.push(m);
      });
      call.on('end', () => {
        ended = true;
        if (open) {
          done(grpc.status.OK);
          call.end();
        }
      });
      gate(
        call,
        () => {
          open = true;
          call.sendMetadata(podMetadata());
          for (const m of queued.splice(0)) reply(m);
          if (ended) {
            done(grpc.status.OK);
            call.end();
          }
        },
        (st) => {
          done(st.code!);
          call.emit('error', st);
        },
      );
    },
  });
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { port: bound, stop: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())) };
}

async function startTcp(host: string, port: number, who: PodIdentity): Promise<Started> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    let first = true;
    socket.on('data', (chunk: Buffer) => {
      if (first) {
        first = false;
        if (chunk.subarray(0, 7).toString() === 'WHOAMI\n') {
          socket.write(`${JSON.stringify({ ...who, protocol: 'tcp' })}\n`);
          chunk = chunk.subarray(7);
          if (chunk.length === 0) return;
        }
      }
      if (!socket.write(chunk)) {
        socket.pause();
        socket.once('drain', () => socket.resume());
      }
    });
    // Half-close faithfully: when the peer is done sending, finish our side after echoing.
    socket.on('end', () => socket.end());
  });
  const bound = await listen(server, host, port);
  return {
    port: bound,
    stop: async () => {
      for (const s of sockets) s.destroy();
      await closeServer(server);
    },
  };
}
