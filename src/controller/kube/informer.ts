/**
 * List + watch of one kind into the ObjectStore, the way a client-go informer works:
 * list (remembering the list's resourceVersion), replace what this kind declared, then
 * watch from that version. Bookmarks advance the version without changes; a watch the
 * server ends (timeout) or that drops is resumed from the last version seen, after a
 * backoff when it failed; 410 Gone (the version was compacted) means relist.
 *
 * The transport is @kubernetes/client-node (its Watch; lists through its HTTP stack). Its
 * own ListWatch is not used: in 1.x it stops for good on any watch error (the caller must
 * notice and restart it, with no backoff), asks for no bookmarks or server timeout, and
 * keeps a second cache of every object beside the ObjectStore.
 */
import { messageOf } from '../../errors.js';
import { type Logger, silentLogger } from '../../telemetry/log.js';
import type { KindInfo } from '../kinds.js';
import type { ObjectStore } from '../object-store.js';
import { KubeApiError, KubeClient, type WatchEvent, type WatchHandle } from './client.js';

export interface InformerOptions {
  /** Server-side watch timeout (s); the watch is then resumed. Default 300. */
  watchTimeoutSeconds?: number;
  backoffInitialMs?: number;
  backoffMaxMs?: number;
  logger?: Logger;
}

export interface InformerStats {
  lists: number;
  watches: number;
  events: number;
  bookmarks: number;
  gones: number;
  failures: number;
  resourceVersion: string;
}

export class Informer {
  readonly origin: string;
  readonly stats: InformerStats = { lists: 0, watches: 0, events: 0, bookmarks: 0, gones: 0, failures: 0, resourceVersion: '' };
  private running = false;
  private watchHandle: WatchHandle | undefined;
  private sleepTimer: NodeJS.Timeout | undefined;
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;
  private readonly log: Logger;
  private readonly path: string;
  private synced = false;

  constructor(
    private readonly client: KubeClient,
    private readonly kind: KindInfo,
    private readonly store: ObjectStore,
    private readonly opts: InformerOptions = {},
  ) {
    this.origin = `kube:${kind.plural}`;
    this.path = KubeClient.collectionPath(kind.apiVersion, kind.plural);
    this.log = (opts.logger ?? silentLogger()).child({ component: 'informer', resource: kind.plural });
  }

  /** True once a list succeeded. */
  get hasSynced(): boolean {
    return this.synced;
  }

  /** Starts; resolves after the first list attempt (success or failure). */
  start(): Promise<void> {
    this.running = true;
    return new Promise<void>((resolve) => {
      this.loop = this.run(resolve);
    });
  }

  async stop(): Promise<void> {
    this.running = false;
    this.watchHandle?.abort();
    if (this.sleepTimer) clearTimeout(this.sleepTimer);
    this.wake?.();
    await this.loop;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
      this.sleepTimer = setTimeout(resolve, ms);
    });
  }

  private withKind(o: Record<string, unknown>): Record<string, unknown> {
    // List items carry no apiVersion/kind; the objects the store keeps always do.
    if (o.apiVersion === this.kind.apiVersion && o.kind === this.kind.kind) return o;
    return { ...o, apiVersion: o.apiVersion ?? this.kind.apiVersion, kind: o.kind ?? this.kind.kind };
  }

  private async run(firstDone: () => void): Promise<void> {
    let failures = 0;
    const backoff = () => Math.min(this.opts.backoffMaxMs ?? 30_000, (this.opts.backoffInitialMs ?? 200) * 2 ** Math.min(failures++, 16));
    while (this.running) {
      // List.
      let rv: string;
      try {
        const { items, resourceVersion } = await this.client.list(this.path);
        this.stats.lists++;
        rv = resourceVersion;
        this.store.replaceOrigin(
          this.origin,
          items.map((o) => ({ obj: this.withKind(o), doc: 0 })),
        );
        this.synced = true;
        this.stats.resourceVersion = rv;
        failures = 0;
        this.log.debug({ items: items.length, resourceVersion: rv }, 'listed');
        firstDone();
      } catch (err) {
        this.stats.failures++;
        const status = err instanceof KubeApiError ? err.status : undefined;
        // A CRD not installed (404) is expected on clusters without it: retry slowly.
        this.log.warn({ err: messageOf(err), status }, 'list failed; retrying');
        firstDone();
        await this.sleep(status === 404 ? Math.max(backoff(), 10_000) : backoff());
        continue;
      }
      // Watch until it must relist.
      while (this.running) {
        this.stats.watches++;
        let progressed = false;
        const handle = this.client.watch(
          this.path,
          rv,
          (ev) => {
            progressed = true;
            rv = this.onEvent(ev) ?? rv;
            this.stats.resourceVersion = rv;
          },
          this.opts.watchTimeoutSeconds ?? 300,
        );
        this.watchHandle = handle;
        try {
          await handle.done;
          if (progressed) failures = 0;
          // Ended by the server (timeout) or dropped: resume from rv. Back off a little when
          // the watch carried nothing, so a server closing at once is not hammered.
          if (!progressed && this.running) await this.sleep(backoff());
        } catch (err) {
          if (err instanceof KubeApiError && err.status === 410) {
            this.stats.gones++;
            this.log.info({ resourceVersion: rv }, 'watch expired (410 Gone); relisting');
            break;
          }
          this.stats.failures++;
          this.log.warn({ err: messageOf(err) }, 'watch failed; resuming after backoff');
          if (this.running) await this.sleep(backoff());
        }
      }
    }
  }

  private onEvent(ev: WatchEvent): string | undefined {
    const rv = (ev.object.metadata as { resourceVersion?: string } | undefined)?.resourceVersion;
    switch (ev.type) {
      case 'BOOKMARK':
        this.stats.bookmarks++;
        return rv;
      case 'ADDED':
      case 'MODIFIED':
        this.stats.events++;
        this.store.upsert(this.origin, this.withKind(ev.object));
        return rv;
      case 'DELETED':
        this.stats.events++;
        this.store.remove(this.origin, this.withKind(ev.object));
        return rv;
      default:
        return undefined;
    }
  }
}
