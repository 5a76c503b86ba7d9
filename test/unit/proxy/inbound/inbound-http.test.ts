/**
 * HTTP requests between agents (L7), with a real TLS tunnel session and real HTTP/1.1 and h2c
 * apps on loopback: each request one HTTP/2 stream carrying skein-dst / skein-proto, served by
 * the destination's InboundHttp (check the destination, authorize, pooled app connection in
 * the app's protocol, one record per request). The same-node session runs on a loopback TCP
 * pair here (the agent uses an AF_UNIX socketpair from the native addon, which unit tests do
 * not load).
 */
import http from 'node:http';
import http2 from 'node:http2';
import net, { type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import t, { type Test } from 'tap';
import type { InboundRequestRecord } from '../../../../src/proxy/inbound/inbound-http.js';
import { InboundProxy } from '../../../../src/proxy/inbound/inbound-proxy.js';
import { LoopbackAppConnector, spiffe, waitFor, workload } from '../tunnel/fixtures.js';
import { captureLogger, setupMesh } from '../tunnel/harness.js';

/** An HTTP/1.1 app recording what it received. */
function h1App(t: Test): { handler: (s: Socket) => void; seen: http.IncomingHttpHeaders[] } {
  const seen: http.IncomingHttpHeaders[] = [];
  const server = http.createServer((req, res) => {
    seen.push(req.headers);
    let body = '';
    req.on('data', (c) => {
      body += c;
    });
    req.on('end', () => {
      res.setHeader('skein-leak', 'from-app');
      res.end(`${req.method} ${req.url} ${body.length}`);
    });
  });
  t.teardown(() => server.close());
  return { handler: (s) => server.emit('connection', s), seen };
}

/** An h2c app: trailers on /trailers, a gRPC trailers-only error on /grpc.Fail. */
function h2App(t: Test): { handler: (s: Socket) => void; seen: http2.IncomingHttpHeaders[] } {
  const seen: http2.IncomingHttpHeaders[] = [];
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    seen.push(headers);
    stream.resume();
    if (headers[':path'] === '/grpc.Fail') {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '5', 'grpc-message': 'nope' }, { endStream: true });
      return;
    }
    stream.respond({ ':status': 200 }, { waitForTrailers: true });
    stream.once('wantTrailers', () => stream.sendTrailers({ 'x-checksum': 'abc' }));
    stream.end('h2 body');
  });
  t.teardown(() => server.close());
  return { handler: (s) => server.emit('connection', s), seen };
}

interface Answer {
  status: number;
  headers: http2.IncomingHttpHeaders;
  body: string;
  trailers?: http2.IncomingHttpHeaders;
  endedWithHeaders: boolean;
}

function answer(stream: http2.ClientHttp2Stream, body?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    let text = '';
    let headers: http2.IncomingHttpHeaders = {};
    let endedWithHeaders = false;
    let trailers: http2.IncomingHttpHeaders | undefined;
    stream.on('response', (h, flags) => {
      headers = h;
      endedWithHeaders = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
    });
    stream.on('trailers', (tr) => {
      trailers = tr;
    });
    stream.setEncoding('utf8');
    stream.on('data', (d: string) => {
      text += d;
    });
    stream.on('end', () => resolve({ status: Number(headers[':status']), headers, body: text, endedWithHeaders, ...(trailers ? { trailers } : {}) }));
    stream.on('error', reject);
    if (body !== undefined) stream.end(body);
  });
}

const mesh = (dst: string, proto: string, extra: http2.OutgoingHttpHeaders = {}): http2.OutgoingHttpHeaders => ({
  ':method': 'POST',
  ':path': '/p?q=1',
  ':scheme': 'http',
  ':authority': 'echo.default:80',
  'skein-dst': dst,
  'skein-proto': proto,
  ...extra,
});

t.test('an HTTP/1.1 app behind the tunnel: served per request, skein-* fields gone both ways, one record each', async (t) => {
  const app = h1App(t);
  const recs: InboundRequestRecord[] = [];
  const m = await setupMesh(t, { appHandler: app.handler, inbound: { onRequest: (r) => recs.push(r) } });
  for (let i = 0; i < 20; i++) {
    const s = await m.pool.request(m.clientId, m.target(), mesh(`127.0.0.1:${m.app.port}`, 'http1', { 'x-n': String(i) }), { endStream: false });
    const a = await answer(s, 'hello');
    t.equal(a.status, 200);
    t.equal(a.body, 'POST /p?q=1 5');
    t.equal(a.headers['skein-leak'], undefined, "an app's skein-* response field never leaves the destination");
  }
  t.equal(app.seen.length, 20);
  t.notOk(app.seen.some((h) => Object.keys(h).some((k) => k.startsWith('skein-'))), 'no skein-* field reached the app');
  t.equal(app.seen[0]?.host, 'echo.default:80', ':authority became Host');
  t.equal(m.connector.connects, 1, 'one pooled keep-alive connection to the app served all 20');
  t.equal(recs.length, 20);
  t.match(recs[0], { reporter: 'destination', source: m.clientId, method: 'POST', path: '/p?q=1', status: 200, appProtocol: 'http1', transport: 'hbone', connectionSecurityPolicy: 'mutual_tls' });
  t.equal(m.inbound.stats.http.requests.http1, 20);
  // A stream's 'close' (which releases it) follows its 'end'.
  await waitFor(() => m.pool.stats()[0]?.sessions[0]?.active === 0);
  const sessions = m.pool.stats();
  t.equal(sessions.length, 1);
  t.equal(sessions[0]?.sessions.length, 1, 'one TLS session carried every request');
  t.equal(sessions[0]?.sessions[0]?.active, 0, 'every stream released');
});

t.test('an h2c app: response trailers relayed, gRPC trailers-only stays trailers-only', async (t) => {
  const app = h2App(t);
  const m = await setupMesh(t, { appHandler: app.handler });
  const dst = `127.0.0.1:${m.app.port}`;
  const a = await answer(await m.pool.request(m.clientId, m.target(), mesh(dst, 'http2', { ':path': '/trailers', te: 'trailers' }), { endStream: false }), 'x');
  t.equal(a.body, 'h2 body');
  t.equal(a.trailers?.['x-checksum'], 'abc');
  t.equal(app.seen[0]?.te, 'trailers', 'te: trailers reached the app');
  const g = await answer(
    await m.pool.request(m.clientId, m.target(), mesh(dst, 'http2', { ':path': '/grpc.Fail', 'content-type': 'application/grpc' }), { endStream: true }),
  );
  t.ok(g.endedWithHeaders, 'trailers-only');
  t.equal(g.headers['grpc-status'], '5');
  t.equal(m.inbound.stats.http.requests.grpc, 1);
  t.equal(m.inbound.stats.http.requests.http2, 1);
});

t.test('refusals: bad skein-proto 400, skein-dst of another pod 403, denied by the authorizer 403 (gRPC: PERMISSION_DENIED)', async (t) => {
  const app = h1App(t);
  const asked: string[] = [];
  const m = await setupMesh(t, {
    appHandler: app.handler,
    inbound: {
      authorize: (req) => {
        if (req.http) asked.push(`${req.http.method} ${req.http.path} ${req.source}`);
        return req.http?.path === '/deny' ? { allow: false, reason: 'test policy' } : { allow: true };
      },
    },
  });
  const dst = `127.0.0.1:${m.app.port}`;
  t.equal((await answer(await m.pool.request(m.clientId, m.target(), mesh(dst, 'bogus'), { endStream: true }))).status, 400);
  t.equal((await answer(await m.pool.request(m.clientId, m.target(), mesh(`10.9.9.9:${m.app.port}`, 'http1'), { endStream: true }))).status, 403);
  t.equal((await answer(await m.pool.request(m.clientId, m.target(), mesh(dst, 'http1', { ':path': '/deny' }), { endStream: true }))).status, 403);
  const g = await answer(await m.pool.request(m.clientId, m.target(), mesh(dst, 'http2', { ':path': '/deny', 'content-type': 'application/grpc' }), { endStream: true }));
  t.equal(g.headers['grpc-status'], '7', 'gRPC: PERMISSION_DENIED');
  t.equal(m.connector.connects, 0, 'the app was never contacted');
  t.same(asked, [`POST /deny ${m.clientId}`, `POST /deny ${m.clientId}`], 'the authorizer saw each request with its source identity');
  t.equal(m.inbound.stats.http.denied, 2);
  t.equal(m.inbound.stats.http.malformed, 1);
  t.equal(m.inbound.stats.http.wrongDestination, 1);
});

/** A connected loopback TCP pair, standing in for the agent's AF_UNIX socketpair. */
async function tcpPair(t: Test): Promise<() => [Duplex, Duplex]> {
  const pending: ((s: Socket) => void)[] = [];
  const server = net.createServer((s) => pending.shift()?.(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  const made: [Duplex, Duplex][] = [];
  // Pairs are made ahead (socketPair is synchronous in the agent).
  for (let i = 0; i < 2; i++) {
    const accepted = new Promise<Socket>((r) => pending.push(r));
    const c = net.connect(port, '127.0.0.1');
    await new Promise((r) => c.once('connect', r));
    made.push([await accepted, c]);
  }
  t.teardown(() => {
    for (const [a, b] of made) {
      a.destroy();
      b.destroy();
    }
  });
  return () => made.shift() as [Duplex, Duplex];
}

t.test('same node: requestLocal serves requests on a local session with the same hooks; without socket pairs it is absent', async (t) => {
  const app = h1App(t);
  const srv = net.createServer(app.handler);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(() => srv.close());
  const port = (srv.address() as net.AddressInfo).port;
  const { logger } = captureLogger();
  const recs: InboundRequestRecord[] = [];
  const inbound = new InboundProxy({ app: new LoopbackAppConnector(), logger, socketPair: await tcpPair(t), onRequest: (r) => recs.push(r) });
  t.teardown(() => inbound.close());
  const pod = workload('echo', ['127.0.0.1'], spiffe('default', 'echo'));
  const source = spiffe('client-ns', 'client');
  for (let i = 0; i < 3; i++) {
    const s = await inbound.requestLocal?.(source, pod, mesh(`127.0.0.1:${port}`, 'http1'), { endStream: false });
    t.ok(s);
    t.equal((await answer(s as http2.ClientHttp2Stream, 'abc')).body, 'POST /p?q=1 3');
  }
  t.equal(recs.length, 3);
  t.match(recs[0], { reporter: 'destination', transport: 'local', source, status: 200 });
  const plain = new InboundProxy({ app: new LoopbackAppConnector(), logger });
  t.equal(plain.requestLocal, undefined, 'no socket pairs: same-node HTTP keeps the openLocal byte path');
});

t.test('graceful drain: the destination closing (GOAWAY) lets an in-flight request finish; the pool then stops using that session', async (t) => {
  const server = http.createServer((req, res) => {
    req.resume();
    setTimeout(() => res.end('late but whole'), 300);
  });
  t.teardown(() => server.close());
  const m = await setupMesh(t, { appHandler: (s) => server.emit('connection', s) });
  const inFlight = answer(await m.pool.request(m.clientId, m.target(), mesh(`127.0.0.1:${m.app.port}`, 'http1'), { endStream: false }), 'x');
  await new Promise((r) => setTimeout(r, 50));
  const closing = m.server.close(5_000);
  const a = await inFlight;
  t.equal(a.status, 200);
  t.equal(a.body, 'late but whole', 'the request in flight when GOAWAY went out completed');
  await closing;
  await waitFor(() => m.pool.stats().every((k) => k.sessions.length === 0));
  t.same(
    m.pool.stats().flatMap((k) => k.sessions),
    [],
    'the session that got GOAWAY left the pool',
  );
  await t.rejects(m.pool.request(m.clientId, m.target(), mesh(`127.0.0.1:${m.app.port}`, 'http1'), { endStream: true }), 'a new request needs a new session, and the server is gone');
});
