/**
 * Test harness for the outbound proxy: a ConfigStore with one service backed by loopback
 * servers on distinct 127.0.0.x addresses, a fake TunnelDialer that connects straight to them
 * (the tunnel has its own tests), and a listener that plays the pod's 15001 socket.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import type { AppProtocol, Endpoint, LoadBalancerAlgorithm, MeshSnapshot, Service, Workload } from '../../../../src/config/model.js';
import { spiffeIdOf } from '../../../../src/config/model.js';
import { ConfigStore } from '../../../../src/config/store.js';
import { OutboundProxy, type OutboundProxyOptions } from '../../../../src/proxy/outbound/outbound-proxy.js';
import type { TunnelDialer, TunnelTarget } from '../../../../src/proxy/tunnel/types.js';

export const VIP = '10.96.0.10';
export const SVC_PORT = 80;
export const TD = 'cluster.local';

export function workload(name: string, ip: string, node = 'node-b', meshEnabled = true): Workload {
  return {
    uid: `uid-${name}`,
    namespace: 'apps',
    name,
    serviceAccount: name,
    node,
    ips: [ip],
    labels: { app: name },
    annotations: {},
    identity: spiffeIdOf(TD, 'apps', name),
    meshEnabled,
    peerAuthentication: 'STRICT',
    excludeOutboundPorts: [],
    excludeInboundPorts: [],
    ready: true,
  };
}

export const client = workload('client', '10.0.1.5', 'node-a');

export interface Backend {
  ip: string;
  port: number;
}

export function snapshotFor(
  backends: Backend[],
  opts: { appProtocol?: AppProtocol; lb?: LoadBalancerAlgorithm; version?: string; notReady?: string[] } = {},
): MeshSnapshot {
  const pods = backends.map((b, i) => workload(`server-${i}`, b.ip));
  const endpoints: Endpoint[] = backends.map((b, i) => ({
    workloadUid: pods[i]?.uid as string,
    ip: b.ip,
    node: 'node-b',
    identity: pods[i]?.identity as string,
    ready: !(opts.notReady ?? []).includes(b.ip),
    ports: { web: b.port },
    meshEnabled: true,
  }));
  const svc: Service = {
    namespace: 'apps',
    name: 'server',
    hostname: 'server.apps.svc.cluster.local',
    vips: [VIP],
    ports: [{ name: 'web', port: SVC_PORT, targetPort: 0, ...(opts.appProtocol ? { appProtocol: opts.appProtocol } : {}) }],
    endpoints,
    loadBalancer: opts.lb ?? 'ROUND_ROBIN',
  };
  return {
    version: opts.version ?? '1',
    trustDomain: TD,
    clusterDomain: 'cluster.local',
    nodes: [],
    workloads: [client, ...pods],
    services: [svc],
  };
}

/** A TunnelDialer that dials the target directly on loopback and records what it was asked. */
export class FakeTunnel implements TunnelDialer {
  readonly calls: { source: string; target: TunnelTarget }[] = [];
  fail = false;

  async connect(source: string, target: TunnelTarget): Promise<Duplex> {
    this.calls.push({ source, target });
    if (this.fail) throw Object.assign(new Error('tunnel refused'), { code: 'SKEIN_TUNNEL_UNAVAILABLE_503' });
    return await new Promise((resolve, reject) => {
      const s = net.connect({ host: target.address, port: target.port, allowHalfOpen: true });
      s.once('connect', () => {
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', reject);
    });
  }

  async close(): Promise<void> {}
}

export function directConnect(_source: Workload, address: string, port: number): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: address, port, allowHalfOpen: true });
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

export interface Harness {
  store: ConfigStore;
  proxy: OutboundProxy;
  tunnel: FakeTunnel;
  /** Port of the listener that plays the pod's 15001 (all connections go to VIP:SVC_PORT). */
  port: number;
  close(): Promise<void>;
}

/** Starts an outbound proxy for `snapshot`; every accepted connection's original dst is `dst`. */
export async function startProxy(
  snapshot: MeshSnapshot,
  opts: Partial<OutboundProxyOptions> = {},
  dst: { address: string; port: number } = { address: VIP, port: SVC_PORT },
): Promise<Harness> {
  const store = new ConfigStore();
  const applied = store.apply(snapshot);
  if (!applied.ok) throw applied.error;
  const tunnel = new FakeTunnel();
  const proxy = new OutboundProxy({
    store,
    localNode: 'node-a',
    tunnel,
    connectDirect: directConnect,
    ...opts,
  });
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    sockets.add(sock);
    sock.once('close', () => sockets.delete(sock));
    proxy.handleConnection(sock, { source: client, originalDst: dst });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as net.AddressInfo).port;
  return {
    store,
    proxy,
    tunnel,
    port,
    async close() {
      for (const s of sockets) s.destroy();
      await proxy.close();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** Listens on 127.0.0.x:0 and returns the address. */
export async function listenOn(server: net.Server, ip: string): Promise<Backend> {
  await new Promise<void>((r, j) => {
    server.once('error', j);
    server.listen(0, ip, () => {
      server.off('error', j);
      r();
    });
  });
  return { ip, port: (server.address() as net.AddressInfo).port };
}

export const BACKEND_IPS = ['127.0.0.2', '127.0.0.3', '127.0.0.4'];
