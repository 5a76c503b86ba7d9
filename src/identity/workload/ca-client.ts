import * as grpc from '@grpc/grpc-js';
import { CertificateServiceClient, type CreateCertificateResponse, type GetTrustBundleResponse } from '../../api/ca-wire.js';
import { SkeinError } from '../../errors.js';
import { IdentityCode } from '../codes.js';
import { fromServiceError } from '../grpc-status.js';

/** What a CertificateStore needs from the CA (the gRPC client, or a fake in tests). */
export interface CertificateIssuer {
  issue(req: { csrPem: string; ttlSeconds: number }, signal?: AbortSignal): Promise<IssuerResponse>;
  fetchTrustBundle(signal?: AbortSignal): Promise<string[]>;
  /** The store calls this when its trust bundle changes (the CA's serving cert chains to it). */
  updateTrust?(rootsPem: string[]): void;
}

export interface IssuerResponse {
  /** Leaf first, roots last. */
  certChainPem: string[];
  trustBundlePem: string[];
  ttlSeconds: number;
}

export interface CaClientOptions {
  /** host:port of the CA. */
  address: string;
  /** Roots the CA's serving certificate chains to (bootstrap trust; updated with the bundle). */
  rootsPem: string[];
  /** Bearer token (bootstrap token, or the projected SA token: a function, it rotates). */
  token: string | (() => string | Promise<string>);
  /** TLS name to verify the CA's certificate against, when it differs from the dialled host. */
  serverName?: string;
  /** Deadline of each call. Default 10 s. */
  deadlineMs?: number;
}

/**
 * The agent's client of the mesh CA: gRPC over TLS (server verified against the trust
 * bundle), bearer token per call, a deadline on every call, cancellation by AbortSignal.
 * Errors are SkeinErrors with the CA's skein code (details.permanent for refusals).
 */
export class CaClient implements CertificateIssuer {
  private stub: CertificateServiceClient;
  private rootsKey: string;

  constructor(private readonly opts: CaClientOptions) {
    this.rootsKey = opts.rootsPem.join('');
    this.stub = this.makeStub(opts.rootsPem);
  }

  private makeStub(rootsPem: string[]): CertificateServiceClient {
    const creds = grpc.credentials.createSsl(Buffer.from(rootsPem.join('')));
    // The certificate store owns the retry policy (backoff that closes in as expiry nears).
    // grpc-js's own reconnect backoff grows to 120 s and fails calls at once meanwhile, so
    // after a long CA outage renewals kept failing for up to two minutes after the CA was
    // back and certificates lapsed (found by the CA-down reliability test, 279 s outage):
    // reconnect within a second of any attempt instead.
    const options: grpc.ChannelOptions = {
      'grpc.initial_reconnect_backoff_ms': 250,
      'grpc.max_reconnect_backoff_ms': 1000,
      ...(this.opts.serverName ? { 'grpc.ssl_target_name_override': this.opts.serverName } : {}),
    };
    return new CertificateServiceClient(this.opts.address, creds, options);
  }

  /** Trust a new set of roots for the CA's serving certificate (a new channel; the old one drains). */
  updateTrust(rootsPem: string[]): void {
    const key = rootsPem.join('');
    if (key === this.rootsKey || rootsPem.length === 0) return;
    const old = this.stub;
    this.rootsKey = key;
    this.stub = this.makeStub(rootsPem);
    // Calls already on the old channel keep their deadline; close it after that.
    setTimeout(() => old.close(), this.opts.deadlineMs ?? 10_000).unref();
  }

  async issue(req: { csrPem: string; ttlSeconds: number }, signal?: AbortSignal): Promise<IssuerResponse> {
    const request = { csr: req.csrPem, validity_seconds: req.ttlSeconds };
    const res = await this.call<CreateCertificateResponse>(signal, (md, options, done) => this.stub.createCertificate(request, md, options, done));
    return { certChainPem: res.cert_chain, trustBundlePem: res.trust_bundle, ttlSeconds: Number(res.validity_seconds) };
  }

  async fetchTrustBundle(signal?: AbortSignal): Promise<string[]> {
    const res = await this.call<GetTrustBundleResponse>(signal, (md, options, done) => this.stub.getTrustBundle(md, options, done));
    return res.trust_bundle;
  }

  close(): void {
    this.stub.close();
  }

  /** One call with the bearer token, the deadline, cancellation by `signal`, and CA errors as SkeinErrors. */
  private async call<Response>(
    signal: AbortSignal | undefined,
    start: (md: grpc.Metadata, options: grpc.CallOptions, done: grpc.requestCallback<Response>) => grpc.ClientUnaryCall,
  ): Promise<Response> {
    if (signal?.aborted) throw new SkeinError(IdentityCode.IssuanceAborted, 'CA call aborted before it started');
    const token = typeof this.opts.token === 'function' ? await this.opts.token() : this.opts.token;
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${token}`);
    const deadline = new Date(Date.now() + (this.opts.deadlineMs ?? 10_000));
    return new Promise((resolve, reject) => {
      const call = start(md, { deadline }, (err, res) => {
        signal?.removeEventListener('abort', onAbort);
        if (err || res === undefined) reject(fromServiceError(err ?? new Error('CA sent no response')));
        else resolve(res);
      });
      const onAbort = () => call.cancel();
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
