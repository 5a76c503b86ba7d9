/**
 * The controller's index: every declared object -> the resources agents receive
 * (workloads, services, nodes, routes, policies), each with a content version, plus the
 * refusals (resource, field, reason) for objects that are not served.
 *
 * Work is split by namespace: an object change re-translates only its namespace, with the
 * config room's `translate` (the same translation the agent's folder source uses), so a
 * change in a 10,000-pod cluster costs the size of one namespace. A global pass then
 * settles what needs the whole picture: VIP:port and pod IP conflicts, routes attached
 * across namespaces, "oldest wins" between conflicting routes and between backend traffic
 * policies on one target.
 *
 * Refusal is per object: a bad object is left out (with its reason in `refusals()`) and the
 * rest of the config keeps flowing.
 */
import { SkeinError } from '../errors.js';
import { type TranslateOptions, translate } from '../config/kube/translate.js';
import { DEFAULT_CLUSTER_DOMAIN, DEFAULT_TRUST_DOMAIN, type NodeInfo, type Service, type Workload } from '../config/model.js';
import { type BackendTrafficPolicy, type MeshRoute, selectorMatches } from '../config/policy-model.js';
import { Claims } from './address-claims.js';
import { ControllerCode } from './codes.js';
import { kindInfo } from './kinds.js';
import { ObjectVerdicts } from './object-verdict.js';
import type { ObjectStore, StoredObject } from './object-store.js';
import type { PolicyResource, ReferenceGrant } from './policy-translate.js';
import { entryOf, type IndexUpdate, type Refusal, type ResourceEntry, type ResourceType, resKey } from './resources.js';
import { backendPolicyProblem, policyObjectKey, routeProblem } from './route-checks.js';

interface PartWorkload {
  w: Workload;
  key: string;
  createdAt: string;
  entry: ResourceEntry;
}

interface PartService {
  s: Service;
  key: string;
  createdAt: string;
  entry: ResourceEntry;
  /** `vip:port` it claims. */
  claims: string[];
}

interface Partition {
  workloads: PartWorkload[];
  services: PartService[];
  policies: PolicyResource[];
  refusals: Refusal[];
}

function labelOf(o: StoredObject): string {
  const m = (o.obj.metadata ?? {}) as Record<string, unknown>;
  return `${String(o.obj.kind)}/${o.namespace ? `${o.namespace}/` : ''}${String(m.name)}`;
}

function createdAtOf(o: StoredObject | undefined): string {
  const v = (o?.obj.metadata as Record<string, unknown> | undefined)?.creationTimestamp;
  return typeof v === 'string' ? v : (o?.firstSeen ?? '');
}

/** Which partition an object key belongs to: its namespace, or the node list. */
function partitionOfKey(key: string): string {
  const [, kind, ns, name] = key.split('/');
  if (ns === '' && kind === 'Namespace') return name ?? '';
  if (ns === '' && kind === 'Node') return NODES;
  return ns ?? '';
}
const NODES = '\0nodes';

export interface MeshIndexOptions extends TranslateOptions {
  /** Policies here apply mesh-wide. Default `skein-system`. */
  rootNamespace?: string;
  /** Coalesce changes for this long before rebuilding (ms). Default 0 (next tick). */
  debounceMs?: number;
}

export class MeshIndex {
  readonly trustDomain: string;
  readonly clusterDomain: string;
  readonly rootNamespace: string;
  private readonly verdicts: ObjectVerdicts;
  private readonly members = new Map<string, Set<string>>();
  private readonly partitions = new Map<string, Partition>();
  private nodes: NodeInfo[] = [];
  private published = new Map<string, ResourceEntry>();
  private refused: Refusal[] = [];
  private readonly dirty = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private seq = 0;
  private readonly epoch = Date.now().toString(36);
  private readonly listeners = new Set<(u: IndexUpdate) => void>();
  private workloadsByNode = new Map<string, Workload[]>();
  private workloadsByNamespace = new Map<string, Workload[]>();
  private serviceMap = new Map<string, Service>();
  /** `type|key` of published policy entries (their reach depends on workloads). */
  private policyKeySet = new Set<string>();
  private readonly ipClaims = new Claims();
  private readonly vipClaims = new Claims();
  private readonly workloadsByKey = new Map<string, PartWorkload>();
  private readonly servicesByKey = new Map<string, PartService>();
  /** Workloads/Services that lost an address to an older object. */
  private readonly conflicts = new Map<string, { field: string; reason: string }>();
  /** Value each small (node/policy/route) entry was serialised from. */
  private readonly valueOf = new Map<string, unknown>();
  private unsubscribe: () => void;

  constructor(
    private readonly store: ObjectStore,
    private readonly opts: MeshIndexOptions = {},
  ) {
    this.trustDomain = opts.trustDomain ?? DEFAULT_TRUST_DOMAIN;
    this.clusterDomain = opts.clusterDomain ?? DEFAULT_CLUSTER_DOMAIN;
    this.rootNamespace = opts.rootNamespace ?? 'skein-system';
    this.verdicts = new ObjectVerdicts(opts);
    for (const o of store.objects()) this.track(o.key);
    this.unsubscribe = store.subscribe((keys) => {
      for (const k of keys) this.track(k);
      this.schedule();
    });
  }

  close(): void {
    this.unsubscribe();
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
  }

  /**
   * Resolves once the index has taken in what its store holds: a rebuild runs on the tick
   * after each change, so this waits until the version stops moving (bounded, ~2 s).
   */
  async settled(): Promise<void> {
    for (let last = '', i = 0; i < 100 && this.version !== last; i++) {
      last = this.version;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Current version (changes on every rebuild that changed something). */
  get version(): string {
    return `${this.epoch}-${this.seq}`;
  }

  onUpdate(l: (u: IndexUpdate) => void): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  entries(): ReadonlyMap<string, ResourceEntry> {
    return this.published;
  }

  /** `type|key` of the published policies whose reach depends on which workloads a node runs. */
  policyKeys(): ReadonlySet<string> {
    return this.policyKeySet;
  }

  refusals(): readonly Refusal[] {
    return this.refused;
  }

  /** Published workloads (for the CA's node authorizer). */
  workloadsOn(node: string): readonly Workload[] {
    return this.workloadsByNode.get(node) ?? [];
  }

  *workloads(): IterableIterator<Workload> {
    for (const list of this.workloadsByNode.values()) yield* list;
  }

  /** Rebuilds now what changed (tests and benchmarks; otherwise changes are coalesced). */
  flush(): IndexUpdate | undefined {
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
    return this.rebuild();
  }

  private track(key: string): void {
    const part = partitionOfKey(key);
    this.dirty.add(part);
    const stored = this.store.get(key);
    let set = this.members.get(part);
    if (stored) {
      if (!set) {
        set = new Set();
        this.members.set(part, set);
      }
      set.add(key);
    } else {
      set?.delete(key);
      this.verdicts.delete(key);
    }
  }

  private schedule(): void {
    if (this.timer || this.immediate) return;
    const ms = this.opts.debounceMs ?? 0;
    if (ms > 0) this.timer = setTimeout(() => this.flush(), ms);
    else this.immediate = setImmediate(() => this.flush());
  }

  private buildPartition(ns: string): Partition {
    const part: Partition = { workloads: [], services: [], policies: [], refusals: [] };
    const keys = [...(this.members.get(ns) ?? [])];
    const core: StoredObject[] = [];
    for (const key of keys) {
      const o = this.store.get(key);
      if (!o) continue;
      const v = this.verdicts.of(o);
      if (v.refusal) {
        const kept = v.lastGood;
        const reason = kept ? `${v.refusal.reason}; the last accepted version keeps serving` : v.refusal.reason;
        part.refusals.push({ ...v.refusal, reason, object: labelOf(o), key: o.key, origin: o.origin });
        if (kept?.policy) part.policies.push(kept.policy);
        else if (kept) core.push({ ...o, obj: kept.obj });
        continue;
      }
      if (v.policy) part.policies.push(v.policy);
      else if (kindInfo(String(o.obj.apiVersion), String(o.obj.kind))) core.push(o);
    }
    // Translate the namespace; should an object still fail in company (it passed alone),
    // refuse it and translate the rest.
    for (let attempt = 0; attempt < 10; attempt++) {
      try {
        const snap = translate(
          core.map((o) => ({ file: o.origin, doc: o.doc, obj: o.obj })),
          'partition',
          this.opts,
        );
        const byLabel = new Map(core.map((o) => [labelOf(o), o]));
        for (const w of snap.workloads) {
          const so = byLabel.get(`Pod/${w.namespace}/${w.name}`);
          part.workloads.push({
            w,
            key: so?.key ?? w.uid,
            createdAt: createdAtOf(so),
            entry: entryOf('workload', w.uid, w, { node: w.node, namespace: w.namespace }),
          });
        }
        for (const s of snap.services) {
          const so = byLabel.get(`Service/${s.namespace}/${s.name}`);
          const name = `${s.namespace}/${s.name}`;
          part.services.push({
            s,
            key: so?.key ?? name,
            createdAt: createdAtOf(so),
            entry: entryOf('service', name, s),
            claims: s.vips.flatMap((vip) => s.ports.map((p) => `${vip}:${p.port}`)),
          });
        }
        if (ns === NODES) this.nodes = snap.nodes;
        break;
      } catch (err) {
        if (!(err instanceof SkeinError)) throw err;
        const label = String(err.details?.object ?? '');
        const idx = core.findIndex((o) => labelOf(o) === label);
        const bad = idx >= 0 ? core.splice(idx, 1)[0]! : core.pop();
        if (!bad) break;
        part.refusals.push({
          object: labelOf(bad),
          key: bad.key,
          origin: bad.origin,
          field: String(err.details?.field ?? '(object)'),
          reason: String(err.details?.reason ?? err.message),
          code: err.code,
        });
      }
    }
    return part;
  }

  private rebuild(): IndexUpdate | undefined {
    if (this.dirty.size === 0) return undefined;
    const changed = new Set<string>();
    const touchedIps = new Set<string>();
    const touchedVips = new Set<string>();
    const dirtyWorkloads = new Set<string>();
    const dirtyServices = new Set<string>();
    /** Published by a replaced partition: removed unless published again below. */
    const stale = new Set<string>();
    for (const ns of this.dirty) {
      const old = this.partitions.get(ns);
      const next = this.members.get(ns)?.size ? this.buildPartition(ns) : undefined;
      if (!next) {
        this.partitions.delete(ns);
        this.members.delete(ns);
        if (ns === NODES) this.nodes = [];
      } else this.partitions.set(ns, next);
      // Withdraw what the old partition published and claimed; the new one's is settled below.
      for (const x of old?.workloads ?? []) {
        for (const ip of x.w.ips) {
          this.ipClaims.remove(ip, x.key);
          touchedIps.add(ip);
        }
        stale.add(`workload|${x.entry.key}`);
        this.workloadsByKey.delete(x.key);
      }
      for (const x of old?.services ?? []) {
        for (const c of x.claims) {
          this.vipClaims.remove(c, x.key);
          touchedVips.add(c);
        }
        stale.add(`service|${x.entry.key}`);
        this.servicesByKey.delete(x.key);
      }
      for (const x of next?.workloads ?? []) {
        for (const ip of x.w.ips) {
          this.ipClaims.add(ip, { key: x.key, createdAt: x.createdAt, name: `${x.w.namespace}/${x.w.name}` });
          touchedIps.add(ip);
        }
        this.workloadsByKey.set(x.key, x);
        dirtyWorkloads.add(x.key);
      }
      for (const x of next?.services ?? []) {
        for (const c of x.claims) {
          this.vipClaims.add(c, { key: x.key, createdAt: x.createdAt, name: `${x.s.namespace}/${x.s.name}` });
          touchedVips.add(c);
        }
        this.servicesByKey.set(x.key, x);
        dirtyServices.add(x.key);
      }
    }
    this.dirty.clear();
    // Everyone claiming a touched address may have won or lost it.
    for (const ip of touchedIps) for (const c of this.ipClaims.claimants(ip)) dirtyWorkloads.add(c.key);
    for (const v of touchedVips) for (const c of this.vipClaims.claimants(v)) dirtyServices.add(c.key);
    for (const key of dirtyWorkloads) {
      const x = this.workloadsByKey.get(key);
      if (!x) continue;
      const clash = x.w.ips.find((ip) => this.ipClaims.owner(ip)?.key !== key);
      if (clash) {
        this.conflicts.set(key, { field: 'status.podIPs', reason: `IP ${clash} already belongs to pod ${this.ipClaims.owner(clash)?.name}` });
        this.unpublish(`workload|${x.entry.key}`, changed);
      } else {
        this.conflicts.delete(key);
        this.publishEntry(x.entry, changed);
        stale.delete(`workload|${x.entry.key}`);
      }
    }
    for (const key of dirtyServices) {
      const x = this.servicesByKey.get(key);
      if (!x) continue;
      const clash = x.claims.find((c) => this.vipClaims.owner(c)?.key !== key);
      if (clash) {
        this.conflicts.set(key, { field: 'spec.clusterIPs', reason: `${clash} already belongs to Service ${this.vipClaims.owner(clash)?.name}` });
        this.unpublish(`service|${x.entry.key}`, changed);
      } else {
        this.conflicts.delete(key);
        this.publishEntry(x.entry, changed);
        stale.delete(`service|${x.entry.key}`);
      }
    }
    for (const k of stale) this.unpublish(k, changed);
    for (const key of [...this.conflicts.keys()]) if (!this.workloadsByKey.has(key) && !this.servicesByKey.has(key)) this.conflicts.delete(key);
    return this.publish(changed);
  }

  private unpublish(k: string, changed: Set<string>): void {
    if (this.published.delete(k)) changed.add(k);
  }

  private publishEntry(e: ResourceEntry, changed: Set<string>): void {
    const k = resKey(e.type, e.key);
    if (this.published.get(k)?.version !== e.version) changed.add(k);
    this.published.set(k, e);
  }

  /** The global pass over what is small (nodes, policies, routes), then the update. */
  private publish(changed: Set<string>): IndexUpdate | undefined {
    const refusals: Refusal[] = [];
    const refuse = (key: string, field: string, reason: string, code: string = ControllerCode.Conflict) => {
      const o = this.store.get(key);
      refusals.push({ object: o ? labelOf(o) : key, key, origin: o?.origin ?? '', field, reason, code });
    };
    for (const { loser, winner } of this.store.duplicates()) {
      refusals.push({
        object: labelOf(loser),
        key: loser.key,
        origin: loser.origin,
        field: 'metadata.name',
        reason: `also declared in ${winner.origin} (document ${winner.doc}), which is served`,
        code: ControllerCode.Duplicate,
      });
    }
    for (const [key, c] of this.conflicts) refuse(key, c.field, c.reason);

    // Which workloads run where (policies' reach, the CA's node authorizer), and which
    // Services exist (routes' and policies' references): rebuilt only when they moved.
    let workloadsMoved = false;
    let servicesMoved = false;
    for (const k of changed) {
      if (k.startsWith('workload|')) workloadsMoved = true;
      else if (k.startsWith('service|')) servicesMoved = true;
    }
    if (workloadsMoved) {
      const byNode = new Map<string, Workload[]>();
      const byNamespace = new Map<string, Workload[]>();
      for (const x of this.workloadsByKey.values()) {
        if (this.conflicts.has(x.key)) continue;
        pushTo(byNode, x.w.node, x.w);
        pushTo(byNamespace, x.w.namespace, x.w);
      }
      this.workloadsByNode = byNode;
      this.workloadsByNamespace = byNamespace;
    }
    if (servicesMoved) {
      const services = new Map<string, Service>();
      for (const x of this.servicesByKey.values()) if (!this.conflicts.has(x.key)) services.set(x.entry.key, x.s);
      this.serviceMap = services;
    }
    const byNamespace = this.workloadsByNamespace;
    const services = this.serviceMap;

    // Small kinds are recomputed whole: nodes, policies, routes.
    const small = new Map<string, ResourceEntry>();
    const put = (type: ResourceType, key: string, value: object, extra: Partial<ResourceEntry> = {}) => {
      const k = resKey(type, key);
      const prev = this.published.get(k);
      // Unchanged values (same object from an unchanged partition) keep their serialisation.
      const e = prev && this.valueOf.get(k) === value ? prev : entryOf(type, key, value, extra);
      this.valueOf.set(k, value);
      small.set(k, e);
    };
    for (const n of this.nodes) put('node', n.name, n);
    const routes: { r: MeshRoute; key: string; mirrorFields: ReadonlyMap<string, string> }[] = [];
    const backendPolicies: { p: BackendTrafficPolicy; key: string; refs: string[] }[] = [];
    const grants = new Map<string, ReferenceGrant[]>();
    for (const [ns, part] of this.partitions) {
      refusals.push(...part.refusals);
      for (const p of part.policies) {
        const objKey = policyObjectKey(p);
        if (p.type === 'reference-grant') {
          pushTo(grants, ns, p.value); // checked by the index, never sent to agents
          continue;
        }
        if (p.type === 'route') {
          routes.push({ r: p.value, key: objKey, mirrorFields: p.mirrorFields });
          continue;
        }
        if (p.type === 'backend-policy') {
          backendPolicies.push({ p: p.value, key: objKey, refs: p.refs });
          continue;
        }
        const sel = p.value.selector;
        // In the root namespace a policy is mesh-wide: its selector may match any pod.
        const pool = ns === this.rootNamespace ? [...byNamespace.values()].flat() : (byNamespace.get(ns) ?? []);
        if (sel && !pool.some((w) => selectorMatches(sel, w.labels))) {
          refuse(objKey, 'spec.selector', `matches no pod in ${ns === this.rootNamespace ? 'the mesh' : `namespace ${ns}`}`, ControllerCode.Refused);
          continue;
        }
        // The agent evaluates scope per workload: a root-namespace policy says it is mesh-wide.
        const value = ns === this.rootNamespace && (p.type === 'authorization' || p.type === 'peer-authentication') ? { ...p.value, meshWide: true } : p.value;
        put(p.type, `${ns}/${p.value.name}`, value, { namespace: ns, ...(sel ? { selector: sel } : {}), policy: true });
      }
    }
    // Oldest first (creationTimestamp, then identity): the older of two conflicting objects wins.
    const byAge = (a: { createdAt?: string }, ak: string, b: { createdAt?: string }, bk: string) => {
      const ca = a.createdAt ?? '';
      const cb = b.createdAt ?? '';
      return ca < cb ? -1 : ca > cb ? 1 : ak < bk ? -1 : 1;
    };
    routes.sort((a, b) => byAge(a.r, a.key, b.r, b.key));
    const claims = new Map<string, string>();
    const served = new Map<string, MeshRoute>();
    for (const { r, key, mirrorFields } of routes) {
      const problem = routeProblem(r, services, claims, mirrorFields, grants);
      if (problem) {
        refuse(key, problem.field, problem.reason, problem.code);
        continue;
      }
      const k = `${r.kind}/${r.namespace}/${r.name}`;
      served.set(k, r);
      put('route', k, r);
    }
    backendPolicies.sort((a, b) => byAge(a.p, a.key, b.p, b.key));
    const targetClaims = new Map<string, string>();
    for (const { p, key, refs } of backendPolicies) {
      const problem = backendPolicyProblem(p, refs, services, served, targetClaims);
      if (problem) {
        refuse(key, problem.field, problem.reason, problem.code);
        continue;
      }
      put('backend-policy', `${p.namespace}/${p.name}`, p);
    }
    for (const [k, e] of this.published) {
      if (e.type === 'workload' || e.type === 'service' || small.has(k)) continue;
      this.published.delete(k);
      this.valueOf.delete(k);
      changed.add(k);
    }
    for (const e of small.values()) this.publishEntry(e, changed);
    this.policyKeySet = new Set([...small].filter(([, e]) => e.policy).map(([k]) => k));

    refusals.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    this.refused = refusals;
    if (changed.size === 0) return undefined;
    this.seq++;
    const update = { version: this.version, changed };
    for (const l of this.listeners) l(update);
    return update;
  }
}

function pushTo<V>(m: Map<string, V[]>, key: string, v: V): void {
  const list = m.get(key);
  if (list) list.push(v);
  else m.set(key, [v]);
}


