/**
 * TunnelServer: the HBONE-style :15008 of ONE local pod. The agent opens a listening socket
 * inside the pod's network namespace (capture layer) and hands its fd to `listen({ fd })`;
 * tests listen on a loopback port.
 *
 * TLS 1.3, ALPN h2 only, server certificate = the pod's own workload certificate, client
 * certificate required and chained to the trust bundle (Node TLS: requestCert +
 * rejectUnauthorized — a client without a certificate, or with one from another CA, fails the
 * handshake and is logged and counted as a TLS refusal with a stable code naming why:
 * SKEIN_TUNNEL_TLS_UNKNOWN_CA, _CERT_EXPIRED, _NO_CLIENT_CERT, ... see tls-refusal.ts). The client's SPIFFE identity (exactly one URI SAN,
 * same trust domain) is checked once per connection; a certificate that chains but names no
 * acceptable identity gets every stream answered 401. Every refusal is counted by code in
 * `stats.refusals` and reported through `onRefusal` (the agent's /stats and metrics).
 *
 * A stream that is not CONNECT but carries `skein-dst` is one HTTP request from another agent
 * (L7 between agents): the inbound side serves it (inbound-http.ts), with the same peer
 * identity and the same check that the destination is this pod. Every other stream must be
 * `CONNECT` with `:authority` = `<this pod's IP>:<port>` (L4, HBONE). Answers:
 *   400  not CONNECT, or an authority that is not `ip:port`
 *   401  peer identity refused (bad SAN) or denied by the authorization hook
 *   403  the authority names an address that is not this pod's — the peer reached the wrong
 *        listener (stale endpoint, or an attempt to use this pod as a relay). 403 rather than
 *        401 so operators can tell "who you are" refusals from "where you asked to go" ones.
 *   503  the app port refused or did not answer in time
 *   200  then bytes flow both ways (L4 pipe) until both sides end, or either resets.
 *
 * Hardening: concurrent streams per session, header list size/pairs, SETTINGS count, invalid
 * frames are capped (nghttp2 enforces those); a session whose client cancels many streams
 * before they are answered (HTTP/2 rapid reset, CVE-2023-44487) is judged abusive by the
 * H2AbuseGuard shared with the outbound HTTP/2 path: refused at once, one
 * GOAWAY(ENHANCE_YOUR_CALM), closed; sessions with no stream are closed after an idle
 * timeout; TLS handshakes must finish within `handshakeTimeoutMs`.
 *
 * Rotation: `tls.createServer` reads its credentials once; new ones are installed with
 * `server.setSecureContext()` (existing connections keep theirs). `refreshCredentials()` does
 * that when the workload certificate or the trust bundle changed; it also runs every
 * `credentialRefreshMs`.
 */
import {
  constants as h2c,
  createSecureServer,
  type Http2SecureServer,
  type IncomingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { Workload } from '../../config/model.js';
import { hasCode, messageOf } from '../../errors.js';
import { tlsOptionsFor } from '../../identity/workload/tls-options.js';
import type { IdentitySource, WorkloadCertificate } from '../../identity/workload/types.js';
import { type Logger, silentLogger } from '../../telemetry/log.js';
import { H2_MAX_REJECTED_STREAMS, H2AbuseGuard } from '../http/h2-abuse-guard.js';
import type { InboundProxy, InboundRequest } from '../inbound/inbound-proxy.js';
import { type InboundHttpContext, podAddresses } from '../inbound/inbound-http.js';
import { MeshHeader } from '../http/mesh-headers.js';
import { parseAuthority } from './authority.js';
import { classifyTlsRefusal } from './tls-refusal.js';
import { checkPeerIdentity, type PeerIdentityCheck } from './spiffe-peer.js';
import { gracefulGoaway } from '../http/graceful-goaway.js';
import { TunnelCode } from '../codes.js';
import { guardWritev } from './writev-guard.js';
import { capConnections } from '../connection-cap.js';
import { DEFAULT_MAX_STREAMS_PER_LISTENER, StreamCap } from '../stream-cap.js';

export interface TunnelServerOptions {
  /** The pod behind this listener (its IPs are the only valid CONNECT authorities). */
  workload: Workload;
  identity: IdentitySource;
  inbound: InboundProxy;
  logger?: Logger;
  /** SETTINGS_MAX_CONCURRENT_STREAMS. Default 100 (TunnelPool opens another session beyond it). */
  maxConcurrentStreams?: number;
  /**
   * SETTINGS_MAX_HEADER_LIST_SIZE (bytes). Default 72 KiB: what the agents' outbound admits
   * from apps (64 KiB of h2c header list; a 16 KiB HTTP/1 head) plus the skein-* fields, so a
   * request served on the same node is not refused across nodes.
   */
  maxHeaderListSize?: number;
  /** Header fields per request. Default 288: the outbound's 256 for h2c apps plus skein's own. */
  maxHeaderListPairs?: number;
  /** Per-stream receive window. Default 1 MiB (a stalled app can hold this much per stream; the session window caps the sum). */
  streamWindowBytes?: number;
  /** Connection receive window. Default 8 MiB. */
  sessionWindowBytes?: number;
  /** nghttp2 per-session memory cap (MiB). Default 32. */
  maxSessionMemoryMb?: number;
  /** TLS handshake deadline. Default 10 s. */
  handshakeTimeoutMs?: number;
  /** Close a session with no open stream after this long. Default 5 min. */
  sessionIdleTimeoutMs?: number;
  /** Streams the client may cancel before they are answered, per `rapidResetWindowMs`. Default DEFAULT_TUNNEL_RESET_BUDGET (`--tunnel-reset-budget`). */
  rapidResetLimit?: number;
  rapidResetWindowMs?: number;
  /** Poll the identity source for a rotated certificate / bundle this often; 0 disables. Default 30 s. */
  credentialRefreshMs?: number;
  /** Called with the stable code of every refusal (TLS, identity, request, rapid reset): node-wide counts. */
  onRefusal?: (code: string) => void;
  /** TLS connections held at once; beyond it new ones are closed. Default DEFAULT_MAX_CONNECTIONS_PER_LISTENER. */
  maxConnections?: number;
  /**
   * Sessions one source identity may hold at this pod at once (each carries up to
   * maxConcurrentStreams streams); beyond it new sessions get GOAWAY(REFUSED_STREAM) and are
   * closed, so one client workload cannot take every place. Default 256.
   */
  maxSessionsPerPeer?: number;
  /**
   * Streams (L7 requests and CONNECT tunnels) open at this pod's tunnel port at once, all
   * sessions; beyond it a new stream is reset with REFUSED_STREAM (not processed: safe to
   * retry) and counted (SKEIN_TUNNEL_STREAM_LIMIT). Default DEFAULT_MAX_TUNNEL_STREAMS.
   */
  maxStreams?: number;
  /**
   * Streams one source identity may have open at this pod at once, over all its sessions
   * (SKEIN_TUNNEL_PEER_STREAM_LIMIT beyond). Below maxStreams, so one client workload can never
   * take the whole stream capacity and leave none to the others. Default
   * DEFAULT_MAX_TUNNEL_STREAMS_PER_PEER.
   */
  maxStreamsPerPeer?: number;
}

/** Default open streams per pod tunnel port (`skein agent --max-tunnel-streams`): stream-cap.ts's default. */
export const DEFAULT_MAX_TUNNEL_STREAMS = DEFAULT_MAX_STREAMS_PER_LISTENER;
/** Default streams a tunnel session may reset before their answer per second (`--tunnel-reset-budget`). */
export const DEFAULT_TUNNEL_RESET_BUDGET = 100;
/** Default open streams per source identity at one pod (`--max-tunnel-streams-per-peer`): three quarters of the pod's, so one client workload can hold 10,000 idle connections (the idle-connections e2e) and still leaves a quarter to the others. */
export const DEFAULT_MAX_TUNNEL_STREAMS_PER_PEER = 12_288;


export interface TunnelServerStats {
  /** Sessions open now. */
  sessions: number;
  /** Streams received, all outcomes. */
  streams: number;
  /** Streams open now (admitted under the stream caps, not yet closed). */
  openStreams: number;
  tlsRefused: number;
  identityRefused: number;
  badRequest: number;
  wrongDestination: number;
  rapidResetSessionsClosed: number;
  credentialRotations: number;
  /**
   * Every refusal by stable code: TLS handshakes (SKEIN_TUNNEL_TLS_*), peer identities that
   * chain but are not acceptable (SKEIN_IDENTITY_PEER_*), requests (SKEIN_TUNNEL_*).
   */
  refusals: Record<string, number>;
}

/** Headers of the CONNECT request worth handing to policy/telemetry. */
const FORWARDED_HEADERS = ['traceparent', 'tracestate', 'forwarded', 'x-forwarded-for', 'baggage'];

interface SessionState {
  peer: PeerIdentityCheck;
  remoteAddress: string | undefined;
  remotePort: number | undefined;
  open: number;
  idleTimer: NodeJS.Timeout | undefined;
}

export class TunnelServer {
  readonly stats: TunnelServerStats = {
    sessions: 0,
    streams: 0,
    openStreams: 0,
    tlsRefused: 0,
    identityRefused: 0,
    badRequest: 0,
    wrongDestination: 0,
    rapidResetSessionsClosed: 0,
    credentialRotations: 0,
    refusals: {},
  };
  private readonly onRefusal: ((code: string) => void) | undefined;
  private workload: Workload;
  private addresses: Set<string>;
  private readonly identity: IdentitySource;
  private readonly inbound: InboundProxy;
  private readonly log: Logger;
  private readonly server: Http2SecureServer;
  private readonly sessions = new Set<ServerHttp2Session>();
  /** Open sessions by source identity, for maxSessionsPerPeer. */
  private readonly sessionsByPeer = new Map<string, number>();
  private readonly maxSessionsPerPeer: number;
  /** Open streams by source identity, for maxStreamsPerPeer. */
  private readonly streamsByPeer = new Map<string, number>();
  /** Streams open at this pod's tunnel port, all sessions (the same cap as the outbound listener's). */
  private readonly streamCap: StreamCap;
  private readonly maxStreamsPerPeer: number;
  private readonly sessionIdleTimeoutMs: number;
  private readonly sessionWindowBytes: number;
  private readonly guard: H2AbuseGuard;
  private refreshTimer: NodeJS.Timeout | undefined;
  private readonly refreshEveryMs: number;
  /** notAfter (ms) of the certificate installed now. */
  private notAfter: number;
  private credentials: { certChainPem: string; bundle: string };
  /** Roots the installed TLS context trusts; the SPIFFE check uses the same snapshot. */
  private bundlePems: string[];
  private closed = false;

  /** Fetches the workload's certificate (waiting for issuance) before building the server. */
  static async create(opts: TunnelServerOptions): Promise<TunnelServer> {
    const cert = await opts.identity.certificateFor(opts.workload.identity);
    return new TunnelServer(opts, cert);
  }

  private constructor(opts: TunnelServerOptions, cert: WorkloadCertificate) {
    this.workload = opts.workload;
    this.addresses = podAddresses(opts.workload);
    this.identity = opts.identity;
    this.inbound = opts.inbound;
    this.log = (opts.logger ?? silentLogger()).child({ component: 'tunnel-server', workload: `${opts.workload.namespace}/${opts.workload.name}` });
    this.onRefusal = opts.onRefusal;
    this.maxSessionsPerPeer = opts.maxSessionsPerPeer ?? 256;
    this.streamCap = new StreamCap(opts.maxStreams ?? DEFAULT_MAX_TUNNEL_STREAMS);
    // Read from the cap: one counter, never two to keep in step.
    const cap = this.streamCap;
    Object.defineProperty(this.stats, 'openStreams', { get: () => cap.open, enumerable: true });
    this.maxStreamsPerPeer = opts.maxStreamsPerPeer ?? DEFAULT_MAX_TUNNEL_STREAMS_PER_PEER;
    this.sessionIdleTimeoutMs = opts.sessionIdleTimeoutMs ?? 300_000;
    this.sessionWindowBytes = opts.sessionWindowBytes ?? 8 * 1024 * 1024;
    this.guard = new H2AbuseGuard({
      maxResetsPerWindow: opts.rapidResetLimit ?? DEFAULT_TUNNEL_RESET_BUDGET,
      windowMs: opts.rapidResetWindowMs ?? 1_000,
      onAbusive: (session, j) => {
        const state = sessionStates.get(session);
        this.stats.rapidResetSessionsClosed++;
        this.countRefusal(TunnelCode.RapidReset);
        this.log.warn(
          {
            refused: 'rapid-reset',
            code: TunnelCode.RapidReset,
            peer: state?.remoteAddress,
            peerIdentity: state?.peer.ok ? state.peer.identity : undefined,
            resets: j.resets,
            lastStreamId: j.lastStreamId,
          },
          'tunnel session cancelled too many streams before their answer; session refused',
        );
      },
    });
    const bundle = this.identity.trustBundlePem();
    this.credentials = { certChainPem: cert.certChainPem, bundle: bundle.join('\n') };

    this.bundlePems = bundle;
    this.server = createSecureServer({
      // Workload cert + key, the bundle as the only CAs, TLS 1.3, client cert required and
      // chained by OpenSSL (identity's mesh TLS options).
      ...tlsOptionsFor(cert, bundle, { trustDomain: this.identity.trustDomain(), alpnProtocols: ['h2'] }),
      requestCert: true,
      rejectUnauthorized: true,
      allowHTTP1: false,
      // No Nagle: small HTTP/2 frames of interactive streams must leave at once.
      noDelay: true,
      handshakeTimeout: opts.handshakeTimeoutMs ?? 10_000,
      unknownProtocolTimeout: 5_000,
      maxHeaderListPairs: opts.maxHeaderListPairs ?? 288,
      maxSessionMemory: opts.maxSessionMemoryMb ?? 32,
      maxSettings: 16,
      maxSessionInvalidFrames: 100,
      maxSessionRejectedStreams: H2_MAX_REJECTED_STREAMS,
      settings: {
        enablePush: false,
        maxConcurrentStreams: opts.maxConcurrentStreams ?? 100,
        maxHeaderListSize: opts.maxHeaderListSize ?? 72 * 1024,
        initialWindowSize: opts.streamWindowBytes ?? 1024 * 1024,
      },
    });
    capConnections(this.server, opts.maxConnections, TunnelCode.ConnectionLimit, (code) => this.countRefusal(code));
    // Read the peer's address once per TCP connection: Node caches it on the socket, so a
    // handshake refused (and the socket destroyed) can still be logged with who it was.
    this.server.prependListener('connection', (tcp: { remoteAddress?: string }) => void tcp.remoteAddress);
    this.server.on('tlsClientError', (err: Error, socket: TLSSocket) => {
      // A client certificate that fails verification shows only in authorizationError: Node
      // destroys the socket itself and the error here is a bare "socket hang up".
      const authorizationError = socket.authorizationError;
      const code = classifyTlsRefusal(err, authorizationError);
      this.stats.tlsRefused++;
      this.countRefusal(code);
      // A destroyed TLSSocket no longer knows its peer; the TCP socket under it kept it.
      const tcp = (socket as TLSSocket & { _parent?: { remoteAddress?: string } | null })._parent;
      this.log.warn(
        {
          refused: 'tls',
          code,
          tlsError: (err as { code?: string }).code,
          ...(authorizationError ? { verifyError: String(authorizationError) } : {}),
          err: messageOf(err),
          peer: socket.remoteAddress ?? tcp?.remoteAddress,
        },
        'tunnel TLS handshake refused',
      );
    });
    this.server.on('sessionError', (err: Error) => {
      this.log.debug({ err: messageOf(err) }, 'tunnel session error');
    });
    this.server.on('session', (session) => this.onSession(session));
    this.server.on('stream', (stream, headers, flags) => this.onStream(stream, headers, flags));

    this.refreshEveryMs = opts.credentialRefreshMs ?? 30_000;
    this.notAfter = cert.notAfter.getTime();
    this.scheduleRefresh();
  }

  /**
   * Next credential check: every `credentialRefreshMs`, and sooner when the certificate has
   * less life left (half of what remains, at least 250 ms): new TLS sessions must never be
   * offered an expired certificate, whatever the certificate TTL (short in tests and labs).
   */
  private scheduleRefresh(): void {
    if (this.closed || this.refreshEveryMs <= 0) return;
    const halfLife = Math.max(250, (this.notAfter - Date.now()) / 2);
    this.refreshTimer = setTimeout(() => {
      this.refreshCredentials()
        .catch((err) => this.log.warn({ err: messageOf(err) }, 'tunnel credential refresh failed'))
        .finally(() => this.scheduleRefresh());
    }, Math.min(this.refreshEveryMs, halfLife));
    this.refreshTimer.unref();
  }

  /** Listen on a socket fd handed over by the capture layer (in the pod's netns), or a port. */
  listen(where: { fd: number } | { port: number; host?: string }): Promise<AddressInfo | undefined> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(where, () => {
        this.server.removeListener('error', reject);
        const a = this.server.address();
        resolve(typeof a === 'object' && a !== null ? a : undefined);
      });
    });
  }

  address(): AddressInfo | undefined {
    const a = this.server.address();
    return typeof a === 'object' && a !== null ? a : undefined;
  }

  /** The pod's record changed (IPs, labels, identity is the same service account). */
  updateWorkload(workload: Workload): void {
    this.workload = workload;
    this.addresses = podAddresses(workload);
  }

  /**
   * Install the current workload certificate and trust bundle for new connections, if either
   * changed. Resolves true when a new context was installed.
   */
  async refreshCredentials(): Promise<boolean> {
    const cert = await this.identity.certificateFor(this.workload.identity);
    const bundle = this.identity.trustBundlePem();
    const joined = bundle.join('\n');
    if (cert.certChainPem === this.credentials.certChainPem && joined === this.credentials.bundle) return false;
    this.server.setSecureContext(tlsOptionsFor(cert, bundle, { trustDomain: this.identity.trustDomain(), alpnProtocols: ['h2'] }));
    this.bundlePems = bundle;
    this.credentials = { certChainPem: cert.certChainPem, bundle: joined };
    this.stats.credentialRotations++;
    this.notAfter = cert.notAfter.getTime();
    this.log.info({ notAfter: cert.notAfter.toISOString(), roots: bundle.length }, 'tunnel server credentials rotated');
    return true;
  }

  /** Stop accepting; GOAWAY every session, then destroy what is still open after `graceMs`. */
  async close(graceMs = 2_000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    const closing = new Promise<void>((resolve) => this.server.close(() => resolve()));
    // Notice first, then GOAWAY: a peer's request sent meanwhile is never refused.
    for (const s of this.sessions) gracefulGoaway(s);
    const t = setTimeout(() => {
      for (const s of this.sessions) s.destroy();
    }, graceMs);
    t.unref();
    await closing;
    clearTimeout(t);
  }

  private onSession(session: ServerHttp2Session): void {
    // session.socket is a proxy onto the TLSSocket; reading methods pass through.
    const sock = session.socket as TLSSocket;
    const peerCert = sock.getPeerCertificate?.(true);
    const state: SessionState = {
      peer: checkPeerIdentity(peerCert, this.bundlePems, this.identity.trustDomain()),
      remoteAddress: sock.remoteAddress,
      remotePort: sock.remotePort,
      open: 0,
      idleTimer: undefined,
    };
    sessionStates.set(session, state);
    this.sessions.add(session);
    this.guard.watch(session);
    this.stats.sessions++;
    if (!state.peer.ok) {
      this.stats.identityRefused++;
      this.countRefusal(state.peer.reason);
      this.log.warn(
        { refused: 'identity', code: state.peer.reason, reason: state.peer.reason, presented: state.peer.detail, peer: state.remoteAddress },
        'tunnel peer identity refused',
      );
    } else {
      const peer = state.peer.identity;
      const held = this.sessionsByPeer.get(peer) ?? 0;
      if (held >= this.maxSessionsPerPeer) {
        this.countRefusal(TunnelCode.SessionLimit);
        this.log.warn({ refused: 'session-limit', code: TunnelCode.SessionLimit, peerIdentity: peer, peer: state.remoteAddress, held }, 'tunnel peer holds its maximum of sessions; new session refused');
        session.goaway(h2c.NGHTTP2_REFUSED_STREAM);
        setTimeout(() => session.destroy(), 50).unref();
        return;
      }
      this.sessionsByPeer.set(peer, held + 1);
      session.once('close', () => {
        const n = (this.sessionsByPeer.get(peer) ?? 1) - 1;
        if (n <= 0) this.sessionsByPeer.delete(peer);
        else this.sessionsByPeer.set(peer, n);
      });
      this.log.debug({ peerIdentity: peer, peer: state.remoteAddress }, 'tunnel session accepted');
    }
    session.on('error', (err) => this.log.debug({ err: messageOf(err) }, 'tunnel session error'));
    session.once('close', () => {
      this.sessions.delete(session);
      this.stats.sessions--;
      if (state.idleTimer) clearTimeout(state.idleTimer);
    });
    session.once('connect', () => {
      try {
        session.setLocalWindowSize(this.sessionWindowBytes);
      } catch (err) {
        this.log.debug({ err: messageOf(err) }, 'could not enlarge the session window');
      }
    });
    this.armIdle(session, state);
  }

  private countRefusal(code: string): void {
    this.stats.refusals[code] = (this.stats.refusals[code] ?? 0) + 1;
    try {
      this.onRefusal?.(code);
    } catch (err) {
      this.log.error({ err: messageOf(err) }, 'tunnel refusal hook threw');
    }
  }

  private armIdle(session: ServerHttp2Session, state: SessionState): void {
    if (state.idleTimer) clearTimeout(state.idleTimer);
    state.idleTimer = setTimeout(() => {
      if (state.open === 0 && !session.closed) {
        this.log.debug({ peer: state.remoteAddress }, 'closing idle tunnel session');
        session.close();
      }
    }, this.sessionIdleTimeoutMs);
    state.idleTimer.unref();
  }

  private onStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number): void {
    this.stats.streams++;
    // First: a session judged abusive gets no work done for any stream it still opens.
    if (!this.guard.admit(stream)) return;
    // Served once the read that carried the HEADERS has been parsed: a stream the peer reset in
    // that same read (HEADERS+RST_STREAM back to back) costs no authorization, no app connect.
    setImmediate(TunnelServer.serveIfOpen, this, stream, headers, flags);
  }

  /** setImmediate target of onStream: serve the stream unless the peer has reset it meanwhile. */
  private static serveIfOpen(server: TunnelServer, stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number): void {
    if (stream.destroyed || stream.closed || stream.session?.destroyed) return;
    server.serveStream(stream, headers, flags);
  }

  private serveStream(stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number): void {
    const session = stream.session as ServerHttp2Session | undefined;
    const state = session ? sessionStates.get(session) : undefined;
    if (!session || !state) {
      this.guard.closeStream(stream, h2c.NGHTTP2_INTERNAL_ERROR);
      return;
    }
    // Stream caps, before any work: the pod's whole tunnel port, then one source identity's
    // share of it (per identity, over all its sessions and nodes: fairness between clients).
    const peer = state.peer.ok ? state.peer.identity : undefined;
    const peerStreams = peer === undefined ? 0 : (this.streamsByPeer.get(peer) ?? 0);
    const limit = this.streamCap.full ? TunnelCode.StreamLimit : peerStreams >= this.maxStreamsPerPeer ? TunnelCode.PeerStreamLimit : undefined;
    if (limit) {
      this.countRefusal(limit);
      this.log.debug({ refused: 'stream-limit', code: limit, peerIdentity: peer, open: this.streamCap.open, peerOpen: peerStreams }, 'tunnel stream refused: over the stream cap');
      stream.on('error', () => {});
      this.guard.closeStream(stream, h2c.NGHTTP2_REFUSED_STREAM);
      return;
    }
    this.streamCap.take();
    if (peer !== undefined) this.streamsByPeer.set(peer, peerStreams + 1);
    state.open++;
    if (state.idleTimer) {
      clearTimeout(state.idleTimer);
      state.idleTimer = undefined;
    }
    stream.once('close', () => {
      state.open--;
      this.streamCap.release();
      if (peer !== undefined) {
        const n = (this.streamsByPeer.get(peer) ?? 1) - 1;
        if (n <= 0) this.streamsByPeer.delete(peer);
        else this.streamsByPeer.set(peer, n);
      }
      if (state.open === 0 && !session.closed) this.armIdle(session, state);
    });
    stream.on('error', (err) => this.log.debug({ err: messageOf(err) }, 'tunnel stream error'));

    const base: InboundRequest = { transport: 'hbone', workload: this.workload, port: 0 };
    if (state.remoteAddress !== undefined) base.sourceAddress = state.remoteAddress;
    if (state.remotePort !== undefined) base.sourcePort = state.remotePort;

    if (!state.peer.ok) {
      this.inbound.recordRefusal(base, 401, `peer identity refused: ${state.peer.reason}`);
      respond(stream, 401);
      return;
    }
    base.source = state.peer.identity;

    const method = headers[':method'];
    // Any other method is one HTTP request between agents (L7): served by the inbound side.
    if (method !== 'CONNECT' && headers[MeshHeader.Destination] !== undefined) {
      const ctx: InboundHttpContext = { transport: 'hbone', source: state.peer.identity, workload: this.workload };
      if (state.remoteAddress !== undefined) ctx.sourceAddress = state.remoteAddress;
      this.inbound.http.serve(stream, headers, flags, ctx, this.addresses);
      return;
    }
    if (method !== 'CONNECT') {
      this.stats.badRequest++;
      this.countRefusal(TunnelCode.RequestMalformed);
      this.inbound.recordRefusal(base, 400, `method ${String(method)} is not CONNECT`);
      respond(stream, 400);
      return;
    }
    const rawAuthority = headers[':authority'];
    const authority = parseAuthority(typeof rawAuthority === 'string' ? rawAuthority : undefined);
    if (!authority) {
      this.stats.badRequest++;
      this.countRefusal(TunnelCode.RequestMalformed);
      this.inbound.recordRefusal(base, 400, `malformed authority ${String(rawAuthority)}`);
      respond(stream, 400);
      return;
    }
    base.port = authority.port;
    if (!this.addresses.has(authority.address)) {
      this.stats.wrongDestination++;
      this.countRefusal(TunnelCode.WrongDestination);
      this.inbound.recordRefusal(base, 403, `authority ${rawAuthority} is not this pod`);
      respond(stream, 403);
      return;
    }
    const fwd = forwardedHeaders(headers);
    if (fwd) base.headers = fwd;

    // The app's writes reach this stream through the L4 pipe: see writev-guard.ts.
    this.inbound.accept(base, guardWritev(stream), {
      admitted: () => stream.respond({ ':status': 200 }),
      refused: (err) => {
        if (hasCode(err, TunnelCode.SourceDenied)) respond(stream, 401);
        else if (hasCode(err, TunnelCode.AppUnreachable)) respond(stream, 503);
        else if (!stream.destroyed) this.guard.closeStream(stream, h2c.NGHTTP2_CANCEL);
      },
    });
  }
}

const sessionStates = new WeakMap<ServerHttp2Session, SessionState>();

function respond(stream: ServerHttp2Stream, status: number): void {
  if (stream.destroyed || stream.closed || stream.headersSent) return;
  stream.respond({ ':status': status }, { endStream: true });
}

function forwardedHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string> | undefined {
  let out: Record<string, string> | undefined;
  for (const name of FORWARDED_HEADERS) {
    const v = headers[name];
    if (typeof v === 'string') {
      out ??= {};
      out[name] = v;
    }
  }
  return out;
}
