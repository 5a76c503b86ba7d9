// The lab's load generator counts a request as OK only when a response arrived: a stream or
// connection that ends without a status is a failure (a STRICT refusal once showed as
// "4 OK, answered by unknown").
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import t, { type Test } from 'tap';
import { type ClientOptions, runLoad, statusFailure } from '../../../src/lab/workloads/client.js';

function options(protocol: ClientOptions['protocol'], port: number, count = 4): ClientOptions {
  return {
    protocol,
    host: '127.0.0.1',
    port,
    path: '/',
    count,
    concurrency: 2,
    rate: 0,
    durationMs: 10_000,
    size: 0,
    newConnection: false,
    grpcCall: 'unary',
    timeoutMs: 3000,
    connections: 1,
  };
}

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as net.AddressInfo).port;
}

function h2Server(t: Test, onStream: (s: http2.ServerHttp2Stream) => void): Promise<number> {
  const server = http2.createServer();
  server.on('stream', (s) => {
    s.on('error', () => {});
    onStream(s);
  });
  server.on('session', (s) => s.on('error', () => {}));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return listen(server);
}

t.test('statusFailure: only a final 2xx/3xx status is a success', async (t) => {
  t.equal(statusFailure(200), undefined);
  t.equal(statusFailure(204), undefined);
  t.equal(statusFailure(302), undefined);
  t.match(statusFailure(undefined), { code: 'NO_RESPONSE' });
  t.match(statusFailure(Number.NaN), { code: 'NO_RESPONSE' });
  t.match(statusFailure(0), { code: 'NO_RESPONSE' });
  t.match(statusFailure(101), { code: 'HTTP_101' });
  t.match(statusFailure(404), { code: 'HTTP_404' });
  t.match(statusFailure(503), { code: 'HTTP_503' });
});

t.test('h2c: a stream reset with NO_ERROR before any response is a failure', async (t) => {
  const port = await h2Server(t, (s) => s.close(http2.constants.NGHTTP2_NO_ERROR));
  const s = await runLoad(options('h2c', port));
  t.equal(s.requests, 4);
  t.equal(s.ok, 0, 'no request counted OK');
  t.equal(s.failed, 4);
  t.same(s.errors, { NO_RESPONSE: 4 });
  t.same(s.byPod, {}, 'nobody is said to have answered');
});

t.test('h2c: a connection closed before any response is a failure', async (t) => {
  // Reads the client preface, then hangs up: what a refusing listener does.
  const server = net.createServer((sock) => sock.once('data', () => sock.destroy()));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const s = await runLoad(options('h2c', await listen(server), 2));
  t.equal(s.ok, 0);
  t.equal(s.failed, 2);
});

t.test('h2c: a connection lost in the middle of a response body is a failure', async (t) => {
  // Node ends such streams as if complete ('end'; rstCode CANCEL on one, 0 on another).
  const port = await h2Server(t, (s) => {
    s.respond({ ':status': 200, 'x-skein-pod': 'shop/echo-0', 'content-length': '100' });
    s.write('partial', () => s.session?.socket.destroy());
  });
  const s = await runLoad(options('h2c', port, 2));
  t.equal(s.ok, 0);
  t.equal(s.failed, 2);
});

t.test('h2c: answers are counted OK with who answered; error statuses are failures', async (t) => {
  let n = 0;
  const port = await h2Server(t, (s) => {
    n += 1;
    if (n % 2 === 0) {
      s.respond({ ':status': 503, 'x-skein-pod': 'shop/echo-1' });
      s.end();
      return;
    }
    s.respond({ ':status': 200, 'x-skein-pod': 'shop/echo-0', 'x-skein-node': 'node-a' });
    s.end('hello');
  });
  const s = await runLoad({ ...options('h2c', port, 4), concurrency: 1 });
  t.equal(s.ok, 2);
  t.same(s.errors, { HTTP_503: 2 });
  t.same(s.byPod, { 'shop/echo-0': 2 });
  t.same(s.failedByPod, { 'shop/echo-1': 2 }, 'failures counted by the pod that answered them');
  t.same(s.byNode, { 'node-a': 2 });
});

t.test('http1: a response cut off in its body is a failure, not a hang', async (t) => {
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-length': '100' });
    res.write('only part of it', () => res.socket?.destroy());
  });
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const t0 = performance.now();
  const s = await runLoad({ ...options('http1', await listen(server), 2), timeoutMs: 5000 });
  t.equal(s.ok, 0);
  t.equal(s.failed, 2);
  t.notOk(s.errors.TIMEOUT, `failed at once, not by timeout: ${JSON.stringify(s.errors)}`);
  t.ok(performance.now() - t0 < 4000);
});

t.test('http1: a connection closed without a response is a failure', async (t) => {
  const server = net.createServer((sock) => sock.once('data', () => sock.destroy()));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const s = await runLoad(options('http1', await listen(server), 2));
  t.equal(s.ok, 0);
  t.equal(s.failed, 2);
});
