/**
 * gracefulGoaway: a server session closed under a steady stream of requests loses none of
 * them. Streams the client had open are answered; a stream the client queued at the instant
 * the notice arrived is refused unprocessed (REFUSED_STREAM, by its own nghttp2) and, sent
 * again as every HTTP/2 client does (RFC 9113 §8.7; skein's managed exchange too), served.
 * Nothing fails any other way. Real node:http2 on loopback.
 */
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { gracefulGoaway } from '../../../../src/proxy/http/graceful-goaway.js';

t.test('a session closed with a notice first loses no request', async (t) => {
  const server = http2.createServer();
  const sessions = new Set<http2.ServerHttp2Session>();
  server.on('session', (s) => sessions.add(s));
  server.on('stream', (st) => {
    setTimeout(() => {
      st.respond({ ':status': 200 });
      st.end('ok');
    }, 5);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => server.close());
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  let client: http2.ClientHttp2Session | undefined;
  let sessionsOpened = 0;
  const session = (): http2.ClientHttp2Session => {
    if (!client || client.closed || client.destroyed) {
      client = http2.connect(url);
      client.on('error', () => {});
      sessionsOpened++;
    }
    return client;
  };
  let ok = 0;
  let refused = 0;
  const failures: string[] = [];
  const one = (again = true): Promise<void> =>
    new Promise<void>((resolve) => {
      const req = session().request({ ':path': '/' });
      req.on('data', () => {});
      req.on('end', () => {
        ok++;
        resolve();
      });
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (again && req.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM) {
          refused++;
          resolve(one(false));
          return;
        }
        failures.push(`${e.code} rst=${req.rstCode}`);
        resolve();
      });
      req.end();
    });
  const loop = async () => {
    for (let i = 0; i < 150; i++) await one();
  };
  const closer = setInterval(() => {
    for (const s of sessions) gracefulGoaway(s, 100);
    sessions.clear();
  }, 150);
  await Promise.all([loop(), loop(), loop(), loop()]);
  clearInterval(closer);
  client?.close();
  t.same(failures, [], `no stream failed (${refused} refused unprocessed and sent again)`);
  t.equal(ok, 600, 'every request answered');
  t.ok(sessionsOpened > 2, `the client moved to new sessions (${sessionsOpened})`);
});
