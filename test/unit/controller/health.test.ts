// The controller's probes: live always, ready only while the flag says it serves; other
// paths are left to the next handler (metrics, graph).
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { healthHandler } from '../../../src/controller/health.js';

t.test('live 200; ready 503 until serving, then 200; other paths pass through', async (t) => {
  let serving = false;
  const health = healthHandler(() => serving);
  const server = http.createServer((req, res) => {
    if (!health(req, res)) res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const url = (p: string) => `http://127.0.0.1:${(server.address() as AddressInfo).port}${p}`;
  t.equal((await fetch(url('/healthz/live'))).status, 200);
  t.equal((await fetch(url('/healthz/ready'))).status, 503, 'not ready while starting');
  serving = true;
  t.equal((await fetch(url('/healthz/ready?verbose=1'))).status, 200);
  t.equal((await fetch(url('/metrics'))).status, 404, 'not the health handler\'s');
  t.equal((await fetch(url('/healthz/ready'), { method: 'POST' })).status, 404);
});
