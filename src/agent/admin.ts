/**
 * The agent's operator surfaces:
 *   admin      unix socket /run/skein/agent.sock (root only), GET /config_dump /workloads
 *              /certs /stats /capture, POST /logging?level=debug. It tells a lot and changes
 *              the log level, and a TCP port on the host's loopback is reachable by every
 *              hostNetwork pod: TCP (127.0.0.1:15000) only when asked for (--admin).
 *   metrics    :15020/metrics   Prometheus text (prom-client)
 *   readiness  :15021/healthz/ready  200 once capture is up, a config applied, local pods enrolled
 * Certificates are shown without keys: keys never leave the agent's memory.
 */
import http from 'node:http';
import type { Registry } from 'prom-client';
import type { CaptureManager } from '../capture/capture-manager.js';
import type { CertificateStore } from '../identity/workload/certificate-store.js';
import type { Logger } from '../telemetry/log.js';
import type { NodeAgent } from './agent.js';
import { AgentCode } from './codes.js';
import { listenRootOnly } from './root-socket.js';

export interface HostPort {
  host: string;
  port: number;
}

export function parseHostPort(s: string, flag: string): HostPort {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(s);
  if (!m || Number(m[2]) > 65535) throw new Error(`${flag} must be HOST:PORT, got "${s}"`);
  return { host: m[1] || '0.0.0.0', port: Number(m[2]) };
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(`${JSON.stringify(body, (_k, v) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`);
}

function listen(server: http.Server, at: HostPort): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(at.port, at.host, () => resolve());
  });
}

async function listenUnix(server: http.Server, path: string): Promise<void> {
  await listenRootOnly(server, path, { code: AgentCode.AdminSocketPath, flag: '--admin-socket' });
}

export interface AdminDeps {
  agent: NodeAgent;
  capture: CaptureManager;
  certificates: CertificateStore;
  registry: Registry;
  log: Logger;
}

export interface AdminAddresses {
  /** Unix socket of the admin API (root only). */
  adminSocket: string;
  /** Also serve the admin API on TCP (opt-in). */
  adminTcp?: HostPort;
  metrics: HostPort;
  ready: HostPort;
}

export async function startAdmin(deps: AdminDeps, at: AdminAddresses): Promise<() => Promise<void>> {
  const { agent, capture, certificates, registry, log } = deps;
  const admin = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://admin');
    try {
      if (req.method === 'GET' && url.pathname === '/config_dump') return json(res, 200, { snapshot: agent.store.snapshot() ?? null, lastRejection: agent.store.lastRejection()?.message ?? null, traffic: agent.outbound.describeRouting() });
      if (req.method === 'GET' && url.pathname === '/workloads') return json(res, 200, agent.status());
      if (req.method === 'GET' && url.pathname === '/certs') return json(res, 200, { trustBundle: certificates.trustBundlePem(), certificates: certificates.status() });
      if (req.method === 'GET' && url.pathname === '/stats') return json(res, 200, {
          outbound: agent.outbound.stats(),
          inbound: agent.inbound.stats,
          authorization: agent.authorizer.stats,
          rateLimits: agent.rateLimits.stats,
          tunnel: { refusals: Object.fromEntries(agent.tunnelRefusals) },
          listeners: { refusals: Object.fromEntries(agent.listenerRefusals) },
          loadShare: agent.loadShare.stats(),
          // Requests/streams in flight now per pod (15001 and 15008), what the stream caps count.
          openStreams: agent.openStreams(),
          capture: capture.counters(),
          // Connects the agent makes from inside pod netns: in progress and waiting now, and
          // failures by code (a pod connecting to a black hole shows here).
          podConnects: capture.connectStats(),
          // Where the agent's memory is: V8 heap (total reserved, used), memory outside it
          // held by JS objects (external, of which ArrayBuffers), and the process' RSS.
          memory: process.memoryUsage(),
        });
      if (req.method === 'GET' && url.pathname === '/capture')
        return json(res, 200, {
          pinRoot: capture.options.pinRoot,
          cgroup: capture.attachedCgroup,
          programs: capture.programIds(),
          enrolled: capture.enrolled().map((p) => ({ uid: p.uid, netns: p.netnsPath, netnsCookie: p.netnsCookie, slot: p.slot, ips: p.ips })),
        });
      if (req.method === 'POST' && url.pathname === '/logging') {
        const level = url.searchParams.get('level');
        if (!level || !(level in log.levels.values)) return json(res, 400, { error: `level must be one of ${Object.keys(log.levels.values).join(', ')}` });
        log.level = level;
        return json(res, 200, { level });
      }
      if (req.method === 'GET' && url.pathname === '/') return json(res, 200, { endpoints: ['/config_dump', '/workloads', '/certs', '/stats', '/capture', 'POST /logging?level='] });
      json(res, 404, { error: `no ${req.method} ${url.pathname}` });
    } catch (err) {
      log.error({ err }, 'admin request failed');
      json(res, 500, { error: String(err) });
    }
  });
  const metrics = http.createServer(async (req, res) => {
    if (req.url !== '/metrics') return json(res, 404, { error: 'see /metrics' });
    res.writeHead(200, { 'content-type': registry.contentType });
    res.end(await registry.metrics());
  });
  const ready = http.createServer((req, res) => {
    // Liveness (the DaemonSet's livenessProbe): the event loop answers. Readiness waits for
    // capture, config and enrolment; an agent waiting for its controller is alive, not ready.
    if (req.url === '/healthz/live') return json(res, 200, { live: true });
    const ok = agent.ready;
    if (req.url !== '/healthz/ready') return json(res, 404, { error: 'see /healthz/ready' });
    json(res, ok ? 200 : 503, { ready: ok });
  });
  const servers = [admin, metrics, ready];
  await listenUnix(admin, at.adminSocket);
  if (at.adminTcp) {
    // The same handler on TCP: a second server, so closing one never leaves the other half-open.
    const adminTcp = http.createServer((req, res) => admin.emit('request', req, res));
    await listen(adminTcp, at.adminTcp);
    servers.push(adminTcp);
  }
  await listen(metrics, at.metrics);
  await listen(ready, at.ready);
  return async () => {
    // close() stops listening at once, and libuv removes the socket file as the handle
    // closes, synchronously: nothing else may unlink the path later, because a successor
    // agent (upgrade) binds the same path right after (and tmpfs may even give its socket
    // file the same inode number).
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  };
}
