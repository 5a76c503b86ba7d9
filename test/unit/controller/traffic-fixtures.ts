// Shared by the traffic-management tests: one object's verdict (schema + translation, as the
// index computes it) and a small index over an in-memory store.
import { MeshIndex } from '../../../src/controller/mesh-index.js';
import { ObjectStore, type StoredObject } from '../../../src/controller/object-store.js';
import { ObjectVerdicts } from '../../../src/controller/object-verdict.js';
import type { Refusal } from '../../../src/controller/resources.js';
import { type Obj, service } from './helpers.js';

export function verdictOf(obj: Obj): ReturnType<ObjectVerdicts['of']> {
  const m = obj.metadata as Obj;
  const stored: StoredObject = {
    key: `x/${String(obj.kind)}/${String(m.namespace)}/${String(m.name)}`,
    origin: 'test.yaml',
    doc: 0,
    obj,
    namespace: String(m.namespace ?? 'default'),
    json: JSON.stringify(obj),
    firstSeen: '2026-01-01T00:00:00Z',
  };
  return new ObjectVerdicts({}).of(stored);
}

export function httpRoute(spec: Obj, name = 'r', created = '2026-01-01T00:00:00Z'): Obj {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name, namespace: 'shop', creationTimestamp: created, generation: 1 },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web', port: 80 }], ...spec },
  };
}

export function grpcRoute(spec: Obj, name = 'g', created = '2026-01-01T00:00:00Z'): Obj {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'GRPCRoute',
    metadata: { name, namespace: 'shop', creationTimestamp: created },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web', port: 80 }], ...spec },
  };
}

export function btp(spec: Obj, name = 'p', created = '2026-01-01T00:00:00Z'): Obj {
  return {
    apiVersion: 'networking.skein.io/v1alpha1',
    kind: 'BackendTrafficPolicy',
    metadata: { name, namespace: 'shop', creationTimestamp: created },
    spec,
  };
}

/** Services shop/web, shop/web-v2, shop/mirror (VIPs 10.96.0.10-12). */
export const SERVICES: Obj[] = [
  service('shop', 'web', '10.96.0.10', { app: 'web' }),
  service('shop', 'web-v2', '10.96.0.11', { app: 'web2' }),
  service('shop', 'mirror', '10.96.0.12', { app: 'mirror' }),
];

export function indexOver(objects: Obj[]): { index: MeshIndex; store: ObjectStore; refusal: (object: string) => Refusal | undefined } {
  const store = new ObjectStore();
  store.replaceOrigin(
    'test.yaml',
    objects.map((obj, doc) => ({ obj, doc })),
  );
  const index = new MeshIndex(store);
  index.flush();
  return { index, store, refusal: (object) => index.refusals().find((r) => r.object === object) };
}

export function entryValue<T>(index: MeshIndex, key: string): T | undefined {
  const e = index.entries().get(key);
  return e ? (JSON.parse(e.json) as T) : undefined;
}
