/**
 * Stable error codes of the proxy room (SKEIN_<AREA>_<CAUSE>). Operators grep logs and alerts
 * for them, so a released code never changes; test/unit/error-codes.test.ts keeps every code
 * of src/ in a codes.ts, once, and listed in the README.
 */
export const HttpCode = {
  /** Content-Length together with Transfer-Encoding, or a malformed framing header. */
  Smuggling: 'SKEIN_HTTP1_SMUGGLING',
  /** Request headers beyond the configured limit. */
  HeadersTooLarge: 'SKEIN_HTTP1_HEADERS_TOO_LARGE',
  /** Headers or the request did not arrive in time (slowloris). */
  SlowClient: 'SKEIN_HTTP1_SLOW_CLIENT',
  /** Anything else the HTTP/1 parser refused. */
  RequestMalformed: 'SKEIN_HTTP1_REQUEST_MALFORMED',
  /** CONNECT sent by an application to a captured destination. */
  ConnectMethod: 'SKEIN_HTTP1_CONNECT_METHOD',
  /** A client reset too many of its own streams too fast (CVE-2023-44487 pattern). */
  RapidReset: 'SKEIN_HTTP2_RAPID_RESET',
  /** The HTTP/2 session failed on a protocol error from the client. */
  H2ProtocolError: 'SKEIN_HTTP2_PROTOCOL_ERROR',
  /** An upstream HTTP agent was used without its opener (a bug). */
  AgentMisuse: 'SKEIN_HTTP_AGENT_MISUSE',
} as const;

export const OutboundCode = {
  /** No ready endpoint for the destination. */
  NoHealthyUpstream: 'SKEIN_OUTBOUND_NO_HEALTHY_UPSTREAM',
  /** Unknown destination while passthrough is refused. */
  PassthroughRefused: 'SKEIN_OUTBOUND_PASSTHROUGH_REFUSED',
  /** Connecting to an endpoint took too long. */
  ConnectTimeout: 'SKEIN_OUTBOUND_CONNECT_TIMEOUT',
  /** The chosen endpoint could not be reached. */
  UpstreamConnectFailed: 'SKEIN_OUTBOUND_UPSTREAM_CONNECT_FAILED',
  /** The destination refused the source (identity or policy). */
  UpstreamDenied: 'SKEIN_OUTBOUND_UPSTREAM_DENIED',
} as const;

export const TunnelCode = {
  /** The peer found the CONNECT malformed (not CONNECT, bad :authority). */
  RequestMalformed: 'SKEIN_TUNNEL_REQUEST_MALFORMED',
  /** The source identity was refused: not authenticated, or denied by policy. */
  SourceDenied: 'SKEIN_TUNNEL_SOURCE_DENIED',
  /** The :authority does not name the pod behind that listener. */
  WrongDestination: 'SKEIN_TUNNEL_WRONG_DESTINATION',
  /** The destination agent could not reach the app port. */
  AppUnreachable: 'SKEIN_TUNNEL_APP_UNREACHABLE',
  /** The peer answered with a status skein does not send. */
  UnexpectedStatus: 'SKEIN_TUNNEL_UNEXPECTED_STATUS',
  /** The TLS handshake failed. */
  TlsFailed: 'SKEIN_TUNNEL_TLS_FAILED',
  /** The server presented a certificate whose SPIFFE identity is not the expected one. */
  PeerIdentityMismatch: 'SKEIN_TUNNEL_PEER_IDENTITY_MISMATCH',
  /** Connecting or the CONNECT response took too long. */
  Timeout: 'SKEIN_TUNNEL_TIMEOUT',
  /** The caller aborted. */
  Aborted: 'SKEIN_TUNNEL_ABORTED',
  /** The pool is at its session limit with every session full. */
  PoolExhausted: 'SKEIN_TUNNEL_POOL_EXHAUSTED',
  /** The pool was closed. */
  Closed: 'SKEIN_TUNNEL_CLOSED',
  /** TCP connect to the tunnel port failed: nothing was sent, safe to retry elsewhere. */
  ConnectFailed: 'SKEIN_TUNNEL_CONNECT_FAILED',
  /** The session or stream failed after connecting (GOAWAY, reset, socket error). */
  StreamFailed: 'SKEIN_TUNNEL_STREAM_FAILED',
} as const;
