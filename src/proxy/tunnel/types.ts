/**
 * The tunnel's contract with the outbound side, which dials it. HBONE-style: TLS 1.3, ALPN
 * h2, an HTTP/2 CONNECT stream per proxied connection, `:authority` = `podIP:port`. (What the
 * receiving end delivers to is the inbound side's contract, in ../inbound/types.ts.)
 */
import type { ClientHttp2Stream, ClientSessionRequestOptions, OutgoingHttpHeaders } from 'node:http2';
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
  /**
   * One HTTP request as an HTTP/2 request stream to the target's agent (L7 between agents).
   * Optional: a dialer without it carries HTTP over CONNECT streams.
   */
  request?(
    source: SpiffeId,
    target: TunnelTarget,
    headers: OutgoingHttpHeaders,
    opts: ClientSessionRequestOptions & { signal?: AbortSignal },
  ): Promise<ClientHttp2Stream>;
  close(): Promise<void>;
}
