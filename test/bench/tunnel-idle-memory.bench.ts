/**
 * Idle-connection memory of the tunnel path (not a tap test; run by hand):
 *
 *   node --expose-gc --import=./node_modules/tap/node_modules/@tapjs/typescript/dist/esm/import.mjs \
 *     test/bench/tunnel-idle-memory.bench.ts [connections=2000]
 *
 * Opens N idle CONNECT streams TunnelPool -> TunnelServer -> InboundProxy -> app, all in this
 * process, and prints RSS and heap growth per connection. Everything one idle connection costs
 * on BOTH agents (client stream, server stream, app-side socket) is counted here, plus the
 * app's own accepted socket — so it over-states what one agent pays.
 */
import { once } from 'node:events';
import type { Duplex } from 'node:stream';
import { InboundProxy } from '../../src/proxy/inbound/inbound-proxy.js';
import { TunnelPool } from '../../src/proxy/tunnel/tunnel-pool.js';
import { TunnelServer } from '../../src/proxy/tunnel/tunnel-server.js';
import { LoopbackAppConnector, makeCa, makeLeaf, spiffe, TestIdentity, TRUST_DOMAIN, tcpServer, workload } from '../unit/proxy/tunnel/fixtures.js';

const N = Number(process.argv[2] ?? 2000);
const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});

function mem(): { rss: number; heap: number; external: number } {
  gc();
  gc();
  const m = process.memoryUsage();
  return { rss: m.rss, heap: m.heapUsed, external: m.external + m.arrayBuffers };
}

const ca = await makeCa(TRUST_DOMAIN);
const clientId = spiffe('bench', 'client');
const serverId = spiffe('bench', 'server');
const clientIdentity = new TestIdentity(TRUST_DOMAIN, [ca.certPem]).set(await makeLeaf(ca, [clientId]));
const serverIdentity = new TestIdentity(TRUST_DOMAIN, [ca.certPem]).set(await makeLeaf(ca, [serverId]));
const app = await tcpServer((s) => s.resume());
const inbound = new InboundProxy({ app: new LoopbackAppConnector() });
const server = await TunnelServer.create({
  workload: workload('server', ['127.0.0.1'], serverId),
  identity: serverIdentity,
  inbound,
  credentialRefreshMs: 0,
  maxConcurrentStreams: 1000,
});
const addr = await server.listen({ port: 0, host: '127.0.0.1' });
const pool = new TunnelPool({ identity: clientIdentity, maxStreamsPerSession: 1000 });
const target = { address: '127.0.0.1', port: app.port, identity: serverId, node: 'n', tunnelPort: addr?.port ?? 0 };

// Warm up (TLS, sessions, JIT) so the baseline includes fixed costs.
const warm = await pool.connect(clientId, target);
warm.write('x');
await new Promise((r) => setTimeout(r, 200));
const before = mem();
const t0 = performance.now();
const streams: Duplex[] = [];
for (let i = 0; i < N; i++) {
  const s = await pool.connect(clientId, target);
  s.write('x'); // one byte each way of real traffic, then idle
  streams.push(s);
}
while (inbound.stats.active < N + 1) await new Promise((r) => setTimeout(r, 20));
await new Promise((r) => setTimeout(r, 500));
const after = mem();
const per = (k: 'rss' | 'heap' | 'external') => Math.round((after[k] - before[k]) / N);
console.log(
  JSON.stringify({
    connections: N,
    sessions: pool.stats()[0]?.sessions.length,
    openSeconds: +((performance.now() - t0) / 1000).toFixed(2),
    rssPerConnBytes: per('rss'),
    heapPerConnBytes: per('heap'),
    externalPerConnBytes: per('external'),
    rssTotalMiB: +(after.rss / 1048576).toFixed(1),
  }),
);
for (const s of streams) s.destroy();
warm.destroy();
await pool.close();
await server.close(200);
await app.close();
await once(process, 'beforeExit');
