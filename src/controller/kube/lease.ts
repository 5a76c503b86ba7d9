/**
 * Leader election over a coordination.k8s.io/v1 Lease. Only the leader performs the CA's
 * writes (generating and persisting the root); every replica serves config streams and
 * the CA's signing with the persisted root. Optimistic concurrency (resourceVersion on
 * update) makes two replicas unable to both take the lease.
 */
import { EventEmitter } from 'node:events';
import { messageOf } from '../../errors.js';
import { type Logger, silentLogger } from '../../telemetry/log.js';
import { KubeApiError, type KubeClient } from './client.js';

export interface LeaseElectorOptions {
  client: KubeClient;
  namespace: string;
  /** Lease name. Default skein-controller-ca. */
  name?: string;
  /** This replica's identity (pod name). */
  identity: string;
  /** Lease validity (s). Default 15. */
  leaseDurationSeconds?: number;
  /** How often the leader renews / a follower retries (ms). Default 5000. */
  retryPeriodMs?: number;
  now?: () => Date;
  logger?: Logger;
}

interface LeaseObject {
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: { holderIdentity?: string; leaseDurationSeconds?: number; acquireTime?: string; renewTime?: string; leaseTransitions?: number };
}

/** Micro-second RFC3339, as Lease times are written. */
function microTime(d: Date): string {
  return d.toISOString().replace(/Z$/, '000Z');
}

/** Events: 'leading', 'following' (holder identity). */
export class LeaseElector extends EventEmitter {
  private leading = false;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private readonly log: Logger;
  private readonly name: string;
  private readonly now: () => Date;
  holder = '';

  constructor(private readonly opts: LeaseElectorOptions) {
    super();
    this.name = opts.name ?? 'skein-controller-ca';
    this.now = opts.now ?? (() => new Date());
    this.log = (opts.logger ?? silentLogger()).child({ component: 'lease', lease: this.name, identity: opts.identity });
  }

  isLeader(): boolean {
    return this.leading;
  }

  /** Starts trying; resolves after the first attempt. */
  async start(): Promise<void> {
    this.running = true;
    await this.tick();
  }

  /** Stops renewing; a leader releases the lease so another replica takes over at once. */
  async stop(): Promise<void> {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    if (this.leading) {
      try {
        const lease = await this.get();
        if (lease && lease.spec.holderIdentity === this.opts.identity) {
          lease.spec.holderIdentity = '';
          lease.spec.renewTime = microTime(new Date(0));
          await this.opts.client.request('PUT', this.path(this.name), lease);
        }
      } catch (err) {
        this.log.warn({ err: messageOf(err) }, 'lease release failed; it will expire');
      }
      this.setLeading(false, '');
    }
  }

  private path(name?: string): string {
    const base = `/apis/coordination.k8s.io/v1/namespaces/${this.opts.namespace}/leases`;
    return name ? `${base}/${name}` : base;
  }

  private async get(): Promise<LeaseObject | undefined> {
    try {
      return await this.opts.client.request<LeaseObject>('GET', this.path(this.name));
    } catch (err) {
      if (err instanceof KubeApiError && err.status === 404) return undefined;
      throw err;
    }
  }

  private setLeading(leading: boolean, holder: string): void {
    this.holder = holder;
    if (leading === this.leading) return;
    this.leading = leading;
    this.log.info({ holder }, leading ? 'became leader' : 'lost leadership');
    this.emit(leading ? 'leading' : 'following', holder);
  }

  /** One acquire/renew attempt. */
  async tick(): Promise<void> {
    const duration = this.opts.leaseDurationSeconds ?? 15;
    try {
      const now = this.now();
      const lease = await this.get();
      const spec = { holderIdentity: this.opts.identity, leaseDurationSeconds: duration, renewTime: microTime(now) };
      if (!lease) {
        await this.opts.client.request('POST', this.path(), {
          apiVersion: 'coordination.k8s.io/v1',
          kind: 'Lease',
          metadata: { name: this.name, namespace: this.opts.namespace },
          spec: { ...spec, acquireTime: microTime(now), leaseTransitions: 0 },
        });
        this.setLeading(true, this.opts.identity);
      } else {
        const holder = lease.spec.holderIdentity ?? '';
        const renewed = Date.parse(lease.spec.renewTime ?? '') || 0;
        const expired = holder === '' || renewed + (lease.spec.leaseDurationSeconds ?? duration) * 1000 < now.getTime();
        if (holder === this.opts.identity || expired) {
          const takeover = holder !== this.opts.identity;
          await this.opts.client.request('PUT', this.path(this.name), {
            ...lease,
            spec: {
              ...lease.spec,
              ...spec,
              ...(takeover ? { acquireTime: microTime(now), leaseTransitions: (lease.spec.leaseTransitions ?? 0) + 1 } : {}),
            },
          });
          this.setLeading(true, this.opts.identity);
        } else this.setLeading(false, holder);
      }
    } catch (err) {
      // 409: another replica wrote first. Anything else: we cannot prove we still lead.
      if (!(err instanceof KubeApiError && err.status === 409)) this.log.warn({ err: messageOf(err) }, 'lease attempt failed');
      this.setLeading(false, this.holder === this.opts.identity ? '' : this.holder);
    }
    if (this.running) {
      this.timer = setTimeout(() => void this.tick(), this.opts.retryPeriodMs ?? 5000);
      this.timer.unref();
    }
  }
}
