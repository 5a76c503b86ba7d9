/**
 * The per-pod cap on requests in flight at the outbound listener (15001, `skein agent
 * --max-outbound-streams`, issue 15): HTTP/1 requests and HTTP/2 streams of all the pod's
 * connections share one count. Under the cap they are served; over it an HTTP/2 stream gets
 * RST_STREAM(REFUSED_STREAM) and an HTTP/1 request a 503 naming SKEIN_OUTBOUND_STREAM_LIMIT,
 * nothing reaching the upstream, each counted by code. Every way a request ends gives its
 * place back — answered, reset by the client, session or connection gone mid-request — so the
 * count never leaks: checked to return to exactly 0 after each.
 *
 * Real sockets, real Node HTTP/1 and HTTP/2 clients and servers on loopback; the only stand-in
 * is the harness's listener, which plays the pod's 15001 (capture is tested in the lab e2e).
 */
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import t, { type Test } from 'tap';
import { DEFAULT_MAX_STREAMS_PER_LISTENER, StreamCap } from '../../../../src/proxy/stream-cap.js';
import { BACKEND_IPS, listenOn, snapshotFor, startProxy } from './fixtures/harness.js';

const CODE = 'SKEIN_OUTBOUND_STREAM_LIMIT';
const { NGHTTP2_REFUSED_STREAM, NGHTTP2_CANCEL } = http2.constants;

async function until(cond: () => boolean, what: string, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** An HTTP/1 upstream: /hold answers when released, anything else at once; counts what reached it. */
async function startBackend(t: Test) {
  const held: http.ServerResponse[] = [];
  let seen = 0;
  const server = http.createServer((req, res) => {
    seen++;
    req.resume();
    if (req.url?.startsWith('/hold')) held.push(res);
    else res.end('ok');
  });
  const b = await listenOn(server, BACKEND_IPS[0] as string);
  t.teardown(() => {
    server.closeAllConnections();
    server.close();
  });
  return {
    b,
    get seen() {
      return seen;
    },
    get held() {
      return held.filter((r) => !r.destroyed && !r.writableEnded).length;
    },
    releaseAll() {
      for (const r of held.splice(0)) if (!r.destroyed) r.end('released');
    },
  };
}

type Outcome = { status: number; rst: number | undefined; headers: http2.IncomingHttpHeaders };

function h2Request(session: http2.ClientHttp2Session, path: string): { req: http2.ClientHttp2Stream; done: Promise<Outcome> } {
  const req = session.request({ ':path': path, ':method': 'GET', ':authority': 'server.apps' });
  const done = new Promise<Outcome>((resolve) => {
    let status = 0;
    let headers: http2.IncomingHttpHeaders = {};
    req.on('response', (h) => {
      headers = h;
      status = Number(h[':status']);
    });
    req.on('error', () => {});
    req.resume();
    req.on('close', () => resolve({ status, rst: req.rstCode, headers }));
  });
  return { req, done };
}

function h1Get(port: number, path: string, agent: http.Agent): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      })
      .on('error', reject);
  });
}

t.test('HTTP/2: streams over the cap are refused with REFUSED_STREAM, counted, never sent upstream; places come back', async (t) => {
  const be = await startBackend(t);
  const cap = new StreamCap(3);
  const h = await startProxy(snapshotFor([be.b], { appProtocol: 'http' }), {}, undefined, cap);
  t.teardown(() => h.close());
  const session = http2.connect(`http://127.0.0.1:${h.port}`);
  session.on('error', () => {});
  t.teardown(() => session.destroy());

  const five = Array.from({ length: 5 }, () => h2Request(session, '/hold'));
  await until(() => be.held === 3, '3 requests held upstream');
  const refused = await Promise.all(five.slice(3).map((r) => r.done));
  // The first three took the places (streams are routed in order); the others are refused.
  t.same(
    refused.map((o) => o.rst),
    [NGHTTP2_REFUSED_STREAM, NGHTTP2_REFUSED_STREAM],
    'the two over the cap: RST_STREAM(REFUSED_STREAM), safe for the client to retry',
  );
  t.equal(cap.open, 3, 'three in flight');
  t.equal(h.proxy.refusalCount(CODE), 2, 'each refusal counted under its code');
  t.equal(h.proxy.stats().refusals[CODE], 2, 'and in the outbound stats (/stats, skein_outbound_refusals_total)');
  t.equal(h.proxy.refusalCount('SKEIN_HTTP2_RAPID_RESET'), 0, 'our own refusals never count against the client as resets');
  t.equal(be.seen, 3, 'the refused streams never reached the upstream');
  be.releaseAll();
  const served = await Promise.all(five.slice(0, 3).map((r) => r.done));
  t.same(
    served.map((o) => o.status),
    [200, 200, 200],
    'the three under the cap are served',
  );
  await until(() => cap.open === 0, 'places given back');
  t.equal(cap.open, 0, 'every place given back once answered');
  const again = h2Request(session, '/fast');
  t.equal((await again.done).status, 200, 'a freed place is taken again, on the same session');
  await until(() => cap.open === 0, 'the last place given back');
  t.ok(!session.destroyed && !session.closed, 'refusals did not cost the client its session');
});

t.test('HTTP/2: streams the client resets, and a session that dies mid-request, give their places back', async (t) => {
  const be = await startBackend(t);
  const cap = new StreamCap(3);
  const h = await startProxy(snapshotFor([be.b], { appProtocol: 'http' }), {}, undefined, cap);
  t.teardown(() => h.close());
  const session = http2.connect(`http://127.0.0.1:${h.port}`);
  session.on('error', () => {});
  const three = Array.from({ length: 3 }, () => h2Request(session, '/hold'));
  await until(() => be.held === 3, 'held upstream');
  t.equal(cap.open, 3);
  for (const r of three) r.req.close(NGHTTP2_CANCEL);
  await Promise.all(three.map((r) => r.done));
  await until(() => cap.open === 0, 'resets give places back');
  t.equal(cap.open, 0, 'RST_STREAM(CANCEL) from the client: every place given back');
  await until(() => be.held === 0, 'upstream requests cancelled');

  const more = Array.from({ length: 3 }, () => h2Request(session, '/hold'));
  await until(() => be.held === 3, 'held again');
  t.equal(cap.open, 3, 'the places are usable again');
  session.destroy();
  await Promise.all(more.map((r) => r.done));
  await until(() => cap.open === 0, 'a destroyed session gives places back');
  t.equal(cap.open, 0, 'the whole connection gone mid-request: every place given back');
  t.equal(h.proxy.refusalCount(CODE), 0, 'nothing was over the cap');
});

t.test('HTTP/1: over the cap a 503 names the code, the connection stays usable; disconnects mid-request never leak', async (t) => {
  const be = await startBackend(t);
  const cap = new StreamCap(2);
  const h = await startProxy(snapshotFor([be.b], { appProtocol: 'http' }), {}, undefined, cap);
  t.teardown(() => h.close());
  const holders = new http.Agent({ keepAlive: true, maxSockets: 4 });
  const single = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => {
    holders.destroy();
    single.destroy();
  });

  const held = [h1Get(h.port, '/hold', holders), h1Get(h.port, '/hold', holders)];
  await until(() => be.held === 2, 'two held upstream');
  const over = await h1Get(h.port, '/fast', single);
  t.equal(over.status, 503, 'the request over the cap gets 503');
  t.equal(over.headers['skein-code'], CODE, 'with the stable code in a response field');
  t.match(over.body, CODE, 'and in the body');
  t.not(over.headers.connection, 'close', 'no Connection: close: nothing was left unread on the connection');
  t.equal(be.seen, 2, 'nothing of it reached the upstream');
  t.equal(h.proxy.refusalCount(CODE), 1, 'counted under its code');
  be.releaseAll();
  t.same(
    (await Promise.all(held)).map((r) => r.status),
    [200, 200],
    'those under the cap are served',
  );
  await until(() => cap.open === 0, 'places back');
  const after = await h1Get(h.port, '/fast', single);
  t.equal(after.status, 200, 'the refused client, on the same keep-alive connection, is served once a place is free');

  // A POST over the cap whose body is still coming: answered 503 and the body read and
  // dropped, the connection still good for the next request.
  const heldAgain = [h1Get(h.port, '/hold', holders), h1Get(h.port, '/hold', holders)];
  await until(() => be.held === 2, 'held again');
  const posted = await new Promise<{ status: number; next: number }>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: h.port, path: '/post', method: 'POST', agent: single, headers: { 'content-length': 20_000 } }, (res) => {
      res.resume();
      res.on('end', () => {
        be.releaseAll();
        // Once the holders' places are back, the same connection carries another request.
        until(() => cap.open === 0, 'places back').then(
          () => h1Get(h.port, '/fast', single).then((r) => resolve({ status: res.statusCode ?? 0, next: r.status }), reject),
          reject,
        );
      });
    });
    req.on('error', reject);
    req.write(Buffer.alloc(10_000, 1));
    setTimeout(() => req.end(Buffer.alloc(10_000, 2)), 50);
  });
  await Promise.all(heldAgain);
  t.same(posted, { status: 503, next: 200 }, 'a POST over the cap: 503, its body dropped, the connection reused');

  // Clients that leave mid-request: one waiting for its answer, one still sending its body.
  const waiting = net.connect(h.port, '127.0.0.1');
  waiting.on('error', () => {});
  waiting.write('GET /hold HTTP/1.1\r\nHost: server.apps\r\n\r\n');
  const uploading = net.connect(h.port, '127.0.0.1');
  uploading.on('error', () => {});
  uploading.write('POST /hold-upload HTTP/1.1\r\nHost: server.apps\r\nContent-Length: 100000\r\n\r\npartial');
  await until(() => cap.open === 2 && be.held === 2, 'both in flight');
  waiting.destroy();
  uploading.destroy();
  await until(() => cap.open === 0, 'disconnects give places back');
  t.equal(cap.open, 0, 'a client gone mid-response and one gone mid-upload: both places given back');
  t.equal(h.proxy.refusalCount(CODE), 2, 'two refusals in all');
});

t.test('HTTP/1 and HTTP/2 requests of one pod share the one cap', async (t) => {
  const be = await startBackend(t);
  const cap = new StreamCap(2);
  const h = await startProxy(snapshotFor([be.b], { appProtocol: 'http' }), {}, undefined, cap);
  t.teardown(() => h.close());
  const agent = new http.Agent({ keepAlive: false });
  const session = http2.connect(`http://127.0.0.1:${h.port}`);
  session.on('error', () => {});
  t.teardown(() => {
    session.destroy();
    agent.destroy();
  });
  const h1 = h1Get(h.port, '/hold', agent);
  const first = h2Request(session, '/hold');
  await until(() => be.held === 2, 'one of each held');
  const over = h2Request(session, '/fast');
  t.equal((await over.done).rst, NGHTTP2_REFUSED_STREAM, 'an HTTP/2 stream is refused while an HTTP/1 request holds the other place');
  const overH1 = await h1Get(h.port, '/fast', agent);
  t.equal(overH1.status, 503, 'and an HTTP/1 request too');
  be.releaseAll();
  await Promise.all([h1, first.done]);
  await until(() => cap.open === 0, 'places back');
  t.equal(cap.open, 0);
  t.equal(h.proxy.refusalCount(CODE), 2);
});

t.test('without a cap passed, requests are not counted; a listener cap defaults to 16,384', async (t) => {
  const be = await startBackend(t);
  const h = await startProxy(snapshotFor([be.b], { appProtocol: 'http' }));
  t.teardown(() => h.close());
  const agent = new http.Agent({ keepAlive: false });
  t.teardown(() => agent.destroy());
  t.equal((await h1Get(h.port, '/fast', agent)).status, 200);
  t.equal(new StreamCap().max, DEFAULT_MAX_STREAMS_PER_LISTENER);
  t.equal(DEFAULT_MAX_STREAMS_PER_LISTENER, 16_384, 'the default documented in the README and --help');
  const c = new StreamCap(1);
  t.ok(c.take());
  t.ok(c.full);
  t.notOk(c.take(), 'a full cap takes nothing');
  t.equal(c.open, 1, 'a refused take does not count');
  c.release();
  t.equal(c.open, 0);
});
