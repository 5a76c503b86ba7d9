/**
 * Regression for issue 17: HTTP/1.1 requests with a small body arrived at a pod on another node
 * with the first 16 bytes of the request line replaced. Node's Http2Stream frees the string
 * chunks of a writev whose last chunk is empty before sending them (see writev-guard.ts);
 * Node's HTTP/1 client writes exactly that (head string, Buffer body, '') when the body and
 * end() come in one tick. Each case here corrupts the bytes without guardWritev.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import t, { type Test } from 'tap';
import { guardWritev } from '../../../../src/proxy/tunnel/writev-guard.js';

const HEAD = 'POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n';

/** A loopback h2c server whose CONNECT streams hand their bytes to `onStream`. */
async function h2Server(t: Test, onStream: (s: http2.ServerHttp2Stream) => void): Promise<http2.ClientHttp2Session> {
  const server = http2.createServer();
  server.on('stream', (s) => {
    s.respond({ ':status': 200 });
    onStream(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const session = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  t.teardown(() => {
    session.destroy();
    server.close();
  });
  return session;
}

async function openConnect(session: http2.ClientHttp2Session): Promise<http2.ClientHttp2Stream> {
  const s = session.request({ ':method': 'CONNECT', ':authority': '10.0.0.1:80' });
  await new Promise((r) => s.once('response', r));
  return s;
}

t.test('a corked string + Buffer + empty writev arrives intact on a guarded stream', async (t) => {
  const first: string[] = [];
  const session = await h2Server(t, (s) => {
    s.once('data', (c: Buffer) => {
      first.push(c.toString('latin1'));
      s.close();
    });
  });
  for (let i = 0; i < 20; i++) {
    const s = guardWritev(await openConnect(session));
    s.cork();
    s.write(HEAD, 'latin1');
    s.write(Buffer.from('x'));
    s.write('', 'latin1');
    s.uncork();
    s.resume();
    await new Promise((r) => s.once('close', r));
  }
  t.equal(first.length, 20);
  t.same(
    first.filter((f) => f !== `${HEAD}x`),
    [],
    'every stream carried exactly the bytes written',
  );
});

t.test('writevs of only empty chunks, and of strings only, still complete', async (t) => {
  const got: Buffer[] = [];
  const session = await h2Server(t, (s) => {
    s.on('data', (c: Buffer) => got.push(c));
    s.on('end', () => s.end());
  });
  const s = guardWritev(await openConnect(session));
  s.cork();
  s.write('', 'latin1');
  s.write('');
  s.uncork();
  s.cork();
  s.write('ab', 'latin1');
  s.write('cd', 'utf8');
  s.write('', 'latin1');
  s.uncork();
  s.end();
  s.resume();
  await new Promise((r) => s.once('close', r));
  t.equal(Buffer.concat(got).toString(), 'abcd');
  t.equal(guardWritev(s), s, 'guarding twice is a no-op');
});

/** An http.Agent whose connections are guarded CONNECT streams, as skein's MeshAgent's are. */
class StreamAgent extends http.Agent {
  constructor(private readonly open: () => Promise<Duplex>) {
    super({ keepAlive: true, maxSockets: 1 });
  }
  override createConnection(_o: unknown, cb?: (err: Error | null, s: Duplex) => void): undefined {
    this.open().then(
      (s) => {
        const like = s as Duplex & Record<string, unknown>;
        for (const m of ['ref', 'unref', 'setKeepAlive', 'setNoDelay', 'setTimeout']) if (typeof like[m] !== 'function') like[m] = () => {};
        s.once('end', () => s.destroy());
        cb?.(null, s);
      },
      (err: Error) => cb?.(err, undefined as unknown as Duplex),
    );
    return undefined;
  }
}

t.test("Node's HTTP/1 client over guarded tunnel streams: bodies of 0-300 bytes intact", async (t) => {
  // The app: an HTTP/1 server fed by each CONNECT stream; answers method, path and body sha256.
  const app = http.createServer((req, res) => {
    const h = createHash('sha256');
    req.on('data', (c: Buffer) => h.update(c));
    req.on('end', () => res.end(`${req.method} ${req.url} ${h.digest('hex')}`));
  });
  const session = await h2Server(t, (s) => app.emit('connection', s));
  const agent = new StreamAgent(async () => guardWritev(await openConnect(session)));
  t.teardown(() => agent.destroy());
  const failures: string[] = [];
  for (let n = 0; n <= 300; n++) {
    const body = Buffer.alloc(n, n % 251);
    const want = `POST /b/${n} ${createHash('sha256').update(body).digest('hex')}`;
    const got = await new Promise<string>((resolve, reject) => {
      const req = http.request({ agent, method: 'POST', path: `/b/${n}`, host: '127.0.0.1', port: 1, headers: { 'content-length': String(n) } }, (res) => {
        let s = '';
        res.setEncoding('latin1');
        res.on('data', (d: string) => {
          s += d;
        });
        res.on('end', () => resolve(`${s}`));
      });
      req.on('error', reject);
      // Body and end in one tick: the writev shape that lost its head string.
      req.write(body);
      req.end();
    });
    if (got !== want) failures.push(`${n}: ${JSON.stringify(got.slice(0, 60))}`);
  }
  t.same(failures, [], 'every request arrived byte for byte');
});
