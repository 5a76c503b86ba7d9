/**
 * The tunnel contract between the outbound side (which dials) and the inbound side (which
 * accepts and delivers to the app). HBONE-style: TLS 1.3, ALPN h2, an HTTP/2 CONNECT stream
 * per proxied connection, `:authority` = `podIP:port`.
 */
import type { Duplex } from 'node:stream';
import type { SpiffeId } from '../../config/model.js';

export interface TunnelTarget {
  address: string; // destination pod IP; :authority = `${address}:${port}` ([v6]:port)
  port: number; // destination app (target) port
  identity: SpiffeId; // expected identity of the destination workload (verified on its server cert)
  node: string; // destination node name (part of the pool key)
  tunnelAddress?: string; // where to open TLS; default `address`
  tunnelPort?: number; // default 15008
}

export interface TunnelDialer {
  /** Opens a CONNECT stream; resolves after a 2xx; rejects with SkeinError (code says why: refused 401/403, 503, TLS/identity failure, timeout). */
  connect(
    source: SpiffeId,
    target: TunnelTarget,
    opts?: { signal?: AbortSignal; headers?: Record<string, string> },
  ): Promise<Duplex>;
  close(): Promise<void>;
}

/** Delivers an accepted stream to the app inside the destination pod (the agent implements it with a socket created in the pod's netns; tests with net.connect). */
export interface AppConnector {
  connect(workload: import('../../config/model.js').Workload, port: number, signal?: AbortSignal): Promise<Duplex>;
}

/**
 * The inbound entry the outbound side uses for SAME-NODE destinations: the same policy and
 * telemetry path as a stream arriving over the tunnel, with the TLS hop skipped. Resolves
 * with the app-side stream once the app port accepted; rejects with the same SkeinError codes
 * a tunnel CONNECT would produce (SKEIN_TUNNEL_REFUSED_401/403, SKEIN_TUNNEL_UNAVAILABLE_503).
 * Implemented by InboundProxy (src/proxy/inbound/inbound-proxy.ts).
 */
export interface LocalInbound {
  openLocal(
    source: SpiffeId,
    workload: import('../../config/model.js').Workload,
    port: number,
    opts?: { signal?: AbortSignal; headers?: Record<string, string> },
  ): Promise<Duplex>;
}

/** Stable error codes a TunnelDialer / LocalInbound rejects with. */
export const TunnelErrorCode = {
  /** Peer answered 400 (malformed CONNECT). */
  BadRequest: 'SKEIN_TUNNEL_BAD_REQUEST_400',
  /** Peer refused the source identity (401) — authentication or authorization. */
  Unauthorized: 'SKEIN_TUNNEL_REFUSED_401',
  /** Peer refused: the :authority does not name the pod behind that listener, or policy denied (403). */
  Forbidden: 'SKEIN_TUNNEL_REFUSED_403',
  /** Peer could not reach the app port (503). */
  Unavailable: 'SKEIN_TUNNEL_UNAVAILABLE_503',
  /** Any other non-2xx status. */
  Status: 'SKEIN_TUNNEL_STATUS',
  /** TLS handshake failed, or the server's certificate did not carry the expected identity. */
  Tls: 'SKEIN_TUNNEL_TLS',
  /** Server presented a certificate whose SPIFFE identity is not the expected one. */
  Identity: 'SKEIN_TUNNEL_IDENTITY',
  /** Connect or CONNECT response took too long. */
  Timeout: 'SKEIN_TUNNEL_TIMEOUT',
  /** Caller aborted. */
  Aborted: 'SKEIN_TUNNEL_ABORTED',
  /** Pool closed or at its session limit with every session full. */
  PoolExhausted: 'SKEIN_TUNNEL_POOL_EXHAUSTED',
  Closed: 'SKEIN_TUNNEL_CLOSED',
  /** TCP connect to the tunnel port failed (refused, unreachable): nothing was sent, safe to retry elsewhere. */
  Connect: 'SKEIN_TUNNEL_CONNECT_FAILED',
  /** Session/stream failed after connection (GOAWAY, reset, socket error). */
  Stream: 'SKEIN_TUNNEL_STREAM',
} as const;

export const DEFAULT_TUNNEL_PORT = 15008;
