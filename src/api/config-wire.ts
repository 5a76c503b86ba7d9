/**
 * The wire types of skein.config.v1.ConfigDiscovery (config.proto), written once for both
 * ends: the agent's ControllerConfigSource and `skein status` (clients) and the controller's
 * ConfigServer. Field names are the .proto's (snake_case); uint64 fields arrive as numbers.
 * Keep this file in step with config.proto.
 */
import * as grpc from '@grpc/grpc-js';
import type { ServiceDefinition } from '@grpc/proto-loader';
import { loadApiService, type WireMethod, wireMethod } from './proto.js';

/** A NACK's reason. */
export interface ErrorDetail {
  code?: string;
  message?: string;
  resource?: string;
  field?: string;
}

/** Agent -> controller: the first request names the node; later ones ACK or NACK a response. */
export interface ConfigRequest {
  node?: string;
  response_nonce?: string;
  /** Set = NACK (decoded as null when absent). */
  error_detail?: ErrorDetail | null;
  applied_version?: string;
  agent_version?: string;
  /** A traffic report (no response_nonce): per-edge summaries since the previous one. */
  traffic?: TrafficReport | null;
  /** Sampled requests for tap sessions (no response_nonce). */
  tap_events?: TapEvent[];
  /** The agent's trust bundle and its certificates' roots (no response_nonce). */
  identity?: IdentityReport | null;
}

/** A workload certificate the agent holds and the trusted root it chains to ('' = none). */
export interface CertificateRoot {
  identity: string;
  root: string;
  serial: string;
  not_after: string;
}

export interface IdentityReport {
  trusted_roots: string[];
  certificates: CertificateRoot[];
}

/** Controller -> agent: fetch the bundle now, re-issue now (root rotation). */
export interface IdentityControl {
  refresh_bundle: boolean;
  reissue: boolean;
}

export type CaStatusRequest = Record<string, never>;

export interface RotateCaRequest {
  step: string;
}

export interface CaAuthority {
  id: string;
  active: boolean;
  subject: string;
  not_after: string;
}

export interface CaRotation {
  phase: string;
  from: string;
  to: string;
  started_at: string;
  updated_at: string;
  completed_at: string;
}

export interface AgentTrust {
  node: string;
  trusted_roots: string[];
  certificates: CertificateRoot[];
  reported_at: string;
}

export interface CaStatus {
  authorities: CaAuthority[];
  rotation: CaRotation | null;
  agents: AgentTrust[];
  pending: string[];
  rotatable: boolean;
  note: string;
  bundle_pem: string[];
}

/** Who talked to whom, as an edge summary and a tap event both name it. */
export interface EdgeEnds {
  reporter: string;
  source_workload: string;
  source_namespace: string;
  source_principal: string;
  destination_workload: string;
  destination_namespace: string;
  destination_service: string;
  destination_principal: string;
  protocol: string;
  mtls: boolean;
}

/** What one agent saw of one edge since its previous report (config.proto EdgeSummary). */
export interface EdgeSummary extends EdgeEnds {
  requests: number;
  errors: number;
  denials: number;
  /** Counts per bucket of the report's latency_bounds_ms, then the overflow bucket. */
  latency_counts: number[];
  latency_sum_ms: number;
  bytes_sent: number;
  bytes_received: number;
}

export interface TrafficReport {
  interval_ms: number;
  latency_bounds_ms: number[];
  edges: EdgeSummary[];
  dropped: number;
}

export interface TapFilter {
  namespace: string;
  from: string;
  to: string;
  path: string;
}

/** Controller -> agent: start (or renew) or stop a tap session. */
export interface TapControl {
  session: string;
  stop: boolean;
  filter: TapFilter | null;
  max_per_second: number;
  ttl_seconds: number;
}

/** One sampled request (metadata only). */
export interface TapEvent extends EdgeEnds {
  session: string;
  node: string;
  at: string;
  method: string;
  path: string;
  status: number;
  grpc_status: string;
  duration_ms: number;
  response_flags: string;
}

export type TrafficRequest = Record<string, never>;

export interface TrafficEdge {
  source: string;
  destination: string;
  destination_service: string;
  protocol: string;
  mtls: boolean;
  requests: number;
  errors: number;
  denials: number;
  rps: number;
  success_rate: number;
  p50_ms: number;
  p99_ms: number;
  bytes_sent: number;
  bytes_received: number;
  reporters: string[];
}

export interface TrafficWorkload {
  name: string;
  requests: number;
  errors: number;
  denials: number;
  rps: number;
  success_rate: number;
  p50_ms: number;
  p99_ms: number;
  outbound_rps: number;
  mtls: boolean;
}

export interface TrafficResponse {
  window_seconds: number;
  edges: TrafficEdge[];
  workloads: TrafficWorkload[];
  dropped: number;
  nodes: string[];
}

export interface TapRequest {
  filter: TapFilter | null;
  max_per_second: number;
  max_events: number;
  duration_seconds: number;
}

/** One resource: `json` is skein's mesh model (src/config/model.ts, src/config/policy-model.ts). */
export interface Resource {
  type: string;
  key: string;
  version: string;
  json: string;
}

export interface ResourceKey {
  type: string;
  key: string;
}

/** Controller -> agent: a full state, or a delta since what the agent last ACKed. */
export interface ConfigResponse {
  system_version: string;
  nonce: string;
  full_state: boolean;
  resources: Resource[];
  removed_resources: ResourceKey[];
  trust_domain: string;
  cluster_domain: string;
  controller_id: string;
  /** A tap session to start or stop: only on a response with no nonce, which carries no config. */
  tap?: TapControl | null;
  /** Root rotation signals: only on a response with no nonce. */
  identity?: IdentityControl | null;
}

export interface Refusal {
  object: string;
  origin: string;
  field: string;
  reason: string;
  code: string;
}

export interface AgentStatus {
  node: string;
  peer: string;
  connected_at: string;
  acked_version: string;
  acks: number;
  nacks: number;
  last_nack: string;
  resources: number;
  bytes_sent: number;
}

/** Whether the agents that must apply an accepted policy have ACKed its version. */
export interface PolicyStatus {
  object: string;
  version: string;
  needed_on: string[];
  enforced_on: string[];
  enforced: boolean;
  /** What the operator should know about how it is enforced (HTTP rules on TCP), or ''. */
  note: string;
}

/** An accepted route or BackendTrafficPolicy and the connected agents that ACKed its version. */
export interface TrafficStatus {
  object: string;
  version: string;
  acked_on: string[];
  agents: number;
}

export interface StatusResponse {
  controller_id: string;
  version: string;
  objects: number;
  resources: number;
  refusals: Refusal[];
  agents: AgentStatus[];
  leader: boolean;
  /** Accepted policies and whether they are enforced (empty from a controller older than the field). */
  policies: PolicyStatus[];
  /** Accepted routes and backend traffic policies (empty from a controller older than the field). */
  traffic?: TrafficStatus[];
}

export type StatusRequest = Record<string, never>;

let service: ServiceDefinition | undefined;

function configDiscovery(): ServiceDefinition {
  service ??= loadApiService('config.proto', 'skein.config.v1.ConfigDiscovery');
  return service;
}

/** The service definition, for `grpc.Server.addService` with ConfigDiscoveryHandlers. */
export function configDiscoveryService(): grpc.ServiceDefinition {
  return configDiscovery();
}

/** What the controller implements. */
export interface ConfigDiscoveryHandlers extends grpc.UntypedServiceImplementation {
  StreamConfig: grpc.handleBidiStreamingCall<ConfigRequest, ConfigResponse>;
  GetStatus: grpc.handleUnaryCall<StatusRequest, StatusResponse>;
  GetTraffic: grpc.handleUnaryCall<TrafficRequest, TrafficResponse>;
  Tap: grpc.handleServerStreamingCall<TapRequest, TapEvent>;
  GetCaStatus: grpc.handleUnaryCall<CaStatusRequest, CaStatus>;
  RotateCa: grpc.handleUnaryCall<RotateCaRequest, CaStatus>;
}

/** A typed client of ConfigDiscovery. */
export class ConfigDiscoveryClient extends grpc.Client {
  private readonly streamMethod: WireMethod<ConfigRequest, ConfigResponse> = wireMethod(configDiscovery(), 'StreamConfig');
  private readonly statusMethod: WireMethod<StatusRequest, StatusResponse> = wireMethod(configDiscovery(), 'GetStatus');
  private readonly trafficMethod: WireMethod<TrafficRequest, TrafficResponse> = wireMethod(configDiscovery(), 'GetTraffic');
  private readonly tapMethod: WireMethod<TapRequest, TapEvent> = wireMethod(configDiscovery(), 'Tap');
  private readonly caStatusMethod: WireMethod<CaStatusRequest, CaStatus> = wireMethod(configDiscovery(), 'GetCaStatus');
  private readonly rotateMethod: WireMethod<RotateCaRequest, CaStatus> = wireMethod(configDiscovery(), 'RotateCa');

  streamConfig(metadata: grpc.Metadata): grpc.ClientDuplexStream<ConfigRequest, ConfigResponse> {
    const m = this.streamMethod;
    return this.makeBidiStreamRequest(m.path, m.serialize, m.deserialize, metadata);
  }

  getStatus(metadata: grpc.Metadata, options: grpc.CallOptions): Promise<StatusResponse> {
    const m = this.statusMethod;
    return new Promise((resolve, reject) => {
      this.makeUnaryRequest(m.path, m.serialize, m.deserialize, {}, metadata, options, (err, res) => (err || !res ? reject(err) : resolve(res)));
    });
  }

  getTraffic(metadata: grpc.Metadata, options: grpc.CallOptions): Promise<TrafficResponse> {
    const m = this.trafficMethod;
    return new Promise((resolve, reject) => {
      this.makeUnaryRequest(m.path, m.serialize, m.deserialize, {}, metadata, options, (err, res) => (err || !res ? reject(err) : resolve(res)));
    });
  }

  getCaStatus(metadata: grpc.Metadata, options: grpc.CallOptions): Promise<CaStatus> {
    const m = this.caStatusMethod;
    return new Promise((resolve, reject) => {
      this.makeUnaryRequest(m.path, m.serialize, m.deserialize, {}, metadata, options, (err, res) => (err || !res ? reject(err) : resolve(res)));
    });
  }

  rotateCa(request: RotateCaRequest, metadata: grpc.Metadata, options: grpc.CallOptions): Promise<CaStatus> {
    const m = this.rotateMethod;
    return new Promise((resolve, reject) => {
      this.makeUnaryRequest(m.path, m.serialize, m.deserialize, request, metadata, options, (err, res) => (err || !res ? reject(err) : resolve(res)));
    });
  }

  tap(request: TapRequest, metadata: grpc.Metadata, options: grpc.CallOptions = {}): grpc.ClientReadableStream<TapEvent> {
    const m = this.tapMethod;
    return this.makeServerStreamRequest(m.path, m.serialize, m.deserialize, request, metadata, options);
  }
}
