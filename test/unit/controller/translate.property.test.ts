/**
 * Property tests of the controller's config translation (issue 15: every parser skein owns):
 * random objects of every kind the controller consumes — valid objects with one field
 * replaced, removed or added, and objects of arbitrary shape — are accepted or refused with a
 * stable code and the field at fault, never crash the controller: neither the per-object
 * verdict (schema + translation, object-verdict.ts) nor the index that builds what agents get
 * from everything in force (mesh-index.ts) throws, and the valid objects beside a bad one
 * keep flowing.
 */
import fc from 'fast-check';
import t from 'tap';
import { KINDS } from '../../../src/controller/kinds.js';
import { identityOf } from '../../../src/controller/object-store.js';
import { ObjectVerdicts } from '../../../src/controller/object-verdict.js';
import { baseCluster, type Obj } from './helpers.js';
import { btp, grpcRoute, httpRoute, indexOver } from './traffic-fixtures.js';

/** One object's verdict as the index computes it, keyed as the object store keys it (any metadata). */
function verdictOf(obj: Obj): ReturnType<ObjectVerdicts['of']> {
  const { key, namespace } = identityOf(obj);
  return new ObjectVerdicts({}).of({ key, origin: 'random.yaml', doc: 0, obj, namespace, json: JSON.stringify(obj), firstSeen: '2026-01-01T00:00:00Z' });
}

const base: Obj[] = Object.values(baseCluster()).flat();

/** One valid object of each kind beyond the base cluster, in force beside it. */
const seeds: Obj[] = [
  ...base,
  { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'web', namespace: 'shop' } },
  httpRoute({
    rules: [
      {
        matches: [{ path: { type: 'PathPrefix', value: '/v2' }, headers: [{ name: 'x-user', value: 'a.*', type: 'RegularExpression' }], method: 'GET' }],
        filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-a', value: '1' }], remove: ['x-b'] } }],
        backendRefs: [{ name: 'web', port: 80, weight: 90 }],
        timeouts: { request: '2s' },
      },
    ],
  }),
  grpcRoute({ rules: [{ matches: [{ method: { service: 'skein.lab.v1.Echo', method: 'Unary' } }], backendRefs: [{ name: 'web', port: 80 }] }] }),
  btp({
    targetRefs: [{ group: '', kind: 'Service', name: 'web' }],
    retry: { attempts: 3, retryOn: ['5xx'], backoff: { baseInterval: '5ms', maxInterval: '20ms' } },
    outlierDetection: { consecutive5xx: 3, interval: '1s', baseEjectionTime: '2s', maxEjectionPercent: 50 },
    circuitBreaker: { maxRequests: 100, maxPendingRequests: 10 },
    rateLimit: { requestsPerSecond: 100, burst: 10 },
    loadBalancer: { type: 'RoundRobin' },
  }),
  {
    apiVersion: 'security.skein.io/v1alpha1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'deny-admin', namespace: 'shop' },
    spec: {
      selector: { matchLabels: { app: 'web' } },
      action: 'DENY',
      rules: [
        { from: [{ source: { principals: ['cluster.local/ns/shop/sa/client'], ipBlocks: ['10.0.0.0/8'] } }], to: [{ operation: { paths: ['/admin*'], methods: ['DELETE'], ports: ['80'] } }] },
        { when: [{ key: 'request.headers[x-debug]', values: ['on'] }] },
      ],
    },
  },
  {
    apiVersion: 'security.skein.io/v1alpha1',
    kind: 'PeerAuthentication',
    metadata: { name: 'strict-web', namespace: 'shop' },
    spec: { selector: { matchLabels: { app: 'web' } }, mtls: { mode: 'STRICT' } },
  },
  {
    apiVersion: 'gateway.networking.k8s.io/v1beta1',
    kind: 'ReferenceGrant',
    metadata: { name: 'from-shop', namespace: 'legacy' },
    spec: { from: [{ group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', namespace: 'shop' }], to: [{ group: '', kind: 'Service' }] },
  },
];

/** Every path (keys and indices) into an object, the root's own fields included. */
function paths(v: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  if (v === null || typeof v !== 'object') return [prefix];
  const entries = Array.isArray(v) ? v.map((x, i) => [i, x] as const) : Object.entries(v as Obj);
  return [prefix, ...entries.flatMap(([k, x]) => paths(x, [...prefix, k]))];
}

type Edit = { kind: 'set'; value: unknown } | { kind: 'delete' } | { kind: 'add'; key: string; value: unknown };

function edit(obj: Obj, path: (string | number)[], e: Edit): Obj {
  const copy = structuredClone(obj);
  if (path.length === 0) {
    if (e.kind === 'add') (copy as Obj)[e.key] = e.value;
    return copy;
  }
  let parent: unknown = copy;
  for (const k of path.slice(0, -1)) parent = (parent as Record<string | number, unknown>)[k];
  const last = path[path.length - 1]!;
  const p = parent as Record<string | number, unknown>;
  if (e.kind === 'set') p[last] = e.value;
  else if (e.kind === 'delete') {
    if (Array.isArray(p)) p.splice(Number(last), 1);
    else delete p[last];
  } else {
    const target = p[last];
    if (target && typeof target === 'object' && !Array.isArray(target)) (target as Obj)[e.key] = e.value;
    else p[last] = { [e.key]: e.value };
  }
  return copy;
}

/** Values that confuse a translator: wrong types, edges of numbers, odd strings, addresses. */
const nasty = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.constantFrom(null, '', -1, 0, 1.5, 65536, 1e308, Number.MAX_SAFE_INTEGER, 'x'.repeat(300), [], {}, [{}], '*', '/', '[', '(?<', '0s', '-1s', '10.0.0.0/33', '::1', '300.1.1.1', 'NaN', '__proto__', 'constructor'),
  fc.string({ maxLength: 20 }),
);

const editArb = fc.oneof(
  nasty.map((value): Edit => ({ kind: 'set', value })),
  fc.constant<Edit>({ kind: 'delete' }),
  fc.record({ key: fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom('spec', 'rules', 'matches', 'port', 'name', 'namespace', '__proto__')), value: nasty }).map((r): Edit => ({ kind: 'add', ...r })),
);

/** A seed with one to three random edits. */
const mutated = fc
  .tuple(fc.integer({ min: 0, max: seeds.length - 1 }), fc.array(fc.tuple(fc.nat(), editArb), { minLength: 1, maxLength: 3 }))
  .map(([i, edits]) => {
    let o = seeds[i]!;
    for (const [n, e] of edits) {
      const ps = paths(o);
      o = edit(o, ps[n % ps.length]!, e);
    }
    return o;
  });

/** Objects of arbitrary shape under every known apiVersion/kind (and skein groups' unknown kinds). */
const arbitrary = fc
  .tuple(
    fc.oneof(fc.constantFrom(...KINDS.map((k) => [k.apiVersion, k.kind] as const)), fc.constant(['networking.skein.io/v1alpha1', 'MagicPolicy'] as const)),
    fc.record({ name: fc.oneof(fc.constantFrom('a', 'web', 'shop'), fc.string({ maxLength: 10 })), namespace: fc.constantFrom('shop', 'legacy', 'skein-system') }),
    fc.dictionary(fc.constantFrom('spec', 'status', 'endpoints', 'ports', 'addressType', 'extra'), nasty, { maxKeys: 4 }),
  )
  .map(([[apiVersion, kind], metadata, rest]) => ({ ...rest, apiVersion, kind, metadata }) as Obj);

function checkVerdict(o: Obj): boolean {
  const v = verdictOf(o);
  // SKEIN_CONTROLLER_TRANSLATION_FAILED is the controller surviving a translation bug: still a bug.
  if (v.refusal) return v.refusal.code.startsWith('SKEIN_') && v.refusal.code !== 'SKEIN_CONTROLLER_TRANSLATION_FAILED' && typeof v.refusal.field === 'string' && !v.accepted;
  return true;
}

t.test('the unedited seeds are all accepted (so the properties below test translation, not refusal of everything)', async (t) => {
  const { index } = indexOver(seeds);
  t.same(index.refusals(), [], 'no refusal');
  for (const o of seeds) t.notOk(verdictOf(o).refusal, `${o.kind} accepted alone`);
});

t.test('an edited object of any kind: accepted or refused with a code and field, never an exception', async () => {
  fc.assert(fc.property(mutated, checkVerdict), { numRuns: 3000 });
});

t.test('an object of arbitrary shape under every kind: accepted or refused, never an exception', async () => {
  fc.assert(fc.property(arbitrary, checkVerdict), { numRuns: 3000 });
});

t.test('the index over the valid cluster plus random bad objects never throws; every refusal is coded; the cluster still flows', async () => {
  const { index: clean } = indexOver(seeds);
  const cleanWorkloads = [...clean.workloads()].length;
  fc.assert(
    fc.property(fc.array(fc.oneof(mutated, arbitrary), { minLength: 1, maxLength: 4 }), (extra) => {
      const { index } = indexOver([...seeds, ...extra]);
      const coded = index.refusals().every((r) => r.code.startsWith('SKEIN_') && typeof r.field === 'string' && r.object !== '');
      // The index publishes something for the agents: at least the Nodes and (unless an edit
      // took a pod's address) the base's workloads.
      const published = index.entries().size > 0 && [...index.workloads()].length >= Math.min(1, cleanWorkloads);
      index.close();
      return coded && published;
    }),
    { numRuns: 400 },
  );
});
