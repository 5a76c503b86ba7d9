/**
 * Makes refusals visible where Kubernetes operators look: a status condition on skein's
 * own objects and on routes (Accepted=False with the field and reason; Accepted=True once
 * fixed), and a Warning Event for built-in kinds (Pods, Services...) whose status skein
 * does not own. The reporter diffs the index's refusals after each rebuild so each change
 * is written once.
 */
import { messageOf } from '../../errors.js';
import { type Logger, silentLogger } from '../../telemetry/log.js';
import { kindInfo } from '../kinds.js';
import type { MeshIndex } from '../mesh-index.js';
import type { Refusal } from '../resources.js';
import type { ObjectStore } from '../object-store.js';
import { KubeClient } from './client.js';

export const SKEIN_CONTROLLER_NAME = 'skein.io/controller';

/** A reference to the object a status is about. */
export interface ObjectRef {
  apiVersion: string;
  kind: string;
  namespace: string;
  name: string;
  uid?: string;
  generation?: number;
}

export interface Condition {
  type: 'Accepted' | 'Enforced';
  status: 'True' | 'False';
  reason: string;
  message: string;
}

/** Where conditions and events are written (Kubernetes; a fake in tests). */
export interface StatusWriter {
  setCondition(ref: ObjectRef, cond: Condition): Promise<void>;
  event(ref: ObjectRef, ev: { type: 'Warning' | 'Normal'; reason: string; message: string }): Promise<void>;
}

function refOf(store: ObjectStore, key: string): ObjectRef | undefined {
  const o = store.get(key);
  if (!o) return undefined;
  const m = (o.obj.metadata ?? {}) as { name?: string; uid?: string; generation?: number };
  return {
    apiVersion: String(o.obj.apiVersion),
    kind: String(o.obj.kind),
    namespace: o.namespace,
    name: String(m.name),
    ...(m.uid ? { uid: m.uid } : {}),
    ...(m.generation !== undefined ? { generation: m.generation } : {}),
  };
}

/** Status conditions are ours to write on skein CRDs and Gateway API routes only. */
function ownsStatus(ref: ObjectRef): boolean {
  const info = kindInfo(ref.apiVersion, ref.kind);
  return Boolean(info?.crd) || ref.apiVersion.startsWith('gateway.networking.k8s.io/');
}

export class StatusReporter {
  private last = new Map<string, string>();
  /** Enforced condition last written per policy object key. */
  private lastEnforced = new Map<string, string>();
  private readonly log: Logger;
  private unsubscribe: (() => void) | undefined;
  private chain: Promise<void> = Promise.resolve();
  writes = 0;

  constructor(
    private readonly index: MeshIndex,
    private readonly store: ObjectStore,
    private readonly writer: StatusWriter,
    logger?: Logger,
  ) {
    this.log = (logger ?? silentLogger()).child({ component: 'status-reporter' });
  }

  start(): void {
    this.unsubscribe = this.index.onUpdate(() => this.report());
    this.report();
  }

  stop(): Promise<void> {
    this.unsubscribe?.();
    return this.chain;
  }

  /**
   * The `Enforced` condition of each accepted policy: True once every agent that must apply it
   * ACKed its version, False (Pending, naming the nodes) until then. Called periodically with
   * the config server's view; only changes are written.
   */
  reportEnforcement(policies: readonly { object: string; needed_on: string[]; enforced_on: string[]; enforced: boolean; note?: string }[]): void {
    for (const p of policies) {
      const key = `security.skein.io/${p.object}`;
      const pending = p.needed_on.filter((n) => !p.enforced_on.includes(n));
      const cond: Condition =
        p.needed_on.length === 0
          ? { type: 'Enforced', status: 'False', reason: 'NoWorkload', message: 'no connected agent runs a pod it applies to' }
          : p.enforced
            ? { type: 'Enforced', status: 'True', reason: 'Enforced', message: `applied by the agents of ${p.needed_on.join(', ')}${p.note ? `; ${p.note}` : ''}` }
            : { type: 'Enforced', status: 'False', reason: 'Pending', message: `not yet applied on ${pending.join(', ')}` };
      const text = `${cond.status}|${cond.message}`;
      if (this.lastEnforced.get(key) === text) continue;
      const ref = refOf(this.store, key);
      if (!ref || !ownsStatus(ref)) continue;
      this.lastEnforced.set(key, text);
      this.chain = this.chain.then(async () => {
        try {
          await this.writer.setCondition(ref, cond);
          this.writes++;
        } catch (err) {
          this.log.warn({ err: messageOf(err) }, 'status write failed');
        }
      });
    }
  }

  /** Waits for the writes queued so far. */
  idle(): Promise<void> {
    return this.chain;
  }

  report(): void {
    const now = new Map<string, Refusal>();
    for (const r of this.index.refusals()) if (!now.has(r.key)) now.set(r.key, r);
    const tasks: (() => Promise<void>)[] = [];
    for (const [key, r] of now) {
      const text = `${r.field}: ${r.reason}`;
      if (this.last.get(key) === text) continue;
      const ref = refOf(this.store, key);
      if (!ref) continue;
      tasks.push(() =>
        ownsStatus(ref)
          ? this.writer.setCondition(ref, { type: 'Accepted', status: 'False', reason: 'Invalid', message: text })
          : this.writer.event(ref, { type: 'Warning', reason: 'SkeinRefused', message: text }),
      );
    }
    for (const key of this.last.keys()) {
      if (now.has(key)) continue;
      const ref = refOf(this.store, key);
      if (ref && ownsStatus(ref)) {
        tasks.push(() => this.writer.setCondition(ref, { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'served to agents' }));
      }
    }
    this.last = new Map([...now].map(([k, r]) => [k, `${r.field}: ${r.reason}`]));
    for (const task of tasks) {
      this.chain = this.chain.then(async () => {
        try {
          await task();
          this.writes++;
        } catch (err) {
          this.log.warn({ err: messageOf(err) }, 'status write failed');
        }
      });
    }
  }
}

/** StatusWriter over the Kubernetes API: merge-patches `/status`, creates core/v1 Events. */
export class KubeStatusWriter implements StatusWriter {
  constructor(
    private readonly client: KubeClient,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async setCondition(ref: ObjectRef, cond: Condition): Promise<void> {
    const info = kindInfo(ref.apiVersion, ref.kind);
    if (!info) return;
    const condition = {
      ...cond,
      lastTransitionTime: this.now().toISOString().replace(/\.\d+Z$/, 'Z'),
      ...(ref.generation !== undefined ? { observedGeneration: ref.generation } : {}),
    };
    const object = `${KubeClient.collectionPath(ref.apiVersion, info.plural, ref.namespace)}/${ref.name}`;
    // Gateway API routes report per parent; skein's kinds carry plain conditions. A merge
    // patch replaces a list whole: keep the conditions of other types (Accepted, Enforced).
    let status: Record<string, unknown>;
    if (ref.apiVersion.startsWith('gateway.networking.k8s.io/')) {
      status = { parents: [{ controllerName: SKEIN_CONTROLLER_NAME, parentRef: { name: ref.name }, conditions: [condition] }] };
    } else {
      let others: { type?: string }[] = [];
      try {
        const cur = await this.client.request<{ status?: { conditions?: { type?: string }[] } }>('GET', object);
        others = (cur.status?.conditions ?? []).filter((c) => c.type !== cond.type);
      } catch {
        // not readable now: write ours alone; the next report restores the rest
      }
      status = { conditions: [...others, condition] };
    }
    await this.client.request('PATCH', `${object}/status`, { status }, 'application/merge-patch+json');
  }

  async event(ref: ObjectRef, ev: { type: 'Warning' | 'Normal'; reason: string; message: string }): Promise<void> {
    const ns = ref.namespace || 'default';
    const ts = this.now().toISOString().replace(/\.\d+Z$/, 'Z');
    await this.client.request('POST', `/api/v1/namespaces/${ns}/events`, {
      apiVersion: 'v1',
      kind: 'Event',
      metadata: { generateName: `${ref.name}.skein-`, namespace: ns },
      involvedObject: { apiVersion: ref.apiVersion, kind: ref.kind, name: ref.name, namespace: ref.namespace || undefined, uid: ref.uid },
      type: ev.type,
      reason: ev.reason,
      message: ev.message,
      source: { component: 'skein-controller' },
      firstTimestamp: ts,
      lastTimestamp: ts,
      count: 1,
    });
  }
}
