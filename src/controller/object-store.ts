/**
 * Every Kubernetes object the controller's sources declared, by identity
 * (`<group>/<kind>/<namespace>/<name>`). A source owns its objects through an `origin`
 * (a file of the folder, or `kube`); the same object declared by two origins is a
 * duplicate: the first origin (sorted) wins and the other is reported. Listeners hear
 * which keys changed, in batches, so the index rebuilds only what moved.
 */
import type { Obj } from '../config/kube/objects.js';
import { groupOf, kindInfo } from './kinds.js';

export interface StoredObject {
  key: string;
  /** File (relative to the folder) or `kube`. */
  origin: string;
  /** Document index inside the file (0 for kube). */
  doc: number;
  obj: Obj;
  /** The object's namespace ('' for cluster-scoped kinds). */
  namespace: string;
  /** JSON of the object: equality and hashing without re-serialising. */
  json: string;
  /**
   * When this store first held the key (ISO time): the age of objects without a
   * creationTimestamp (hand-written folder YAML), so a newcomer never displaces an object
   * that was there first.
   */
  firstSeen: string;
}

export type ChangeListener = (keys: string[]) => void;

function meta(o: Obj): Obj {
  const m = o.metadata;
  return m && typeof m === 'object' && !Array.isArray(m) ? (m as Obj) : {};
}

/** Identity key and namespace of an object (namespaced kinds default to `default`). */
export function identityOf(o: Obj): { key: string; namespace: string } {
  const apiVersion = typeof o.apiVersion === 'string' ? o.apiVersion : '';
  const kind = typeof o.kind === 'string' ? o.kind : '';
  const m = meta(o);
  const info = kindInfo(apiVersion, kind);
  const namespaced = info ? info.namespaced : m.namespace !== undefined;
  const namespace = namespaced ? (typeof m.namespace === 'string' && m.namespace !== '' ? m.namespace : 'default') : '';
  return { key: `${groupOf(apiVersion)}/${kind}/${namespace}/${String(m.name ?? '')}`, namespace };
}

export class ObjectStore {
  private readonly byOrigin = new Map<string, Map<string, StoredObject>>();
  /** key -> declarations, the winner first. */
  private readonly byKey = new Map<string, StoredObject[]>();
  private readonly listeners = new Set<ChangeListener>();
  /** Keys declared by more than one origin. */
  private readonly duplicated = new Set<string>();

  subscribe(l: ChangeListener): () => void {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  /** The winning declaration of `key`. */
  get(key: string): StoredObject | undefined {
    return this.byKey.get(key)?.[0];
  }

  /** Declarations that lost to another origin (reported as duplicates). */
  duplicates(): { loser: StoredObject; winner: StoredObject }[] {
    const out: { loser: StoredObject; winner: StoredObject }[] = [];
    for (const key of this.duplicated) {
      const [winner, ...rest] = this.byKey.get(key) ?? [];
      if (winner) for (const loser of rest) out.push({ loser, winner });
    }
    return out;
  }

  *objects(): IterableIterator<StoredObject> {
    for (const list of this.byKey.values()) if (list[0]) yield list[0];
  }

  get size(): number {
    return this.byKey.size;
  }

  /** Replaces everything `origin` declares (a re-read file, a relisted kind). */
  replaceOrigin(origin: string, objects: { obj: Obj; doc: number }[], filter?: (o: StoredObject) => boolean): void {
    const prev = this.byOrigin.get(origin) ?? new Map<string, StoredObject>();
    const next = new Map<string, StoredObject>();
    for (const { obj, doc } of objects) {
      const { key, namespace } = identityOf(obj);
      const stored: StoredObject = { key, origin, doc, obj, namespace, json: JSON.stringify(obj), firstSeen: this.firstSeenOf(key) };
      if (!next.has(key)) next.set(key, stored);
    }
    const changed: string[] = [];
    // Entries of `prev` outside `filter` (another kind relisted by the same origin) stay.
    for (const [key, old] of prev) {
      if (filter && !filter(old)) {
        if (!next.has(key)) next.set(key, old);
        continue;
      }
      if (!next.has(key)) {
        this.detach(key, origin);
        changed.push(key);
      }
    }
    for (const [key, o] of next) {
      const old = prev.get(key);
      if (old === o) continue;
      if (old && old.json === o.json) {
        next.set(key, old);
        continue;
      }
      this.attach(o);
      changed.push(key);
    }
    if (next.size === 0) this.byOrigin.delete(origin);
    else this.byOrigin.set(origin, next);
    this.emit(changed);
  }

  /** Adds or replaces one object of `origin` (a watch event). */
  upsert(origin: string, obj: Obj, doc = 0): void {
    const { key, namespace } = identityOf(obj);
    const json = JSON.stringify(obj);
    let mine = this.byOrigin.get(origin);
    if (!mine) {
      mine = new Map();
      this.byOrigin.set(origin, mine);
    }
    if (mine.get(key)?.json === json) return;
    const stored: StoredObject = { key, origin, doc, obj, namespace, json, firstSeen: this.firstSeenOf(key) };
    mine.set(key, stored);
    this.attach(stored);
    this.emit([key]);
  }

  /** Removes one object of `origin` (a watch DELETED event). */
  remove(origin: string, obj: Obj): void {
    const { key } = identityOf(obj);
    const mine = this.byOrigin.get(origin);
    if (!mine?.delete(key)) return;
    this.detach(key, origin);
    this.emit([key]);
  }

  private firstSeenOf(key: string): string {
    return this.byKey.get(key)?.[0]?.firstSeen ?? new Date().toISOString();
  }

  private attach(o: StoredObject): void {
    const list = (this.byKey.get(o.key) ?? []).filter((x) => x.origin !== o.origin);
    list.push(o);
    list.sort((a, b) => (a.origin < b.origin ? -1 : a.origin > b.origin ? 1 : a.doc - b.doc));
    this.byKey.set(o.key, list);
    if (list.length > 1) this.duplicated.add(o.key);
  }

  private detach(key: string, origin: string): void {
    const list = (this.byKey.get(key) ?? []).filter((x) => x.origin !== origin);
    if (list.length === 0) this.byKey.delete(key);
    else this.byKey.set(key, list);
    if (list.length <= 1) this.duplicated.delete(key);
  }

  private emit(keys: string[]): void {
    if (keys.length === 0) return;
    for (const l of this.listeners) l(keys);
  }
}
