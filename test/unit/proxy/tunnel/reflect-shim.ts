/**
 * tsyringe (loaded by @peculiar/x509) refuses to load without the Reflect metadata API. The
 * test fixtures only generate certificates, which never read metadata back in a way that
 * matters here; this stores it per (target, property) so the calls tsyringe makes work.
 * Import before @peculiar/x509.
 */
const meta = new WeakMap<object, Map<unknown, unknown>>();
const r = Reflect as unknown as Record<string, unknown>;
const slot = (target: object, prop?: string | symbol): Map<unknown, unknown> => {
  let m = meta.get(target);
  if (!m) {
    m = new Map();
    meta.set(target, m);
  }
  let p = m.get(prop) as Map<unknown, unknown> | undefined;
  if (!p) {
    p = new Map();
    m.set(prop, p);
  }
  return p;
};
if (typeof r.getMetadata !== 'function') {
  r.defineMetadata = (k: unknown, v: unknown, target: object, prop?: string | symbol) => slot(target, prop).set(k, v);
  r.getOwnMetadata = (k: unknown, target: object, prop?: string | symbol) => slot(target, prop).get(k);
  r.getMetadata = (k: unknown, target: object, prop?: string | symbol) => {
    for (let t: object | null = target; t; t = Object.getPrototypeOf(t)) {
      const v = slot(t, prop).get(k);
      if (v !== undefined) return v;
    }
    return undefined;
  };
}
export {};
