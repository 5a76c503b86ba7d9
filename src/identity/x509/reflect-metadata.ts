/**
 * The few Reflect metadata functions tsyringe (the DI container inside @peculiar/x509)
 * checks for at load time. The full `reflect-metadata` package is not a dependency of
 * skein; this covers exactly what is called (defineMetadata, getMetadata, getOwnMetadata),
 * keyed per target object and property, with prototype-chain lookup for getMetadata.
 * Must be imported before @peculiar/x509 (provider.ts does so).
 */
type Store = Map<string | symbol | undefined, Map<unknown, unknown>>;

const stores = new WeakMap<object, Store>();

function own(target: object, property: string | symbol | undefined, create: boolean): Map<unknown, unknown> | undefined {
  let store = stores.get(target);
  if (!store) {
    if (!create) return undefined;
    store = new Map();
    stores.set(target, store);
  }
  let byKey = store.get(property);
  if (!byKey && create) {
    byKey = new Map();
    store.set(property, byKey);
  }
  return byKey;
}

const reflect = Reflect as unknown as Record<string, unknown>;

if (typeof reflect.getMetadata !== 'function') {
  reflect.defineMetadata = (key: unknown, value: unknown, target: object, property?: string | symbol): void => {
    own(target, property, true)?.set(key, value);
  };
  reflect.getOwnMetadata = (key: unknown, target: object, property?: string | symbol): unknown => own(target, property, false)?.get(key);
  reflect.getMetadata = (key: unknown, target: object, property?: string | symbol): unknown => {
    for (let t: object | null = target; t !== null; t = Object.getPrototypeOf(t)) {
      const m = own(t, property, false);
      if (m?.has(key)) return m.get(key);
    }
    return undefined;
  };
}

export {};
