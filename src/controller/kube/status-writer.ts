/**
 * Makes refusals visible where Kubernetes operators look: status conditions on skein's own
 * objects (Accepted=True, or False with the field and reason) and, the Gateway API way, on
 * routes: one `status.parents[]` entry per parentRef, written by controllerName
 * `skein.io/mesh-controller`, with Accepted (True/Accepted; False/NoMatchingParent or
 * UnsupportedValue) and ResolvedRefs (True/ResolvedRefs; False/BackendNotFound or
 * InvalidKind). Built-in kinds (Pods, Services...), whose status skein does not own, get a
 * Warning Event. The reporter diffs each object's state (and generation) after each rebuild
 * so each change is written once.
 */
import { messageOf } from '../../errors.js';
import { type Logger, silentLogger } from '../../telemetry/log.js';
import { ControllerCode } from '../codes.js';
import { groupOf, kindInfo } from '../kinds.js';
import type { MeshIndex } from '../mesh-index.js';
import type { Refusal } from '../resources.js';
import type { ObjectStore } from '../object-store.js';
import { type CoreV1Event, PatchStrategy } from '@kubernetes/client-node';
import { type KubeClient, kubeErrorOf } from './client.js';

/** Route status `controllerName`: which controller wrote a `status.parents[]` entry. */
export const SKEIN_CONTROLLER_NAME = 'skein.io/mesh-controller';
const GATEWAY_GROUP = 'gateway.networking.k8s.io';

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
  type: 'Accepted' | 'Enforced' | 'ResolvedRefs';
  status: 'True' | 'False';
  reason: string;
  message: string;
}

/** Where conditions and events are written (Kubernetes; a fake in tests). */
export interface StatusWriter {
  /** Sets these conditions (others of other types are kept); on a route, in each of its parents' entries. */
  setConditions(ref: ObjectRef, conds: Condition[]): Promise<void>;
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
function ownsStatus(ref: { apiVersion: string; kind: string }): boolean {
  const info = kindInfo(ref.apiVersion, ref.kind);
  // ReferenceGrant has no status in Gateway API: a refused one shows in `skein status` only.
  return Boolean(info?.crd) || (groupOf(ref.apiVersion) === GATEWAY_GROUP && ref.kind !== 'ReferenceGrant');
}

/**
 * The conditions an object's state calls for. Routes get Gateway API reasons: a parent that
 * is missing or no Service is NoMatchingParent; a backend or mirror that is missing is
 * BackendNotFound, one that is no Service InvalidKind (the route is refused whole, so
 * Accepted is False too: skein never serves part of a route); anything else
 * UnsupportedValue, with ResolvedRefs left out (the references were not checked).
 */
export function conditionsFor(ref: { apiVersion: string }, r: Refusal | undefined): Condition[] {
  const route = groupOf(ref.apiVersion) === GATEWAY_GROUP;
  if (!r) {
    const accepted: Condition = { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'served to agents' };
    return route ? [accepted, { type: 'ResolvedRefs', status: 'True', reason: 'ResolvedRefs', message: 'every backend exists' }] : [accepted];
  }
  const message = `${r.field}: ${r.reason}`;
  if (!route) return [{ type: 'Accepted', status: 'False', reason: r.code === ControllerCode.Conflict ? 'Conflicted' : 'Invalid', message }];
  if (/^spec\.parentRefs\[\d+\]$/.test(r.field)) return [{ type: 'Accepted', status: 'False', reason: 'NoMatchingParent', message }];
  const refs = /backendRef/.test(r.field)
    ? /does not exist$/.test(r.reason)
      ? 'BackendNotFound'
      : /only Service backends/.test(r.reason)
        ? 'InvalidKind'
        : /^RefNotPermitted:/.test(r.reason)
          ? 'RefNotPermitted'
          : undefined
    : undefined;
  const accepted: Condition = { type: 'Accepted', status: 'False', reason: 'UnsupportedValue', message };
  return refs ? [accepted, { type: 'ResolvedRefs', status: 'False', reason: refs, message }] : [accepted];
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
          await this.writer.setConditions(ref, [cond]);
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
    const refused = new Map<string, Refusal>();
    for (const r of this.index.refusals()) if (!refused.has(r.key)) refused.set(r.key, r);
    // Each object's state: refused (field: reason), or accepted for the kinds whose status is
    // ours; with the generation, so a new generation is reported (observedGeneration) too.
    const now = new Map<string, { text: string; refusal?: Refusal }>();
    for (const [key, r] of refused) now.set(key, { text: `${generationOf(this.store, key)}|${r.field}: ${r.reason}`, refusal: r });
    for (const o of this.store.objects()) {
      if (refused.has(o.key) || !ownsStatus({ apiVersion: String(o.obj.apiVersion), kind: String(o.obj.kind) })) continue;
      now.set(o.key, { text: `${generationOf(this.store, o.key)}|accepted` });
    }
    const tasks: (() => Promise<void>)[] = [];
    for (const [key, { text, refusal }] of now) {
      if (this.last.get(key) === text) continue;
      const ref = refOf(this.store, key);
      if (!ref) continue;
      if (ownsStatus(ref)) tasks.push(() => this.writer.setConditions(ref, conditionsFor(ref, refusal)));
      else if (refusal) tasks.push(() => this.writer.event(ref, { type: 'Warning', reason: 'SkeinRefused', message: `${refusal.field}: ${refusal.reason}` }));
    }
    this.last = new Map([...now].map(([k, v]) => [k, v.text]));
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

function generationOf(store: ObjectStore, key: string): string {
  const g = (store.get(key)?.obj.metadata as { generation?: number } | undefined)?.generation;
  return g === undefined ? '' : String(g);
}

interface StoredCondition extends Condition {
  lastTransitionTime?: string;
  observedGeneration?: number;
}

interface ParentStatus {
  parentRef: Record<string, unknown>;
  controllerName: string;
  conditions: StoredCondition[];
}

/** StatusWriter over the Kubernetes API: merge-patches `/status`, creates core/v1 Events. */
export class KubeStatusWriter implements StatusWriter {
  constructor(
    private readonly client: KubeClient,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async setConditions(ref: ObjectRef, conds: Condition[]): Promise<void> {
    const info = kindInfo(ref.apiVersion, ref.kind);
    if (!info || !ref.apiVersion.includes('/')) return;
    // Status is written on skein's CRDs and Gateway API routes only: custom objects, always in
    // a group (group/version), so the library's CustomObjectsApi addresses every one of them.
    const [group = '', version = ''] = ref.apiVersion.split('/');
    const at = { group, version, plural: info.plural, name: ref.name };
    const object = `${ref.apiVersion} ${info.plural} ${ref.namespace ? `${ref.namespace}/` : ''}${ref.name}`;
    const { client } = this;
    // A merge patch replaces a list whole: read what is there to keep the conditions of other
    // types (Accepted next to Enforced), other controllers' route parents, and each
    // condition's lastTransitionTime while its status stays.
    let cur: { spec?: { parentRefs?: Record<string, unknown>[] }; status?: { conditions?: StoredCondition[]; parents?: ParentStatus[] } } = {};
    try {
      cur = (ref.namespace
        ? await client.custom.getNamespacedCustomObject({ ...at, namespace: ref.namespace }, client.options())
        : await client.custom.getClusterCustomObject(at, client.options())) as typeof cur;
    } catch {
      // not readable now: write ours alone; the next report restores the rest
    }
    const now = this.now().toISOString().replace(/\.\d+Z$/, 'Z');
    // keepOthers: skein's kinds keep conditions of other types (Accepted next to Enforced); a
    // route's parent entry is skein's alone, so a claim not made now (ResolvedRefs) goes.
    const merge = (before: StoredCondition[], keepOthers: boolean): StoredCondition[] => {
      const out = keepOthers ? before.filter((c) => !conds.some((n) => n.type === c.type)) : [];
      for (const c of conds) {
        const prev = before.find((p) => p.type === c.type);
        out.push({
          ...c,
          lastTransitionTime: prev && prev.status === c.status && prev.lastTransitionTime ? prev.lastTransitionTime : now,
          ...(ref.generation !== undefined ? { observedGeneration: ref.generation } : {}),
        });
      }
      return out;
    };
    let status: Record<string, unknown>;
    if (groupOf(ref.apiVersion) === GATEWAY_GROUP) {
      // One entry per parentRef, as the spec writes it; other controllers' entries are kept.
      const mine = (cur.status?.parents ?? []).filter((p) => p.controllerName === SKEIN_CONTROLLER_NAME);
      const others = (cur.status?.parents ?? []).filter((p) => p.controllerName !== SKEIN_CONTROLLER_NAME);
      const parentRefs = cur.spec?.parentRefs?.length ? cur.spec.parentRefs : [{ name: ref.name }];
      const parents = parentRefs.map((parentRef) => {
        const prev = mine.find((p) => JSON.stringify(p.parentRef) === JSON.stringify(parentRef));
        return { parentRef, controllerName: SKEIN_CONTROLLER_NAME, conditions: merge(prev?.conditions ?? [], false) };
      });
      status = { parents: [...others, ...parents] };
    } else {
      status = { conditions: merge(cur.status?.conditions ?? [], true) };
    }
    const asMergePatch = client.options(PatchStrategy.MergePatch);
    try {
      if (ref.namespace) await client.custom.patchNamespacedCustomObjectStatus({ ...at, namespace: ref.namespace, body: { status } }, asMergePatch);
      else await client.custom.patchClusterCustomObjectStatus({ ...at, body: { status } }, asMergePatch);
    } catch (err) {
      throw kubeErrorOf(`patch status of ${object}`, err);
    }
  }

  async event(ref: ObjectRef, ev: { type: 'Warning' | 'Normal'; reason: string; message: string }): Promise<void> {
    const ns = ref.namespace || 'default';
    const ts = this.now();
    const body: CoreV1Event = {
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
    };
    await this.client.core.createNamespacedEvent({ namespace: ns, body }, this.client.options()).catch((err: unknown) => {
      throw kubeErrorOf(`create event in ${ns}`, err);
    });
  }
}
