/**
 * Leader election over a coordination.k8s.io/v1 Lease. Only the leader performs the CA's
 * writes (generating and persisting the root); every replica serves config streams and
 * the CA's signing with the persisted root. Optimistic concurrency (resourceVersion on
 * update) makes two replicas unable to both take the lease.
 */
import { EventEmitter } from 'node:events';
import { type V1Lease, V1MicroTime } from '@kubernetes/client-node';
import { messageOf } from '../../errors.js';
import { type Logger, silentLogger } from '../../telemetry/log.js';
import { KubeApiError, type KubeClient, kubeErrorOf } from './client.js';

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

/** Micro-second RFC3339, as Lease times are written (the library's MicroTime serialises so). */
function microTime(d: Date): V1MicroTime {
  return new V1MicroTime(d.getTime());
}

/** A Lease time as read: the library hands MicroTime fields over as the server's string. */
function timeOf(t: unknown): number {
  return t instanceof Date ? t.getTime() : Date.parse(String(t ?? '')) || 0;
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
        if (lease?.spec && lease.spec.holderIdentity === this.opts.identity) {
          lease.spec.holderIdentity = '';
          lease.spec.renewTime = microTime(new Date(0));
          await this.replace(lease);
        }
      } catch (err) {
        this.log.warn({ err: messageOf(err) }, 'lease release failed; it will expire');
      }
      this.setLeading(false, '');
    }
  }

  private async get(): Promise<V1Lease | undefined> {
    const { client, namespace } = this.opts;
    try {
      return await client.coordination.readNamespacedLease({ name: this.name, namespace }, client.options());
    } catch (err) {
      const e = kubeErrorOf(`read lease ${namespace}/${this.name}`, err);
      if (e.status === 404) return undefined;
      throw e;
    }
  }

  /** PUT with the resourceVersion read: a 409 when another replica wrote in between. */
  private async replace(body: V1Lease): Promise<void> {
    const { client, namespace } = this.opts;
    try {
      await client.coordination.replaceNamespacedLease({ name: this.name, namespace, body }, client.options());
    } catch (err) {
      throw kubeErrorOf(`replace lease ${namespace}/${this.name}`, err);
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
        const { client, namespace } = this.opts;
        await client.coordination
          .createNamespacedLease(
            {
              namespace,
              body: {
                apiVersion: 'coordination.k8s.io/v1',
                kind: 'Lease',
                metadata: { name: this.name, namespace },
                spec: { ...spec, acquireTime: microTime(now), leaseTransitions: 0 },
              },
            },
            client.options(),
          )
          .catch((err: unknown) => {
            throw kubeErrorOf(`create lease ${namespace}/${this.name}`, err);
          });
        this.setLeading(true, this.opts.identity);
      } else {
        const cur = lease.spec ?? {};
        const holder = cur.holderIdentity ?? '';
        const renewed = timeOf(cur.renewTime);
        const expired = holder === '' || renewed + (cur.leaseDurationSeconds ?? duration) * 1000 < now.getTime();
        if (holder === this.opts.identity || expired) {
          const takeover = holder !== this.opts.identity;
          await this.replace({
            ...lease,
            spec: {
              ...cur,
              ...spec,
              ...(takeover ? { acquireTime: microTime(now), leaseTransitions: (cur.leaseTransitions ?? 0) + 1 } : {}),
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
