import * as grpc from '@grpc/grpc-js';
import http from 'node:http';
import net from 'node:net';
import t from 'tap';
import { ConfigStore } from '../../../../src/config/store.js';
import { OutboundProxy } from '../../../../src/proxy/outbound/outbound-proxy.js';
import { BACKEND_IPS, type Backend, client, directConnect, H2ConnectTunnel, listenOn, snapshotFor, VIP } from './fixtures/harness.js';

/** Outbound proxy whose tunnel streams are HTTP/2 CONNECT streams, as the real tunnel's are. */
async function start(t: Tap, backends: Backend[], appProtocol?: 'http' | 'http2' | 'grpc' | 'tcp') {
  const tunnel = new H2ConnectTunnel();
  await tunnel.start();
  const store = new ConfigStore();
  store.apply(snapshotFor(backends, appProtocol ? { appProtocol } : {}));
  const proxy = new OutboundProxy({ store, localNode: 'node-a', tunnel, connectDirect: directConnect });
  const server = net.createServer({ allowHalfOpen: true }, (s) =>
    proxy.handleConnection(s, { source: client, originalDst: { address: VIP, port: 80 } }),
  );
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(async () => {
    await proxy.close();
    server.close();
    await tunnel.close();
  });
  return { port: (server.address() as net.AddressInfo).port, tunnel, proxy };
}
type Tap = { teardown: (fn: () => void | Promise<void>) => void };

t.test('HTTP/1.1 keep-alive upstreams over CONNECT streams', async (t) => {
  const backend = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.end(`hello ${req.url}`));
  });
  const b = await listenOn(backend, BACKEND_IPS[0] as string);
  t.teardown(() => {
    backend.closeAllConnections();
    backend.close();
  });
  const p = await start(t, [b], 'http');
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  for (let i = 0; i < 20; i++) {
    const body = await new Promise<string>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: p.port, path: `/r${i}`, agent }, (res) => {
          let s = '';
          res.on('data', (d) => {
            s += d;
          });
          res.on('end', () => resolve(s));
        })
        .on('error', reject);
    });
    t.equal(body, `hello /r${i}`);
  }
  t.equal(p.tunnel.calls.length, 1, 'one CONNECT stream reused for 20 sequential requests');

  // The app closes idle keep-alive connections after 200 ms: the pooled stream must be dropped,
  // not reused (a reused dead stream would turn the next request into a 502).
  backend.keepAliveTimeout = 200;
  const get = (path: string): Promise<number> =>
    new Promise((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: p.port, path, agent }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        })
        .on('error', reject);
    });
  t.equal(await get('/before-idle'), 200);
  await new Promise((r) => setTimeout(r, 500));
  t.equal(await get('/after-idle'), 200, 'served on a fresh stream after the app closed the idle one');
  t.equal(p.tunnel.calls.length, 2, 'a new CONNECT stream once the app closed the idle one');
});

t.test('HTTP/2 and gRPC upstream sessions over CONNECT streams', async (t) => {
  const server = new grpc.Server();
  const id = (b: Buffer): Buffer => b;
  server.addService(
    { Echo: { path: '/t.E/Echo', requestStream: false, responseStream: false, requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id } },
    { Echo: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request) },
  );
  const port = await new Promise<number>((r, j) =>
    server.bindAsync(`${BACKEND_IPS[0]}:0`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? j(e) : r(p))),
  );
  t.teardown(() => server.forceShutdown());
  const p = await start(t, [{ ip: BACKEND_IPS[0] as string, port }], 'grpc');
  const c = new grpc.Client(`127.0.0.1:${p.port}`, grpc.credentials.createInsecure());
  t.teardown(() => c.close());
  for (let i = 0; i < 10; i++) {
    const v = await new Promise<Buffer>((r, j) =>
      c.makeUnaryRequest('/t.E/Echo', id, id, Buffer.from(`m${i}`), (e, v) => (e ? j(e) : r(v as Buffer))),
    );
    t.equal(v.toString(), `m${i}`);
  }
  t.equal(p.tunnel.calls.length, 1, 'one CONNECT stream carries the upstream HTTP/2 session');
});

t.test('TCP half-close and resets over a CONNECT stream', async (t) => {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => {});
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => s.end(Buffer.concat(chunks)));
  });
  const b = await listenOn(server, BACKEND_IPS[0] as string);
  t.teardown(() => server.close());
  const p = await start(t, [b], 'tcp');
  const s = net.connect({ port: p.port, host: '127.0.0.1', allowHalfOpen: true });
  s.end('ping over CONNECT');
  const got = await new Promise<string>((r) => {
    let acc = '';
    s.on('data', (d) => {
      acc += d;
    });
    s.on('end', () => r(acc));
  });
  t.equal(got, 'ping over CONNECT');
  t.equal(p.tunnel.calls[0]?.target.address, BACKEND_IPS[0]);
  t.equal(p.tunnel.calls[0]?.target.port, b.port);
  t.equal(p.tunnel.calls[0]?.target.node, 'node-b');
});
