import { createHash } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import type net from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import t from 'tap';
import { BACKEND_IPS, listenOn, snapshotFor, startProxy } from './fixtures/harness.js';

const SIZE = 100 * 1024 * 1024;
const CHUNK = 256 * 1024;

/** 100 MB of deterministic, incompressible-looking bytes, produced lazily (never all in memory). */
function source(size: number): Readable {
  let sent = 0;
  let counter = 0;
  return new Readable({
    read() {
      if (sent >= size) {
        this.push(null);
        return;
      }
      const n = Math.min(CHUNK, size - sent);
      const block = Buffer.allocUnsafe(n);
      // xorshift-ish fill, fast and reproducible.
      let x = (counter++ * 2654435761) >>> 0 || 1;
      for (let i = 0; i + 4 <= n; i += 4) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        block.writeUInt32LE(x >>> 0, i);
      }
      sent += n;
      this.push(block);
    },
  });
}

async function expectedSha(size: number): Promise<string> {
  const h = createHash('sha256');
  for await (const c of source(size)) h.update(c as Buffer);
  return h.digest('hex');
}

/** Samples RSS while `fn` runs; returns the peak growth in MB. */
async function peakRssGrowth<T>(fn: () => Promise<T>): Promise<{ value: T; growthMb: number }> {
  const base = process.memoryUsage.rss();
  let peak = base;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 20);
  try {
    const value = await fn();
    return { value, growthMb: Math.round((peak - base) / 1048576) };
  } finally {
    clearInterval(timer);
  }
}

t.test('100 MB upload over HTTP/1.1 (chunked) arrives intact with bounded memory', async (t) => {
  const want = await expectedSha(SIZE);
  const backend = http.createServer((req, res) => {
    const h = createHash('sha256');
    let n = 0;
    req.on('data', (c: Buffer) => {
      h.update(c);
      n += c.length;
    });
    req.on('end', () => res.end(JSON.stringify({ n, sha: h.digest('hex') })));
  });
  const b = await listenOn(backend, BACKEND_IPS[0] as string);
  t.teardown(() => backend.close());
  const h = await startProxy(snapshotFor([b], { appProtocol: 'http' }));
  t.teardown(() => h.close());
  const started = performance.now();
  const { value, growthMb } = await peakRssGrowth(
    () =>
      new Promise<{ n: number; sha: string }>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port: h.port, method: 'POST', path: '/upload' }, (res) => {
          let body = '';
          res.on('data', (d) => {
            body += d;
          });
          res.on('end', () => resolve(JSON.parse(body) as { n: number; sha: string }));
        });
        req.on('error', reject);
        pipeline(source(SIZE), req).catch(reject);
      }),
  );
  const ms = Math.round(performance.now() - started);
  t.comment(`HTTP/1.1 100 MB upload: ${ms} ms (${Math.round(SIZE / 1048576 / (ms / 1000))} MB/s), peak RSS growth ${growthMb} MB`);
  t.equal(value.n, SIZE);
  t.equal(value.sha, want, 'sha256 matches');
  t.ok(growthMb < 64, 'no whole-body buffering (backpressure holds)');
});

t.test('100 MB download over HTTP/2 arrives intact with bounded memory', async (t) => {
  const want = await expectedSha(SIZE);
  const backend = http2.createServer();
  backend.on('stream', (stream) => {
    stream.on('error', () => {});
    stream.respond({ ':status': 200 });
    pipeline(source(SIZE), stream).catch(() => {});
  });
  const b = await listenOn(backend as unknown as net.Server, BACKEND_IPS[0] as string);
  t.teardown(() => backend.close());
  const h = await startProxy(snapshotFor([b], { appProtocol: 'http2' }));
  t.teardown(() => h.close());
  const session = http2.connect(`http://127.0.0.1:${h.port}`);
  t.teardown(() => session.close());
  const started = performance.now();
  const { value, growthMb } = await peakRssGrowth(
    () =>
      new Promise<{ n: number; sha: string }>((resolve, reject) => {
        const req = session.request({ ':path': '/download' });
        const hash = createHash('sha256');
        let n = 0;
        req.on('data', (c: Buffer) => {
          hash.update(c);
          n += c.length;
        });
        req.on('end', () => resolve({ n, sha: hash.digest('hex') }));
        req.on('error', reject);
      }),
  );
  const ms = Math.round(performance.now() - started);
  t.comment(`HTTP/2 100 MB download: ${ms} ms (${Math.round(SIZE / 1048576 / (ms / 1000))} MB/s), peak RSS growth ${growthMb} MB`);
  t.equal(value.n, SIZE);
  t.equal(value.sha, want, 'sha256 matches');
  t.ok(growthMb < 64, 'no whole-body buffering (backpressure holds)');
});
