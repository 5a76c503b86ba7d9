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
 * a tunnel CONNECT would produce (SKEIN_TUNNEL_SOURCE_DENIED, SKEIN_TUNNEL_WRONG_DESTINATION, SKEIN_TUNNEL_APP_UNREACHABLE).
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
