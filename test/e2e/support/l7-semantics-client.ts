/**
 * The HTTP-semantics checks' client, run inside a lab pod (so the agent captures it): each
 * check talks to the lab's echo app (its `/sem/...` routes, src/lab/workloads/echo.ts) through
 * the mesh and judges what the app says it received and what came back. HTTP/1 requests whose
 * framing matters are written by hand on raw sockets; the rest use Node's clients.
 * Prints one JSON line: `{ checks: [{ name, ok, detail }] }`.
 *
 * usage:
 *   l7-semantics-client.ts semantics HOST HTTP_PORT GRPC_PORT EXPECTED_POD OTHER_POD_IP TAG
 *   l7-semantics-client.ts big HOST HTTP_PORT BYTES
 *   l7-semantics-client.ts concurrent HOST H2C_PORT STREAMS
 *   l7-semantics-client.ts probe HOST HTTP_PORT TAG      (one HTTP/1.1 and one h2c request)
 */
import { createHash, randomUUID } from 'node:crypto';
import http from 'node:http';
import http2 from 'node:http2';
import type net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { echoService } from '../../../src/lab/workloads/echo-proto.js';
import { bodyOf, connect, readResponse } from '../../support/raw-http1.js';

export interface CheckResult {
  name: string;
  ok: boolean;
  detail: string;
}

interface Info {
  pod: string;
  namespace: string;
  protocol: string;
  method: string;
  path: string;
  host?: string;
  headers: Record<string, string | string[]>;
  rawHeaders: string[];
  trailers: Record<string, string>;
  body: { bytes: number; sha256: string };
}

const results: CheckResult[] = [];
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

async function check(name: string, fn: () => Promise<unknown>, timeoutMs = 30_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const detail = await Promise.race([
      fn(),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no outcome within ${timeoutMs} ms`)), timeoutMs);
      }),
    ]);
    results.push({ name, ok: true, detail: typeof detail === 'string' ? detail : '' });
  } catch (err) {
    results.push({ name, ok: false, detail: (err as Error).message });
  } finally {
    clearTimeout(timer);
  }
}

/** Values of one field in a flat raw header list, in order. */
function rawValues(raw: readonly string[], name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) if ((raw[i] as string).toLowerCase() === name) out.push(raw[i + 1] as string);
  return out;
}

function reservedIn(names: Iterable<string>): string[] {
  return [...names].filter((n) => n.toLowerCase().startsWith('skein-'));
}

// ---------- HTTP/1 on raw sockets ----------

/** A raw keep-alive connection; `head` of each response is kept (repeated fields and all). */
class RawConn {
  private readonly buffered = { rest: Buffer.alloc(0) };
  private acc = Buffer.alloc(0);
  closedByPeer = false;

  private constructor(readonly sock: net.Socket) {
    sock.on('data', (c: Buffer) => {
      this.acc = Buffer.concat([this.acc, c]);
    });
    sock.on('end', () => {
      this.closedByPeer = true;
    });
    sock.on('close', () => {
      this.closedByPeer = true;
    });
    sock.on('error', () => {});
  }

  static async open(host: string, port: number): Promise<RawConn> {
    return new RawConn(await connect(host, port));
  }

  /** Writes `bytes`, reads one response; the raw head lines of every response read so far. */
  async exchange(bytes: Buffer | string, head = false): Promise<{ status: number; headers: Record<string, string>; body: Buffer; rawHead: string[] }> {
    if (bytes.length > 0) this.sock.write(bytes);
    const res = await readResponse(this.sock, head, this.buffered);
    // Split what arrived into heads (only to read repeated fields such as Set-Cookie).
    const text = this.acc.toString('latin1');
    const heads = text.split(/\r\n\r\n/).filter((h) => /^HTTP\/1\.[01] \d{3}/.test(h));
    const rawHead = (heads.at(-1) ?? '').split('\r\n');
    return { ...res, rawHead };
  }

  close(): void {
    this.sock.destroy();
  }
}

function headerLines(rawHead: string[], name: string): string[] {
  return rawHead.filter((l) => l.toLowerCase().startsWith(`${name}:`)).map((l) => l.slice(name.length + 1).trim());
}

// ---------- Node's clients ----------

function h1Request(
  host: string,
  port: number,
  opts: { method?: string; path: string; headers?: http.OutgoingHttpHeaders; agent?: http.Agent },
  send?: (req: http.ClientRequest) => void,
): Promise<{ res: http.IncomingMessage; body: Buffer; chunks: { at: number; n: number }[] }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method: opts.method ?? 'GET', path: opts.path, headers: opts.headers, agent: opts.agent ?? false });
    req.on('error', reject);
    req.on('response', (res) => {
      const parts: Buffer[] = [];
      const chunks: { at: number; n: number }[] = [];
      res.on('data', (c: Buffer) => {
        parts.push(c);
        chunks.push({ at: Date.now(), n: c.length });
      });
      res.on('end', () => resolve({ res, body: Buffer.concat(parts), chunks }));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('response aborted')));
    });
    if (send) send(req);
    else req.end();
  });
}

interface H2Answer {
  headers: http2.IncomingHttpHeaders;
  flags: number;
  body: Buffer;
  trailers?: http2.IncomingHttpHeaders;
  rstCode?: number;
  chunks: { at: number; n: number }[];
  continued: boolean;
}

function h2Request(
  session: http2.ClientHttp2Session,
  headers: http2.OutgoingHttpHeaders,
  send?: (req: http2.ClientHttp2Stream) => void,
  opts: http2.ClientSessionRequestOptions = {},
): Promise<H2Answer> {
  return new Promise((resolve, reject) => {
    const req = session.request(headers, send ? opts : { ...opts, endStream: true });
    const out: H2Answer = { headers: {}, flags: 0, body: Buffer.alloc(0), chunks: [], continued: false };
    const parts: Buffer[] = [];
    req.on('continue', () => {
      out.continued = true;
    });
    req.on('response', (h, flags) => {
      out.headers = h;
      out.flags = flags;
    });
    req.on('trailers', (t) => {
      out.trailers = t;
    });
    req.on('data', (c: Buffer) => {
      parts.push(c);
      out.chunks.push({ at: Date.now(), n: c.length });
    });
    req.on('error', () => {});
    req.on('close', () => {
      out.body = Buffer.concat(parts);
      out.rstCode = req.rstCode;
      // A stream that ends without a :status got no response, however it ended (RST_STREAM
      // with NO_ERROR or the session closing end it "cleanly" in Node): always a failure.
      if (out.headers[':status'] === undefined) reject(new Error(`stream closed (code ${req.rstCode ?? 0}) before a response`));
      else resolve(out);
    });
    if (send) send(req);
  });
}

function infoOf(body: Buffer): Info {
  try {
    return JSON.parse(body.toString('utf8')) as Info;
  } catch {
    throw new Error(`not the app's JSON: ${body.toString('latin1').slice(0, 200)}`);
  }
}

/** Writes `body` in 64 KiB pieces, each after the previous one drained, then ends. */
async function writePaced(w: { write: (b: Buffer) => boolean; end: () => unknown; once: (e: 'drain', f: () => void) => unknown }, body: Buffer): Promise<void> {
  for (let at = 0; at < body.length; at += 65536) {
    if (!w.write(body.subarray(at, at + 65536))) await new Promise<void>((r) => w.once('drain', r));
  }
  w.end();
}

// ---------- the checks ----------

async function semantics(host: string, port: number, grpcPort: number, expectedPod: string, otherIp: string, tag: string): Promise<void> {
  const authority = `${host}:${port}`;
  const p = (check: string, extra = ''): string => `/sem/info?tag=${tag}&check=${check}${extra}`;
  const session = http2.connect(`http://${authority}`);
  session.on('error', () => {});
  const h2 = (headers: http2.OutgoingHttpHeaders, send?: (req: http2.ClientHttp2Stream) => void, opts?: http2.ClientSessionRequestOptions) =>
    h2Request(session, { ':method': 'GET', ...headers }, send, opts);

  // --- hop-by-hop and end-to-end fields, Host / :authority, absolute-form ---
  await check('http1: hop-by-hop fields never reach the app; end-to-end ones do (repeated, Set-Cookie back)', async () => {
    const c = await RawConn.open(host, port);
    try {
      const r = await c.exchange(
        `GET ${p('hop-h1')} HTTP/1.1\r\nHost: ${authority}\r\nConnection: keep-alive, X-Hop-Named\r\nX-Hop-Named: secret\r\nKeep-Alive: timeout=5, max=100\r\nProxy-Connection: keep-alive\r\nTE: trailers, deflate\r\nX-E2e: one\r\nX-E2e: two\r\nCookie: c=1\r\n\r\n`,
      );
      assert(r.status === 200, `status ${r.status}`);
      const info = infoOf(r.body);
      const names = new Set(Object.keys(info.headers));
      for (const hop of ['x-hop-named', 'keep-alive', 'proxy-connection']) assert(!names.has(hop), `the app received ${hop}: ${JSON.stringify(info.headers)}`);
      assert(!/x-hop-named/i.test(String(info.headers.connection ?? '')), `the app's Connection names x-hop-named: ${info.headers.connection}`);
      assert(info.headers.te === undefined || info.headers.te === 'trailers', `the app received TE ${info.headers.te}`);
      // Two field lines, or one combined in order (RFC 9110 §5.3: a recipient may combine them).
      const e2e = rawValues(info.rawHeaders, 'x-e2e');
      assert(JSON.stringify(e2e) === '["one","two"]' || JSON.stringify(e2e) === '["one, two"]', `x-e2e at the app: ${JSON.stringify(e2e)}`);
      assert(info.headers.cookie === 'c=1', `cookie at the app: ${info.headers.cookie}`);
      const cookies = headerLines(r.rawHead, 'set-cookie');
      assert(cookies.length === 2 && cookies[0] === 'a=1; Path=/' && cookies[1] === 'b=2; Path=/', `Set-Cookie back: ${JSON.stringify(cookies)}`);
      return `app headers: ${Object.keys(info.headers).join(',')}`;
    } finally {
      c.close();
    }
  });
  await check('h2c: end-to-end fields reach the app (repeated), Set-Cookie back', async () => {
    const r = await h2({ ':path': p('e2e-h2'), 'x-e2e': ['one', 'two'], cookie: 'c=1' });
    assert(Number(r.headers[':status']) === 200, `status ${r.headers[':status']}`);
    const info = infoOf(r.body);
    const e2e = rawValues(info.rawHeaders, 'x-e2e');
    assert(JSON.stringify(e2e) === '["one","two"]' || JSON.stringify(e2e) === '["one, two"]', `x-e2e at the app: ${JSON.stringify(e2e)}`);
    const cookies = r.headers['set-cookie'];
    assert(Array.isArray(cookies) && cookies.length === 2 && cookies[0] === 'a=1; Path=/' && cookies[1] === 'b=2; Path=/', `set-cookie back: ${JSON.stringify(cookies)}`);
    return `x-e2e ${JSON.stringify(e2e)}`;
  });
  await check('http1: Host arrives exactly as sent', async () => {
    const c = await RawConn.open(host, port);
    try {
      const r = await c.exchange(`GET ${p('host-h1')} HTTP/1.1\r\nHost: Some-Host.Example:1234\r\n\r\n`);
      const info = infoOf(r.body);
      assert(info.host === 'Some-Host.Example:1234', `the app saw Host ${info.host}`);
      return info.host;
    } finally {
      c.close();
    }
  });
  await check('h2c: :authority arrives exactly as sent', async () => {
    const r = await h2({ ':path': p('host-h2'), ':authority': 'some-authority.example:4321' });
    const info = infoOf(r.body);
    assert(info.host === 'some-authority.example:4321', `the app saw ${info.host}`);
    return info.host;
  });
  await check('http1: an absolute-form request (GET http://host:port/p) is served', async () => {
    const c = await RawConn.open(host, port);
    try {
      const r = await c.exchange(`GET http://${authority}${p('absolute')} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
      assert(r.status === 200, `status ${r.status}: ${r.body.toString().slice(0, 200)}`);
      const info = infoOf(r.body);
      assert(info.path === p('absolute'), `the app saw path ${info.path}`);
      assert(info.host === authority, `the app saw host ${info.host}`);
      return `${info.method} ${info.path} host ${info.host}`;
    } finally {
      c.close();
    }
  });

  // --- TE and trailers ---
  await check('h2c: te: trailers reaches the app', async () => {
    const r = await h2({ ':path': p('te-h2'), te: 'trailers' });
    const info = infoOf(r.body);
    assert(info.headers.te === 'trailers', `the app saw te ${info.headers.te}`);
    return 'te: trailers';
  });
  await check('gRPC-shaped h2c request: te: trailers and content-type reach the app', async () => {
    const r = await h2({ ':method': 'POST', ':path': p('te-grpc'), te: 'trailers', 'content-type': 'application/grpc' }, (req) => req.end(Buffer.from([0, 0, 0, 0, 0])));
    const info = infoOf(r.body);
    assert(info.headers.te === 'trailers', `the app saw te ${info.headers.te}`);
    assert(info.headers['content-type'] === 'application/grpc', `content-type ${info.headers['content-type']}`);
    return 'te: trailers';
  });
  await check('http1: chunked request trailers reach the app', async () => {
    const c = await RawConn.open(host, port);
    try {
      const body = bodyOf(3000, 1);
      const r = await c.exchange(
        Buffer.concat([
          Buffer.from(`POST ${p('req-trailers-h1')} HTTP/1.1\r\nHost: ${authority}\r\nTransfer-Encoding: chunked\r\nTrailer: X-Req-Trailer\r\n\r\n${(1000).toString(16)}\r\n`),
          body.subarray(0, 1000),
          Buffer.from(`\r\n${(2000).toString(16)}\r\n`),
          body.subarray(1000),
          Buffer.from('\r\n0\r\nX-Req-Trailer: yes\r\nX-Req-Trailer-2: also\r\n\r\n'),
        ]),
      );
      const info = infoOf(r.body);
      assert(info.body.sha256 === sha(body), `body ${info.body.bytes} B differs`);
      assert(info.trailers['x-req-trailer'] === 'yes' && info.trailers['x-req-trailer-2'] === 'also', `the app saw trailers ${JSON.stringify(info.trailers)}`);
      return JSON.stringify(info.trailers);
    } finally {
      c.close();
    }
  });
  await check('h2c: request trailers reach the app', async () => {
    const body = bodyOf(3000, 2);
    const r = await h2(
      { ':method': 'POST', ':path': p('req-trailers-h2') },
      (req) => {
        req.once('wantTrailers', () => req.sendTrailers({ 'x-req-trailer': 'yes' }));
        req.end(body);
      },
      { waitForTrailers: true },
    );
    const info = infoOf(r.body);
    assert(info.body.sha256 === sha(body), 'body differs');
    assert(info.trailers['x-req-trailer'] === 'yes', `the app saw trailers ${JSON.stringify(info.trailers)}`);
    return JSON.stringify(info.trailers);
  });
  await check('http1: response trailers from the app reach the client (chunked)', async () => {
    const { res, body } = await h1Request(host, port, { path: p('res-trailers-h1', '&trailers') });
    infoOf(body);
    assert(/chunked/i.test(String(res.headers['transfer-encoding'])), `transfer-encoding ${res.headers['transfer-encoding']}`);
    assert(res.trailers['x-res-trailer'] === 'done' && res.trailers['x-res-trailer-2'] === 'also', `trailers ${JSON.stringify(res.rawTrailers)}`);
    return JSON.stringify(res.rawTrailers);
  });
  await check('h2c: response trailers from the app reach the client', async () => {
    const r = await h2({ ':path': p('res-trailers-h2', '&trailers') });
    infoOf(r.body);
    assert(r.trailers?.['x-res-trailer'] === 'done', `trailers ${JSON.stringify(r.trailers)}`);
    return JSON.stringify(r.trailers);
  });

  // --- Expect: 100-continue ---
  await check('http1: Expect: 100-continue gets 100, then the final response; body intact', async () => {
    const c = await RawConn.open(host, port);
    try {
      const body = bodyOf(65536, 3);
      const got: Buffer[] = [];
      const onData = (d: Buffer) => got.push(d);
      c.sock.on('data', onData);
      c.sock.write(`POST ${p('expect-h1')} HTTP/1.1\r\nHost: ${authority}\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`);
      for (let i = 0; i < 100 && !Buffer.concat(got).includes('\r\n\r\n'); i++) await sleep(50);
      c.sock.off('data', onData);
      const interim = Buffer.concat(got).toString('latin1');
      assert(/^HTTP\/1\.1 100 /.test(interim), `before the body the client got ${JSON.stringify(interim.slice(0, 80))}`);
      // readResponse must start after the 100's head.
      const after = Buffer.concat(got).subarray(interim.indexOf('\r\n\r\n') + 4);
      (c as unknown as { buffered: { rest: Buffer } }).buffered.rest = after;
      const r = await c.exchange(body);
      assert(r.status === 200, `final status ${r.status}`);
      const info = infoOf(r.body);
      assert(info.body.bytes === body.length && info.body.sha256 === sha(body), `the app got ${info.body.bytes} B`);
      return 'HTTP/1.1 100, then 200';
    } finally {
      c.close();
    }
  });
  await check('h2c: Expect: 100-continue gets 100, then the final response; body intact', async () => {
    const body = bodyOf(65536, 4);
    let continuedFirst = false;
    const r = await h2({ ':method': 'POST', ':path': p('expect-h2'), expect: '100-continue', 'content-length': String(body.length) }, (req) => {
      const t = setTimeout(() => req.end(body), 5000);
      req.once('continue', () => {
        continuedFirst = true;
        clearTimeout(t);
        req.end(body);
      });
    });
    assert(continuedFirst, 'no 100 (continue) before the body was sent');
    assert(Number(r.headers[':status']) === 200, `final status ${r.headers[':status']}`);
    const info = infoOf(r.body);
    assert(info.body.bytes === body.length && info.body.sha256 === sha(body), `the app got ${info.body.bytes} B`);
    return '100, then 200';
  });

  // --- other 1xx: 103 Early Hints (a proxy forwards 1xx it did not ask for, RFC 9110 §15.2) ---
  await check('http1: a 103 Early Hints from the app reaches the client before the 200', async () => {
    const hints: number[] = [];
    const { res } = await new Promise<{ res: http.IncomingMessage }>((resolve, reject) => {
      const req = http.request({ host, port, path: `/sem/hints?tag=${tag}`, agent: false });
      req.on('information', (i) => hints.push(i.statusCode));
      req.on('error', reject);
      req.on('response', (r) => {
        r.resume();
        r.on('end', () => resolve({ res: r }));
      });
      req.end();
    });
    assert(res.statusCode === 200, `status ${res.statusCode}`);
    assert(hints.includes(103), `informational responses seen: ${JSON.stringify(hints)}`);
    return '103, then 200';
  });
  await check('h2c: a 103 Early Hints from the app reaches the client before the 200', async () => {
    const hints: number[] = [];
    const r = await h2({ ':path': `/sem/hints?tag=${tag}` }, (req) => {
      req.on('headers', (h) => hints.push(Number(h[':status'])));
      req.end();
    });
    assert(Number(r.headers[':status']) === 200, `status ${r.headers[':status']}`);
    assert(hints.includes(103), `informational responses seen: ${JSON.stringify(hints)}`);
    return '103, then 200';
  });

  // --- HEAD, 204, 304 on a keep-alive connection ---
  for (const [what, line, head, status] of [
    ['HEAD', `HEAD /sem/len/1000?tag=${tag} HTTP/1.1`, true, 200],
    ['204', `GET /sem/status/204?tag=${tag} HTTP/1.1`, false, 204],
    ['304', `GET /sem/status/304?tag=${tag} HTTP/1.1`, false, 304],
  ] as const) {
    await check(`http1: ${what} has no body${what === 'HEAD' ? ' (Content-Length kept)' : ''}; the keep-alive connection serves the next request`, async () => {
      const c = await RawConn.open(host, port);
      try {
        const r = await c.exchange(`${line}\r\nHost: ${authority}\r\n\r\n`, head);
        assert(r.status === status, `status ${r.status}`);
        if (what === 'HEAD') assert(r.headers['content-length'] === '1000', `content-length ${r.headers['content-length']}`);
        const next = await c.exchange(`GET ${p(`after-${what}-h1`)} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
        assert(next.status === 200, `the next request got ${next.status}`);
        const info = infoOf(next.body);
        assert(info.path === p(`after-${what}-h1`), `the next answer is for ${info.path}`);
        await sleep(200);
        assert(!c.closedByPeer, 'the connection was closed');
        return `content-length ${r.headers['content-length'] ?? '-'}`;
      } finally {
        c.close();
      }
    });
    await check(`h2c: ${what} has no body${what === 'HEAD' ? ' (content-length kept)' : ''}; the session serves the next request`, async () => {
      const path = what === 'HEAD' ? `/sem/len/1000?tag=${tag}` : `/sem/status/${status}?tag=${tag}`;
      const r = await h2({ ':method': what === 'HEAD' ? 'HEAD' : 'GET', ':path': path });
      assert(Number(r.headers[':status']) === status, `status ${r.headers[':status']}`);
      assert(r.body.length === 0, `${r.body.length} body bytes`);
      assert((r.rstCode ?? 0) === 0, `stream reset ${r.rstCode}`);
      if (what === 'HEAD') assert(r.headers['content-length'] === '1000', `content-length ${r.headers['content-length']}`);
      const next = await h2({ ':path': p(`after-${what}-h2`) });
      assert(Number(next.headers[':status']) === 200, `the next request got ${next.headers[':status']}`);
      return `content-length ${r.headers['content-length'] ?? '-'}`;
    });
  }

  // --- streaming ---
  const spread = (chunks: { at: number; n: number }[]): string => {
    const first = chunks[0]?.at ?? 0;
    const last = chunks.at(-1)?.at ?? 0;
    assert(chunks.length >= 3, `only ${chunks.length} pieces arrived`);
    assert(last - first >= 500, `first to last byte ${last - first} ms (sent over ~900 ms)`);
    return `${chunks.length} pieces over ${last - first} ms`;
  };
  await check('http1: a response streamed over ~1 s arrives in pieces', async () => {
    const { body, chunks } = await h1Request(host, port, { path: `/sem/slow?pieces=10&ms=100&tag=${tag}` });
    assert(body.toString().split('\n').filter(Boolean).length === 10, 'not 10 pieces in the body');
    return spread(chunks);
  });
  await check('h2c: a response streamed over ~1 s arrives in pieces', async () => {
    const r = await h2({ ':path': `/sem/slow?pieces=10&ms=100&tag=${tag}` });
    assert(r.body.toString().split('\n').filter(Boolean).length === 10, 'not 10 pieces in the body');
    return spread(r.chunks);
  });
  const slowBody = bodyOf(10_000, 5);
  const writeSlowly = async (w: { write: (b: Buffer) => unknown; end: () => unknown }): Promise<void> => {
    for (let i = 0; i < 10; i++) {
      w.write(slowBody.subarray(i * 1000, (i + 1) * 1000));
      await sleep(100);
    }
    w.end();
  };
  await check('http1: a request body streamed slowly (chunked) arrives whole', async () => {
    const { body } = await h1Request(host, port, { method: 'POST', path: p('slow-upload-h1') }, (req) => void writeSlowly(req));
    const info = infoOf(body);
    assert(info.body.bytes === slowBody.length && info.body.sha256 === sha(slowBody), `the app got ${info.body.bytes} B`);
    return `${info.body.bytes} B`;
  });
  await check('h2c: a request body streamed slowly arrives whole', async () => {
    const r = await h2({ ':method': 'POST', ':path': p('slow-upload-h2') }, (req) => void writeSlowly(req));
    const info = infoOf(r.body);
    assert(info.body.bytes === slowBody.length && info.body.sha256 === sha(slowBody), `the app got ${info.body.bytes} B`);
    return `${info.body.bytes} B`;
  });
  for (const size of [0, 1, 65536, 1 << 20, 16 << 20]) {
    const body = bodyOf(size, size + 7);
    await check(`http1: a ${size} B body echoed intact`, async () => {
      const { res, body: back } = await h1Request(host, port, { method: 'POST', path: '/echo', headers: { 'content-length': String(size) } }, (req) => req.end(body));
      assert(res.statusCode === 200, `status ${res.statusCode}`);
      assert(back.length === size && sha(back) === sha(body), `${back.length} B back, sha differs`);
      return `${size} B`;
    }, 60_000);
    await check(`h2c: a ${size} B body echoed intact`, async () => {
      // Written with backpressure on a session of its own: Node's client session refuses new
      // streams (ENHANCE_YOUR_CALM) once one write of 16 MiB sits in its memory, mesh or not.
      const own = http2.connect(`http://${authority}`);
      own.on('error', () => {});
      const r = await h2Request(own, { ':method': 'POST', ':path': '/echo' }, (req) => void writePaced(req, body)).finally(() => own.close());
      assert(Number(r.headers[':status']) === 200, `status ${r.headers[':status']}`);
      assert(r.body.length === size && sha(r.body) === sha(body), `${r.body.length} B back, sha differs`);
      return `${size} B`;
    }, 60_000);
  }

  // --- gRPC trailers-only error ---
  await check('gRPC: an error (status != 0) comes back trailers-only with grpc-status and grpc-message', async () => {
    const g = http2.connect(`http://${host}:${grpcPort}`);
    g.on('error', () => {});
    try {
      // EchoRequest { fail_with_code: 5 } in one length-prefixed message.
      const msg = Buffer.from([0, 0, 0, 0, 2, 0x10, 0x05]);
      const r = await h2Request(g, { ':method': 'POST', ':path': '/skein.lab.v1.Echo/Unary', 'content-type': 'application/grpc', te: 'trailers' }, (req) => req.end(msg));
      assert(Number(r.headers[':status']) === 200, `status ${r.headers[':status']}`);
      assert((r.flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0, `the response headers did not end the stream (headers ${JSON.stringify(r.headers)}, trailers ${JSON.stringify(r.trailers)})`);
      assert(r.trailers === undefined && r.body.length === 0, 'DATA or trailers after a trailers-only response');
      assert(r.headers['grpc-status'] === '5', `grpc-status ${r.headers['grpc-status']}`);
      assert(/failed on request/.test(decodeURIComponent(String(r.headers['grpc-message']))), `grpc-message ${r.headers['grpc-message']}`);
      return `grpc-status ${r.headers['grpc-status']}: ${decodeURIComponent(String(r.headers['grpc-message']))}`;
    } finally {
      g.close();
    }
  });
  await check('gRPC: a grpc-js client sees the app\'s status and message', async () => {
    const Echo = echoService();
    const client = new Echo(`${host}:${grpcPort}`, grpc.credentials.createInsecure());
    try {
      const err = await new Promise<grpc.ServiceError | null>((resolve) => {
        (client as unknown as { Unary: (m: unknown, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null) => void) => void }).Unary(
          { payload: Buffer.alloc(0), failWithCode: 9 },
          { deadline: Date.now() + 10_000 },
          (e) => resolve(e),
        );
      });
      assert(err && err.code === 9, `status ${err?.code}: ${err?.details}`);
      assert(/failed on request/.test(err.details), `details ${err.details}`);
      return `${err.code} ${err.details}`;
    } finally {
      client.close();
    }
  });

  // --- cancellation and resets ---
  const abortSeen = async (id: string): Promise<string> => {
    let state = 'unknown';
    for (let i = 0; i < 100; i++) {
      const r = await h2({ ':path': `/sem/aborted/${id}` });
      state = (JSON.parse(r.body.toString()) as { state: string }).state;
      if (state !== 'holding' && state !== 'unknown') break;
      await sleep(100);
    }
    assert(state === 'aborted', `the app's request is ${state}`);
    return 'the app saw its request aborted';
  };
  await check('h2c: the client cancels (RST_STREAM) mid-response; the app sees its request aborted', async () => {
    const id = randomUUID();
    await new Promise<void>((resolve, reject) => {
      const req = session.request({ ':method': 'GET', ':path': `/sem/hold/${id}` }, { endStream: true });
      req.on('error', () => {});
      req.once('data', () => {
        req.close(http2.constants.NGHTTP2_CANCEL);
        resolve();
      });
      req.once('close', () => reject(new Error(`the stream closed (${req.rstCode}) before any body`)));
    });
    return abortSeen(id);
  });
  await check('http1: the client closes its socket mid-response; the app sees its request aborted', async () => {
    const id = randomUUID();
    const c = await RawConn.open(host, port);
    await new Promise<void>((resolve, reject) => {
      let got = '';
      c.sock.on('data', (d: Buffer) => {
        got += d.toString('latin1');
        if (got.includes('held until you go away')) {
          c.sock.destroy();
          resolve();
        }
      });
      c.sock.once('close', () => reject(new Error(`closed before the body: ${got.slice(0, 100)}`)));
      c.sock.write(`GET /sem/hold/${id} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
    });
    return abortSeen(id);
  });
  await check('h2c: the app resets its response mid-body; the client sees a broken stream, never a clean end', async () => {
    const r = await h2({ ':path': `/sem/reset?tag=${tag}` });
    assert(Number(r.headers[':status']) === 200, `status ${r.headers[':status']}`);
    assert((r.rstCode ?? 0) !== 0, `the stream ended cleanly after ${r.body.length} B`);
    return `RST_STREAM ${r.rstCode} after ${r.body.length} B`;
  });
  await check('http1: the app resets its response mid-body; the client sees it cut, never a clean short body', async () => {
    const c = await RawConn.open(host, port);
    try {
      const outcome = await c.exchange(`GET /sem/reset?tag=${tag} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`).then(
        (r) => `a clean ${r.status} with ${r.body.length} B`,
        (err: Error) => `broken: ${err.message}`,
      );
      assert(outcome.startsWith('broken'), outcome);
      return outcome;
    } finally {
      c.close();
    }
  });

  // --- HTTP/1.0 ---
  await check('http1.0 without keep-alive: the response arrives, then the proxy closes the connection', async () => {
    const c = await RawConn.open(host, port);
    try {
      const r = await c.exchange(`GET ${p('http10')} HTTP/1.0\r\nHost: ${authority}\r\n\r\n`);
      assert(r.status === 200, `status ${r.status}`);
      const info = infoOf(r.body);
      for (let i = 0; i < 50 && !c.closedByPeer; i++) await sleep(100);
      assert(c.closedByPeer, 'the connection is still open 5 s after the response');
      return `${info.method} ${info.path}, then closed`;
    } finally {
      c.close();
    }
  });

  // --- reserved skein-* fields ---
  const forged = { 'skein-dst': `${otherIp}:${port}`, 'skein-proto': 'bogus', 'skein-anything': 'x' };
  await check('http1: forged skein-* request fields: the right pod answers, the app sees no skein-* field', async () => {
    const c = await RawConn.open(host, port);
    try {
      const r = await c.exchange(`GET ${p('forge-h1')} HTTP/1.1\r\nHost: ${authority}\r\n${Object.entries(forged).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`);
      assert(r.status === 200, `status ${r.status}: ${r.body.toString().slice(0, 200)}`);
      const info = infoOf(r.body);
      assert(`${info.namespace}/${info.pod}` === expectedPod, `answered by ${info.namespace}/${info.pod}`);
      const seen = reservedIn(Object.keys(info.headers));
      assert(seen.length === 0, `the app received ${seen.join(', ')}`);
      return `answered by ${expectedPod}`;
    } finally {
      c.close();
    }
  });
  await check('h2c: forged skein-* request fields: the right pod answers, the app sees no skein-* field', async () => {
    const r = await h2({ ':path': p('forge-h2'), ...forged });
    assert(Number(r.headers[':status']) === 200, `status ${r.headers[':status']}`);
    const info = infoOf(r.body);
    assert(`${info.namespace}/${info.pod}` === expectedPod, `answered by ${info.namespace}/${info.pod}`);
    const seen = reservedIn(Object.keys(info.headers));
    assert(seen.length === 0, `the app received ${seen.join(', ')}`);
    return `answered by ${expectedPod}`;
  });
  await check("http1: the app's skein-x response field never reaches the client", async () => {
    const c = await RawConn.open(host, port);
    try {
      const r = await c.exchange(`GET ${p('res-reserved-h1')} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
      infoOf(r.body);
      const seen = reservedIn(r.rawHead.slice(1).map((l) => l.split(':')[0] ?? ''));
      assert(seen.length === 0, `the client received ${seen.join(', ')}`);
      return 'none';
    } finally {
      c.close();
    }
  });
  await check("h2c: the app's skein-x response field never reaches the client", async () => {
    const r = await h2({ ':path': p('res-reserved-h2') });
    infoOf(r.body);
    const seen = reservedIn(Object.keys(r.headers));
    assert(seen.length === 0, `the client received ${seen.join(', ')}`);
    return 'none';
  });
  session.close();
}

/** `bytes` generated in 64 KiB pieces (from a seed), streamed to /echo and hashed on both sides. */
async function big(host: string, port: number, bytes: number): Promise<void> {
  const piece = bodyOf(65536, 42);
  const expected = createHash('sha256');
  for (let left = bytes; left > 0; left -= piece.length) expected.update(piece.subarray(0, Math.min(left, piece.length)));
  const want = expected.digest('hex');
  const pump = async (w: NodeJS.WritableStream & { write: (b: Buffer) => boolean }): Promise<void> => {
    for (let left = bytes; left > 0; left -= piece.length) {
      if (!w.write(piece.subarray(0, Math.min(left, piece.length)))) await new Promise((r) => w.once('drain', r));
    }
    w.end();
  };
  const hashStream = (r: NodeJS.ReadableStream): Promise<{ n: number; sha: string }> =>
    new Promise((resolve, reject) => {
      const h = createHash('sha256');
      let n = 0;
      r.on('data', (c: Buffer) => {
        n += c.length;
        h.update(c);
      });
      r.on('end', () => resolve({ n, sha: h.digest('hex') }));
      r.on('error', reject);
      r.on('aborted', () => reject(new Error(`aborted after ${n} B`)));
    });
  await check(`http1: ${bytes} B up and back through /echo, sha256 equal`, async () => {
    const got = await new Promise<{ n: number; sha: string }>((resolve, reject) => {
      const req = http.request({ host, port, method: 'POST', path: '/echo', headers: { 'content-length': String(bytes) }, agent: false });
      req.on('error', reject);
      req.on('response', (res) => hashStream(res).then(resolve, reject));
      void pump(req);
    });
    assert(got.n === bytes && got.sha === want, `${got.n} B back, sha ${got.sha.slice(0, 12)} (want ${want.slice(0, 12)})`);
    return `${got.n} B, sha256 ${want.slice(0, 16)}`;
  }, 170_000);
  await check(`h2c: ${bytes} B up and back through /echo, sha256 equal`, async () => {
    const session = http2.connect(`http://${host}:${port}`);
    session.on('error', () => {});
    try {
      const got = await new Promise<{ n: number; sha: string }>((resolve, reject) => {
        const req = session.request({ ':method': 'POST', ':path': '/echo', 'content-length': String(bytes) });
        req.on('error', reject);
        req.on('close', () => {
          if ((req.rstCode ?? 0) !== 0) reject(new Error(`stream reset ${req.rstCode}`));
        });
        hashStream(req).then(resolve, reject);
        void pump(req as unknown as NodeJS.WritableStream & { write: (b: Buffer) => boolean });
      });
      assert(got.n === bytes && got.sha === want, `${got.n} B back, sha ${got.sha.slice(0, 12)} (want ${want.slice(0, 12)})`);
      return `${got.n} B, sha256 ${want.slice(0, 16)}`;
    } finally {
      session.close();
    }
  }, 170_000);
}

/** `streams` requests at once on ONE h2c connection; counts answers by pod. */
async function concurrent(host: string, port: number, streams: number): Promise<void> {
  const session = http2.connect(`http://${host}:${port}`);
  session.on('error', () => {});
  const byPod: Record<string, number> = {};
  const statuses: Record<string, number> = {};
  await check(`h2c: ${streams} concurrent streams on one connection all answered 200`, async () => {
    const all = await Promise.allSettled(
      Array.from({ length: streams }, (_, i) => h2Request(session, { ':method': 'GET', ':path': `/sem/info?stream=${i}` })),
    );
    for (const r of all) {
      const key = r.status === 'fulfilled' ? String(r.value.headers[':status']) : `error: ${(r.reason as Error).message}`;
      statuses[key] = (statuses[key] ?? 0) + 1;
      if (r.status === 'fulfilled') {
        const pod = String(r.value.headers['x-skein-pod']);
        byPod[pod] = (byPod[pod] ?? 0) + 1;
      }
    }
    assert(statuses['200'] === streams, `statuses ${JSON.stringify(statuses)}`);
    return JSON.stringify(byPod);
  }, 120_000);
  await check(`h2c: the ${streams} streams were spread over more than one endpoint`, async () => {
    assert(Object.keys(byPod).length > 1, `by pod ${JSON.stringify(byPod)}`);
    return JSON.stringify(byPod);
  });
  session.close();
}

/** One HTTP/1.1 and one h2c request to `/sem/info?tag=TAG&check=probe-...` (capture, logs). */
async function probe(host: string, port: number, tag: string): Promise<void> {
  await check('probe http1', async () => {
    const { res } = await h1Request(host, port, { path: `/sem/info?tag=${tag}&check=probe-h1` });
    assert(res.statusCode === 200, `status ${res.statusCode}`);
  });
  await check('probe h2c', async () => {
    const session = http2.connect(`http://${host}:${port}`);
    session.on('error', () => {});
    try {
      const r = await h2Request(session, { ':method': 'GET', ':path': `/sem/info?tag=${tag}&check=probe-h2` });
      assert(Number(r.headers[':status']) === 200, `status ${r.headers[':status']}`);
    } finally {
      session.close();
    }
  });
}

if (process.argv[1] === import.meta.filename) {
  const [mode = '', ...args] = process.argv.slice(2);
  const n = (s: string | undefined): number => Number(s);
  if (mode === 'semantics' && args.length === 6) await semantics(args[0]!, n(args[1]), n(args[2]), args[3]!, args[4]!, args[5]!);
  else if (mode === 'big' && args.length === 3) await big(args[0]!, n(args[1]), n(args[2]));
  else if (mode === 'concurrent' && args.length === 3) await concurrent(args[0]!, n(args[1]), n(args[2]));
  else if (mode === 'probe' && args.length === 3) await probe(args[0]!, n(args[1]), args[2]!);
  else {
    process.stderr.write('usage: l7-semantics-client.ts semantics|big|concurrent|probe ... (see the file)\n');
    process.exit(2);
  }
  process.stdout.write(`${JSON.stringify({ checks: results })}\n`);
  process.exit(0);
}
