import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import v8 from 'node:v8';
import vm from 'node:vm';
import t, { type Test } from 'tap';
import type { Http2Options } from '../../../../src/proxy/http/http2-forwarder.js';
import { FrameType, frame, getHeaders, rawH2 } from '../tunnel/raw-h2.js';
import { BACKEND_IPS, listenOn, snapshotFor, startProxy } from './fixtures/harness.js';

/** Sends raw bytes, collects everything until the proxy closes (or `waitMs` passes). */
function raw(port: number, chunks: (string | Buffer)[], opts: { gapMs?: number; waitMs?: number } = {}): Promise<{ text: string; closedAfterMs: number }> {
  return new Promise((resolve) => {
    const started = performance.now();
    const s = net.connect(port, '127.0.0.1');
    let text = '';
    s.on('data', (d) => {
      text += d.toString('latin1');
    });
    s.on('error', () => {});
    const finish = (): void => {
      clearTimeout(timer);
      resolve({ text, closedAfterMs: Math.round(performance.now() - started) });
    };
    s.on('close', finish);
    const timer = setTimeout(() => {
      s.destroy();
    }, opts.waitMs ?? 5000);
    let i = 0;
    const next = (): void => {
      if (i >= chunks.length || s.destroyed) return;
      s.write(chunks[i++] as string);
      if (opts.gapMs) setTimeout(next, opts.gapMs);
      else next();
    };
    s.on('connect', next);
  });
}

t.test('client-facing hardening (HTTP/1 and HTTP/2), the proxy keeps serving a good client', async (t) => {
  const seenByBackend: string[] = [];
  const backend = http.createServer((req, res) => {
    seenByBackend.push(`${req.method} ${req.url}`);
    req.resume();
    req.on('end', () => res.end('ok'));
  });
  const b = await listenOn(backend, BACKEND_IPS[0] as string);
  t.teardown(() => {
    backend.closeAllConnections();
    backend.close();
  });
  const h = await startProxy(snapshotFor([b], { appProtocol: 'http' }), {
    http1: { headersTimeoutMs: 400, checkIntervalMs: 100, maxHeaderSize: 8192 },
  });
  t.teardown(() => h.close());
  // A well-behaved client on its own keep-alive connection, used between every attack.
  const goodAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => goodAgent.destroy());
  const good = (): Promise<number> =>
    new Promise((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: h.port, path: '/good', agent: goodAgent }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        })
        .on('error', reject);
    });
  t.equal(await good(), 200);

  t.test('request smuggling: Content-Length + Transfer-Encoding -> 400, nothing upstream', async (t) => {
    const before = seenByBackend.length;
    const r = await raw(h.port, [
      'POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n',
    ]);
    t.match(r.text, /^HTTP\/1\.1 400 /);
    t.equal(seenByBackend.length, before, 'backend saw no request at all');
    t.notOk(seenByBackend.includes('GET /smuggled'));
    t.equal(h.proxy.refusalCount('SKEIN_HTTP1_SMUGGLING'), 1, 'refusal counted with its code');
    // Obfuscated Transfer-Encoding (not chunked-final) is refused as well.
    const r2 = await raw(h.port, ['POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n5\r\nhello\r\n0\r\n\r\n']);
    t.match(r2.text, /^HTTP\/1\.1 400 /);
    t.equal(seenByBackend.length, before);
    t.equal(await good(), 200, 'good client unaffected');
  });

  t.test('oversized headers -> 431', async (t) => {
    const r = await raw(h.port, [`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`]);
    t.match(r.text, /^HTTP\/1\.1 431 /);
    t.equal(h.proxy.refusalCount('SKEIN_HTTP1_HEADERS_TOO_LARGE'), 1);
    t.equal(await good(), 200, 'good client unaffected');
  });

  t.test('slowloris: a head trickled byte by byte is cut off at headersTimeout', async (t) => {
    const head = 'GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n';
    const chunks = [...head, ...'X-More: 2\r\n'.repeat(50)];
    const r = await raw(h.port, chunks, { gapMs: 50, waitMs: 8000 });
    t.ok(r.closedAfterMs < 2000, `closed after ${r.closedAfterMs} ms (headersTimeout 400 ms)`);
    t.match(r.text, /^HTTP\/1\.1 408 |^$/, '408 or a plain close');
    t.ok(h.proxy.refusalCount('SKEIN_HTTP1_SLOW_CLIENT') >= 1, 'counted');
    t.equal(await good(), 200, 'good client unaffected');
  });

  t.test('CONNECT from an app is refused', async (t) => {
    const r = await raw(h.port, ['CONNECT evil:443 HTTP/1.1\r\nHost: evil:443\r\n\r\n']);
    t.match(r.text, /^HTTP\/1\.1 405 /);
    t.equal(await good(), 200);
  });
});

/**
 * An h2c backend that answers each stream after 50 ms (so every flooding stream is still in
 * flight when the client resets it) behind a proxy with these HTTP/2 options. `streams()`:
 * how many streams reached the backend; `goodGet()`: one request on a well-behaved session.
 */
async function slowH2BehindProxy(t: Test, http2Opts: Http2Options) {
  let streams = 0;
  const backend = http2.createServer();
  backend.on('stream', (stream) => {
    streams++;
    stream.on('error', () => {});
    setTimeout(() => {
      if (!stream.closed) {
        stream.respond({ ':status': 200 });
        stream.end('ok');
      }
    }, 50);
  });
  const b = await listenOn(backend as unknown as net.Server, BACKEND_IPS[0] as string);
  t.teardown(() => backend.close());
  const h = await startProxy(snapshotFor([b], { appProtocol: 'http2' }), { http2: http2Opts });
  t.teardown(() => h.close());
  const good = http2.connect(`http://127.0.0.1:${h.port}`);
  good.on('error', () => {});
  t.teardown(() => good.destroy());
  const goodGet = (): Promise<number> =>
    new Promise((resolve, reject) => {
      const r = good.request({ ':path': '/good' });
      r.on('response', (hd) => resolve(Number(hd[':status'])));
      r.on('error', reject);
      r.resume();
    });
  return { h, streams: () => streams, goodGet };
}

t.test('HTTP/2 rapid reset flood closes that session only', async (t) => {
  const { h, goodGet } = await slowH2BehindProxy(t, { maxClientResetsPerWindow: 50, resetWindowMs: 1000, maxConcurrentStreams: 100 });
  t.equal(await goodGet(), 200);

  const attacker = http2.connect(`http://127.0.0.1:${h.port}`);
  attacker.on('error', () => {});
  const goaway = new Promise<number>((r) => attacker.once('goaway', (code) => r(code)));
  const closed = new Promise<void>((r) => attacker.once('close', () => r()));
  let opened = 0;
  for (let i = 0; i < 1000 && !attacker.closed && !attacker.destroyed; i++) {
    try {
      const s = attacker.request({ ':path': `/flood/${i}` });
      s.on('error', () => {});
      s.close(http2.constants.NGHTTP2_CANCEL);
      opened++;
    } catch {
      break;
    }
    if (i % 20 === 0) await new Promise((r) => setImmediate(r));
  }
  const code = await Promise.race([goaway, new Promise<number>((r) => setTimeout(() => r(-1), 3000))]);
  t.equal(code, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, `GOAWAY(ENHANCE_YOUR_CALM) after ${opened} reset streams`);
  await closed;
  t.equal(h.proxy.refusalCount('SKEIN_HTTP2_RAPID_RESET'), 1, 'refusal counted once');
  t.equal(await goodGet(), 200, 'the other session keeps being served');
});

t.test('h2c flood of 20,000 HEADERS+RST_STREAM on one app connection: refused early, GOAWAY last-stream-id never increases', async (t) => {
  const budget = 200;
  const { h, streams, goodGet } = await slowH2BehindProxy(t, { maxClientResetsPerWindow: budget, resetWindowMs: 1000 });
  t.equal(await goodGet(), 200);
  const recordsBefore = h.records.length;

  const sock = net.connect(h.port, '127.0.0.1');
  t.teardown(() => sock.destroy());
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  const raw = rawH2(sock);
  // The proxy runs in this process: the longest gap between 2 ms ticks is how long the flood
  // kept the event loop (everyone else's traffic) waiting.
  let maxGap = 0;
  let last = performance.now();
  const ticker = setInterval(() => {
    const now = performance.now();
    maxGap = Math.max(maxGap, now - last);
    last = now;
  }, 2);
  t.teardown(() => clearInterval(ticker));

  const N = 20_000;
  const block = getHeaders('server.apps', '/flood');
  const cancel = Buffer.alloc(4);
  cancel.writeUInt32BE(http2.constants.NGHTTP2_CANCEL);
  let sent = 0;
  const deadline = Date.now() + 10_000;
  for (let id = 1; sent < N && Date.now() < deadline && !raw.closed; ) {
    const batch: Buffer[] = [];
    for (let i = 0; i < 100 && sent < N; i++, sent++, id += 2) {
      batch.push(frame(FrameType.HEADERS, 0x4 /* END_HEADERS */, id, block), frame(FrameType.RST_STREAM, 0, id, cancel));
    }
    try {
      await raw.write(Buffer.concat(batch));
    } catch {
      break;
    }
    // Let the proxy read between batches, as a network would: one huge write hits nghttp2's
    // own burst limit (1000 resets) before skein's budget ever counts.
    await new Promise((r) => setImmediate(r));
  }
  const closeDeadline = Date.now() + 5_000;
  while (!raw.closed && Date.now() < closeDeadline) await new Promise((r) => setTimeout(r, 10));
  clearInterval(ticker);
  t.comment(
    `flood: ${sent} pairs written; GOAWAY codes ${raw.goaways.join(',')} last-stream-ids ${raw.goawayLastStreamIds.join(',')}; ` +
      `streams routed ${h.records.length - recordsBefore}; reached the backend ${streams() - 1}; longest event-loop gap ${maxGap.toFixed(1)} ms`,
  );
  t.ok(raw.closed, 'the flooding connection was closed');
  t.equal(raw.goaway, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, 'GOAWAY(ENHANCE_YOUR_CALM)');
  const ids = raw.goawayLastStreamIds;
  t.ok(
    ids.every((id, i) => i === 0 || id <= (ids[i - 1] as number)),
    `no GOAWAY raises the last-stream-id (${ids.join(' -> ')})`,
  );
  t.ok(sent < N, `refused long before the flood ended (${sent} of ${N} pairs written)`);
  // Judged at the first reset over the budget, synchronously while nghttp2 parses it: streams
  // still in that read buffer are refused without routing (before: ~360 routed for 200).
  t.ok(h.records.length - recordsBefore <= budget + 2, `no routing work after the judgment (${h.records.length - recordsBefore} streams routed)`);
  t.equal(h.proxy.refusalCount('SKEIN_HTTP2_RAPID_RESET'), 1, 'refusal counted once with its code');
  t.equal(await goodGet(), 200, 'the other session keeps being served');
});

t.test('rapid-reset floods: a stream reset in the read that opened it is never routed, and the memory comes back', async (t) => {
  // A real major GC, so that "given back" is measured, not whatever V8 had not collected yet.
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  const budget = 200;
  const { h, goodGet } = await slowH2BehindProxy(t, { maxClientResetsPerWindow: budget, resetWindowMs: 1000 });
  t.equal(await goodGet(), 200);
  const settle = async (): Promise<number> => {
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 50));
      gc();
    }
    return process.memoryUsage().heapUsed;
  };
  const flood = async (): Promise<{ sent: number; closed: boolean }> => {
    const sock = net.connect(h.port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', reject);
    });
    sock.on('error', () => {});
    const raw = rawH2(sock);
    const block = getHeaders('server.apps', '/flood');
    const cancel = Buffer.alloc(4);
    cancel.writeUInt32BE(http2.constants.NGHTTP2_CANCEL);
    let sent = 0;
    const deadline = Date.now() + 10_000;
    for (let id = 1; sent < 20_000 && Date.now() < deadline && !raw.closed; ) {
      const batch: Buffer[] = [];
      for (let i = 0; i < 100; i++, sent++, id += 2) batch.push(frame(FrameType.HEADERS, 0x4, id, block), frame(FrameType.RST_STREAM, 0, id, cancel));
      try {
        await raw.write(Buffer.concat(batch));
      } catch {
        break;
      }
      await new Promise((r) => setImmediate(r));
    }
    const closeBy = Date.now() + 5_000;
    while (!raw.closed && Date.now() < closeBy) await new Promise((r) => setTimeout(r, 10));
    sock.destroy();
    return { sent, closed: raw.closed };
  };
  await flood(); // warm-up: code paths compiled, pools made
  const baseline = await settle();
  const recordsBefore = h.records.length;
  const ROUNDS = 5;
  for (let i = 0; i < ROUNDS; i++) {
    const f = await flood();
    t.ok(f.closed, `flood ${i + 1} refused and closed after ${f.sent} pairs`);
  }
  const routed = h.records.length - recordsBefore;
  const after = await settle();
  const grewMb = (after - baseline) / 2 ** 20;
  t.comment(`${ROUNDS} floods: ${routed} streams routed; heapUsed after a full GC ${(baseline / 2 ** 20).toFixed(1)} -> ${(after / 2 ** 20).toFixed(1)} MB`);
  // HEADERS and RST_STREAM written back to back mostly arrive in one read; only a pair that a
  // read boundary splits can get routed (before the deferral: the whole budget, 200 a flood).
  t.ok(routed < ROUNDS * 20, `streams reset in the read that opened them are not routed (${routed} of ${ROUNDS} x ${budget} resets)`);
  t.ok(grewMb < 4, `the floods' memory is released once their sessions end (heap +${grewMb.toFixed(2)} MB after ${ROUNDS} x 20,000-pair floods)`);
  t.equal(h.proxy.refusalCount('SKEIN_HTTP2_RAPID_RESET'), ROUNDS + 1, 'every flood refused once, counted by code');
  t.equal(await goodGet(), 200, 'the other session keeps being served');
});

t.test('a flood that arrives with the connection preface (already buffered when the session starts) is refused without an uncaught error', async (t) => {
  const budget = 200;
  const { h, goodGet } = await slowH2BehindProxy(t, { maxClientResetsPerWindow: budget, resetWindowMs: 1000 });
  const uncaught: unknown[] = [];
  const onUncaught = (err: unknown): void => {
    uncaught.push(err);
  };
  // tap would end the test at the first one; record them instead, to report what they were.
  process.prependListener('uncaughtException', onUncaught);
  t.teardown(() => process.removeListener('uncaughtException', onUncaught));
  const sock = net.connect(h.port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  const block = getHeaders('server.apps', '/flood');
  const cancel = Buffer.alloc(4);
  cancel.writeUInt32BE(http2.constants.NGHTTP2_CANCEL);
  const pairs: Buffer[] = [];
  for (let i = 0, id = 1; i < 1000; i++, id += 2) pairs.push(frame(FrameType.HEADERS, 0x4, id, block), frame(FrameType.RST_STREAM, 0, id, cancel));
  // One write with the preface: the proxy's protocol sniffing reads it all, so Node's session
  // parses it in one go when it starts, our GOAWAY leaving in the middle of it.
  sock.cork();
  const raw = rawH2(sock);
  sock.write(Buffer.concat(pairs));
  sock.uncork();
  const closeBy = Date.now() + 5_000;
  while (!raw.closed && Date.now() < closeBy) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 100));
  t.comment(`GOAWAY codes ${raw.goaways.join(',')} last-stream-ids ${raw.goawayLastStreamIds.join(' -> ')}`);
  t.same(uncaught.map((e) => (e as Error).message), [], 'no uncaught error in the proxy');
  t.equal(raw.goaway, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM, 'GOAWAY(ENHANCE_YOUR_CALM)');
  const ids = raw.goawayLastStreamIds;
  t.ok(ids.every((id, i) => i === 0 || id <= (ids[i - 1] as number)), `no GOAWAY raises the last-stream-id (${ids.join(' -> ')})`);
  t.ok(raw.closed, 'closed');
  t.equal(await goodGet(), 200, 'the other session keeps being served');
});
