/**
 * The admin API on its root-only unix socket (issue 15): mode 0600, answers over the socket,
 * no TCP unless asked, a path that is not a socket is never replaced.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import t from 'tap';
import { startAdmin, type AdminDeps } from '../../../src/agent/admin.js';
import { adminGet, adminRequest } from '../../../src/api/agent-admin.js';
import { silentLogger } from '../../../src/telemetry/log.js';

function deps(): AdminDeps {
  const agent = {
    store: { snapshot: () => null, lastRejection: () => undefined },
    status: () => ({ pods: [] }),
    ready: true,
    outbound: { stats: () => ({ connections: {} }), describeRouting: () => ({ services: {} }) },
    inbound: { stats: { served: 7 } },
    authorizer: { stats: { decisions: { 'deny|shop/deny-admin': 3 }, audits: {} } },
    rateLimits: { stats: { limited: {} } },
    tunnelRefusals: new Map([['SKEIN_TUNNEL_TLS_UNKNOWN_CA', 2]]),
    listenerRefusals: new Map([['SKEIN_OUTBOUND_CONNECTION_LIMIT', 1]]),
    openStreams: () => ({ 'shop/client-0': { outbound: 3, tunnel: 0 } }),
    loadShare: { stats: () => ({ utilization: 0.9, lagMs: 1, pods: { 'shop/flooder-0': { pauses: 4, refused: 0, allowance: 20 } } }) },
  };
  return { agent, capture: { counters: () => ({ skAssignFailed: 0 }), connectStats: () => ({ inProgress: 1, queued: 2, refusals: { SKEIN_CAPTURE_CONNECT_TIMEOUT: 3 } }) }, certificates: {}, registry: new Registry(), log: silentLogger() } as unknown as AdminDeps;
}

/** A free loopback port (listen on 0, close). */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

function tcpAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect({ port, host: '127.0.0.1' });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

t.test('served on a 0600 unix socket; no TCP admin unless asked', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'skein-admin-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const socket = join(dir, 'run', 'agent.sock');
  const tcp = await freePort();
  const stop = await startAdmin(deps(), { adminSocket: socket, metrics: { host: '127.0.0.1', port: 0 }, ready: { host: '127.0.0.1', port: 0 } });
  t.equal(statSync(socket).mode & 0o777, 0o600, 'socket readable and writable by its owner (root) only');
  t.equal(statSync(join(dir, 'run')).mode & 0o777, 0o700, 'its folder, made by the agent, is root-only too');
  const stop1 = stop;
  t.teardown(() => stop1().catch(() => {}));
  const stats = (await adminGet(socket, '/stats')) as { memory?: Record<string, number> };
  t.ok((stats.memory?.rss ?? 0) > 0 && (stats.memory?.heapUsed ?? 0) > 0, 'memory: the process RSS and V8 heap');
  delete stats.memory;
  t.same(stats, {
    outbound: { connections: {} },
    inbound: { served: 7 },
    authorization: { decisions: { 'deny|shop/deny-admin': 3 }, audits: {} },
    rateLimits: { limited: {} },
    tunnel: { refusals: { SKEIN_TUNNEL_TLS_UNKNOWN_CA: 2 } },
    listeners: { refusals: { SKEIN_OUTBOUND_CONNECTION_LIMIT: 1 } },
    loadShare: { utilization: 0.9, lagMs: 1, pods: { 'shop/flooder-0': { pauses: 4, refused: 0, allowance: 20 } } },
    openStreams: { 'shop/client-0': { outbound: 3, tunnel: 0 } },
    capture: { skAssignFailed: 0 },
    podConnects: { inProgress: 1, queued: 2, refusals: { SKEIN_CAPTURE_CONNECT_TIMEOUT: 3 } },
  });
  t.equal((await adminRequest(socket, 'GET', '/nope')).status, 404);
  t.notOk(await tcpAnswers(tcp), 'nothing listens on TCP for the admin API');
  await stop();
  t.throws(() => statSync(socket), 'the socket is removed on stop');
  await t.rejects(adminGet(socket, '/stats'), { code: 'SKEIN_ADMIN_UNREACHABLE' }, 'a client of a stopped agent gets a coded error');

  // A socket left by a previous agent is replaced; TCP is served when asked for.
  const stop2 = await startAdmin(deps(), {
    adminSocket: socket,
    adminTcp: { host: '127.0.0.1', port: tcp },
    metrics: { host: '127.0.0.1', port: 0 },
    ready: { host: '127.0.0.1', port: 0 },
  });
  t.ok(await tcpAnswers(tcp), 'TCP admin when --admin is given');
  await stop2();
});

t.test('a path that is not a socket is refused, never replaced', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'skein-admin-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'precious');
  writeFileSync(path, 'keep me');
  await t.rejects(
    startAdmin(deps(), { adminSocket: path, metrics: { host: '127.0.0.1', port: 0 }, ready: { host: '127.0.0.1', port: 0 } }),
    { code: 'SKEIN_AGENT_ADMIN_SOCKET_PATH' },
  );
  t.equal(statSync(path).isFile(), true, 'the file is still there');
});
