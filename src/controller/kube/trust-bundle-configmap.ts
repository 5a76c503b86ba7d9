/**
 * Publishes the mesh CA's trust bundle (PEM roots) into a ConfigMap of the controller's
 * namespace, which the agent DaemonSet mounts as its `--ca-root-file`: an agent on a new node
 * needs the roots before it can reach the CA over TLS, and nothing else gives them to it.
 *
 * Written by the CA lease holder only (followers may hold a stale view of the CA state), on
 * start, on every change of the active authority, and on a resync timer: the resync repairs
 * a ConfigMap someone overwrote (a re-applied manifest) and catches roots added or retired
 * without an activation, so the ConfigMap follows the bundle within one resync period.
 */
import type { Logger } from '../../telemetry/log.js';
import { KubeApiError, type KubeClient } from './client.js';
import { KubeCode } from '../codes.js';

export const DEFAULT_TRUST_BUNDLE_CONFIGMAP = 'skein-trust-bundle';
/** The key agents mount as their --ca-root-file. */
export const TRUST_BUNDLE_KEY = 'ca.crt';
export const DEFAULT_TRUST_BUNDLE_RESYNC_MS = 30_000;

export interface TrustBundlePublisherOptions {
  client: KubeClient;
  namespace: string;
  name?: string;
  /** The bundle now (PEM blocks). */
  bundle: () => string[];
  /** Only the leader writes. */
  isLeader: () => boolean;
  resyncMs?: number;
  logger: Logger;
}

interface ConfigMap {
  metadata?: { resourceVersion?: string };
  data?: Record<string, string>;
}

export class TrustBundlePublisher {
  readonly name: string;
  private timer: NodeJS.Timeout | undefined;
  /** One write at a time; a request while one runs is folded into a rerun. */
  private running: Promise<void> | undefined;
  private again = false;
  /** Writes that changed the ConfigMap (tests and logs). */
  writes = 0;

  constructor(private readonly opts: TrustBundlePublisherOptions) {
    this.name = opts.name ?? DEFAULT_TRUST_BUNDLE_CONFIGMAP;
  }

  private path(name?: string): string {
    const base = `/api/v1/namespaces/${this.opts.namespace}/configmaps`;
    return name ? `${base}/${name}` : base;
  }

  /** Publishes now and then every resync period. */
  async start(): Promise<void> {
    await this.publish();
    this.timer = setInterval(() => void this.publish(), this.opts.resyncMs ?? DEFAULT_TRUST_BUNDLE_RESYNC_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Makes the ConfigMap hold the bundle (if this replica leads). Never throws: logs. */
  publish(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.publishOnce().catch((err: unknown) => {
          this.opts.logger.warn({ code: (err as { code?: string }).code ?? KubeCode.ApiRefused, err: String(err), configMap: this.name }, 'cannot publish the trust bundle');
        });
      } while (this.again);
    })().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async publishOnce(): Promise<void> {
    if (!this.opts.isLeader()) return;
    const pem = `${this.opts
      .bundle()
      .map((b) => b.trim())
      .join('\n')}\n`;
    let current: ConfigMap | undefined;
    try {
      current = await this.opts.client.request<ConfigMap>('GET', this.path(this.name));
    } catch (err) {
      if (!(err instanceof KubeApiError && err.status === 404)) throw err;
    }
    if (current?.data?.[TRUST_BUNDLE_KEY] === pem) return;
    const body = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name: this.name,
        namespace: this.opts.namespace,
        labels: { 'app.kubernetes.io/part-of': 'skein' },
        ...(current?.metadata?.resourceVersion ? { resourceVersion: current.metadata.resourceVersion } : {}),
      },
      // Keys other than ours (if an operator added any) are kept.
      data: { ...(current?.data ?? {}), [TRUST_BUNDLE_KEY]: pem },
    };
    // PUT with the resourceVersion read: a concurrent writer makes this 409, and the next
    // resync retries on fresh state.
    if (current) await this.opts.client.request('PUT', this.path(this.name), body);
    else await this.opts.client.request('POST', this.path(), body);
    this.writes++;
    this.opts.logger.info({ configMap: `${this.opts.namespace}/${this.name}`, roots: this.opts.bundle().length }, 'trust bundle published');
  }
}
