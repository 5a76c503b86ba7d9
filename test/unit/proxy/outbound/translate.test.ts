import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import type net from 'node:net';
import t from 'tap';
import { BACKEND_IPS, listenOn, snapshotFor, startProxy } from './fixtures/harness.js';

t.test('HTTP/1.1 client on a port declared h2c: translated to HTTP/2 upstream', async (t) => {
  const backend = http2.createServer();
  backend.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    const hash = createHash('sha256');
    let n = 0;
    stream.on('data', (c: Buffer) => {
      hash.update(c);
      n += c.length;
    });
    stream.on('end', () => {
      stream.respond({ ':status': 201, 'x-authority': String(headers[':authority']), 'x-method': String(headers[':method']), 'set-cookie': ['a=1', 'b=2'] }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'x-sha': hash.digest('hex') }));
      stream.end(`got ${n}`);
    });
  });
  const b = await listenOn(backend as unknown as net.Server, BACKEND_IPS[0] as string);
  t.teardown(() => backend.close());
  const h = await startProxy(snapshotFor([b], { appProtocol: 'http2' }));
  t.teardown(() => h.close());
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  for (const size of [0, 100_000]) {
    const body = randomBytes(size);
    const r = await new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; trailers: NodeJS.Dict<string> }>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: h.port, method: 'POST', path: '/x', agent, headers: { host: 'server.apps:80', 'content-length': size } }, (res) => {
        let s = '';
        res.on('data', (d) => {
          s += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: s, trailers: res.trailers }));
      });
      req.on('error', reject);
      req.end(body);
    });
    t.equal(r.status, 201);
    t.equal(r.body, `got ${size}`);
    t.equal(r.headers['x-authority'], 'server.apps:80', 'Host became :authority');
    t.equal(r.headers['x-method'], 'POST');
    t.same(r.headers['set-cookie'], ['a=1', 'b=2'], 'repeated fields kept');
    t.equal(r.trailers['x-sha'], createHash('sha256').update(body).digest('hex'), 'trailers relayed over chunked HTTP/1.1');
  }
  t.equal(h.proxy.stats().connections.http1, 1, 'client side spoke HTTP/1.1');
  t.equal(h.proxy.stats().upstreams.h2Sessions, 1, 'upstream side HTTP/2');
});

t.test('HTTP/2 client on a port declared http: translated to HTTP/1.1 upstream', async (t) => {
  const backend = http.createServer((req, res) => {
    const hash = createHash('sha256');
    req.on('data', (c: Buffer) => hash.update(c));
    req.on('end', () => {
      res.writeHead(200, { 'x-host': String(req.headers.host), 'x-te': String(req.headers['transfer-encoding'] ?? '') });
      res.end(hash.digest('hex'));
    });
  });
  const b = await listenOn(backend, BACKEND_IPS[0] as string);
  t.teardown(() => {
    backend.closeAllConnections();
    backend.close();
  });
  const h = await startProxy(snapshotFor([b], { appProtocol: 'http' }));
  t.teardown(() => h.close());
  const session = http2.connect(`http://127.0.0.1:${h.port}`);
  t.teardown(() => session.close());
  for (const size of [0, 300_000]) {
    const body = randomBytes(size);
    const r = await new Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: string }>((resolve, reject) => {
      const req = session.request({ ':method': size ? 'POST' : 'GET', ':path': '/y', ':authority': 'server.apps' }, { endStream: size === 0 });
      let s = '';
      let status = 0;
      let headers: http2.IncomingHttpHeaders = {};
      req.on('response', (hd) => {
        status = Number(hd[':status']);
        headers = hd;
      });
      req.on('data', (d) => {
        s += d;
      });
      req.on('end', () => resolve({ status, headers, body: s }));
      req.on('error', reject);
      if (size) req.end(body);
    });
    t.equal(r.status, 200);
    t.equal(r.body, createHash('sha256').update(body).digest('hex'), `${size} B body intact`);
    t.equal(r.headers['x-host'], 'server.apps', ':authority became Host');
    if (size) t.equal(r.headers['x-te'], 'chunked', 'body without length framed as chunked');
  }
  t.equal(h.proxy.stats().connections.http2, 1);
});
