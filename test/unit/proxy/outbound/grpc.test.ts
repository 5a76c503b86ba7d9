import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import { BACKEND_IPS, type Backend, snapshotFor, startProxy, VIP } from './fixtures/harness.js';

// Raw-bytes service: no .proto needed, the proxy only sees HTTP/2 frames anyway.
const id = (b: Buffer): Buffer => b;
const svc: grpc.ServiceDefinition = {
  Unary: { path: '/skein.test.Echo/Unary', requestStream: false, responseStream: false, requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id },
  ServerStream: { path: '/skein.test.Echo/ServerStream', requestStream: false, responseStream: true, requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id },
  ClientStream: { path: '/skein.test.Echo/ClientStream', requestStream: true, responseStream: false, requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id },
  Bidi: { path: '/skein.test.Echo/Bidi', requestStream: true, responseStream: true, requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id },
};

async function startGrpcBackends(n: number): Promise<{ backends: Backend[]; servers: grpc.Server[] }> {
  const backends: Backend[] = [];
  const servers: grpc.Server[] = [];
  for (let i = 0; i < n; i++) {
    const server = new grpc.Server();
    server.addService(svc, {
      Unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        const text = call.request.toString();
        if (text === 'not-found') {
          cb({ code: grpc.status.NOT_FOUND, details: 'no such thing' });
          return;
        }
        const md = new grpc.Metadata();
        md.set('x-backend', String(i));
        cb(null, Buffer.from(`${text}@${i}`), md);
      },
      ServerStream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        const n = Number(call.request.toString());
        for (let k = 0; k < n; k++) call.write(Buffer.from(`msg-${k}`));
        call.end();
      },
      ClientStream: (call: grpc.ServerReadableStream<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        let count = 0;
        let bytes = 0;
        call.on('data', (b: Buffer) => {
          count++;
          bytes += b.length;
        });
        call.on('end', () => cb(null, Buffer.from(`${count}/${bytes}`)));
      },
      Bidi: (call: grpc.ServerDuplexStream<Buffer, Buffer>) => {
        call.on('data', (b: Buffer) => call.write(Buffer.from(`re:${b.toString()}`)));
        call.on('end', () => call.end());
      },
    });
    const port = await new Promise<number>((r, j) =>
      server.bindAsync(`${BACKEND_IPS[i]}:0`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? j(err) : r(p))),
    );
    backends.push({ ip: BACKEND_IPS[i] as string, port });
    servers.push(server);
  }
  return { backends, servers };
}

t.test('gRPC through the outbound proxy', async (t) => {
  const { backends, servers } = await startGrpcBackends(3);
  t.teardown(() => {
    for (const s of servers) s.forceShutdown();
  });
  const h = await startProxy(snapshotFor(backends, { appProtocol: 'grpc' }));
  t.teardown(() => h.close());
  // The client dials the proxy but names the Service VIP as its authority, as an app would.
  const client = new grpc.Client(`127.0.0.1:${h.port}`, grpc.credentials.createInsecure(), {
    'grpc.default_authority': `${VIP}:80`,
  });
  t.teardown(() => client.close());

  const unary = (text: string): Promise<{ value?: Buffer; err?: grpc.ServiceError; md?: grpc.Metadata }> =>
    new Promise((resolve) => {
      let md: grpc.Metadata | undefined;
      const call = client.makeUnaryRequest(svc.Unary?.path as string, id, id, Buffer.from(text), (err, value) =>
        resolve({ ...(value ? { value } : {}), ...(err ? { err } : {}), ...(md ? { md } : {}) }),
      );
      call.on('metadata', (m) => {
        md = m;
      });
    });

  t.test('unary calls spread per call over one client connection', async (t) => {
    const seen = new Set<string>();
    for (let i = 0; i < 9; i++) {
      const r = await unary(`hi${i}`);
      t.notOk(r.err, 'no error');
      const [, backend] = (r.value?.toString() ?? '').split('@');
      seen.add(backend as string);
    }
    t.equal(seen.size, 3, 'all three endpoints served');
    t.equal(h.proxy.stats().connections.http2, 1, 'one client connection');
  });

  t.test('trailers-only error response reaches the client intact', async (t) => {
    const r = await unary('not-found');
    t.equal(r.err?.code, grpc.status.NOT_FOUND);
    t.equal(r.err?.details, 'no such thing');
  });

  t.test('server streaming', async (t) => {
    const call = client.makeServerStreamRequest(svc.ServerStream?.path as string, id, id, Buffer.from('500'));
    const msgs: string[] = [];
    call.on('data', (b: Buffer) => msgs.push(b.toString()));
    const status = await new Promise<grpc.StatusObject>((r) => call.on('status', r));
    t.equal(status.code, grpc.status.OK);
    t.equal(msgs.length, 500);
    t.equal(msgs[499], 'msg-499');
  });

  t.test('client streaming', async (t) => {
    const result = new Promise<Buffer>((resolve, reject) => {
      const call = client.makeClientStreamRequest(svc.ClientStream?.path as string, id, id, (err, v) =>
        err ? reject(err) : resolve(v as Buffer),
      );
      for (let i = 0; i < 200; i++) call.write(Buffer.alloc(1000, i));
      call.end();
    });
    t.equal((await result).toString(), '200/200000');
  });

  t.test('bidi streaming', async (t) => {
    const call = client.makeBidiStreamRequest(svc.Bidi?.path as string, id, id);
    const got: string[] = [];
    for (let i = 0; i < 50; i++) {
      call.write(Buffer.from(`m${i}`));
      got.push(await new Promise<string>((r) => call.once('data', (b: Buffer) => r(b.toString()))));
    }
    call.end();
    const status = await new Promise<grpc.StatusObject>((r) => call.on('status', r));
    t.equal(status.code, grpc.status.OK);
    t.equal(got[49], 're:m49', 'ping-pong in lock step');
  });
});

t.test('gRPC: no healthy endpoint and unreachable endpoint -> UNAVAILABLE (trailers-only)', async (t) => {
  const { backends, servers } = await startGrpcBackends(1);
  t.teardown(() => {
    for (const s of servers) s.forceShutdown();
  });
  const h = await startProxy(snapshotFor(backends, { appProtocol: 'grpc', notReady: [BACKEND_IPS[0] as string] }));
  t.teardown(() => h.close());
  const client = new grpc.Client(`127.0.0.1:${h.port}`, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  const call = (): Promise<grpc.ServiceError | null> =>
    new Promise((r) => client.makeUnaryRequest(svc.Unary?.path as string, id, id, Buffer.from('x'), (err) => r(err)));
  const e1 = await call();
  t.equal(e1?.code, grpc.status.UNAVAILABLE, 'no ready endpoint');
  t.match(e1?.details, /no healthy upstream/);
  h.store.apply(snapshotFor(backends, { appProtocol: 'grpc', version: '2' }));
  h.tunnel.fail = true;
  const e2 = await call();
  t.equal(e2?.code, grpc.status.UNAVAILABLE, 'tunnel refused');
  t.match(e2?.details, /upstream connect error/);
  h.tunnel.failCode = 'SKEIN_TUNNEL_WRONG_DESTINATION';
  const e3 = await call();
  t.equal(e3?.code, grpc.status.PERMISSION_DENIED, 'destination policy denied the source');
  h.tunnel.fail = false;
  t.equal(await call(), null, 'served once the endpoint is reachable');
  await new Promise((r) => setTimeout(r, 20));
  t.same(
    h.records.map((x) => [x.protocol, x.status, x.grpcStatus]),
    [
      ['http2', 200, 14],
      ['http2', 200, 14],
      ['http2', 200, 7],
      ['http2', 200, 0],
    ],
    'gRPC status recorded from trailers or trailers-only headers',
  );
});
