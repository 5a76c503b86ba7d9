/**
 * Idle-connection memory of ONE side of the tunnel, each side in its own process (not a tap
 * test; run by hand):
 *
 *   node --expose-gc --import=./node_modules/tap/node_modules/@tapjs/typescript/dist/esm/import.mjs \
 *     test/bench/tunnel-idle-memory-split.bench.ts [connections=4000]
 *
 * Parent = dialling agent (TunnelPool, client streams) + the app (a sink server).
 * Child  = accepting agent (TunnelServer, InboundProxy, the app-side sockets): its growth is
 *          what the inbound half costs per idle connection.
 * The parent's growth includes the app's accepted sockets; `plainSocketPairBytes` measures
 * those alone, so the dialling side's own cost is roughly parent minus that.
 */
import { fork } from 'node:child_process';
import { createServer, connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { WorkloadCertificate } from '../../src/identity/workload/types.js';
import { InboundProxy } from '../../src/proxy/inbound/inbound-proxy.js';
import { TunnelPool } from '../../src/proxy/tunnel/tunnel-pool.js';
import { TunnelServer } from '../../src/proxy/tunnel/tunnel-server.js';
import { LoopbackAppConnector, makeCa, makeLeaf, spiffe, TestIdentity, TRUST_DOMAIN, tcpServer, workload } from '../unit/proxy/tunnel/fixtures.js';

const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});
function rss(): number {
  gc();
  gc();
  return process.memoryUsage().rss;
}
function heap(): number {
  gc();
  return process.memoryUsage().heapUsed;
}
const serverId = spiffe('bench', 'server');
const clientId = spiffe('bench', 'client');

if (process.argv[2] === 'child') {
  // Accepting agent.
  process.once('message', async (msg: { ca: string; cert: WorkloadCertificate }) => {
    const cert = { ...msg.cert, notBefore: new Date(msg.cert.notBefore), notAfter: new Date(msg.cert.notAfter) };
    const identity = new TestIdentity(TRUST_DOMAIN, [msg.ca]).set(cert);
    const inbound = new InboundProxy({ app: new LoopbackAppConnector() });
    const server = await TunnelServer.create({
      workload: workload('server', ['127.0.0.1'], serverId),
      identity,
      inbound,
      credentialRefreshMs: 0,
      maxConcurrentStreams: 1000,
    });
    const addr = await server.listen({ port: 0, host: '127.0.0.1' });
    process.on('message', (m: { cmd: string; n?: number }) => {
      if (m.cmd === 'baseline') process.send?.({ rss: rss(), heap: heap() });
      if (m.cmd === 'measure') {
        const wait = (): void => {
          if (inbound.stats.active >= (m.n ?? 0)) setTimeout(() => process.send?.({ rss: rss(), heap: heap(), active: inbound.stats.active }), 300);
          else setTimeout(wait, 20);
        };
        wait();
      }
      if (m.cmd === 'exit') void server.close(100).then(() => process.exit(0));
    });
    process.send?.({ port: addr?.port });
  });
} else {
  const N = Number(process.argv[2] ?? 4000);
  const ca = await makeCa(TRUST_DOMAIN);
  const child = fork(fileURLToPath(import.meta.url), ['child'], { execArgv: process.execArgv });
  const ask = (m: unknown): Promise<Record<string, number>> =>
    new Promise((resolve) => {
      child.once('message', (r) => resolve(r as Record<string, number>));
      if (m) child.send(m as object);
    });
  const { port } = await ask({ ca: ca.certPem, cert: await makeLeaf(ca, [serverId]) });
  const app = await tcpServer((s) => s.resume());
  const pool = new TunnelPool({ identity: new TestIdentity(TRUST_DOMAIN, [ca.certPem]).set(await makeLeaf(ca, [clientId])), maxStreamsPerSession: 1000 });
  const target = { address: '127.0.0.1', port: app.port, identity: serverId, node: 'n', tunnelPort: port ?? 0 };
  const warm = await pool.connect(clientId, target);
  warm.write('x');
  // Let the memory of setup (key generation, module compilation) be returned first.
  await new Promise((r) => setTimeout(r, 1500));
  const cb = await ask({ cmd: 'baseline' });
  rss();
  await new Promise((r) => setTimeout(r, 500));
  const parentBefore = rss();
  const parentHeapBefore = heap();
  const streams: Duplex[] = [];
  for (let i = 0; i < N; i++) {
    const s = await pool.connect(clientId, target);
    s.write('x');
    streams.push(s);
  }
  const ca2 = await ask({ cmd: 'measure', n: N + 1 });
  const parentAfter = rss();
  const parentHeapAfter = heap();

  // Reference: what a plain connected TCP socket pair costs in one process (the app's side).
  const ref = createServer((s) => s.resume());
  await new Promise<void>((r) => ref.listen(0, '127.0.0.1', r));
  const refPort = (ref.address() as { port: number }).port;
  const refBefore = rss();
  const plain: Socket[] = [];
  for (let i = 0; i < 2000; i++) {
    const s = connect({ host: '127.0.0.1', port: refPort });
    await new Promise((r) => s.once('connect', r));
    s.write('x');
    plain.push(s);
  }
  await new Promise((r) => setTimeout(r, 300));
  const plainPair = Math.round((rss() - refBefore) / 2000);

  console.log(
    JSON.stringify({
      connections: N,
      acceptingAgentRssPerConn: Math.round(((ca2.rss ?? 0) - (cb.rss ?? 0)) / N),
      acceptingAgentHeapPerConn: Math.round(((ca2.heap ?? 0) - (cb.heap ?? 0)) / N),
      diallingAgentPlusAppRssPerConn: Math.round((parentAfter - parentBefore) / N),
      diallingAgentPlusAppHeapPerConn: Math.round((parentHeapAfter - parentHeapBefore) / N),
      plainSocketPairBytes: plainPair,
    }),
  );
  for (const s of plain) s.destroy();
  ref.close();
  for (const s of streams) s.destroy();
  warm.destroy();
  child.send({ cmd: 'exit' });
  await pool.close();
  await app.close();
}
