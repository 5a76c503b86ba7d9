import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import { connect as netConnect } from 'node:net';
import t, { type Test } from 'tap';
import { WebSocket, WebSocketServer } from 'ws';
import { BACKEND_IPS, type Backend, listenOn, snapshotFor, startProxy } from './fixtures/harness.js';
import type { RequestRouter } from '../../../../src/proxy/outbound/router.js';

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  trailers: Record<string, string>;
}

function request(
  agent: http.Agent,
  port: number,
  opts: { method?: string; path?: string; body?: Buffer; headers?: Record<string, string>; chunked?: boolean } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, agent, method: opts.method ?? 'GET', path: opts.path ?? '/', headers: { host: 'server.apps', ...opts.headers } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), trailers: res.trailers as Record<string, string> }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (opts.body) {
      if (!opts.chunked) req.setHeader('content-length', opts.body.length);
      // Write in slices so chunked bodies really are multi-chunk.
      const step = 64 * 1024;
      for (let i = 0; i < opts.body.length; i += step) req.write(opts.body.subarray(i, i + step));
    }
    req.end();
  });
}

/** Backends answer with who they are, what they saw, and the sha256 of the body they got. */
async function startBackends(t: Test, n = 3): Promise<Backend[]> {
  const out: Backend[] = [];
  for (let i = 0; i < n; i++) {
    const server = http.createServer((req, res) => {
      const hash = createHash('sha256');
      let size = 0;
      req.on('data', (c: Buffer) => {
        hash.update(c);
        size += c.length;
      });
      req.on('end', () => {
        if (req.url === '/reset') {
          req.socket.destroy();
          return;
        }
        if (req.url?.startsWith('/echo')) {
          res.writeHead(200, { 'x-backend': String(i) });
          res.end(Buffer.alloc(Number(req.url.split('/')[2] ?? 0), 7));
          return;
        }
        res.writeHead(200, { 'x-backend': String(i), 'content-type': 'application/json', trailer: 'x-sum' });
        res.addTrailers({ 'x-sum': hash.digest('hex').slice(0, 16) });
        res.end(
          JSON.stringify({
            backend: i,
            size,
            host: req.headers.host,
            connection: req.headers.connection ?? null,
            keepAliveHdr: req.headers['keep-alive'] ?? null,
            custom: req.headers['x-custom'] ?? null,
            fooHop: req.headers['x-hop'] ?? null,
            te: req.headers['transfer-encoding'] ?? null,
          }),
        );
      });
    });
    const wss = new WebSocketServer({ server });
    wss.on('connection', (ws) => ws.on('message', (m, isBinary) => ws.send(isBinary ? m : `echo:${String(m)}:${i}`)));
    out.push(await listenOn(server, BACKEND_IPS[i] as string));
    t.teardown(() => {
      wss.close();
      server.closeAllConnections();
      server.close();
    });
  }
  return out;
}

t.test('HTTP/1.1 through the outbound proxy', async (t) => {
  const backends = await startBackends(t);
  const h = await startProxy(snapshotFor(backends, { appProtocol: 'http' }));
  t.teardown(() => h.close());
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());

  t.test('keep-alive requests on one client connection spread over endpoints', async (t) => {
    const seen = [0, 0, 0];
    const sockets = new Set<net.Socket>();
    agent.on('free', (s: net.Socket) => sockets.add(s));
    for (let i = 0; i < 30; i++) {
      const r = await request(agent, h.port);
      t.equal(r.status, 200);
      const j = JSON.parse(r.body.toString()) as { backend: number; host: string };
      seen[j.backend] = (seen[j.backend] ?? 0) + 1;
      t.equal(j.host, 'server.apps', 'Host kept as the client wrote it');
    }
    t.same(seen, [10, 10, 10], 'round robin per request');
    t.equal(sockets.size, 1, 'one client connection');
    t.equal(h.tunnel.calls[0]?.source, 'spiffe://cluster.local/ns/apps/sa/client', 'tunnel dialled with the source identity');
    t.equal(h.tunnel.calls[0]?.target.identity.startsWith('spiffe://cluster.local/ns/apps/sa/server-'), true);
    t.ok(h.tunnel.calls.length <= 3 + 1, `upstream streams reused (${h.tunnel.calls.length} opened)`);
  });

  t.test('hop-by-hop headers stripped, end-to-end kept, trailers relayed', async (t) => {
    const r = await request(agent, h.port, {
      headers: { connection: 'keep-alive, x-hop', 'x-hop': 'secret', 'keep-alive': 'timeout=5', 'x-custom': 'yes' },
    });
    const j = JSON.parse(r.body.toString()) as Record<string, unknown>;
    t.equal(j.custom, 'yes');
    t.equal(j.fooHop, null, 'field named in Connection removed');
    t.equal(j.keepAliveHdr, null, 'Keep-Alive removed');
    t.equal(r.trailers['x-sum']?.length, 16, 'response trailer relayed');
  });

  t.test('bodies 0 B .. 8 MB intact, content-length and chunked', async (t) => {
    for (const size of [0, 1, 1000, 65_537, 1_048_576, 8 * 1_048_576]) {
      for (const chunked of [false, true]) {
        const body = randomBytes(size);
        const r = await request(agent, h.port, { method: 'POST', body, chunked });
        const j = JSON.parse(r.body.toString()) as { size: number; te: string | null };
        t.equal(j.size, size, `${size} B ${chunked ? 'chunked' : 'length'} arrived whole`);
        t.equal(r.trailers['x-sum'], createHash('sha256').update(body).digest('hex').slice(0, 16), 'sha256 matches');
        if (chunked && size > 0) t.equal(j.te, 'chunked', 'chunked framing kept');
      }
    }
    for (const size of [0, 5_000_000]) {
      const r = await request(agent, h.port, { path: `/echo/${size}` });
      t.equal(r.body.length, size, `response of ${size} B intact`);
    }
  });

  t.test('upstream reset before response -> 502, proxy keeps serving', async (t) => {
    const r = await request(agent, h.port, { path: '/reset' });
    t.equal(r.status, 502);
    const ok = await request(agent, h.port);
    t.equal(ok.status, 200);
  });

  t.test('WebSocket upgrade passes through', async (t) => {
    const ws = new WebSocket(`ws://127.0.0.1:${h.port}/chat`, { headers: { host: 'server.apps' } });
    await new Promise((r, j) => {
      ws.once('open', r);
      ws.once('error', j);
    });
    const got = new Promise<string>((r) => ws.once('message', (m) => r(String(m))));
    ws.send('hi');
    t.match(await got, /^echo:hi:[012]$/);
    const big = randomBytes(3 * 1024 * 1024);
    const gotBig = new Promise<Buffer>((r) => ws.once('message', (m) => r(m as Buffer)));
    ws.send(big);
    t.ok((await gotBig).equals(big), '3 MB binary frame round trip');
    const closed = new Promise((r) => ws.once('close', r));
    ws.close();
    await closed;
    await new Promise((r) => setTimeout(r, 50));
    t.match(
      h.records.filter((x) => x.path === '/chat'),
      [{ status: 101, method: 'GET' }],
      'the WebSocket is one request in the telemetry, 101',
    );
  });
});

t.test('HTTP/1 detected from the first bytes when appProtocol is absent', async (t) => {
  const backends = await startBackends(t, 1);
  const h = await startProxy(snapshotFor(backends));
  t.teardown(() => h.close());
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const r = await request(agent, h.port);
  t.equal(r.status, 200);
  t.equal(h.proxy.stats().connections.http1, 1);
  t.equal(h.proxy.stats().connections.tcp, 0);
});

t.test('no ready endpoint -> 503; tunnel failure -> 503', async (t) => {
  const backends = await startBackends(t, 1);
  const h = await startProxy(snapshotFor(backends, { appProtocol: 'http', notReady: [BACKEND_IPS[0] as string] }));
  t.teardown(() => h.close());
  const agent = new http.Agent({ keepAlive: false });
  const r = await request(agent, h.port);
  t.equal(r.status, 503);
  t.equal(h.proxy.refusalCount('SKEIN_OUTBOUND_NO_HEALTHY_UPSTREAM'), 1);
  h.store.apply(snapshotFor(backends, { appProtocol: 'http', version: '2' }));
  h.tunnel.fail = true;
  const r2 = await request(agent, h.port);
  t.equal(r2.status, 503);
  t.match(r2.body.toString(), /upstream connect error/);
  h.tunnel.failCode = 'SKEIN_TUNNEL_SOURCE_DENIED';
  const denied = await request(agent, h.port);
  t.equal(denied.status, 403, 'destination refused the source identity -> 403');
  h.tunnel.fail = false;
  const r3 = await request(agent, h.port);
  t.equal(r3.status, 200, 'config update applies to the next request');
  await new Promise((r) => setImmediate(r));
  t.match(
    h.records.map((x) => x.status),
    [503, 503, 403, 200],
    'one record per request, with the status the client got',
  );
  t.match(h.records[3], {
    kind: 'http',
    protocol: 'http1',
    source: 'spiffe://cluster.local/ns/apps/sa/client',
    sourceWorkload: 'apps/client',
    destination: '10.96.0.10:80',
    destinationService: 'server.apps.svc.cluster.local',
    method: 'GET',
    path: '/',
    authority: 'server.apps',
    upstream: `${BACKEND_IPS[0]}:${backends[0]?.port}`,
  });
});

/** Raw HTTP/1.1 on one client connection: writes `first`, waits for a response head, writes `second`, collects until close (bounded). */
function rawExchange(port: number, first: string, second: string, waitMs = 1500): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = netConnect(port, '127.0.0.1');
    let text = '';
    let sentSecond = false;
    let closed = false;
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (!sentSecond && /\r\n\r\n/.test(text)) {
        sentSecond = true;
        // A short pause, as a client would before reusing the connection.
        setTimeout(() => {
          if (!s.destroyed) s.write(second);
        }, 50);
      }
    });
    s.on('close', () => {
      closed = true;
    });
    s.on('connect', () => s.write(first));
    setTimeout(() => {
      s.destroy();
      resolve({ text, closed });
    }, waitMs);
  });
}

t.test('Upgrade: piped only after a 101 and only for allowed protocols', async (t) => {
  // A backend that refuses upgrades with 426 and keeps the connection open (Node >= 24.9:
  // upgrades as ordinary requests), and answers everything else naming what it saw.
  const seen: Array<{ url: string; upgrade: string | null; connection: string | null }> = [];
  const refusing = http.createServer({ shouldUpgradeCallback: () => false } as http.ServerOptions, (req, res) => {
    seen.push({ url: req.url ?? '', upgrade: req.headers.upgrade ?? null, connection: req.headers.connection ?? null });
    req.resume();
    if (req.headers.upgrade) {
      res.writeHead(426, { 'content-type': 'text/plain', upgrade: 'websocket' });
      res.end('upgrade refused');
      return;
    }
    res.end(`backend-saw:${req.url}`);
  });
  const b = await listenOn(refusing, BACKEND_IPS[0] as string);
  t.teardown(() => {
    refusing.closeAllConnections();
    refusing.close();
  });
  const h = await startProxy(snapshotFor([b], { appProtocol: 'http' }));
  t.teardown(() => h.close());

  t.test('a refused WebSocket upgrade (426) is a normal response, never a pipe', async (t) => {
    seen.length = 0;
    const before = h.records.length;
    const r = await rawExchange(
      h.port,
      'GET /chat HTTP/1.1\r\nHost: server.apps\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n',
      'GET /smuggled HTTP/1.1\r\nHost: server.apps\r\n\r\n',
    );
    t.match(r.text, /^HTTP\/1\.1 426 /, 'the client gets the 426');
    t.match(r.text, /upgrade refused/, 'with its body');
    t.notMatch(r.text, /backend-saw:\/smuggled/, 'a later request on that connection never reaches the backend unrouted');
    t.same(
      seen.map((s) => s.url),
      ['/chat'],
      'the backend saw only the upgrade request',
    );
    t.ok(r.closed, 'the connection closed cleanly after the refusal');
    await new Promise((r) => setImmediate(r));
    t.match(
      h.records.slice(before).map((x) => [x.path, x.status]),
      [['/chat', 426]],
      'the refused upgrade is one request in the telemetry',
    );
  });

  t.test('Upgrade: h2c is an ordinary request: not piped, hop-by-hop fields removed, the connection stays HTTP', async (t) => {
    seen.length = 0;
    const before = h.records.length;
    const r = await rawExchange(
      h.port,
      'GET /h2c HTTP/1.1\r\nHost: server.apps\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n',
      'GET /second HTTP/1.1\r\nHost: server.apps\r\n\r\n',
    );
    t.match(r.text, /^HTTP\/1\.1 200 /, 'answered as plain HTTP/1.1');
    t.notMatch(r.text, /HTTP\/1\.1 101/, 'no switch of protocols');
    t.same(seen, [
      { url: '/h2c', upgrade: null, connection: 'keep-alive' },
      { url: '/second', upgrade: null, connection: 'keep-alive' },
    ], 'the backend saw two plain requests');
    await new Promise((r) => setImmediate(r));
    t.match(
      h.records.slice(before).map((x) => [x.path, x.status]),
      [
        ['/h2c', 200],
        ['/second', 200],
      ],
      'both routed and recorded: the connection stayed HTTP',
    );
  });

  t.test('the allowed list is configurable', async (t) => {
    const h2 = await startProxy(snapshotFor([b], { appProtocol: 'http' }), { http1: { upgradeProtocols: [] } });
    t.teardown(() => h2.close());
    seen.length = 0;
    const r = await rawExchange(
      h2.port,
      'GET /ws-off HTTP/1.1\r\nHost: server.apps\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
      'GET /after HTTP/1.1\r\nHost: server.apps\r\n\r\n',
    );
    t.match(r.text, /^HTTP\/1\.1 200 /, 'WebSocket not allowed: an ordinary request');
    t.same(
      seen.map((s) => [s.url, s.upgrade]),
      [
        ['/ws-off', null],
        ['/after', null],
      ],
    );
  });
});

t.test('the routing hook sees every request (method, path, Host) and chooses its endpoint', async (t) => {
  const backends = await startBackends(t);
  const seen: string[] = [];
  // A router that sends /b/* to the second backend and everything else to the first.
  const router: RequestRouter = {
    choose(source, dest, req, make) {
      if (dest.kind !== 'service' || !req) return undefined;
      seen.push(`${req.method} ${req.path} ${req.authority}`);
      const ep = dest.service.endpoints[req.path.startsWith('/b/') ? 1 : 0];
      return ep ? make(source, { endpoint: ep, port: ep.ports.web as number }) : undefined;
    },
    inFlight: () => 0,
    describe: () => ({}),
  };
  const h = await startProxy(snapshotFor(backends, { appProtocol: 'http' }), { router });
  t.teardown(() => h.close());
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const get = (path: string) =>
    new Promise<string>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: h.port, path, agent, headers: { host: 'server.apps' } }, (res) => {
        res.resume();
        res.on('end', () => resolve(String(res.headers['x-backend'])));
      });
      req.on('error', reject);
      req.end();
    });
  t.same([await get('/a'), await get('/b/1'), await get('/a/2'), await get('/b/')], ['0', '1', '0', '1'], 'one connection, each request routed on its own');
  t.same(seen, ['GET /a server.apps', 'GET /b/1 server.apps', 'GET /a/2 server.apps', 'GET /b/ server.apps']);
});
