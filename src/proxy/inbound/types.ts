/**
 * The inbound side's contracts: how it reaches the app in a pod (AppConnector, which the
 * agent implements) and the same-node entry the outbound side calls (LocalInbound, which
 * InboundProxy implements). Tunnel, same-node and plaintext paths all end in InboundProxy.
 */
import type { ClientHttp2Stream, ClientSessionRequestOptions, OutgoingHttpHeaders } from 'node:http2';
import type { Duplex } from 'node:stream';
import type { SpiffeId, Workload } from '../../config/model.js';

/** Delivers an accepted stream to the app inside the destination pod (the agent implements it with a socket created in the pod's netns; tests with net.connect). */
export interface AppConnector {
  connect(workload: Workload, port: number, signal?: AbortSignal): Promise<Duplex>;
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
    workload: Workload,
    port: number,
    opts?: { signal?: AbortSignal; headers?: Record<string, string> },
  ): Promise<Duplex>;
  /**
   * Same-node L7: one HTTP request as a request stream served by the inbound side (skein-*
   * fields included). Optional: without it, same-node HTTP goes over `openLocal` streams.
   */
  requestLocal?(source: SpiffeId, workload: Workload, headers: OutgoingHttpHeaders, opts: ClientSessionRequestOptions): Promise<ClientHttp2Stream>;
}
