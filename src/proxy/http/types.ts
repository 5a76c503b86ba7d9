/**
 * What the HTTP forwarders need from the outbound side, kept as an interface so the HTTP code
 * knows nothing about services, load balancers or tunnels: per client connection, a way to
 * choose an upstream for each request and to open a stream to it.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { ClientHttp2Stream, ClientSessionRequestOptions, OutgoingHttpHeaders } from 'node:http2';
import type { Duplex } from 'node:stream';
import { OutboundCode, TunnelCode } from '../codes.js';

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
  /** The request finished (any outcome): releases the load balancer's in-flight count. */
  done(): void;
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
export interface HttpRequestRecord {
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
