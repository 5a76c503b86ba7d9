// The lab's echo server as traffic-management tests use it: delays, statuses, the headers
// it received, faults from flags (an exact share over 100 requests) and at run time through
// `/_echo/`, and its counters; over HTTP/1.1 and h2c alike, and gRPC for the faults.
import http from 'node:http';
import http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import t, { type Test } from 'tap';
import { EchoFaults, type FaultSettings, faultsFromFlags } from '../../../src/lab/workloads/echo-faults.js';
import { echoService } from '../../../src/lab/workloads/echo-proto.js';
import { runLoad } from '../../../src/lab/workloads/client.js';
import { type EchoServers, startEchoServers } from '../../../src/lab/workloads/echo.js';

const WHO = { pod: 'echo-0', namespace: 'shop', node: 'node-a', ip: '127.0.0.1' };

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

type Send = (method: string, path: string, headers?: Record<string, string | string[]>) => Promise<Answer>;

async function echo(t: Test, faults?: FaultSettings, grpcToo = false): Promise<EchoServers> {
  const s = await startEchoServers({ host: '127.0.0.1', http: 0, grpc: grpcToo ? 0 : undefined, faults, identity: WHO });
  t.teardown(s.stop);
  return s;
}

function h1Client(port: number): Send {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  return (method, path, headers = {}) =>
    new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, method, path, headers, agent }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => {
          body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      });
      req.on('error', reject);
      req.end();
    });
}

function h2Client(t: Test, port: number): Send {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  t.teardown(() => session.close());
  return (method, path, headers = {}) =>
    new Promise((resolve, reject) => {
      const stream = session.request({ ':method': method, ':path': path, ...headers }, { endStream: true });
      let status = 0;
      let got: http2.IncomingHttpHeaders = {};
      let body = '';
      stream.setEncoding('utf8');
      stream.on('response', (h) => {
        status = Number(h[':status']);
        got = h;
      });
      stream.on('data', (c) => {
        body += c;
      });
      stream.on('end', () => resolve({ status, headers: got, body }));
      stream.on('error', reject);
    });
}

const PROTOCOLS: [string, (t: Test, port: number) => Send][] = [
  ['http/1.1', (_t, port) => h1Client(port)],
  ['h2c', (t, port) => h2Client(t, port)],
];

for (const [name, client] of PROTOCOLS) {
  t.test(`${name}: GET /delay/MS answers after MS ms; out of range is refused`, async (t) => {
    const s = await echo(t);
    const send = client(t, s.ports.http!);
    const start = performance.now();
    const r = await send('GET', '/delay/300');
    const took = performance.now() - start;
    t.equal(r.status, 200);
    t.ok(took >= 295 && took < 1500, `took ${Math.round(took)} ms`);
    t.equal(JSON.parse(r.body).pod, 'echo-0');
    t.equal(r.headers['x-skein-pod'], 'shop/echo-0');
    const tooLong = await send('GET', '/delay/60001');
    t.equal(tooLong.status, 400);
    t.equal(tooLong.headers['x-skein-pod'], 'shop/echo-0', 'errors name the pod too');
  });

  t.test(`${name}: GET /status/CODE answers that status; 1xx and nonsense are refused`, async (t) => {
    const s = await echo(t);
    const send = client(t, s.ports.http!);
    for (const code of [200, 201, 404, 418, 500, 503, 599]) {
      const r = await send('GET', `/status/${code}?q=1`);
      t.equal(r.status, code);
      t.equal(r.headers['x-skein-pod'], 'shop/echo-0', `${code} names the pod`);
      t.equal(JSON.parse(r.body).pod, 'echo-0');
    }
    const noBody = await send('GET', '/status/204');
    t.equal(noBody.status, 204);
    t.equal(noBody.body, '', '204 has no body');
    for (const bad of ['100', '103', '199', '600', '42']) t.equal((await send('GET', `/status/${bad}`)).status, 400, `/status/${bad}`);
  });

  t.test(`${name}: GET /headers answers the request's fields as JSON`, async (t) => {
    const s = await echo(t);
    const send = client(t, s.ports.http!);
    const r = await send('GET', '/headers', { 'X-Route': 'canary', 'x-multi': ['a', 'b'] });
    t.equal(r.status, 200);
    t.equal(r.headers['x-skein-pod'], 'shop/echo-0');
    const h = JSON.parse(r.body) as Record<string, string | string[]>;
    t.equal(h['x-route'], 'canary', 'lower-case names');
    t.same(h['x-multi'], ['a', 'b'], 'a field sent twice is an array');
    t.notOk(
      Object.keys(h).some((k) => k.startsWith(':')),
      'no pseudo-headers',
    );
  });

  t.test(`${name}: --fail-ratio 0.3 fails exactly 30 of 100 requests, spread evenly`, async (t) => {
    const s = await echo(t, faultsFromFlags({ failRatio: '0.3' }));
    const send = client(t, s.ports.http!);
    const statuses: number[] = [];
    for (let i = 0; i < 100; i++) {
      const r = await send('GET', '/');
      t.equal(r.headers['x-skein-pod'], 'shop/echo-0');
      if (r.status === 503) t.equal(r.headers['x-skein-echo-fault'], 'injected');
      statuses.push(r.status);
    }
    t.equal(statuses.filter((x) => x === 503).length, 30);
    t.equal(statuses.filter((x) => x === 200).length, 70);
    t.same(
      statuses.slice(0, 10).map((x) => (x === 503 ? 'F' : '.')).join(''),
      '...F..F..F',
      'requests 4, 7, 10 fail',
    );
    const stats = JSON.parse((await send('GET', '/_echo/stats')).body);
    t.same(stats, { requests: 100, byStatus: { '200': 70, '503': 30 }, byGrpcStatus: {}, injectedFailures: 30 });
  });

  t.test(`${name}: concurrent requests still fail the exact share`, async (t) => {
    const s = await echo(t, faultsFromFlags({ failStatus: '500', failRatio: '0.25' }));
    const send = client(t, s.ports.http!);
    const all = await Promise.all(Array.from({ length: 100 }, () => send('GET', '/')));
    t.equal(all.filter((r) => r.status === 500).length, 25);
    t.ok(all.every((r) => r.headers['x-skein-pod'] === 'shop/echo-0'));
  });

  t.test(`${name}: --fail-status alone fails every request; --delay-ms delays every answer`, async (t) => {
    const s = await echo(t, faultsFromFlags({ failStatus: '502', delayMs: '200' }));
    const send = client(t, s.ports.http!);
    const start = performance.now();
    const r = await send('GET', '/headers');
    t.ok(performance.now() - start >= 195, 'failure delayed too');
    t.equal(r.status, 502);
    t.equal(JSON.parse(r.body).fault, 'injected');
    const c0 = performance.now();
    const cfg = await send('GET', '/_echo/config');
    t.ok(performance.now() - c0 < 150, 'control routes are not delayed');
    t.equal(cfg.status, 200, 'control routes are not failed');
    t.same(JSON.parse(cfg.body), { failStatus: 502, failRatio: 1, delayMs: 200 });
  });

  t.test(`${name}: a pod fails and recovers at run time; control requests are neither failed nor counted`, async (t) => {
    const s = await echo(t);
    const send = client(t, s.ports.http!);
    t.equal((await send('GET', '/')).status, 200);
    const put = await send('PUT', '/_echo/fail?status=503&ratio=1');
    t.equal(put.status, 200);
    t.same(JSON.parse(put.body), { failStatus: 503, failRatio: 1, delayMs: 0 });
    t.equal(put.headers['x-skein-pod'], 'shop/echo-0');
    for (let i = 0; i < 5; i++) t.equal((await send('GET', '/status/200')).status, 503, 'failing');
    const during = await send('GET', '/_echo/stats');
    t.equal(during.status, 200, 'stats answer while failing');
    const del = await send('DELETE', '/_echo/fail');
    t.equal(del.status, 204);
    t.equal(del.body, '');
    t.equal((await send('GET', '/')).status, 200, 'recovered');
    t.same(JSON.parse((await send('GET', '/_echo/stats')).body), {
      requests: 7,
      byStatus: { '200': 2, '503': 5 },
      byGrpcStatus: {},
      injectedFailures: 5,
    });
    t.equal((await send('PUT', '/_echo/delay?ms=150')).status, 200);
    const d0 = performance.now();
    t.equal((await send('GET', '/')).status, 200);
    t.ok(performance.now() - d0 >= 145, 'runtime delay applies');
    t.equal((await send('DELETE', '/_echo/delay')).status, 204);
    t.equal((await send('DELETE', '/_echo/stats')).status, 204);
    t.same(JSON.parse((await send('GET', '/_echo/stats')).body).requests, 0, 'stats reset');
    t.equal((await send('PUT', '/_echo/fail?status=99')).status, 400);
    t.equal((await send('PUT', '/_echo/fail?ratio=1.5')).status, 400);
    t.equal((await send('PUT', '/_echo/delay?ms=70000')).status, 400);
    t.equal((await send('GET', '/_echo/nothing')).status, 404);
    t.equal((await send('GET', '/')).status, 200, 'bad control requests changed nothing');
  });
}

t.test('gRPC: failing calls end UNAVAILABLE naming the pod; counted by code', async (t) => {
  const s = await echo(t, { failStatus: 503, failRatio: 0.5, delayMs: 0 }, true);
  const Echo = echoService();
  const client = new Echo(`127.0.0.1:${s.ports.grpc}`, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  const unary = () =>
    new Promise<{ code: number; pod?: string }>((resolve) => {
      (client as unknown as { Unary: (req: unknown, cb: (err: grpc.ServiceError | null, r?: { pod: string }) => void) => void }).Unary(
        { payload: Buffer.from('hi') },
        (err, r) => resolve(err ? { code: err.code, pod: String(err.metadata.get('x-skein-pod')[0]) } : { code: 0, pod: r?.pod }),
      );
    });
  const got: { code: number; pod?: string }[] = [];
  for (let i = 0; i < 10; i++) got.push(await unary());
  t.same(
    got.map((g) => g.code),
    [0, 14, 0, 14, 0, 14, 0, 14, 0, 14],
  );
  t.ok(got.filter((g) => g.code === 14).every((g) => g.pod === 'shop/echo-0'), 'failures name the pod in trailers');
  t.same(s.faults.snapshot(), { requests: 10, byStatus: {}, byGrpcStatus: { '0': 5, '14': 5 }, injectedFailures: 5 });
  s.faults.clearFail();
  t.equal((await unary()).code, 0, 'recovered');
});

t.test('gRPC streams: a failed call ends UNAVAILABLE, a delayed one answers late', async (t) => {
  const s = await echo(t, { failStatus: 503, failRatio: 1, delayMs: 0 }, true);
  const Echo = echoService();
  const client = new Echo(`127.0.0.1:${s.ports.grpc}`, grpc.credentials.createInsecure()) as unknown as {
    Bidi: () => grpc.ClientDuplexStream<unknown, { messages: number }>;
    close: () => void;
  };
  t.teardown(() => client.close());
  const bidi = () =>
    new Promise<{ code: number; replies: number }>((resolve) => {
      const call = client.Bidi();
      let replies = 0;
      call.on('data', () => {
        replies += 1;
      });
      call.on('error', (e: grpc.ServiceError) => resolve({ code: e.code, replies }));
      call.on('status', (st: grpc.StatusObject) => {
        if (st.code === 0) resolve({ code: 0, replies });
      });
      call.write({ payload: Buffer.from('a') });
      call.write({ payload: Buffer.from('b') });
      call.end();
    });
  t.same(await bidi(), { code: 14, replies: 0 });
  s.faults.clearFail();
  s.faults.setDelay(200);
  const start = performance.now();
  t.same(await bidi(), { code: 0, replies: 2 }, 'messages queued during the delay are answered');
  t.ok(performance.now() - start >= 195);
});

t.test('faults from flags: defaults and refusals', async (t) => {
  t.same(faultsFromFlags({}), { failRatio: 0, delayMs: 0 });
  t.same(faultsFromFlags({ failStatus: '500' }), { failStatus: 500, failRatio: 1, delayMs: 0 });
  t.same(faultsFromFlags({ failRatio: '0.1' }), { failStatus: 503, failRatio: 0.1, delayMs: 0 });
  t.same(faultsFromFlags({ delayMs: '50' }), { failRatio: 0, delayMs: 50 });
  t.throws(() => faultsFromFlags({ failStatus: '103' }), /--fail-status/);
  t.throws(() => faultsFromFlags({ failStatus: 'x' }), /--fail-status/);
  t.throws(() => faultsFromFlags({ failRatio: '2' }), /--fail-ratio/);
  t.throws(() => faultsFromFlags({ delayMs: '60001' }), /--delay-ms/);
  t.throws(() => faultsFromFlags({ delayMs: '1.5' }), /--delay-ms/);
});

t.test('the spread: every window of 100 has exactly 100*R failures', async (t) => {
  for (const ratio of [0, 0.01, 0.1, 0.3, 0.33, 0.5, 0.75, 0.99, 1]) {
    const f = new EchoFaults({ failStatus: 503, failRatio: ratio, delayMs: 0 });
    const fails = Array.from({ length: 1000 }, () => f.decide() !== undefined);
    for (const start of [0, 1, 37, 900]) {
      const n = fails.slice(start, start + 100).filter(Boolean).length;
      t.equal(n, Math.round(ratio * 100), `ratio ${ratio}, requests ${start + 1}..${start + 100}`);
    }
  }
});

t.test('the lab client counts failures by the echo pod that answered them (HTTP/1.1, h2c, gRPC)', async (t) => {
  const s = await echo(t, { failStatus: 503, failRatio: 0.5, delayMs: 0 }, true);
  const base = { host: '127.0.0.1', path: '/', count: 10, concurrency: 1, rate: 0, durationMs: 10_000, size: 0, newConnection: false, grpcCall: 'unary', timeoutMs: 3000, connections: 1 } as const;
  for (const [protocol, port, code] of [
    ['http1', s.ports.http!, 'HTTP_503'],
    ['h2c', s.ports.http!, 'HTTP_503'],
    ['grpc', s.ports.grpc!, 'GRPC_14'],
  ] as const) {
    const sum = await runLoad({ ...base, protocol, port });
    t.equal(sum.ok, 5, protocol);
    t.same(sum.errors, { [code]: 5 }, protocol);
    t.same(sum.byPod, { 'shop/echo-0': 5 }, protocol);
    t.same(sum.failedByPod, { 'shop/echo-0': 5 }, protocol);
  }
});
