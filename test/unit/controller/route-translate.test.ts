// HTTPRoute/GRPCRoute (GAMMA) -> MeshRoute: every field the mesh profile serves, translated
// exactly; every refusal with its field and reason; the index's cross-object checks
// (backends and mirrors exist, oldest wins); and a property: random routes are accepted or
// refused, never crash the translation or the index.
import fc from 'fast-check';
import t from 'tap';
import type { MeshRoute, RouteRule } from '../../../src/config/policy-model.js';
import type { Obj } from './helpers.js';
import { entryValue, grpcRoute, httpRoute, indexOver, SERVICES, verdictOf } from './traffic-fixtures.js';

function routeOf(obj: Obj): MeshRoute {
  const v = verdictOf(obj);
  if (v.refusal) throw new Error(`refused: ${v.refusal.field}: ${v.refusal.reason}`);
  return v.policy!.value as MeshRoute;
}

const be = (name = 'web', extra: Obj = {}) => ({ name, port: 80, ...extra });

const accepted: [string, Obj, Partial<RouteRule> | RouteRule][] = [
  ['defaults: PathPrefix / and weight 1', { backendRefs: [be()] }, { matches: [{ path: { type: 'PathPrefix', value: '/' } }], backends: [{ namespace: 'shop', name: 'web', port: 80, weight: 1 }] }],
  ['rule name', { name: 'api', backendRefs: [be()] }, { name: 'api' }],
  [
    'path, method, headers (lower-cased, first of equal names wins), queryParams',
    {
      matches: [
        {
          path: { type: 'RegularExpression', value: '^/v[0-9]+/.*' },
          method: 'POST',
          headers: [{ name: 'X-Env', value: 'canary' }, { name: 'x-env', value: 'ignored' }, { type: 'RegularExpression', name: 'X-Id', value: '^[a-f0-9]+$' }],
          queryParams: [{ name: 'debug', value: '1' }, { type: 'RegularExpression', name: 'v', value: '^2' }],
        },
        { path: { type: 'Exact', value: '/healthz' } },
      ],
      backendRefs: [be()],
    },
    {
      matches: [
        {
          path: { type: 'RegularExpression', value: '^/v[0-9]+/.*' },
          method: 'POST',
          headers: [
            { name: 'x-env', value: 'canary', type: 'Exact' },
            { name: 'x-id', value: '^[a-f0-9]+$', type: 'RegularExpression' },
          ],
          queryParams: [
            { name: 'debug', value: '1', type: 'Exact' },
            { name: 'v', value: '^2', type: 'RegularExpression' },
          ],
        },
        { path: { type: 'Exact', value: '/healthz' } },
      ],
    },
  ],
  [
    'header modifiers on request and response (remove lower-cased)',
    {
      filters: [
        { type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'X-A', value: '1' }], add: [{ name: 'X-B', value: '2' }], remove: ['X-C'] } },
        { type: 'ResponseHeaderModifier', responseHeaderModifier: { remove: ['Server'] } },
      ],
      backendRefs: [be()],
    },
    {
      filters: {
        requestHeaders: { set: [{ name: 'X-A', value: '1' }], add: [{ name: 'X-B', value: '2' }], remove: ['x-c'] },
        responseHeaders: { remove: ['server'] },
      },
    },
  ],
  [
    'redirect: statusCode defaults to 302; ReplaceFullPath',
    { filters: [{ type: 'RequestRedirect', requestRedirect: { scheme: 'https', hostname: 'x.example', port: 8443, path: { type: 'ReplaceFullPath', replaceFullPath: '/new' } } }] },
    { filters: { redirect: { scheme: 'https', hostname: 'x.example', port: 8443, path: { type: 'ReplaceFullPath', value: '/new' }, statusCode: 302 } }, backends: [] },
  ],
  [
    'redirect 301 with ReplacePrefixMatch under a PathPrefix match',
    { matches: [{ path: { type: 'PathPrefix', value: '/old' } }], filters: [{ type: 'RequestRedirect', requestRedirect: { statusCode: 301, path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/new' } } }] },
    { filters: { redirect: { statusCode: 301, path: { type: 'ReplacePrefixMatch', value: '/new' } } } },
  ],
  [
    'URLRewrite hostname and prefix (no matches = PathPrefix /)',
    { filters: [{ type: 'URLRewrite', urlRewrite: { hostname: 'internal', path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/api' } } }], backendRefs: [be()] },
    { filters: { rewrite: { hostname: 'internal', path: { type: 'ReplacePrefixMatch', value: '/api' } } } },
  ],
  [
    'mirrors: percent, fraction (denominator default 100), none = 100; twice allowed',
    {
      filters: [
        { type: 'RequestMirror', requestMirror: { backendRef: { name: 'mirror', port: 80 }, percent: 25 } },
        { type: 'RequestMirror', requestMirror: { backendRef: { name: 'web-v2' }, fraction: { numerator: 1, denominator: 1000 } } },
        { type: 'RequestMirror', requestMirror: { backendRef: { name: 'mirror', namespace: 'shop' }, fraction: { numerator: 5 } } },
        { type: 'RequestMirror', requestMirror: { backendRef: { name: 'mirror' } } },
      ],
      backendRefs: [be()],
    },
    {
      filters: {
        mirrors: [
          { namespace: 'shop', name: 'mirror', port: 80, percent: 25 },
          { namespace: 'shop', name: 'web-v2', percent: 0.1 },
          { namespace: 'shop', name: 'mirror', percent: 5 },
          { namespace: 'shop', name: 'mirror', percent: 100 },
        ],
      },
    },
  ],
  [
    'backend filters and weights',
    { backendRefs: [be('web', { weight: 90, filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'x-v', value: '1' }] } }] }), be('web-v2', { weight: 10 })] },
    {
      backends: [
        { namespace: 'shop', name: 'web', port: 80, weight: 90, filters: { requestHeaders: { set: [{ name: 'x-v', value: '1' }] } } },
        { namespace: 'shop', name: 'web-v2', port: 80, weight: 10 },
      ],
    },
  ],
  ['timeouts', { timeouts: { request: '10s', backendRequest: '2s500ms' }, backendRefs: [be()] }, { timeoutMs: 10_000, backendTimeoutMs: 2500 }],
  ['timeouts 0s mean none (absent)', { timeouts: { request: '0s', backendRequest: '1m' }, backendRefs: [be()] }, { backendTimeoutMs: 60_000 }],
  ['retry (GEP-1731)', { retry: { codes: [503, 429, 503], attempts: 3, backoff: '100ms' }, backendRefs: [be()] }, { retry: { codes: [503, 429], attempts: 3, backoffMs: 100 } }],
  ['retry defaults: one attempt, no codes', { retry: {}, backendRefs: [be()] }, { retry: { codes: [], attempts: 1 } }],
];

t.test('HTTPRoute fields translate into the model', async (t) => {
  for (const [desc, rule, want] of accepted) {
    const r = routeOf(httpRoute({ rules: [rule] }));
    t.match(r.rules[0], want, desc);
    for (const k of Object.keys(want)) t.same((r.rules[0] as unknown as Obj)[k], (want as Obj)[k], `${desc}: ${k} exactly`);
  }
  const r = routeOf(httpRoute({ hostnames: ['web.shop'], rules: [] }));
  t.same(r, { kind: 'HTTPRoute', namespace: 'shop', name: 'r', parents: [{ namespace: 'shop', name: 'web', port: 80 }], hostnames: ['web.shop'], rules: [], createdAt: '2026-01-01T00:00:00Z' });
});

t.test('GRPCRoute fields translate into the model', async (t) => {
  const r = routeOf(
    grpcRoute({
      rules: [
        {
          name: 'get',
          matches: [{ method: { service: 'shop.v1.Cart', method: 'Get' }, headers: [{ name: 'X-Tenant', value: 'a' }] }, { method: { type: 'RegularExpression', service: 'shop\\.v1\\..*' } }],
          filters: [
            { type: 'RequestHeaderModifier', requestHeaderModifier: { add: [{ name: 'x-from', value: 'mesh' }] } },
            { type: 'RequestMirror', requestMirror: { backendRef: { name: 'mirror', port: 80 }, percent: 50 } },
          ],
          backendRefs: [be('web', { filters: [{ type: 'ResponseHeaderModifier', responseHeaderModifier: { remove: ['X-Debug'] } }] })],
        },
        { backendRefs: [be()] },
      ],
    }),
  );
  t.same(r.rules[0], {
    name: 'get',
    matches: [
      { grpc: { type: 'Exact', service: 'shop.v1.Cart', method: 'Get' }, headers: [{ name: 'x-tenant', value: 'a', type: 'Exact' }] },
      { grpc: { type: 'RegularExpression', service: 'shop\\.v1\\..*' } },
    ],
    backends: [{ namespace: 'shop', name: 'web', port: 80, weight: 1, filters: { responseHeaders: { remove: ['x-debug'] } } }],
    filters: { requestHeaders: { add: [{ name: 'x-from', value: 'mesh' }] }, mirrors: [{ namespace: 'shop', name: 'mirror', port: 80, percent: 50 }] },
  });
  t.same(r.rules[1]!.matches, [{}], 'no matches: every request');
});

const refused: [string, Obj, string, RegExp][] = [
  ['path regex that does not compile', httpRoute({ rules: [{ matches: [{ path: { type: 'RegularExpression', value: '/(a' } }] }] }), 'spec.rules[0].matches[0].path.value', /not a valid regular expression/],
  ['lookbehind (RE2 lacks it)', httpRoute({ rules: [{ matches: [{ path: { type: 'RegularExpression', value: '(?<=/a)b' } }] }] }), 'spec.rules[0].matches[0].path.value', /lookaround "\(\?<=" is not supported/],
  ['lookahead', httpRoute({ rules: [{ matches: [{ headers: [{ type: 'RegularExpression', name: 'x', value: 'a(?!b)' }] }] }] }), 'spec.rules[0].matches[0].headers[0].value', /lookaround/],
  ['backreference', httpRoute({ rules: [{ matches: [{ queryParams: [{ type: 'RegularExpression', name: 'q', value: '(a)\\1' }] }] }] }), 'spec.rules[0].matches[0].queryParams[0].value', /backreference/],
  ['header regex that does not compile', httpRoute({ rules: [{ matches: [{ headers: [{ type: 'RegularExpression', name: 'x', value: '[' }] }] }] }), 'spec.rules[0].matches[0].headers[0].value', /not a valid regular expression/],
  ['gRPC service regex', grpcRoute({ rules: [{ matches: [{ method: { type: 'RegularExpression', service: '*x' } }] }] }), 'spec.rules[0].matches[0].method.service', /not a valid regular expression/],
  ['gRPC method regex', grpcRoute({ rules: [{ matches: [{ method: { type: 'RegularExpression', method: '(' } }] }] }), 'spec.rules[0].matches[0].method.method', /not a valid regular expression/],
  ['gRPC exact service that is no name', grpcRoute({ rules: [{ matches: [{ method: { service: 'a/b' } }] }] }), 'spec.rules[0].matches[0].method.service', /not a gRPC service name/],
  ['gRPC method match with neither', grpcRoute({ rules: [{ matches: [{ method: { type: 'Exact' } }] }] }), 'spec.rules[0].matches[0].method', /needs service, method or both/],
  ['path not starting with /', httpRoute({ rules: [{ matches: [{ path: { type: 'PathPrefix', value: 'api' } }] }] }), 'spec.rules[0].matches[0].path.value', /must start with "\/"/],
  ['weights all zero', httpRoute({ rules: [{ backendRefs: [be('web', { weight: 0 }), be('web-v2', { weight: 0 })] }] }), 'spec.rules[0].backendRefs', /weights sum to 0/],
  ['negative weight', httpRoute({ rules: [{ backendRefs: [be('web', { weight: -1 })] }] }), 'spec.rules[0].backendRefs[0].weight', /must be >= 0/],
  ['malformed duration', httpRoute({ rules: [{ timeouts: { request: '1.5s' } }] }), 'spec.rules[0].timeouts.request', /not a Gateway API duration/],
  ['negative duration', httpRoute({ rules: [{ timeouts: { backendRequest: '-1s' } }] }), 'spec.rules[0].timeouts.backendRequest', /not a Gateway API duration/],
  ['backendRequest > request', httpRoute({ rules: [{ timeouts: { request: '1s', backendRequest: '2s' } }] }), 'spec.rules[0].timeouts.backendRequest', /longer than timeouts.request/],
  ['retry codes below 400', httpRoute({ rules: [{ retry: { codes: [503, 302] } }] }), 'spec.rules[0].retry.codes[1]', /must be 400-599/],
  ['retry codes above 599', httpRoute({ rules: [{ retry: { codes: [600] } }] }), 'spec.rules[0].retry.codes[0]', /must be 400-599/],
  ['retry backoff malformed', httpRoute({ rules: [{ retry: { backoff: '1 s' } }] }), 'spec.rules[0].retry.backoff', /not a Gateway API duration/],
  [
    'redirect with URLRewrite in one rule',
    httpRoute({ rules: [{ filters: [{ type: 'RequestRedirect', requestRedirect: { hostname: 'a' } }, { type: 'URLRewrite', urlRewrite: { hostname: 'b' } }] }] }),
    'spec.rules[0].filters[1].type',
    /URLRewrite cannot be combined with RequestRedirect/,
  ],
  [
    'a filter type twice',
    httpRoute({ rules: [{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: {} }, { type: 'RequestHeaderModifier', requestHeaderModifier: {} }] }] }),
    'spec.rules[0].filters[1].type',
    /appears twice/,
  ],
  [
    'a filter type twice on a backend',
    httpRoute({ rules: [{ backendRefs: [be('web', { filters: [{ type: 'URLRewrite', urlRewrite: {} }, { type: 'URLRewrite', urlRewrite: {} }] })] }] }),
    'spec.rules[0].backendRefs[0].filters[1].type',
    /appears twice/,
  ],
  [
    'ReplacePrefixMatch without a PathPrefix match',
    httpRoute({ rules: [{ matches: [{ path: { type: 'Exact', value: '/a' } }], filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplacePrefixMatch', replacePrefixMatch: '/b' } } }] }] }),
    'spec.rules[0].filters[0].urlRewrite.path.type',
    /ReplacePrefixMatch needs every match of the rule to be a PathPrefix/,
  ],
  [
    'path modifier with the other field',
    httpRoute({ rules: [{ filters: [{ type: 'URLRewrite', urlRewrite: { path: { type: 'ReplaceFullPath', replaceFullPath: '/a', replacePrefixMatch: '/b' } } }] }] }),
    'spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch',
    /not allowed with type ReplaceFullPath/,
  ],
  ['filter without its config', httpRoute({ rules: [{ filters: [{ type: 'RequestMirror' }] }] }), 'spec.rules[0].filters[0].requestMirror', /missing: type RequestMirror needs requestMirror/],
  ['filter with another type’s config', httpRoute({ rules: [{ filters: [{ type: 'URLRewrite', urlRewrite: {}, requestRedirect: {} }] }] }), 'spec.rules[0].filters[0].requestRedirect', /not allowed with type URLRewrite/],
  ['redirect status not in the spec', httpRoute({ rules: [{ filters: [{ type: 'RequestRedirect', requestRedirect: { statusCode: 304 } }] }] }), 'spec.rules[0].filters[0].requestRedirect.statusCode', /expected one of 301, 302, 303, 307, 308/],
  ['mirror percent and fraction', httpRoute({ rules: [{ filters: [{ type: 'RequestMirror', requestMirror: { backendRef: { name: 'mirror' }, percent: 1, fraction: { numerator: 1 } } }] }] }), 'spec.rules[0].filters[0].requestMirror', /exclude each other/],
  ['mirror fraction above 1', httpRoute({ rules: [{ filters: [{ type: 'RequestMirror', requestMirror: { backendRef: { name: 'mirror' }, fraction: { numerator: 3, denominator: 2 } } }] }] }), 'spec.rules[0].filters[0].requestMirror.fraction', /greater than denominator/],
  ['mirror to a non-Service', httpRoute({ rules: [{ filters: [{ type: 'RequestMirror', requestMirror: { backendRef: { group: 'x.io', kind: 'Thing', name: 'm' } } }] }] }), 'spec.rules[0].filters[0].requestMirror.backendRef', /only Service backends/],
  ['ExtensionRef filter', httpRoute({ rules: [{ filters: [{ type: 'ExtensionRef', extensionRef: { group: 'x', kind: 'y', name: 'z' } }] }] }), 'spec.rules[0].filters[0].type', /unsupported value "ExtensionRef": skein has no filter extensions/],
  ['CORS filter', httpRoute({ rules: [{ filters: [{ type: 'CORS', cors: {} }] }] }), 'spec.rules[0].filters[0].type', /unsupported value "CORS"/],
  ['cors field', httpRoute({ rules: [{ filters: [{ type: 'URLRewrite', urlRewrite: {}, cors: {} }] }] }), 'spec.rules[0].filters[0].cors', /unknown field: skein does not implement CORS/],
  ['sessionPersistence', httpRoute({ rules: [{ sessionPersistence: { sessionName: 'x' } }] }), 'spec.rules[0].sessionPersistence', /unknown field: .*sessionPersistence/],
  ['GRPCRoute: no redirect filter', grpcRoute({ rules: [{ filters: [{ type: 'RequestRedirect', requestRedirect: {} }] }] }), 'spec.rules[0].filters[0].type', /expected one of RequestHeaderModifier, ResponseHeaderModifier, RequestMirror/],
  ['GRPCRoute: no timeouts', grpcRoute({ rules: [{ timeouts: { request: '1s' } }] }), 'spec.rules[0].timeouts', /unknown field/],
  ['header name that is no token', httpRoute({ rules: [{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'bad name', value: '1' }] } }] }] }), 'spec.rules[0].filters[0].requestHeaderModifier.set[0].name', /not a header name/],
  ['header set twice', httpRoute({ rules: [{ filters: [{ type: 'RequestHeaderModifier', requestHeaderModifier: { set: [{ name: 'X', value: '1' }, { name: 'x', value: '2' }] } }] }] }), 'spec.rules[0].filters[0].requestHeaderModifier.set[1].name', /appears twice/],
  ['rule name twice', httpRoute({ rules: [{ name: 'a' }, { name: 'a' }] }), 'spec.rules[1].name', /used twice/],
  ['a Gateway parent', { ...httpRoute({}), spec: { parentRefs: [{ name: 'gw' }] } }, 'spec.parentRefs[0]', /Services only/],
  ['sectionName on a Service parent', { ...httpRoute({}), spec: { parentRefs: [{ kind: 'Service', group: '', name: 'web', sectionName: 'http' }] } }, 'spec.parentRefs[0].sectionName', /name the Service port with `port`/],
];

t.test('refusals name the field and the reason', async (t) => {
  for (const [desc, obj, field, reason] of refused) {
    const v = verdictOf(obj);
    t.match(v.refusal, { field, reason, code: 'SKEIN_CONTROLLER_RESOURCE_REFUSED' }, desc);
    t.notOk(v.policy, `${desc}: nothing translated`);
  }
});

t.test('the index: backends and mirrors must exist; the oldest route wins a match', async (t) => {
  const objects = [
    ...SERVICES,
    httpRoute({ rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/a' } }], backendRefs: [be()] }] }, 'good', '2026-01-01T00:00:00Z'),
    httpRoute({ rules: [{ backendRefs: [be('ghost')] }] }, 'ghost-backend'),
    httpRoute({ rules: [{ filters: [{ type: 'URLRewrite', urlRewrite: {} }, { type: 'RequestMirror', requestMirror: { backendRef: { name: 'ghost-mirror' } } }], backendRefs: [be()] }] }, 'ghost-mirror'),
    httpRoute({ rules: [{ backendRefs: [be('web', { filters: [{ type: 'RequestMirror', requestMirror: { backendRef: { name: 'nope' } } }] })] }] }, 'ghost-backend-mirror'),
    httpRoute({ rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/a' } }], backendRefs: [be('web-v2')] }] }, 'younger', '2026-01-02T00:00:00Z'),
    httpRoute({ rules: [{ matches: [{ path: { type: 'PathPrefix', value: '/a' }, queryParams: [{ name: 'v', value: '2' }] }], backendRefs: [be('web-v2')] }] }, 'query-differs', '2026-01-03T00:00:00Z'),
  ];
  const { index, refusal } = indexOver(objects);
  t.match(refusal('HTTPRoute/shop/ghost-backend'), { field: 'spec.rules[0].backendRefs[0]', reason: 'Service shop/ghost does not exist' });
  t.match(refusal('HTTPRoute/shop/ghost-mirror'), { field: 'spec.rules[0].filters[1].requestMirror.backendRef', reason: 'mirror Service shop/ghost-mirror does not exist' });
  t.match(refusal('HTTPRoute/shop/ghost-backend-mirror'), { field: 'spec.rules[0].backendRefs[0].filters[0].requestMirror.backendRef', reason: /shop\/nope does not exist/ });
  t.match(refusal('HTTPRoute/shop/younger'), { field: 'spec.rules[0].matches[0]', reason: /conflicts with HTTPRoute shop\/good \(older\)/, code: 'SKEIN_CONTROLLER_RESOURCE_CONFLICT' });
  t.notOk(refusal('HTTPRoute/shop/query-differs'), 'a query match makes it another match');
  t.ok(entryValue(index, 'route|HTTPRoute/shop/good'));
  t.ok(entryValue(index, 'route|HTTPRoute/shop/query-differs'));
  t.equal(index.refusals().length, 4);
  index.close();
});

t.test('the index: a consumer route (another namespace) never conflicts with the producer route', async (t) => {
  const consumer: Obj = { ...httpRoute({ rules: [{ backendRefs: [be('web-v2', { namespace: 'shop' })] }] }, 'consumer'), metadata: { name: 'consumer', namespace: 'front', creationTimestamp: '2026-01-02T00:00:00Z' } };
  (consumer.spec as Obj).parentRefs = [{ group: '', kind: 'Service', name: 'web', namespace: 'shop', port: 80 }];
  const grant = (to: Obj, name = 'front-routes'): Obj => ({
    apiVersion: 'gateway.networking.k8s.io/v1beta1',
    kind: 'ReferenceGrant',
    metadata: { name, namespace: 'shop' },
    spec: { from: [{ group: 'gateway.networking.k8s.io', kind: 'HTTPRoute', namespace: 'front' }], to: [to] },
  });
  const without = indexOver([...SERVICES, httpRoute({ rules: [{ backendRefs: [be()] }] }, 'producer'), consumer]);
  t.match(without.refusal('HTTPRoute/front/consumer'), { field: 'spec.rules[0].backendRefs[0]', reason: /^RefNotPermitted: Service shop\/web-v2 is in another namespace and no ReferenceGrant in shop/ }, 'a backend in another namespace needs a ReferenceGrant there');
  without.index.close();
  const other = indexOver([...SERVICES, consumer, grant({ group: '', kind: 'Service', name: 'web' })]);
  t.match(other.refusal('HTTPRoute/front/consumer'), { reason: /^RefNotPermitted/ }, 'a grant for another Service does not do');
  other.index.close();
  const { index, refusal } = indexOver([...SERVICES, httpRoute({ rules: [{ backendRefs: [be()] }] }, 'producer'), consumer, grant({ group: '', kind: 'Service' })]);
  t.notOk(refusal('HTTPRoute/front/consumer'), `with the grant: accepted beside the producer route ${JSON.stringify(refusal('HTTPRoute/front/consumer'))}`);
  t.ok(entryValue(index, 'route|HTTPRoute/shop/producer'));
  t.ok(entryValue(index, 'route|HTTPRoute/front/consumer'));
  t.notOk(entryValue(index, 'reference-grant|shop/front-routes'), 'grants are the controller\'s: never streamed to agents');
  t.equal(index.refusals().length, 0);
  index.close();
});

t.test('the index: a refused new version of a route leaves the last accepted version serving', async (t) => {
  const good = httpRoute({ rules: [{ backendRefs: [be('web-v2')] }] }, 'guarded');
  const { index, store, refusal } = indexOver([...SERVICES, good]);
  t.ok(entryValue(index, 'route|HTTPRoute/shop/guarded'), 'served');
  const bad = httpRoute({ rules: [{ matches: [{ path: { type: 'RegularExpression', value: '/(' } }], backendRefs: [be()] }] }, 'guarded');
  store.replaceOrigin('test.yaml', [...SERVICES, bad].map((obj, doc) => ({ obj, doc })));
  index.flush();
  t.match(refusal('HTTPRoute/shop/guarded'), { field: 'spec.rules[0].matches[0].path.value', reason: /the last accepted version keeps serving/ });
  const served = entryValue<MeshRoute>(index, 'route|HTTPRoute/shop/guarded');
  t.equal(served?.rules[0]?.backends[0]?.name, 'web-v2', 'the accepted version is still the one served');
  store.replaceOrigin('test.yaml', SERVICES.map((obj, doc) => ({ obj, doc })));
  index.flush();
  t.notOk(entryValue(index, 'route|HTTPRoute/shop/guarded'), 'deleting the object removes it');
  index.close();
});

t.test('property: random routes are accepted or refused, never crash', async () => {
  const str = fc.oneof(fc.constantFrom('/', '/a', 'a', '(', '^/x$', '(?<=a)', '\\1', '', 'X-Y', 'web', 'mirror', '1s', '0s', '-1s', '10ms', '1h2m'), fc.string({ maxLength: 6 }));
  const num = fc.oneof(fc.integer({ min: -5, max: 700 }), fc.constantFrom(0, 1, 100, 302, 503), fc.double({ noNaN: true }));
  const leaf = fc.oneof(str, num, fc.boolean(), fc.constant(null));
  const key = fc.constantFrom(
    'type', 'name', 'value', 'path', 'method', 'headers', 'queryParams', 'filters', 'backendRefs', 'timeouts', 'request', 'backendRequest', 'retry', 'codes',
    'attempts', 'backoff', 'requestHeaderModifier', 'set', 'add', 'remove', 'requestRedirect', 'urlRewrite', 'requestMirror', 'backendRef', 'percent',
    'fraction', 'numerator', 'denominator', 'statusCode', 'replacePrefixMatch', 'replaceFullPath', 'port', 'weight', 'matches', 'service', 'kind', 'group',
  );
  const { value } = fc.letrec((tie) => ({
    value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, leaf, fc.array(tie('value'), { maxLength: 3 }), fc.dictionary(key, tie('value'), { maxKeys: 4 })),
  }));
  const rule = fc.dictionary(key, value, { maxKeys: 5 });
  fc.assert(
    fc.property(fc.boolean(), fc.array(rule, { maxLength: 3 }), (grpc, rules) => {
      const obj = grpc ? grpcRoute({ rules }) : httpRoute({ rules });
      const v = verdictOf(obj);
      if (v.refusal) return typeof v.refusal.field === 'string' && v.refusal.reason.length > 0;
      const { index } = indexOver([...SERVICES, obj]);
      const ok = index.refusals().length + (index.entries().has(`route|${obj.kind}/shop/${(obj.metadata as Obj).name}`) ? 1 : 0) === 1;
      index.close();
      return ok;
    }),
    { numRuns: 300 },
  );
});
