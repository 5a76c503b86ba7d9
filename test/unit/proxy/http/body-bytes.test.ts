import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { type BodyBytes, countBodyBytes } from '../../../../src/proxy/http/body-bytes.js';

t.test('body bytes both ways, counted without reading the stream', async (t) => {
  const seen: BodyBytes[] = [];
  const server = http2.createServer();
  server.on('stream', (stream) => {
    const bytes = countBodyBytes(stream);
    stream.once('close', () => seen.push(bytes));
    // Read late, as a relay that waits for its upstream does: nothing may be lost meanwhile.
    setTimeout(() => {
      const parts: Buffer[] = [];
      stream.on('data', (c: Buffer) => parts.push(c));
      stream.on('end', () => {
        const body = Buffer.concat(parts);
        stream.respond({ ':status': 200 });
        stream.write(body);
        stream.write('é'); // 2 bytes as UTF-8
        stream.end(Buffer.alloc(10));
      });
    }, 20);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const session = http2.connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  t.teardown(() => session.close());
  const req = session.request({ ':method': 'POST', ':path': '/' });
  req.write(Buffer.alloc(70_000, 1));
  req.end(Buffer.alloc(5, 2));
  let got = 0;
  req.on('data', (c: Buffer) => {
    got += c.length;
  });
  await new Promise((r) => req.on('close', r));
  await new Promise((r) => setTimeout(r, 20));
  t.equal(got, 70_005 + 2 + 10, 'the exchange is untouched');
  t.same(seen, [{ request: 70_005, response: 70_017 }]);
});
