import * as grpc from '@grpc/grpc-js';
type CertificateProvider = grpc.experimental.CertificateProvider;
type CaCertificateUpdateListener = grpc.experimental.CaCertificateUpdateListener;
type IdentityCertificateUpdateListener = grpc.experimental.IdentityCertificateUpdateListener;
import { messageOf, SkeinError } from '../../errors.js';
import { type Logger, silentLogger } from '../../telemetry/log.js';
import { bearerTokenOf, type Authenticator } from './authn.js';
import type { CertificateAuthority } from './ca.js';
import { IdentityCode } from '../codes.js';
import { toServiceError } from '../grpc-status.js';
import type { NodeAuthorizer } from './node-authorizer.js';
import { type CertificateServiceHandlers, certificateServiceDefinition, type CreateCertificateRequest, type CreateCertificateResponse } from '../../api/ca-wire.js';
import { shutdownGrpcServer } from '../../api/grpc-shutdown.js';

/** Istio's istiod serves its CA on 15012; skein uses the same number. */
export const DEFAULT_CA_PORT = 15012;

export interface CaServerOptions {
  ca: CertificateAuthority;
  authenticator: Authenticator;
  authorizer: NodeAuthorizer;
  /** host:port to listen on; default 0.0.0.0:15012. Port 0 picks a free one. */
  address?: string;
  /** DNS names / IPs of the CA's serving certificate (what agents dial). */
  servingSans?: string[];
  /** Serving certificate lifetime; it is re-issued at half-life and on a root switch. */
  servingTtlSeconds?: number;
  logger?: Logger;
}

export const DEFAULT_SERVING_SANS = ['skein-controller', 'skein-controller.skein-system.svc', 'localhost', '127.0.0.1', '::1'];

/**
 * Hands grpc-js the CA's serving certificate and lets us swap it without restarting the
 * server (root rotation, renewal). Passed as both the identity and the CA provider: the
 * "CA" side then only lists our roots (client certificates are not required).
 */
class ServingCertificateProvider implements CertificateProvider {
  private identity: { certificate: Buffer; privateKey: Buffer } | null = null;
  private ca: { caCertificate: Buffer } | null = null;
  private readonly identityListeners = new Set<IdentityCertificateUpdateListener>();
  private readonly caListeners = new Set<CaCertificateUpdateListener>();

  update(certChainPem: string, privateKeyPem: string, rootsPem: string[]): void {
    this.identity = { certificate: Buffer.from(certChainPem), privateKey: Buffer.from(privateKeyPem) };
    this.ca = { caCertificate: Buffer.from(rootsPem.join('')) };
    for (const l of this.caListeners) l(this.ca);
    for (const l of this.identityListeners) l(this.identity);
  }
  addCaCertificateListener(l: CaCertificateUpdateListener): void {
    this.caListeners.add(l);
    // Deliver on a later tick: grpc-js registers its own watcher only after adding us.
    queueMicrotask(() => this.caListeners.has(l) && this.ca && l(this.ca));
  }
  removeCaCertificateListener(l: CaCertificateUpdateListener): void {
    this.caListeners.delete(l);
  }
  addIdentityCertificateListener(l: IdentityCertificateUpdateListener): void {
    this.identityListeners.add(l);
    queueMicrotask(() => this.identityListeners.has(l) && this.identity && l(this.identity));
  }
  removeIdentityCertificateListener(l: IdentityCertificateUpdateListener): void {
    this.identityListeners.delete(l);
  }
}

/**
 * The mesh CA's gRPC endpoint (skein.ca.v1.CertificateService) over TLS. Every call is
 * authenticated (bearer token -> node), every identity authorized for that node, every
 * refusal answered with a precise status + skein code, logged and counted.
 */
export class CaServer {
  // A CSR is under 16 KiB: refuse anything much larger before parsing it.
  private readonly server = new grpc.Server({ 'grpc.max_receive_message_length': 64 * 1024 });
  private readonly provider = new ServingCertificateProvider();
  private readonly log: Logger;
  private renewTimer: NodeJS.Timeout | undefined;
  private boundPort: number | undefined;
  private readonly onActiveChanged = () => {
    this.refreshServingCertificate().catch((err) => this.log.error({ err: messageOf(err) }, 'CA serving certificate re-issue failed'));
  };

  constructor(private readonly opts: CaServerOptions) {
    this.log = (opts.logger ?? silentLogger()).child({ component: 'ca-server' });
    const handlers: CertificateServiceHandlers = {
      CreateCertificate: (call, cb) => {
        this.createCertificate(call).then(
          (res) => cb(null, res),
          (err) => cb(toServiceError(err)),
        );
      },
      GetTrustBundle: (call, cb) => {
        this.authenticate(call).then(
          () => cb(null, { trust_bundle: this.opts.ca.trustBundlePem() }),
          (err) => cb(toServiceError(err)),
        );
      },
    };
    this.server.addService(certificateServiceDefinition(), handlers);
  }

  /** The port actually bound (after `start`). */
  get port(): number {
    if (this.boundPort === undefined) throw new Error('CA server not started');
    return this.boundPort;
  }

  /** Issues the serving certificate and listens. Resolves with the bound port. */
  async start(): Promise<number> {
    await this.refreshServingCertificate();
    this.opts.ca.on('activeChanged', this.onActiveChanged);
    const creds = grpc.experimental.createCertificateProviderServerCredentials(this.provider, this.provider, false);
    const address = this.opts.address ?? `0.0.0.0:${DEFAULT_CA_PORT}`;
    this.boundPort = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(address, creds, (err, port) => (err ? reject(err) : resolve(port))),
    );
    this.log.info({ address, port: this.boundPort }, 'CA gRPC server listening');
    return this.boundPort;
  }

  /** Stops accepting calls; in-flight calls get `graceMs` to finish. */
  async stop(graceMs = 2000): Promise<void> {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.opts.ca.off('activeChanged', this.onActiveChanged);
    await shutdownGrpcServer(this.server, graceMs);
  }

  /** Re-issues the serving certificate from the active authority (also done on a root switch). */
  async refreshServingCertificate(): Promise<void> {
    const ttl = this.opts.servingTtlSeconds ?? 30 * 24 * 3600;
    const serving = await this.opts.ca.activeAuthority().issueServingCertificate({ sans: this.opts.servingSans ?? DEFAULT_SERVING_SANS, ttlSeconds: ttl });
    this.provider.update(serving.certChainPem, serving.privateKeyPem, this.opts.ca.trustBundlePem());
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.renewTimer = setTimeout(this.onActiveChanged, Math.min((ttl * 1000) / 2, 2 ** 31 - 1));
    this.renewTimer.unref();
    this.log.info({ authority: this.opts.ca.activeAuthority().id, ttlSeconds: ttl }, 'CA serving certificate issued');
  }

  private async authenticate(call: grpc.ServerUnaryCall<unknown, unknown>) {
    const auth = call.metadata.get('authorization')[0];
    const peer = call.getPeer();
    try {
      return await this.opts.authenticator.authenticate({ bearerToken: bearerTokenOf(typeof auth === 'string' ? auth : undefined), peer });
    } catch (err) {
      this.opts.ca.refused(err, { peer, stage: 'authenticate' });
      throw err;
    }
  }

  private async createCertificate(call: grpc.ServerUnaryCall<CreateCertificateRequest, CreateCertificateResponse>): Promise<CreateCertificateResponse> {
    const caller = await this.authenticate(call);
    const peer = call.getPeer();
    const issued = await this.opts.ca.issue(call.request.csr, Number(call.request.validity_seconds) || 0, {
      context: { node: caller.node, authn: caller.method, peer },
      authorize: async (identity) => {
        if (!(await this.opts.authorizer.mayIssue(caller.node, identity))) {
          throw new SkeinError(IdentityCode.NodeNotAuthorized, `node ${caller.node} runs no pod with identity ${identity}`, {
            node: caller.node,
            identity,
          });
        }
      },
    });
    return { cert_chain: issued.certChainPem, trust_bundle: issued.trustBundlePem, validity_seconds: issued.ttlSeconds };
  }
}
