/**
 * TunnelPool: the client end of HBONE-style tunnels. Each proxied connection becomes an
 * HTTP/2 CONNECT stream inside a pooled mutual-TLS session to the destination pod's :15008.
 *
 * TLS: 1.3 only, ALPN h2, client certificate = the SOURCE workload's (so the destination
 * authenticates the pod that opened the connection, not the node), server certificate must
 * chain to the trust bundle and carry exactly the destination identity the control plane
 * promised (checked inside the handshake, so a wrong peer never sees a byte of payload).
 *
 * Pool key: (source identity, destination identity, destination node, tunnel address:port).
 * The address is in the key because every pod network namespace has its own :15008 listener
 * (the agent opens one inside each local pod's netns) — two pods of the same service account
 * on one node are two different TLS servers, and a session to one cannot carry streams to the
 * other. Sessions are reused until `maxStreamsPerSession` streams are open, then another one is
 * opened, up to `maxSessionsPerKey`. Sessions that received GOAWAY or failed leave the pool
 * at once (their open streams finish); idle sessions close after `idleTimeoutMs`; a PING every
 * `keepaliveIntervalMs` finds dead peers. When the source certificate or the trust bundle
 * changes, the next connect opens a session with the new credentials and the old sessions
 * drain: no new streams, closed when their last stream ends.
 */
import {
  connect as h2connect,
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type ClientSessionRequestOptions,
  type OutgoingHttpHeaders,
} from 'node:http2';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, type PeerCertificate, type TLSSocket } from 'node:tls';
import type { SpiffeId } from '../../config/model.js';
import { SkeinError, messageOf } from '../../errors.js';
import { tlsOptionsFor } from '../../identity/workload/tls-options.js';
import type { IdentitySource, WorkloadCertificate } from '../../identity/workload/types.js';
import { type Logger, silentLogger } from '../../telemetry/log.js';
import { formatAuthority } from '../../config/address.js';
import { checkPeerIdentity } from './spiffe-peer.js';
import { openConnectStream } from './connect-stream.js';
import { guardWritev } from './writev-guard.js';
import { throwIfAborted, toTunnelError, withDeadline } from './tunnel-errors.js';
import type { TunnelDialer, TunnelTarget } from './types.js';
import { MeshPort } from '../../config/ports.js';
import { TunnelCode } from '../codes.js';

export interface TunnelPoolOptions {
  identity: IdentitySource;
  logger?: Logger;
  /** Streams per session before another session is opened (also capped by the server's SETTINGS). Default 100. */
  maxStreamsPerSession?: number;
  /** Sessions per pool key; beyond that, connect rejects with SKEIN_TUNNEL_POOL_EXHAUSTED. Default 64. */
  maxSessionsPerKey?: number;
  /** Close a session with no open stream after this long. Default 60 s. */
  idleTimeoutMs?: number;
  /** PING interval on every session; 0 disables. Default 30 s. */
  keepaliveIntervalMs?: number;
  /** A PING not acknowledged within this long kills the session. Default 10 s. */
  keepaliveTimeoutMs?: number;
  /** TLS handshake + SETTINGS, and separately the CONNECT response, each within this long. Default 10 s. */
  connectTimeoutMs?: number;
  /** HTTP/2 per-stream receive window advertised to the server. Default 1 MiB (256 KiB halved loopback throughput). A stalled reader can hold up to this much per stream, and the session window caps the sum per session. */
  streamWindowBytes?: number;
  /** HTTP/2 connection-level receive window. Default 8 MiB. */
  sessionWindowBytes?: number;
  /** nghttp2 per-session memory cap (MiB). Default 32. */
  maxSessionMemoryMb?: number;
}

/** What a session is opened for: its pool key, the destination, the credentials, where to dial. */
interface SessionSpec {
  key: string;
  target: TunnelTarget;
  cert: WorkloadCertificate;
  bundle: string;
  tunnelAddress: string;
  tunnelPort: number;
}

interface PooledSession {
  id: number;
  key: string;
  tunnelAuthority: string;
  /** Credentials the session was opened with; a mismatch with the current ones means drain. */
  certChainPem: string;
  bundle: string;
  ready: Promise<ClientHttp2Session>;
  session?: ClientHttp2Session;
  /** The session once `ready` resolved (SETTINGS received): used without awaiting. */
  up?: ClientHttp2Session;
  /** Streams open plus streams reserved while the session is still handshaking. */
  active: number;
  draining: boolean;
  closed: boolean;
  idleTimer?: NodeJS.Timeout;
  pingTimer?: NodeJS.Timeout;
}

export class TunnelPool implements TunnelDialer {
  private readonly identity: IdentitySource;
  private readonly log: Logger;
  private readonly maxStreamsPerSession: number;
  private readonly maxSessionsPerKey: number;
  private readonly idleTimeoutMs: number;
  private readonly keepaliveIntervalMs: number;
  private readonly keepaliveTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly streamWindowBytes: number;
  private readonly sessionWindowBytes: number;
  private readonly maxSessionMemoryMb: number;
  private readonly pools = new Map<string, PooledSession[]>();
  private bundleCache: { pems: string[]; joined: string } | undefined;
  private nextId = 1;
  private closed = false;

  constructor(opts: TunnelPoolOptions) {
    this.identity = opts.identity;
    this.log = (opts.logger ?? silentLogger()).child({ component: 'tunnel-pool' });
    this.maxStreamsPerSession = opts.maxStreamsPerSession ?? 100;
    this.maxSessionsPerKey = opts.maxSessionsPerKey ?? 64;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 60_000;
    this.keepaliveIntervalMs = opts.keepaliveIntervalMs ?? 30_000;
    this.keepaliveTimeoutMs = opts.keepaliveTimeoutMs ?? 10_000;
    this.connectTimeoutMs = opts.connectTimeoutMs ?? 10_000;
    this.streamWindowBytes = opts.streamWindowBytes ?? 1024 * 1024;
    this.sessionWindowBytes = opts.sessionWindowBytes ?? 8 * 1024 * 1024;
    this.maxSessionMemoryMb = opts.maxSessionMemoryMb ?? 32;
  }

  async connect(
    source: SpiffeId,
    target: TunnelTarget,
    opts: { signal?: AbortSignal; headers?: Record<string, string> } = {},
  ): Promise<Duplex> {
    const { signal } = opts;
    const { pooled, session, release } = await this.sessionFor(source, target, signal);
    try {
      return await openConnectStream(session, pooled.tunnelAuthority, target, opts.headers, signal, this.connectTimeoutMs, release);
    } catch (err) {
      release();
      throw err;
    }
  }

  /**
   * One HTTP request as its own stream on the pooled session to `target`'s agent (the L7 path
   * between agents): `headers` as given (the caller adds the skein-* fields). Resolves once
   * the stream is submitted; its response is the caller's to read.
   */
  request(
    source: SpiffeId,
    target: TunnelTarget,
    headers: OutgoingHttpHeaders,
    opts: ClientSessionRequestOptions & { signal?: AbortSignal },
  ): Promise<ClientHttp2Stream> {
    // Fast path, taken by every request once a session is up: no promise chain, no waiting.
    const ready = this.readySession(source, target);
    if (ready) {
      try {
        return Promise.resolve(this.submit(ready, target, headers, opts, () => this.release(ready)));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return this.sessionFor(source, target, opts.signal).then(({ pooled, release }) => this.submit(pooled, target, headers, opts, release));
  }

  /** Submits one request stream on `pooled` (one stream already reserved on it); `release` frees it when the stream closes. */
  private submit(
    pooled: PooledSession,
    target: TunnelTarget,
    headers: OutgoingHttpHeaders,
    opts: ClientSessionRequestOptions,
    release: () => void,
  ): ClientHttp2Stream {
    let stream: ClientHttp2Stream;
    const session = pooled.up as ClientHttp2Session;
    // A session destroyed (keepalive timeout, peer gone) before its 'close' event: Node 24
    // no longer throws from request() then but errors the returned stream on the next tick,
    // before our caller can listen — an uncaught exception in the agent (found by the
    // peer-vanish reliability test). Refuse here, synchronously, as before.
    if (session.destroyed || session.closed) {
      release();
      throw new SkeinError(TunnelCode.ConnectFailed, `tunnel session to ${pooled.tunnelAuthority} is closed`, { identity: target.identity });
    }
    try {
      // Writers of this stream include Node's HTTP/1 server piping a body: see writev-guard.ts.
      stream = guardWritev(session.request(headers, { endStream: opts.endStream ?? false, waitForTrailers: opts.waitForTrailers ?? false }));
    } catch (err) {
      // e.g. the session received GOAWAY between pick and request.
      release();
      throw toTunnelError(err, pooled.tunnelAuthority, target.identity);
    }
    stream.once('close', release);
    return stream;
  }

  /**
   * A session of the pool key for (source, target) that is up, has room, and was opened with
   * the current certificate and bundle (one stream reserved on it); undefined when a new one
   * must be opened, a rotation handled, or a certificate waited for (the slow path does that).
   */
  private readySession(source: SpiffeId, target: TunnelTarget): PooledSession | undefined {
    const list = this.pools.get(this.keyOf(source, target));
    if (!list || list.length === 0) return undefined;
    const cert = this.identity.currentCertificate?.(source);
    if (!cert) return undefined;
    const bundle = this.joinedBundle();
    let chosen: PooledSession | undefined;
    for (const s of list) {
      if (!s.up || s.draining || s.closed || s.up.destroyed || s.up.closed) continue;
      if (s.certChainPem !== cert.certChainPem || s.bundle !== bundle) return undefined; // rotation: the slow path drains
      if (s.active < this.streamLimit(s) && (!chosen || s.active < chosen.active)) chosen = s;
    }
    if (!chosen) return undefined;
    chosen.active++;
    if (chosen.idleTimer) {
      clearTimeout(chosen.idleTimer);
      chosen.idleTimer = undefined;
    }
    return chosen;
  }

  private keyOf(source: SpiffeId, target: TunnelTarget): string {
    // See the file comment: the dialled address is part of the key (one :15008 per pod netns).
    return `${source}|${target.identity}|${target.node}|${formatAuthority(target.tunnelAddress ?? target.address, target.tunnelPort ?? MeshPort.Tunnel)}`;
  }

  /** The trust bundle as one string, computed once per bundle version (the array is cached by identity). */
  private joinedBundle(): string {
    const pems = this.identity.trustBundlePem();
    if (pems !== this.bundleCache?.pems) this.bundleCache = { pems, joined: pems.join('\n') };
    return this.bundleCache.joined;
  }

  /** A ready session of the pool key for (source, target), with one stream reserved on it. */
  private async sessionFor(
    source: SpiffeId,
    target: TunnelTarget,
    signal: AbortSignal | undefined,
  ): Promise<{ pooled: PooledSession; session: ClientHttp2Session; release: () => void }> {
    if (this.closed) throw new SkeinError(TunnelCode.Closed, 'tunnel pool is closed');
    throwIfAborted(signal);
    const cert = await this.identity.certificateFor(source, signal);
    throwIfAborted(signal);
    const bundle = this.joinedBundle();
    const tunnelAddress = target.tunnelAddress ?? target.address;
    const tunnelPort = target.tunnelPort ?? MeshPort.Tunnel;
    const key = this.keyOf(source, target);

    const pooled = this.acquire({ key, target, cert, bundle, tunnelAddress, tunnelPort });
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      this.release(pooled);
    };
    try {
      // A ready session needs no deadline (and no timer per request).
      const session = pooled.up ?? await withDeadline(pooled.ready, this.connectTimeoutMs, signal, 'TLS session');
      return { pooled, session, release };
    } catch (err) {
      release();
      throw err;
    }
  }

  /** Counts for admin/tests: sessions and open streams per pool key. */
  stats(): { key: string; sessions: { id: number; active: number; draining: boolean }[] }[] {
    return [...this.pools].map(([key, list]) => ({
      key,
      sessions: list.map((s) => ({ id: s.id, active: s.active, draining: s.draining })),
    }));
  }

  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.pools.values()].flat();
    this.pools.clear();
    await Promise.all(all.map((s) => this.shutdownSession(s)));
  }

  private acquire(want: SessionSpec): PooledSession {
    const { key, cert, bundle } = want;
    let list = this.pools.get(key);
    if (!list) {
      list = [];
      this.pools.set(key, list);
    }
    let chosen: PooledSession | undefined;
    const stale: PooledSession[] = [];
    for (const s of list) {
      if (s.draining || s.closed) continue;
      if (s.certChainPem !== cert.certChainPem || s.bundle !== bundle) {
        stale.push(s);
        continue;
      }
      if (s.active < this.streamLimit(s) && (!chosen || s.active < chosen.active)) chosen = s;
    }
    // Rotation: new streams go to sessions with the new certificate; these drain.
    for (const s of stale) this.drain(s, 'credentials rotated');
    if (!chosen) {
      const live = list.filter((s) => !s.closed && !s.draining).length;
      if (live >= this.maxSessionsPerKey) {
        throw new SkeinError(TunnelCode.PoolExhausted, 'every tunnel session to this destination is full', {
          key,
          maxSessionsPerKey: this.maxSessionsPerKey,
          maxStreamsPerSession: this.maxStreamsPerSession,
        });
      }
      chosen = this.openSession(want);
      list.push(chosen);
      // A drain above may have dropped the emptied list from the map.
      this.pools.set(key, list);
    }
    chosen.active++;
    if (chosen.idleTimer) {
      clearTimeout(chosen.idleTimer);
      chosen.idleTimer = undefined;
    }
    return chosen;
  }

  private streamLimit(s: PooledSession): number {
    const remote = s.session?.remoteSettings?.maxConcurrentStreams;
    return remote !== undefined && remote > 0 ? Math.min(remote, this.maxStreamsPerSession) : this.maxStreamsPerSession;
  }

  private release(s: PooledSession): void {
    s.active--;
    if (s.active > 0 || s.closed) return;
    if (s.draining) {
      s.session?.close();
      return;
    }
    if (s.idleTimer) clearTimeout(s.idleTimer);
    s.idleTimer = setTimeout(() => {
      if (s.active === 0) this.drain(s, 'idle');
    }, this.idleTimeoutMs);
    s.idleTimer.unref();
  }

  /** No new streams on `s`; close it once its last stream ends. */
  private drain(s: PooledSession, why: string): void {
    if (s.draining) return;
    s.draining = true;
    this.forget(s);
    this.log.debug({ session: s.id, key: s.key, why }, 'tunnel session draining');
    if (s.active === 0) s.session?.close();
  }

  private forget(s: PooledSession): void {
    const list = this.pools.get(s.key);
    if (!list) return;
    const i = list.indexOf(s);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.pools.delete(s.key);
  }

  private openSession(spec: SessionSpec): PooledSession {
    const { key, target, cert, bundle, tunnelAddress, tunnelPort } = spec;
    const trustDomain = this.identity.trustDomain();
    const bundlePems = this.identity.trustBundlePem();
    const s: PooledSession = {
      id: this.nextId++,
      key,
      tunnelAuthority: formatAuthority(tunnelAddress, tunnelPort),
      certChainPem: cert.certChainPem,
      bundle,
      ready: Promise.resolve(undefined as unknown as ClientHttp2Session),
      active: 0,
      draining: false,
      closed: false,
    };
    const log = this.log.child({ session: s.id, peer: s.tunnelAuthority, peerIdentity: target.identity });
    s.ready = new Promise<ClientHttp2Session>((resolve, reject) => {
      let settled = false;
      let socket: TLSSocket | undefined;
      const timer = setTimeout(() => {
        if (!settled) socket?.destroy(new SkeinError(TunnelCode.Timeout, 'tunnel TLS handshake timed out'));
      }, this.connectTimeoutMs);
      timer.unref();
      const fail = (err: unknown): void => {
        s.closed = true;
        this.forget(s);
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(toTunnelError(err, s.tunnelAuthority, target.identity));
      };
      try {
        socket = this.dial(tunnelAddress, tunnelPort, cert, bundlePems, trustDomain, target.identity);
      } catch (err) {
        fail(err);
        return;
      }
      const sock = socket;
      sock.once('error', fail);
      sock.once('secureConnect', () => {
        if (sock.alpnProtocol !== 'h2') {
          sock.destroy(new SkeinError(TunnelCode.TlsFailed, `tunnel peer did not negotiate h2 (got ${sock.alpnProtocol})`));
          return;
        }
        sock.removeListener('error', fail);
        // TLS 1.3: the client finishes its handshake before the server has checked the client
        // certificate; a refusal arrives as an alert afterwards. Keep it to report why.
        let socketError: Error | undefined;
        sock.on('error', (err) => {
          socketError ??= err;
        });
        // Frames of many small requests share this connection: Nagle would hold each small
        // write for the peer's delayed ACK (tens of ms per gRPC call).
        sock.setNoDelay(true);
        const session = h2connect(`https://${s.tunnelAuthority}`, {
          createConnection: () => sock,
          settings: { enablePush: false, initialWindowSize: this.streamWindowBytes },
          maxSessionMemory: this.maxSessionMemoryMb,
        });
        s.session = session;
        session.once('remoteSettings', () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          try {
            session.setLocalWindowSize(this.sessionWindowBytes);
          } catch (err) {
            log.debug({ err: messageOf(err) }, 'could not enlarge the session window');
          }
          this.startKeepalive(s, session);
          log.debug('tunnel session up');
          s.up = session;
          resolve(session);
        });
        session.on('error', (err) => {
          log.debug({ err: messageOf(err), code: (err as { code?: string }).code }, 'tunnel session error');
          fail(err);
        });
        session.on('goaway', (code) => {
          log.debug({ code }, 'tunnel session got GOAWAY');
          s.draining = true;
          this.forget(s);
        });
        session.once('close', () => {
          this.clearTimers(s);
          fail(
            socketError ??
              new SkeinError(
                TunnelCode.TlsFailed,
                'tunnel peer closed the connection before HTTP/2 SETTINGS (it most likely refused our client certificate)',
              ),
          );
        });
      });
    });
    // Nobody may be awaiting when it fails (the caller gave up); never an unhandled rejection.
    s.ready.catch(() => {});
    return s;
  }

  /** TLS 1.3 + ALPN h2 to a pod's :15008 with the source workload's certificate. */
  private dial(
    host: string,
    port: number,
    cert: WorkloadCertificate,
    bundlePems: string[],
    trustDomain: string,
    expected: SpiffeId,
  ): TLSSocket {
    const base = tlsOptionsFor(cert, bundlePems, { trustDomain, expectedPeer: expected, alpnProtocols: ['h2'] });
    return tlsConnect({
      ...base,
      host,
      port,
      // Not a hostname check: the SPIFFE identity check (identity's verifyPeer), inside the
      // handshake, so a wrong peer fails the handshake and never receives a CONNECT.
      checkServerIdentity: (_host: string, peer: PeerCertificate) => {
        const r = checkPeerIdentity(peer, bundlePems, trustDomain, expected);
        if (r.ok) return undefined;
        return new SkeinError(TunnelCode.PeerIdentityMismatch, `tunnel peer is not ${expected}: ${r.detail ?? r.reason}`, {
          expected,
          reason: r.reason,
        });
      },
    });
  }

  private startKeepalive(s: PooledSession, session: ClientHttp2Session): void {
    if (this.keepaliveIntervalMs <= 0) return;
    s.pingTimer = setInterval(() => {
      if (session.destroyed || session.closed) return;
      const deadline = setTimeout(() => {
        // warn: a peer that stopped answering (node gone, link down) is an operator's business.
        this.log.warn({ session: s.id, key: s.key, activeStreams: s.active, timeoutMs: this.keepaliveTimeoutMs }, 'tunnel keepalive PING unanswered; closing session');
        session.destroy(new SkeinError(TunnelCode.Timeout, 'keepalive PING unanswered'));
      }, this.keepaliveTimeoutMs);
      deadline.unref();
      try {
        session.ping((err) => {
          clearTimeout(deadline);
          if (err && !session.destroyed) session.destroy(err);
        });
      } catch {
        clearTimeout(deadline);
      }
    }, this.keepaliveIntervalMs);
    s.pingTimer.unref();
  }

  private clearTimers(s: PooledSession): void {
    if (s.idleTimer) clearTimeout(s.idleTimer);
    if (s.pingTimer) clearInterval(s.pingTimer);
    s.idleTimer = undefined;
    s.pingTimer = undefined;
  }

  private async shutdownSession(s: PooledSession): Promise<void> {
    this.clearTimers(s);
    s.draining = true;
    const session = s.session ?? (await s.ready.catch(() => undefined));
    if (!session || session.destroyed) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        session.destroy();
        resolve();
      }, 2_000);
      t.unref();
      session.close(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}

