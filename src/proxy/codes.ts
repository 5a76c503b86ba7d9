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
  /** The pod's outbound listener (15001) holds its maximum of connections; a new one was closed. */
  ConnectionLimit: 'SKEIN_OUTBOUND_CONNECTION_LIMIT',
  /** The pod is over its share of a contended agent and its queue of waiting new connections is full (proxy/load-share.ts). */
  LoadShareQueueFull: 'SKEIN_OUTBOUND_LOAD_SHARE_QUEUE_FULL',
  /**
   * The pod's outbound listener (15001) has its maximum of requests and streams in flight; a
   * new one was refused (HTTP/2: RST_STREAM REFUSED_STREAM, HTTP/1: 503), not processed.
   */
  StreamLimit: 'SKEIN_OUTBOUND_STREAM_LIMIT',
} as const;

export const InboundCode = {
  /** The pod's plaintext inbound listener (15006) holds its maximum of connections; a new one was closed. */
  ConnectionLimit: 'SKEIN_INBOUND_CONNECTION_LIMIT',
  /** An HTTP request from another agent was denied by the destination's authorization (403). */
  RequestDenied: 'SKEIN_INBOUND_REQUEST_DENIED',
  /** A request stream between agents lacked a valid skein-dst or skein-proto field (400). */
  MeshRequestMalformed: 'SKEIN_INBOUND_MESH_REQUEST_MALFORMED',
  /** A request was over the destination's local rate limit (429, gRPC RESOURCE_EXHAUSTED). */
  RateLimited: 'SKEIN_INBOUND_RATE_LIMITED',
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
  /** The pod's tunnel listener (15008) holds its maximum of connections; a new one was closed. */
  ConnectionLimit: 'SKEIN_TUNNEL_CONNECTION_LIMIT',
  /** One source identity holds its maximum of sessions at this pod; a new session was refused. */
  SessionLimit: 'SKEIN_TUNNEL_SESSION_LIMIT',
  /** The pod's tunnel port has its maximum of streams open; a new stream was refused (REFUSED_STREAM). */
  StreamLimit: 'SKEIN_TUNNEL_STREAM_LIMIT',
  /** One source identity has its maximum of streams open at this pod; a new stream was refused (REFUSED_STREAM). */
  PeerStreamLimit: 'SKEIN_TUNNEL_PEER_STREAM_LIMIT',
  /** TCP connect to the tunnel port failed: nothing was sent, safe to retry elsewhere. */
  ConnectFailed: 'SKEIN_TUNNEL_CONNECT_FAILED',
  /** The session or stream failed after connecting (GOAWAY, reset, socket error). */
  StreamFailed: 'SKEIN_TUNNEL_STREAM_FAILED',
  /** Server: a session reset too many streams before their answer (HTTP/2 rapid reset); refused. */
  RapidReset: 'SKEIN_TUNNEL_RAPID_RESET',
  /** Server: the client certificate does not chain to the trust bundle (foreign CA, self-signed). */
  TlsUnknownCa: 'SKEIN_TUNNEL_TLS_UNKNOWN_CA',
  /** Server: the client certificate (or one in its chain) has expired. */
  TlsCertExpired: 'SKEIN_TUNNEL_TLS_CERT_EXPIRED',
  /** Server: the client certificate is not valid yet. */
  TlsCertNotYetValid: 'SKEIN_TUNNEL_TLS_CERT_NOT_YET_VALID',
  /** Server: any other verification failure of the client certificate (OpenSSL's reason in the log). */
  TlsCertRejected: 'SKEIN_TUNNEL_TLS_CERT_REJECTED',
  /** Server: the client sent no certificate; mTLS is required. */
  TlsNoClientCert: 'SKEIN_TUNNEL_TLS_NO_CLIENT_CERT',
  /** Server: the client did not offer ALPN h2. */
  TlsAlpnMismatch: 'SKEIN_TUNNEL_TLS_ALPN_MISMATCH',
  /** Server: the client offered no TLS 1.3. */
  TlsProtocolVersion: 'SKEIN_TUNNEL_TLS_PROTOCOL_VERSION',
  /** Server: the bytes were not TLS at all (plaintext, HTTP). */
  TlsNotTls: 'SKEIN_TUNNEL_TLS_NOT_TLS',
  /** Server: the client refused our server certificate (it sent an alert). */
  TlsPeerRejectedServerCert: 'SKEIN_TUNNEL_TLS_PEER_REJECTED_SERVER_CERT',
  /** Server: the handshake did not finish within handshakeTimeoutMs. */
  TlsHandshakeTimeout: 'SKEIN_TUNNEL_TLS_HANDSHAKE_TIMEOUT',
  /** Server: the client closed the connection during the handshake, without an alert. */
  TlsPeerClosed: 'SKEIN_TUNNEL_TLS_PEER_CLOSED',
  /** Server: any other handshake failure (OpenSSL's reason in the log). */
  TlsHandshakeFailed: 'SKEIN_TUNNEL_TLS_HANDSHAKE_FAILED',
} as const;
