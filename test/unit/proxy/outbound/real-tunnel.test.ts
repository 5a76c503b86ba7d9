/**
 * The outbound proxy over the real tunnel (TunnelPool -> mTLS HTTP/2 CONNECT -> TunnelServer ->
 * InboundProxy -> app), all on loopback: the whole data path except capture. Uses the tunnel
 * tests' one-pod mesh (CA, identities, servers) as it is.
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import t from 'tap';
import { meshWithApp } from './fixtures/real-mesh.js';

t.test('TCP over the real mTLS tunnel: bytes and half-close', async (t) => {
  const { mesh, port } = await meshWithApp(t, (s) => s.pipe(s), 'tcp');
  const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const payload = randomBytes(2 * 1024 * 1024);
  s.end(payload);
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  await new Promise((r) => s.once('end', r));
  t.ok(Buffer.concat(chunks).equals(payload), '2 MB echoed intact through TLS + CONNECT');
  await new Promise((r) => setTimeout(r, 50));
  t.equal(mesh.records[0]?.source, mesh.clientId, 'the inbound side saw the source identity from the certificate');
});

t.test('HTTP/1.1 keep-alive over the real tunnel', async (t) => {
  const app = http.createServer((req, res) => {
    const h = createHash('sha256');
    req.on('data', (c: Buffer) => h.update(c));
    req.on('end', () => res.end(h.digest('hex')));
  });
  const { mesh, port } = await meshWithApp(t, (s) => app.emit('connection', s), 'http');
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  for (let i = 0; i < 10; i++) {
    const body = randomBytes(10_000 * i);
    const got = await new Promise<string>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/', agent }, (res) => {
        let s = '';
        res.on('data', (d) => {
          s += d;
        });
        res.on('end', () => resolve(s));
      });
      req.on('error', reject);
      req.end(body);
    });
    t.equal(got, createHash('sha256').update(body).digest('hex'));
  }
  t.equal(mesh.records.length, 0, 'one CONNECT stream still open: reused for all 10 requests');

  // The app closes idle keep-alive connections: the pooled tunnel stream must be dropped, and
  // the next request must not hang on it or fail.
  app.keepAliveTimeout = 100;
  const get = (): Promise<number> =>
    new Promise((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port, path: '/', agent, timeout: 3000 }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('timeout', () => req.destroy(new Error('request hung on a dead upstream stream')));
      req.on('error', reject);
    });
  t.equal(await get(), 200);
  await new Promise((r) => setTimeout(r, 400));
  t.equal(await get(), 200, 'served after the app closed the idle upstream connection');
});

t.test('HTTP/2 over the real tunnel', async (t) => {
  const app = http2.createServer();
  app.on('stream', (stream, headers) => {
    stream.respond({ ':status': 200 });
    stream.end(String(headers[':path']));
  });
  const { port } = await meshWithApp(t, (s) => app.emit('connection', s), 'http2');
  const session = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.close());
  const replies = await Promise.all(
    Array.from(
      { length: 100 },
      (_, i) =>
        new Promise<string>((resolve, reject) => {
          const r = session.request({ ':path': `/p${i}` });
          let s = '';
          r.on('data', (d) => {
            s += d;
          });
          r.on('end', () => resolve(s));
          r.on('error', reject);
        }),
    ),
  );
  t.equal(replies[99], '/p99');
  t.equal(new Set(replies).size, 100);
});
