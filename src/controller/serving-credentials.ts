/**
 * TLS credentials for the config stream whose certificate can be replaced while serving:
 * issued by the hosted CA's active authority, re-issued at half-life and when the CA
 * switches roots (agents then verify it against the new bundle).
 */
import * as grpc from '@grpc/grpc-js';
import { messageOf } from '../errors.js';
import type { CertificateAuthority } from '../identity/ca/ca.js';
import { type Logger, silentLogger } from '../telemetry/log.js';

type Provider = grpc.experimental.CertificateProvider;
type IdentityListener = grpc.experimental.IdentityCertificateUpdateListener;
type CaListener = grpc.experimental.CaCertificateUpdateListener;

class RotatingProvider implements Provider {
  identity: { certificate: Buffer; privateKey: Buffer } | null = null;
  ca: { caCertificate: Buffer } | null = null;
  private readonly ids = new Set<IdentityListener>();
  private readonly cas = new Set<CaListener>();

  set(certChainPem: string, keyPem: string, rootsPem: string[]): void {
    this.identity = { certificate: Buffer.from(certChainPem), privateKey: Buffer.from(keyPem) };
    this.ca = { caCertificate: Buffer.from(rootsPem.join('')) };
    for (const l of this.cas) l(this.ca);
    for (const l of this.ids) l(this.identity);
  }
  addIdentityCertificateListener(l: IdentityListener): void {
    this.ids.add(l);
    // grpc-js registers before it can take the first value: deliver on a later tick.
    queueMicrotask(() => this.ids.has(l) && this.identity && l(this.identity));
  }
  removeIdentityCertificateListener(l: IdentityListener): void {
    this.ids.delete(l);
  }
  addCaCertificateListener(l: CaListener): void {
    this.cas.add(l);
    queueMicrotask(() => this.cas.has(l) && this.ca && l(this.ca));
  }
  removeCaCertificateListener(l: CaListener): void {
    this.cas.delete(l);
  }
}

export class ConfigServingCredentials {
  readonly credentials: grpc.ServerCredentials;
  private readonly provider = new RotatingProvider();
  private timer: NodeJS.Timeout | undefined;
  private readonly log: Logger;
  private readonly onActive = () => void this.refresh().catch((err) => this.log.error({ err: messageOf(err) }, 'config serving certificate re-issue failed'));

  constructor(
    private readonly ca: CertificateAuthority,
    private readonly sans: string[],
    private readonly ttlSeconds = 30 * 24 * 3600,
    logger?: Logger,
  ) {
    this.log = (logger ?? silentLogger()).child({ component: 'config-tls' });
    // Client certificates are not requested: agents authenticate with their bearer token.
    this.credentials = grpc.experimental.createCertificateProviderServerCredentials(this.provider, this.provider, false);
  }

  async start(): Promise<void> {
    await this.refresh();
    this.ca.on('activeChanged', this.onActive);
  }

  stop(): void {
    this.ca.off('activeChanged', this.onActive);
    if (this.timer) clearTimeout(this.timer);
  }

  async refresh(): Promise<void> {
    const serving = await this.ca.activeAuthority().issueServingCertificate({ sans: this.sans, ttlSeconds: this.ttlSeconds });
    this.provider.set(serving.certChainPem, serving.privateKeyPem, this.ca.trustBundlePem());
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(this.onActive, Math.min((this.ttlSeconds * 1000) / 2, 2 ** 31 - 1));
    this.timer.unref();
    this.log.info({ sans: this.sans, ttlSeconds: this.ttlSeconds }, 'config serving certificate issued');
  }
}
