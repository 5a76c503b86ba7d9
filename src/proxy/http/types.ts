/**
 * What the HTTP forwarders need from the outbound side, kept as an interface so the HTTP code
 * knows nothing about services, load balancers or tunnels: per client connection, a way to
 * choose an upstream for each request and to open a stream to it.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { ClientHttp2Stream, ClientSessionRequestOptions, OutgoingHttpHeaders } from 'node:http2';
import type { Duplex } from 'node:stream';
import type { RequestSpan } from '../../telemetry/tracing.js';
import { OutboundCode, TunnelCode } from '../codes.js';
import type { StreamCap } from '../stream-cap.js';
import type { TraceFields } from './trace-hook.js';

/** Opens one HTTP/2 request stream (headers as given, `skein-*` included) to an agent. */
export type MeshRequestOpener = (
  headers: OutgoingHttpHeaders,
  opts: ClientSessionRequestOptions & { signal?: AbortSignal },
) => Promise<ClientHttp2Stream>;

/** One request's upstream: the chosen endpoint and how to reach it. */
export interface UpstreamChoice {
  /** Reuse key of the upstream: (source identity, endpoint ip, port). */
  readonly key: string;
  /** `ip:port` ([v6]:port) of the endpoint, for logs and the HTTP/2 session URL. */
  readonly authority: string;
  /** SPIFFE identity the endpoint must present (meshed endpoints); undefined outside the mesh. */
  readonly identity?: string | undefined;
  /** Opens a new byte stream to the endpoint (tunnel, same-node inbound, or direct): L4 and upgrades. */
  connect(signal?: AbortSignal): Promise<Duplex>;
  /**
   * Present when a skein agent serves the endpoint (another node's over the tunnel, or this
   * one's inbound side): each HTTP request then travels as its own HTTP/2 request stream to
   * that agent, carrying the mesh-headers.ts fields, instead of over a byte stream.
   */
  readonly request?: MeshRequestOpener;
  /**
   * The request (or one try of it) finished: releases the load balancer's in-flight count and
   * tells outlier detection and latency-aware balancing how it went (absent: unknown).
   */
  done(result?: AttemptResult): void;
  /**
   * Present when routes or traffic policy shape this request beyond one endpoint choice
   * (filters, timeouts, retries, mirrors, faults, circuit breaking): the forwarders then run
   * it through ManagedExchange. Absent on the plain path, which stays as lean as before.
   */
  readonly plan?: RequestPlan;
}

/** How one try ended, as outlier detection and load balancing need it. */
export interface AttemptResult {
  /** Status the upstream answered (0: no response). */
  status: number;
  /** The endpoint could not be reached at all (nothing was sent). */
  connectFailed?: boolean;
  /** grpc-status in the response head (trailers-only answers), when there was one. */
  grpcStatus?: number;
}

/** An answer the proxy gives itself, with no upstream: redirect, fault abort, no matching route, overflow. */
export interface DirectAnswer {
  status: number;
  /** gRPC clients get this status as a trailers-only answer instead (HTTP 200). */
  grpcStatus: number;
  headers?: Record<string, string>;
  text: string;
  /** Envoy response flag (NR no route, FI fault injected, UO overflow, ...); '' for a redirect. */
  flag: string;
}

/** Retries of one request: how many, on what, and the budget/breaker that must allow each. */
export interface RetryPlan {
  /** Retries after the first try. */
  attempts: number;
  /** Whether a try that ended so may be retried (status 0 = no response). */
  retriable(r: AttemptResult, reset: boolean): boolean;
  /** Wait before retry `n` (1-based). */
  backoffMs(n: number): number;
  /** Larger request bodies make the request non-replayable (no retry). */
  maxReplayBytes: number;
  /** Takes a retry from the budget and the circuit breaker; false: no retry allowed now. */
  acquire(): boolean;
  /** A retry acquired above finished. */
  release(): void;
}

/** What routing and traffic policy decided for one request beyond its first endpoint. */
export interface RequestPlan {
  /** Answer at once; nothing reaches an upstream. */
  direct?: DirectAnswer;
  /** Fault injection: hold the request this long first. */
  delayMs?: number;
  /** Request head edits (header modifiers, URL rewrite) on the HTTP/2-form head, pseudo-headers included. */
  editRequest?(head: Record<string, string | string[] | number | undefined>): void;
  /** Response head edits (ResponseHeaderModifier). */
  editResponse?(head: Record<string, string | string[] | number | undefined>): void;
  /** The whole exchange, retries included (ms). */
  timeoutMs?: number;
  /** Each try (ms). */
  tryTimeoutMs?: number;
  retry?: RetryPlan;
  /** Endpoints this request is also sent to, answers dropped (RequestMirror). */
  mirrors?: UpstreamChoice[];
  /** Another endpoint for a retry: preferably one this request has not tried yet. */
  next(): UpstreamChoice | undefined;
  /** The request is over (any outcome): circuit-breaker counts are released. */
  finish(): void;
  /** The request got its response head (or failed): it is no longer pending. */
  answered(): void;
  /** Response flags gathered while serving it (Envoy's names), for the access log and metrics. */
  readonly flags: string[];
  /** Tries sent upstream so far (set while it is served). */
  tries?: number;
  /** `<kind>/<namespace>/<name>#<rule>` of the route that matched, for the access log. */
  readonly route?: string;
}

export type HttpVersion = 'http1' | 'http2';

/** A client connection whose requests are routed. */
export interface RoutedConnection {
  /**
   * What the upstream speaks: the Service port's declared appProtocol when there is one, else
   * what the client speaks. When it differs from the client's, requests are translated.
   */
  readonly upstreamProtocol: HttpVersion;
  /** Chooses an endpoint for one request (routing may look at it); undefined when no endpoint is ready. */
  choose(req?: RequestInfo): UpstreamChoice | undefined;
  /**
   * The requests/streams in flight at the listener this connection came in on (the source
   * pod's 15001): each request takes a place before any work and gives it back when it ends;
   * over the cap it is refused with SKEIN_OUTBOUND_STREAM_LIMIT. Absent: no cap.
   */
  readonly streams?: StreamCap | undefined;
  /** Fields identifying the connection in logs. */
  logFields(): Record<string, unknown>;
  /** One request finished (served, refused or failed): access log and telemetry. */
  recordRequest(rec: HttpRequestRecord): void;
}

/** What the source knows of one request when choosing where it goes (absent for L4). */
export interface RequestInfo {
  method: string;
  path: string;
  /** Host / :authority as the client sent it. */
  authority: string;
  headers: IncomingHttpHeaders;
}

/** What the HTTP side knows about one finished request. */
export interface HttpRequestRecord extends TraceFields {
  protocol: HttpVersion;
  method: string;
  path: string;
  /** Host / :authority as the client sent it. */
  authority: string;
  /** Status sent to the client; 0 when the exchange broke before a response started. */
  status: number;
  /** grpc-status sent to the client, for gRPC. */
  grpcStatus?: number;
  /** Endpoint the request went to (`ip:port`), when one was chosen. */
  upstream?: string;
  /** Its SPIFFE identity, when it is meshed. */
  upstreamIdentity?: string;
  durationMs: number;
  /** Envoy-style response flags ('' or e.g. 'UT', 'URX,UF'). */
  responseFlags?: string;
  /** Route that matched (`HTTPRoute/ns/name#rule`). */
  route?: string;
  /** Tries sent upstream (retries + 1), when more than one. */
  attempts?: number;
  /** Request body bytes the client sent, and response body bytes sent back to it. */
  requestBytes?: number;
  responseBytes?: number;
  /** The source agent's client span, to be ended with the full record (never logged as such). */
  span?: RequestSpan;
}

/** How a failed upstream request is answered: status, gRPC status, text. */
export function upstreamFailure(code: string | undefined): { status: number; grpcStatus: number; text: string } {
  if (code === OutboundCode.UpstreamDenied || code === TunnelCode.SourceDenied) return { status: 403, grpcStatus: 7, text: 'access denied by destination policy' };
  if (code === OutboundCode.UpstreamConnectFailed || code === TunnelCode.AppUnreachable) return { status: 503, grpcStatus: 14, text: 'upstream connect error' };
  return { status: 502, grpcStatus: 14, text: 'upstream reset' };
}

/** The record fields naming the upstream a request went to. */
export function upstreamFields(choice: UpstreamChoice): { upstream: string; upstreamIdentity?: string } {
  return choice.identity ? { upstream: choice.authority, upstreamIdentity: choice.identity } : { upstream: choice.authority };
}
