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
}

/** A typed client of ConfigDiscovery. */
export class ConfigDiscoveryClient extends grpc.Client {
  private readonly streamMethod: WireMethod<ConfigRequest, ConfigResponse> = wireMethod(configDiscovery(), 'StreamConfig');
  private readonly statusMethod: WireMethod<StatusRequest, StatusResponse> = wireMethod(configDiscovery(), 'GetStatus');

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
}
