import net from 'node:net';
import t from 'tap';
import { classify, HTTP2_PREFACE, sniffProtocol } from '../../../../src/proxy/detect/sniff.js';

t.test('classify', async (t) => {
  const c = (s: string | Buffer) => classify(Buffer.isBuffer(s) ? s : Buffer.from(s, 'latin1'));
  t.same(c('GET / HTTP/1.1\r\nHost: x\r\n\r\n'), { protocol: 'http1', reason: 'request-line' });
  t.same(c('DELETE /a?b=c HTTP/1.0\r\n'), { protocol: 'http1', reason: 'request-line' });
  t.same(c(HTTP2_PREFACE), { protocol: 'http2', reason: 'preface' });
  t.same(c(Buffer.concat([HTTP2_PREFACE, Buffer.from([0, 0, 0, 4])])), { protocol: 'http2', reason: 'preface' });
  t.equal(c('PRI * HTTP/2'), undefined, 'partial preface: wait for more');
  t.equal(c('GE'), undefined, 'prefix of a method: wait');
  t.equal(c('GET /very/long'), undefined, 'request line not complete: wait');
  t.same(c('GET key\r\n'), { protocol: 'tcp', reason: 'mismatch' }, 'Redis inline GET is not HTTP');
  t.same(c('*2\r\n$3\r\nGET\r\n'), { protocol: 'tcp', reason: 'mismatch' }, 'RESP');
  t.same(c('\x16\x03\x01\x02\x00'), { protocol: 'tcp', reason: 'mismatch' }, 'TLS ClientHello');
  t.same(c('FOO / HTTP/1.1\r\n'), { protocol: 'tcp', reason: 'mismatch' }, 'unknown method');
  t.same(c('get / HTTP/1.1\r\n'), { protocol: 'tcp', reason: 'mismatch' }, 'methods are case-sensitive');
  t.same(c('GET / HTTP/2.0\r\n'), { protocol: 'tcp', reason: 'mismatch' }, 'not an HTTP/1 line');
  t.same(classify(Buffer.from(`GET /${'a'.repeat(100)}`), 64), { protocol: 'tcp', reason: 'limit' });
});

t.test('sniffProtocol on real sockets: bytes are put back, silence means tcp', async (t) => {
  const results: { protocol: string; reason: string; rest: string }[] = [];
  const server = net.createServer(async (s) => {
    const r = await sniffProtocol(s, { timeoutMs: 80 });
    s.once('readable', () => {});
    const rest = await new Promise<string>((resolve) => {
      let acc = '';
      s.on('data', (d) => {
        acc += d.toString('latin1');
      });
      s.on('end', () => resolve(acc));
      setTimeout(() => resolve(acc), 200);
    });
    results.push({ protocol: r.protocol, reason: r.reason, rest });
    s.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  const send = async (chunks: string[], gapMs = 0): Promise<void> => {
    const s = net.connect(port, '127.0.0.1');
    await new Promise((r) => s.once('connect', r));
    for (const c of chunks) {
      s.write(c);
      if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
    }
    await new Promise((r) => setTimeout(r, 250));
    s.destroy();
  };
  await send(['GET / HTTP/1.1\r\nHost: a\r\n\r\n']);
  await send(['GE', 'T /x HT', 'TP/1.1\r\n\r\n'], 10);
  await send([]);
  await send(['SSH-2.0-OpenSSH\r\n']);
  t.equal(results.length, 4);
  t.same(results[0], { protocol: 'http1', reason: 'request-line', rest: 'GET / HTTP/1.1\r\nHost: a\r\n\r\n' });
  t.same(results[1], { protocol: 'http1', reason: 'request-line', rest: 'GET /x HTTP/1.1\r\n\r\n' }, 'split across packets');
  t.same(results[2], { protocol: 'tcp', reason: 'timeout', rest: '' }, 'silent client: tcp after the wait');
  t.same(results[3], { protocol: 'tcp', reason: 'mismatch', rest: 'SSH-2.0-OpenSSH\r\n' });
});

t.test('a client that sends part of a method and ends: the bytes come back as leftover, never lost', async (t) => {
  // An ended stream cannot take bytes back (unshift after 'end'), so detection hands them to
  // the caller. Before: a 1-byte TCP payload "G" (or "PO", "DEL"...) followed by FIN vanished.
  const results: { protocol: string; reason: string; leftover: string | undefined }[] = [];
  const server = net.createServer({ allowHalfOpen: true }, async (s) => {
    const r = await sniffProtocol(s, { timeoutMs: 500 });
    results.push({ protocol: r.protocol, reason: r.reason, leftover: r.leftover?.toString('latin1') });
    s.destroy();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  for (const payload of ['G', 'PO', 'DELE', 'x']) {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    await new Promise((r) => s.once('connect', r));
    s.end(payload);
    await new Promise((r) => s.once('close', r));
  }
  t.same(results, [
    { protocol: 'tcp', reason: 'eof', leftover: 'G' },
    { protocol: 'tcp', reason: 'eof', leftover: 'PO' },
    { protocol: 'tcp', reason: 'eof', leftover: 'DELE' },
    { protocol: 'tcp', reason: 'mismatch', leftover: undefined },
  ]);
});
