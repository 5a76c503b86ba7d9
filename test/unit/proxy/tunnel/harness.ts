/**
 * A one-pod "mesh" on loopback for tunnel tests: CA, identities, an app server, the inbound
 * path (InboundProxy + TunnelServer for the pod at 127.0.0.1) and a TunnelPool client.
 */
import { type ClientHttp2Session, connect as h2connect } from 'node:http2';
import { type Duplex, Writable } from 'node:stream';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import type { WorkloadCertificate } from '../../../../src/identity/workload/types.js';
import { createHash } from 'node:crypto';
import pino, { type Logger } from 'pino';
import type { Test } from 'tap';
import type { SpiffeId, Workload } from '../../../../src/config/model.js';
import { InboundProxy, type InboundConnectionRecord, type InboundProxyOptions } from '../../../../src/proxy/inbound/inbound-proxy.js';
import { TunnelPool, type TunnelPoolOptions } from '../../../../src/proxy/tunnel/tunnel-pool.js';
import { TunnelServer, type TunnelServerOptions } from '../../../../src/proxy/tunnel/tunnel-server.js';
import type { TunnelTarget } from '../../../../src/proxy/tunnel/types.js';
import {
  echoHandler,
  LoopbackAppConnector,
  makeCa,
  makeLeaf,
  payloadChunks,
  spiffe,
  type TestCa,
  TestIdentity,
  type TestTcpServer,
  TRUST_DOMAIN,
  tcpServer,
  workload,
} from './fixtures.js';

/** A pino logger whose lines are collected as objects (assert on what was logged). */
export function captureLogger(): { logger: Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, sink), lines };
}

export interface Mesh {
  ca: TestCa;
  clientId: SpiffeId;
  serverId: SpiffeId;
  clientIdentity: TestIdentity;
  serverIdentity: TestIdentity;
  pod: Workload;
  app: TestTcpServer;
  connector: LoopbackAppConnector;
  inbound: InboundProxy;
  server: TunnelServer;
  tunnelPort: number;
  pool: TunnelPool;
  records: InboundConnectionRecord[];
  lines: Record<string, unknown>[];
  target(port?: number, over?: Partial<TunnelTarget>): TunnelTarget;
}

export interface MeshOptions {
  appHandler?: Parameters<typeof tcpServer>[0];
  server?: Partial<TunnelServerOptions>;
  pool?: Partial<TunnelPoolOptions>;
  inbound?: Partial<InboundProxyOptions>;
  ca?: TestCa;
}

/** An app on loopback and the InboundProxy in front of it, recording connections and log lines. */
export async function appBehindInbound(t: Test, appHandler: Parameters<typeof tcpServer>[0] | undefined, inboundOpts: Partial<InboundProxyOptions> = {}) {
  const app = await tcpServer(appHandler ?? echoHandler);
  t.teardown(() => app.close());
  const records: InboundConnectionRecord[] = [];
  const { logger, lines } = captureLogger();
  const connector = new LoopbackAppConnector();
  const inbound = new InboundProxy({ app: connector, logger, onConnection: (r) => records.push(r), ...inboundOpts });
  return { app, records, logger, lines, connector, inbound };
}

export async function setupMesh(t: Test, opts: MeshOptions = {}): Promise<Mesh> {
  const ca = opts.ca ?? (await makeCa(TRUST_DOMAIN));
  const clientId = spiffe('client-ns', 'client');
  const serverId = spiffe('default', 'echo');
  const clientIdentity = new TestIdentity(TRUST_DOMAIN, [ca.certPem]).set(await makeLeaf(ca, [clientId]));
  const serverIdentity = new TestIdentity(TRUST_DOMAIN, [ca.certPem]).set(await makeLeaf(ca, [serverId]));
  const { app, records, logger, lines, connector, inbound } = await appBehindInbound(t, opts.appHandler, opts.inbound);
  const pod = workload('echo', ['127.0.0.1'], serverId);
  const server = await TunnelServer.create({ workload: pod, identity: serverIdentity, inbound, logger, credentialRefreshMs: 0, ...opts.server });
  const addr = await server.listen({ port: 0, host: '127.0.0.1' });
  t.teardown(() => server.close(100));
  const tunnelPort = addr?.port ?? 0;
  const pool = new TunnelPool({ identity: clientIdentity, logger, ...opts.pool });
  t.teardown(() => pool.close());
  return {
    ca,
    clientId,
    serverId,
    clientIdentity,
    serverIdentity,
    pod,
    app,
    connector,
    inbound,
    server,
    tunnelPort,
    pool,
    records,
    lines,
    target: (port = app.port, over = {}) => ({
      address: '127.0.0.1',
      port,
      identity: serverId,
      node: 'node-a',
      tunnelPort,
      ...over,
    }),
  };
}

/** Write `size` deterministic bytes to `s` with backpressure, then end it; resolves with their sha256. */
export async function sendPayload(s: Duplex, size: number, end = true): Promise<string> {
  const h = createHash('sha256');
  for (const b of payloadChunks(size)) {
    h.update(b);
    if (!s.write(b)) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = (): void => {
          s.off('close', onClose);
          resolve();
        };
        const onClose = (): void => {
          s.off('drain', onDrain);
          reject(new Error('stream closed while writing'));
        };
        s.once('drain', onDrain);
        s.once('close', onClose);
      });
    }
  }
  if (end) s.end();
  return h.digest('hex');
}

/** Read `s` to its end; resolves with byte count and sha256. */
export function readAll(s: Duplex): Promise<{ bytes: number; sha256: string; text: string }> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    let bytes = 0;
    const head: Buffer[] = [];
    s.on('data', (c: Buffer) => {
      bytes += c.length;
      h.update(c);
      if (bytes <= 4096) head.push(c);
    });
    s.once('end', () => resolve({ bytes, sha256: h.digest('hex'), text: Buffer.concat(head).toString('utf8') }));
    s.once('error', reject);
    s.once('close', () => reject(new Error('closed before end')));
  });
}

/**
 * A TLS + HTTP/2 session to the tunnel server that bypasses TunnelPool, to send what the pool
 * never would. Without `cert` no client certificate is offered; `awaitSettings` also waits for
 * the server's SETTINGS (a refused client never gets them).
 */
export async function rawSession(
  t: Test,
  m: Mesh,
  opts: { cert?: WorkloadCertificate; awaitSettings?: boolean } = {},
): Promise<{ tls: TLSSocket; session: ClientHttp2Session }> {
  const tls = tlsConnect({
    host: '127.0.0.1',
    port: m.tunnelPort,
    ALPNProtocols: ['h2'],
    minVersion: 'TLSv1.3',
    ca: [m.ca.certPem],
    ...(opts.cert ? { cert: opts.cert.certChainPem, key: opts.cert.privateKeyPem } : {}),
    checkServerIdentity: () => undefined,
  });
  tls.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    tls.once('secureConnect', () => resolve());
    tls.once('error', reject);
  });
  const session = h2connect(`https://127.0.0.1:${m.tunnelPort}`, { createConnection: () => tls });
  session.on('error', () => {});
  t.teardown(() => session.destroy());
  if (opts.awaitSettings) await new Promise((r) => session.once('remoteSettings', r));
  return { tls, session };
}
