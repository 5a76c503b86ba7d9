import { createHash, randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import t, { type Test } from 'tap';
import { BACKEND_IPS, type Backend, listenOn, snapshotFor, startProxy } from './fixtures/harness.js';

/** h2c backends: /who answers its index, /echo streams the request body back, /slow waits. */
async function startH2Backends(t: Test, n = 3, slowIndex = -1): Promise<Backend[]> {
  const out: Backend[] = [];
  for (let i = 0; i < n; i++) {
    const server = http2.createServer();
    server.on('stream', (stream, headers) => {
      stream.on('error', () => {});
      const path = headers[':path'] ?? '/';
      if (path === '/echo') {
        stream.respond({ ':status': 200, 'x-backend': String(i) }, { waitForTrailers: true });
        const hash = createHash('sha256');
        stream.on('data', (c: Buffer) => hash.update(c));
        stream.on('wantTrailers', () => stream.sendTrailers({ 'x-sha256': hash.digest('hex') }));
        stream.pipe(stream);
        return;
      }
      if (path === '/rst') {
        stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        return;
      }
      if (path === '/rst-mid') {
        stream.respond({ ':status': 200 });
        stream.write('partial');
        // destroy(err) sends RST_STREAM(INTERNAL_ERROR) without END_STREAM first (close() would end cleanly).
        setTimeout(() => stream.destroy(new Error('backend died mid-response')), 20);
        return;
      }
      const delay = i === slowIndex ? 30 : 0;
      stream.resume();
      setTimeout(() => {
        if (stream.closed) return;
        stream.respond({ ':status': 200, 'x-backend': String(i), 'x-authority': String(headers[':authority']) });
        stream.end(String(i));
      }, delay);
    });
    out.push(await listenOn(server as unknown as import('node:net').Server, BACKEND_IPS[i] as string));
    t.teardown(() => server.close());
  }
  return out;
}

function get(
  session: http2.ClientHttp2Session,
  path: string,
  body?: Buffer,
): Promise<{ status: number; headers: http2.IncomingHttpHeaders; body: Buffer; trailers: http2.IncomingHttpHeaders; rst?: number }> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ':path': path, ':method': body ? 'POST' : 'GET', ':authority': 'server.apps' }, { endStream: !body });
    let status = 0;
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.on('response', (h) => {
      headers = h;
      status = Number(h[':status']);
    });
    req.on('trailers', (tr) => {
      trailers = tr;
    });
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve({ status, headers, body: Buffer.concat(chunks), trailers }));
    req.on('error', (err) => {
      if (req.rstCode) resolve({ status, headers, body: Buffer.concat(chunks), trailers, rst: req.rstCode });
      else reject(err);
    });
    if (body) {
      const step = 256 * 1024;
      let i = 0;
      const pump = (): void => {
        while (i < body.length) {
          const ok = req.write(body.subarray(i, i + step));
          i += step;
          if (!ok) {
            req.once('drain', pump);
            return;
          }
        }
        req.end();
      };
      pump();
    }
  });
}

async function runBounded<T>(total: number, concurrency: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(total);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < total) {
      const i = next++;
      out[i] = await fn(i);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return out;
}

t.test('3000 requests over ONE HTTP/2 client connection spread within 5% (round robin, detected h2)', async (t) => {
  const backends = await startH2Backends(t);
  const h = await startProxy(snapshotFor(backends)); // no appProtocol: the preface is detected
  t.teardown(() => h.close());
  const session = http2.connect(`http://127.0.0.1:${h.port}`);
  t.teardown(() => session.close());
  const started = performance.now();
  const replies = await runBounded(3000, 64, () => get(session, '/who'));
  const counts = [0, 0, 0];
  for (const r of replies) counts[Number(r.body.toString())] = (counts[Number(r.body.toString())] ?? 0) + 1;
  const ms = Math.round(performance.now() - started);
  t.comment(`per endpoint: ${counts.join(' / ')} in ${ms} ms`);
  for (const c of counts) t.ok(Math.abs(c - 1000) <= 50, `endpoint got ${c} (1000 +- 5%)`);
  t.ok(replies.every((r) => r.status === 200 && r.headers['x-authority'] === 'server.apps'), ':authority kept');
  t.equal(h.proxy.stats().connections.http2, 1, 'one client connection, detected as HTTP/2');
  t.equal(h.proxy.stats().upstreams.h2Sessions, 3, 'one upstream session per endpoint');
  t.ok(h.tunnel.calls.length <= 3, `upstream sessions reused (${h.tunnel.calls.length} tunnel streams)`);
  for (const b of backends) t.equal(h.proxy.inFlight('apps', 'server', b.ip), 0, `no in-flight leak for ${b.ip}`);

  // An endpoint leaving the config closes its pooled upstream; the others keep theirs.
  h.store.apply(snapshotFor(backends.slice(0, 2), { version: '2' }));
  t.equal(h.proxy.stats().upstreams.h2Sessions, 2, 'upstream to the removed endpoint evicted');
  const after = await runBounded(30, 8, () => get(session, '/who'));
  t.same(new Set(after.map((r) => r.body.toString())), new Set(['0', '1']), 'traffic only to remaining endpoints');

  // The source pod left this node: upstreams carrying its identity go too.
  const gone = snapshotFor(backends.slice(0, 2), { version: '3' });
  gone.workloads = gone.workloads.filter((w) => w.name !== 'client');
  h.store.apply(gone);
  t.equal(h.proxy.stats().upstreams.h2Sessions, 0, 'upstreams of a departed source identity evicted');
});

t.test('least-request prefers the less loaded endpoint', async (t) => {
  const backends = await startH2Backends(t, 3, 0); // endpoint 0 answers 30 ms late
  const h = await startProxy(snapshotFor(backends, { appProtocol: 'http2', lb: 'LEAST_REQUEST' }));
  t.teardown(() => h.close());
  const session = http2.connect(`http://127.0.0.1:${h.port}`);
  t.teardown(() => session.close());
  const replies = await runBounded(600, 24, () => get(session, '/who'));
  const counts = [0, 0, 0];
  for (const r of replies) counts[Number(r.body.toString())] = (counts[Number(r.body.toString())] ?? 0) + 1;
  t.comment(`least-request with endpoint 0 slow: ${counts.join(' / ')}`);
  t.ok((counts[0] as number) < (counts[1] as number) / 2 && (counts[0] as number) < (counts[2] as number) / 2, 'slow endpoint gets far fewer');

  // Same load under round robin: the slow endpoint gets its third regardless.
  h.store.apply(snapshotFor(backends, { appProtocol: 'http2', lb: 'ROUND_ROBIN', version: '2' }));
  const rr = await runBounded(600, 24, () => get(session, '/who'));
  const rc = [0, 0, 0];
  for (const r of rr) rc[Number(r.body.toString())] = (rc[Number(r.body.toString())] ?? 0) + 1;
  t.comment(`round robin with endpoint 0 slow: ${rc.join(' / ')}`);
  t.ok(Math.abs((rc[0] as number) - 200) <= 2, 'round robin ignores load');
});

t.test('HTTP/2 bodies 0 B .. 8 MB intact both ways, trailers relayed', async (t) => {
  const backends = await startH2Backends(t, 1);
  const h = await startProxy(snapshotFor(backends, { appProtocol: 'http2' }));
  t.teardown(() => h.close());
  const session = http2.connect(`http://127.0.0.1:${h.port}`);
  t.teardown(() => session.close());
  for (const size of [0, 1, 16_385, 1_048_576, 8 * 1_048_576]) {
    const body = randomBytes(size);
    const r = size === 0 ? await get(session, '/echo', Buffer.alloc(0)) : await get(session, '/echo', body);
    const sha = createHash('sha256').update(body).digest('hex');
    t.equal(r.body.length, size, `${size} B echoed`);
    t.equal(createHash('sha256').update(r.body).digest('hex'), sha, 'sha256 of the echo matches');
    t.equal(r.trailers['x-sha256'], sha, 'upstream trailer relayed (upstream saw the same bytes)');
  }
});

t.test('upstream RST_STREAM: 502 before headers, reset relayed after; session survives', async (t) => {
  const backends = await startH2Backends(t, 1);
  const h = await startProxy(snapshotFor(backends, { appProtocol: 'http2' }));
  t.teardown(() => h.close());
  const session = http2.connect(`http://127.0.0.1:${h.port}`);
  t.teardown(() => session.close());
  const r1 = await get(session, '/rst');
  t.equal(r1.status, 502, 'reset before response headers -> 502');
  const r2 = await get(session, '/rst-mid');
  t.equal(r2.status, 200);
  t.equal(r2.body.toString(), 'partial');
  t.equal(r2.rst, http2.constants.NGHTTP2_INTERNAL_ERROR, 'reset after headers relayed with its code (not a clean end)');
  const r3 = await get(session, '/who');
  t.equal(r3.status, 200, 'same client session keeps working');
});

t.test('client cancel propagates upstream as RST_STREAM', async (t) => {
  let upstreamClosed: (code: number) => void = () => {};
  const closed = new Promise<number>((r) => {
    upstreamClosed = r;
  });
  const server = http2.createServer();
  server.on('stream', (stream) => {
    stream.respond({ ':status': 200 });
    stream.write('tick');
    stream.on('error', () => {});
    stream.on('close', () => upstreamClosed(stream.rstCode ?? -1));
  });
  const b = await listenOn(server as unknown as import('node:net').Server, BACKEND_IPS[0] as string);
  t.teardown(() => server.close());
  const h = await startProxy(snapshotFor([b], { appProtocol: 'http2' }));
  t.teardown(() => h.close());
  const session = http2.connect(`http://127.0.0.1:${h.port}`);
  t.teardown(() => session.close());
  const req = session.request({ ':path': '/stream' });
  req.on('error', () => {});
  await new Promise((r) => req.once('data', r));
  req.close(http2.constants.NGHTTP2_CANCEL);
  t.equal(await closed, http2.constants.NGHTTP2_CANCEL, 'upstream stream cancelled');
});
