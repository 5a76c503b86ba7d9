/**
 * The lab's echo server: HTTP/1.1 and h2c on one port, gRPC on another, raw TCP on a third.
 * Every answer names the pod that gave it, so tests and the demo see where traffic went.
 *
 * HTTP routes: GET /bytes/<n> streams n bytes; POST|PUT /echo streams the body back;
 * GET /status/<code> answers that status; GET /ws upgrades to a WebSocket echo; `/sem/...`
 * routes serve the HTTP-semantics tests (see `handleSemantics`); anything else answers JSON
 * describing the request (pod, protocol, headers, body size and sha256).
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
import { podIdentity } from './identity.js';

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const PATTERN = Buffer.alloc(64 * 1024, 'skein-lab-echo-');

export interface EchoOptions {
  http: number;
  grpc: number;
  tcp: number;
  host: string;
}

type Req = IncomingMessage | Http2ServerRequest;
type Res = ServerResponse | Http2ServerResponse;

export async function runEcho(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      http: { type: 'string', default: '8080' },
      grpc: { type: 'string', default: '9090' },
      tcp: { type: 'string', default: '7070' },
      host: { type: 'string', default: '0.0.0.0' },
    },
  });
  const opts: EchoOptions = { http: Number(values.http), grpc: Number(values.grpc), tcp: Number(values.tcp), host: values.host! };
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
  const who = podIdentity();
  const stops: (() => Promise<void>)[] = [];
  if (opts.http) stops.push(await startHttp(opts.host, opts.http, who));
  if (opts.grpc) stops.push(await startGrpc(opts.host, opts.grpc, who));
  if (opts.tcp) stops.push(await startTcp(opts.host, opts.tcp, who));
  return async () => {
    await Promise.all(stops.map((s) => s()));
  };
}

function listen(server: net.Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

async function startHttp(host: string, port: number, who: ReturnType<typeof podIdentity>): Promise<() => Promise<void>> {
  const handler = (req: Req, res: Res) => handleHttp(req, res, who);
  const h1 = http.createServer(handler);
  const h2 = http2.createServer(handler as (req: Http2ServerRequest, res: Http2ServerResponse) => void);
  const wss = new WebSocketServer({ noServer: true });
  h1.on('upgrade', (req, socket, head) => {
    if (req.url !== '/ws') {
      socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.send(JSON.stringify({ ...who, protocol: 'websocket' }));
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    });
  });
  // One port, two protocols: the HTTP/2 connection preface marks h2c with prior knowledge.
  const front = net.createServer((socket) => {
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
  await listen(front, host, port);
  return async () => {
    wss.close();
    h1.closeAllConnections();
    await closeServer(front);
    await Promise.all([closeServer(h1), new Promise<void>((r) => h2.close(() => r()))]);
  };
}

function handleHttp(req: Req, res: Res, who: ReturnType<typeof podIdentity>): void {
  const protocol = req.httpVersion === '2.0' ? 'h2c' : `http/${req.httpVersion}`;
  res.setHeader('x-skein-pod', `${who.namespace}/${who.pod}`);
  res.setHeader('x-skein-node', who.node);
  const url = req.url ?? '/';
  if (url.startsWith('/sem/') && handleSemantics(req, res, who, protocol)) return;
  const bytes = /^\/bytes\/(\d+)$/.exec(url);
  if (bytes && req.method === 'GET') {
    streamBytes(res, Number(bytes[1]));
    return;
  }
  if (url === '/echo' && (req.method === 'POST' || req.method === 'PUT')) {
    res.setHeader('content-type', 'application/octet-stream');
    (req as NodeJS.ReadableStream).pipe(res as unknown as NodeJS.WritableStream);
    return;
  }
  const status = /^\/status\/(\d{3})$/.exec(url);
  digestBody(req, (digest) => {
    const body = JSON.stringify({
      ...who,
      protocol,
      method: req.method,
      path: url,
      host: req.headers.host ?? req.headers[':authority'],
      headers: req.headers,
      body: digest,
    });
    res.statusCode = status ? Number(status[1]) : 200;
    res.setHeader('content-type', 'application/json');
    res.end(`${body}\n`);
  });
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
function handleSemantics(req: Req, res: Res, who: ReturnType<typeof podIdentity>, protocol: string): boolean {
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

async function startGrpc(host: string, port: number, who: ReturnType<typeof podIdentity>): Promise<() => Promise<void>> {
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
  server.addService(echoService().service, {
    Unary: (call: grpc.ServerUnaryCall<Msg, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      if (call.request.failWithCode) {
        cb({ code: call.request.failWithCode, details: `failed on request by ${who.namespace}/${who.pod}` });
        return;
      }
      cb(null, { ...base, payload: call.request.payload, ...summary([call.request.payload]) });
    },
    ServerStream: (call: grpc.ServerWritableStream<{ count: number; size: number }, unknown>) => {
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
        call.end();
      };
      next();
    },
    ClientStream: (call: grpc.ServerReadableStream<Msg, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      const got: Buffer[] = [];
      call.on('data', (m: Msg) => got.push(m.payload));
      call.on('end', () => cb(null, { ...base, ...summary(got) }));
    },
    Bidi: (call: grpc.ServerDuplexStream<Msg, unknown>) => {
      let n = 0;
      call.on('data', (m: Msg) => {
        n += 1;
        call.write({ ...base, payload: m.payload, ...summary([m.payload]), messages: n });
      });
      call.on('end', () => call.end());
    },
  });
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
  );
  return () => new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
}

async function startTcp(host: string, port: number, who: ReturnType<typeof podIdentity>): Promise<() => Promise<void>> {
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
  await listen(server, host, port);
  return async () => {
    for (const s of sockets) s.destroy();
    await closeServer(server);
  };
}
