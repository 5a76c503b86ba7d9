/**
 * The wire types of skein.ca.v1.CertificateService (ca.proto), written once for both ends:
 * the agent's CaClient and the controller's CaServer. Field names are the .proto's
 * (snake_case); int64 fields arrive as numbers. Keep this file in step with ca.proto.
 */
import * as grpc from '@grpc/grpc-js';
import type { ServiceDefinition } from '@grpc/proto-loader';
import { loadApiService, type WireMethod, wireMethod } from './proto.js';

export interface CreateCertificateRequest {
  /** PEM PKCS#10 CSR. */
  csr: string;
  /** 0 = the CA's default. */
  validity_seconds: number;
}

export interface CreateCertificateResponse {
  /** Leaf first, the signing root last. */
  cert_chain: string[];
  trust_bundle: string[];
  validity_seconds: number;
}

export type GetTrustBundleRequest = Record<string, never>;

export interface GetTrustBundleResponse {
  trust_bundle: string[];
}

let service: ServiceDefinition | undefined;

function certificateService(): ServiceDefinition {
  service ??= loadApiService('ca.proto', 'skein.ca.v1.CertificateService');
  return service;
}

/** The service definition, for `grpc.Server.addService` with CertificateServiceHandlers. */
export function certificateServiceDefinition(): grpc.ServiceDefinition {
  return certificateService();
}

/** What the CA implements. */
export interface CertificateServiceHandlers extends grpc.UntypedServiceImplementation {
  CreateCertificate: grpc.handleUnaryCall<CreateCertificateRequest, CreateCertificateResponse>;
  GetTrustBundle: grpc.handleUnaryCall<GetTrustBundleRequest, GetTrustBundleResponse>;
}

/** A typed client of CertificateService. */
export class CertificateServiceClient extends grpc.Client {
  private readonly createMethod: WireMethod<CreateCertificateRequest, CreateCertificateResponse> = wireMethod(certificateService(), 'CreateCertificate');
  private readonly bundleMethod: WireMethod<GetTrustBundleRequest, GetTrustBundleResponse> = wireMethod(certificateService(), 'GetTrustBundle');

  createCertificate(
    request: CreateCertificateRequest,
    metadata: grpc.Metadata,
    options: grpc.CallOptions,
    callback: grpc.requestCallback<CreateCertificateResponse>,
  ): grpc.ClientUnaryCall {
    const m = this.createMethod;
    return this.makeUnaryRequest(m.path, m.serialize, m.deserialize, request, metadata, options, callback);
  }

  getTrustBundle(metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<GetTrustBundleResponse>): grpc.ClientUnaryCall {
    const m = this.bundleMethod;
    return this.makeUnaryRequest(m.path, m.serialize, m.deserialize, {}, metadata, options, callback);
  }
}
