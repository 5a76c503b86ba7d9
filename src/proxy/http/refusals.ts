/**
 * Refusals on the client-facing side (smuggling, oversized headers, slow clients, reset
 * floods...): each is logged once with a stable code and counted, so operators can alert on it.
 */
import type { Logger } from '../../telemetry/log.js';

export const RefusalCode = {
  /** Content-Length together with Transfer-Encoding, or a malformed framing header. */
  Smuggling: 'SKEIN_HTTP1_SMUGGLING',
  /** Request headers beyond the configured limit (431). */
  HeadersTooLarge: 'SKEIN_HTTP1_HEADERS_TOO_LARGE',
  /** Headers or the request did not arrive in time (slowloris). */
  SlowClient: 'SKEIN_HTTP1_SLOW_CLIENT',
  /** Anything else the HTTP/1 parser refused (400). */
  BadRequest: 'SKEIN_HTTP1_BAD_REQUEST',
  /** CONNECT sent by an application to a captured destination. */
  ConnectMethod: 'SKEIN_HTTP1_CONNECT_METHOD',
  /** A client reset too many of its own streams too fast (CVE-2023-44487 pattern). */
  RapidReset: 'SKEIN_HTTP2_RAPID_RESET',
  /** The HTTP/2 session failed on a protocol error from the client. */
  H2ProtocolError: 'SKEIN_HTTP2_PROTOCOL_ERROR',
  /** No ready endpoint for the destination (503). */
  NoHealthyUpstream: 'SKEIN_OUTBOUND_NO_HEALTHY_UPSTREAM',
  /** Unknown destination while passthrough is refused. */
  PassthroughRefused: 'SKEIN_OUTBOUND_PASSTHROUGH_REFUSED',
} as const;

export class RefusalLog {
  private readonly counts = new Map<string, number>();

  constructor(private readonly log: Logger) {}

  refuse(code: string, fields: Record<string, unknown>, message: string): void {
    this.counts.set(code, (this.counts.get(code) ?? 0) + 1);
    this.log.warn({ code, ...fields }, message);
  }

  count(code: string): number {
    return this.counts.get(code) ?? 0;
  }

  snapshot(): Record<string, number> {
    return Object.fromEntries(this.counts);
  }
}
