/**
 * Property: whatever request shapes a client sends and however its bytes are cut into writes,
 * the bytes the app receives through the proxy equal the bytes sent, and the bytes the client
 * gets back equal the bytes the app answered (issue 17). Runs the whole data path but capture
 * on loopback: OutboundProxy -> real mTLS HBONE tunnel -> TunnelServer -> InboundProxy -> app.
 * fast-check generates the shapes and cuts, and shrinks any failure to a small one.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import fc from 'fast-check';
import t from 'tap';
import { h2Post } from '../../../support/h2-post.js';
import { bodyOf, connect, readResponse, requestBytes, type Shape, writeSplit } from '../../../support/raw-http1.js';
import { meshWithApp } from './fixtures/real-mesh.js';

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Body sizes weighted toward the small ones that were corrupted, with some large ones. */
const bodySize = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 300 }) },
  { weight: 1, arbitrary: fc.integer({ min: 301, max: 200_000 }) },
);

const shape: fc.Arbitrary<Shape> = fc
  .record({
    version: fc.constantFrom('1.0' as const, '1.1' as const),
    method: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'),
    framing: fc.constantFrom('length' as const, 'chunked' as const, 'none' as const),
  })
  // HTTP/1.0 has no chunked framing.
  .map((s) => ({ ...s, framing: s.version === '1.0' && s.framing === 'chunked' ? ('length' as const) : s.framing, name: '' }));

const request = fc.record({
  shape,
  size: bodySize,
  seed: fc.nat(),
  /** Where to cut the request's bytes into separate writes (fractions of its length). */
  cuts: fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 4 }),
  /** Bytes the app answers with. */
  responseSize: bodySize,
  /** A header the app must see unchanged. */
  token: fc.stringMatching(/^[A-Za-z0-9._~-]{1,40}$/),
});

/** Sends `payload` on a new TCP connection (cut at `cuts`), half-closes, returns what came back. */
async function tcpRoundTrip(port: number, payload: Buffer, cuts: number[] = []): Promise<Buffer> {
  const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const got: Buffer[] = [];
  s.on('data', (c: Buffer) => got.push(c));
  const ended = new Promise<void>((resolve, reject) => {
    s.once('end', () => resolve());
    s.once('error', reject);
  });
  await new Promise((r) => s.once('connect', r));
  await writeSplit(s, payload, cuts);
  s.end();
  await ended;
  s.destroy();
  return Buffer.concat(got);
}

t.test('HTTP/1: random request shapes and write cuts arrive byte for byte, both ways', async (t) => {
  const app = http.createServer((req, res) => {
    const h = createHash('sha256');
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      h.update(c);
    });
    req.on('end', () => {
      const size = Number(req.headers['x-response-size'] ?? 0);
      const body = bodyOf(size, Number(req.headers['x-seed'] ?? 0));
      res.setHeader('x-seen', JSON.stringify({ method: req.method, url: req.url, bytes: n, sha: h.digest('hex'), token: req.headers['x-token'] }));
      res.setHeader('content-length', String(size));
      res.end(body);
    });
  });
  const { port } = await meshWithApp(t, (s) => app.emit('connection', s), 'http');
  let ran = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(request, { minLength: 1, maxLength: 3 }), async (reqs) => {
      // One client connection per run; HTTP/1.0 requests each get their own.
      let sock: net.Socket | undefined;
      const buffered = { rest: Buffer.alloc(0) };
      try {
        for (const [i, r] of reqs.entries()) {
          const body = r.shape.framing === 'none' ? Buffer.alloc(0) : bodyOf(r.size, r.seed);
          const path = `/p/${i}/${r.seed}?n=${r.size}`;
          const head = requestBytes(r.shape, path, 'echo', body);
          // The test's own headers go right after the request line: the request line and first
          // header bytes are what the bug rewrote.
          const bytes = Buffer.from(
            head.toString('latin1').replace('\r\n', `\r\nX-Token: ${r.token}\r\nX-Response-Size: ${r.responseSize}\r\nX-Seed: ${r.seed}\r\n`),
            'latin1',
          );
          if (!sock || r.shape.version === '1.0') {
            sock?.destroy();
            sock = await connect('127.0.0.1', port);
            buffered.rest = Buffer.alloc(0);
          }
          await writeSplit(
            sock,
            bytes,
            r.cuts.map((c) => Math.floor(c * bytes.length)),
          );
          const res = await readResponse(sock, false, buffered);
          if (res.status !== 200) throw new Error(`status ${res.status} for ${JSON.stringify(r.shape)} ${body.length} B`);
          const seen = JSON.parse(res.headers['x-seen'] ?? '{}');
          const want = { method: r.shape.method, url: path, bytes: body.length, sha: sha(body), token: r.token };
          if (JSON.stringify(seen) !== JSON.stringify(want)) throw new Error(`app saw ${JSON.stringify(seen)}, sent ${JSON.stringify(want)}`);
          if (!res.body.equals(bodyOf(r.responseSize, r.seed))) throw new Error(`response body of ${r.responseSize} B came back as ${res.body.length} B, different`);
          if (r.shape.version === '1.0') {
            sock.destroy();
            sock = undefined;
          }
          ran++;
        }
      } finally {
        sock?.destroy();
      }
    }),
    { numRuns: 60, seed: Number(process.env.FC_SEED ?? Date.now() % 2 ** 31) },
  );
  t.ok(ran >= 60, `${ran} requests checked`);
});

t.test('TCP: random payloads cut at random points, echoed byte for byte', async (t) => {
  const { port } = await meshWithApp(t, (s) => s.pipe(s), 'tcp');
  await fc.assert(
    fc.asyncProperty(bodySize, fc.nat(), fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 6 }), async (size, seed, cuts) => {
      const payload = bodyOf(size, seed);
      const back = await tcpRoundTrip(
        port,
        payload,
        cuts.map((c) => Math.floor(c * payload.length)),
      );
      if (!back.equals(payload)) throw new Error(`sent ${payload.length} B, got back ${back.length} B, different`);
    }),
    { numRuns: 40, seed: Number(process.env.FC_SEED ?? Date.now() % 2 ** 31) },
  );
  t.pass('every payload came back intact');
});

t.test('TCP on a port with no declared protocol: short payloads that look like a method, then FIN', async (t) => {
  // Detection reads the first bytes; a client that ends while detection still waits (a
  // partial method) must get every byte through all the same.
  const { port } = await meshWithApp(t, (s) => s.pipe(s));
  await fc.assert(
    fc.asyncProperty(fc.oneof(fc.constantFrom('G', 'GE', 'PO', 'PU', 'DELET', 'OPTIO', 'PRI * HTTP/2'), fc.string({ maxLength: 8 })), async (text) => {
      const payload = Buffer.from(text, 'latin1');
      const back = await tcpRoundTrip(port, payload);
      if (!back.equals(payload)) throw new Error(`sent ${JSON.stringify(text)}, got back ${JSON.stringify(back.toString('latin1'))}`);
    }),
    { numRuns: 40, seed: Number(process.env.FC_SEED ?? Date.now() % 2 ** 31) },
  );
  t.pass('every short payload came back intact');
});

t.test('h2c: random bodies in random DATA frame cuts arrive byte for byte', async (t) => {
  const app = http2.createServer();
  app.on('stream', (stream) => {
    const h = createHash('sha256');
    let n = 0;
    stream.on('data', (c: Buffer) => {
      n += c.length;
      h.update(c);
    });
    stream.on('end', () => {
      stream.respond({ ':status': 200 });
      stream.end(`${n} ${h.digest('hex')}`);
    });
  });
  const { port } = await meshWithApp(t, (s) => app.emit('connection', s), 'http2');
  const session = http2.connect(`http://127.0.0.1:${port}`);
  t.teardown(() => session.destroy());
  await fc.assert(
    fc.asyncProperty(bodySize, fc.nat(), fc.array(fc.double({ min: 0, max: 1, noNaN: true }), { maxLength: 4 }), async (size, seed, cuts) => {
      const body = bodyOf(size, seed);
      const answer = await h2Post(session, `/h2/${seed}`, body, cuts.map((c) => Math.floor(c * size)));
      if (answer !== `${size} ${sha(body)}`) throw new Error(`app saw ${answer} for ${size} B`);
    }),
    { numRuns: 40, seed: Number(process.env.FC_SEED ?? Date.now() % 2 ** 31) },
  );
  t.pass('every body arrived intact');
});
