import fc from 'fast-check';
import t from 'tap';
import type { MeshRoute, RouteMatch, RouteRule } from '../../../src/config/policy-model.js';
import { applyHeaderModifier, firstQueryValue, type RequestAttrs, RouteTable, redirectLocation, rewritePath } from '../../../src/routing/route-table.js';

const svc = { namespace: 'prod', name: 'api' };
const req = (path: string, extra: Partial<RequestAttrs> = {}): RequestAttrs => ({ method: 'GET', path, headers: {}, grpc: false, ...extra });
const rule = (name: string, matches: RouteMatch[], backends = [{ namespace: 'prod', name, weight: 1 }]): RouteRule => ({ name, matches, backends });
const route = (name: string, rules: RouteRule[], over: Partial<MeshRoute> = {}): MeshRoute => ({
  kind: 'HTTPRoute',
  namespace: 'prod',
  name,
  parents: [{ namespace: 'prod', name: 'api' }],
  hostnames: [],
  rules,
  ...over,
});
/** Name of the backend a lookup routes to ('none', 'no-match', or 'match:<backend>' / 'match:-' without one). */
const where = (table: RouteTable, r: RequestAttrs, client = 'web', port = 80): string => {
  const l = table.lookup(client, svc, port, r);
  return l.kind === 'match' ? `match:${l.backend?.name ?? '-'}` : l.kind;
};

t.test('no route attached: none; attached but nothing matches: no-match', async (t) => {
  const table = RouteTable.compile([route('r', [rule('exact', [{ path: { type: 'Exact', value: '/a' } }])])]);
  t.equal(table.lookup('web', { namespace: 'prod', name: 'other' }, 80, req('/a')).kind, 'none');
  t.equal(where(table, req('/a')), 'match:exact');
  const miss = table.lookup('web', svc, 80, req('/b'));
  t.equal(miss.kind, 'no-match');
  t.equal(miss.kind === 'no-match' && miss.route.name, 'r');
});

t.test('path matching: Exact, element-wise PathPrefix, full-match regex, query ignored', async (t) => {
  const table = RouteTable.compile([
    route('r', [
      rule('foo', [{ path: { type: 'PathPrefix', value: '/foo' } }]),
      rule('slash', [{ path: { type: 'PathPrefix', value: '/bar/' } }]),
      rule('re', [{ path: { type: 'RegularExpression', value: '/v[0-9]+' } }]),
    ]),
  ]);
  const cases: [string, string][] = [
    ['/foo', 'match:foo'],
    ['/foo/', 'match:foo'],
    ['/foo/bar', 'match:foo'],
    ['/foo?x=1', 'match:foo'],
    ['/foobar', 'no-match'],
    ['/bar', 'match:slash'],
    ['/bar/x', 'match:slash'],
    ['/barx', 'no-match'],
    ['/v1', 'match:re'],
    ['/v12?q', 'match:re'],
    ['/v1/x', 'no-match'],
    ['/xv1', 'no-match'],
  ];
  for (const [path, want] of cases) t.equal(where(table, req(path)), want, path);
});

t.test('HTTPRoute precedence (Gateway API): exact > regex > longest prefix > method > headers > query > oldest > name > rule order', async (t) => {
  const table = RouteTable.compile([
    route('b-newer', [rule('prefix-long', [{ path: { type: 'PathPrefix', value: '/api/v1' } }]), rule('exact', [{ path: { type: 'Exact', value: '/api/v1/users' } }])], { createdAt: '2024-02-01T00:00:00Z' }),
    route('a-old', [
      rule('prefix-short', [{ path: { type: 'PathPrefix', value: '/api' } }]),
      rule('method', [{ path: { type: 'PathPrefix', value: '/api' }, method: 'POST' }]),
      rule('header', [{ path: { type: 'PathPrefix', value: '/api' }, method: 'POST', headers: [{ name: 'x-canary', value: 'yes', type: 'Exact' }] }]),
      rule('query', [{ path: { type: 'PathPrefix', value: '/api' }, queryParams: [{ name: 'debug', value: '1', type: 'Exact' }] }]),
      rule('two-headers', [
        {
          path: { type: 'PathPrefix', value: '/api' },
          headers: [
            { name: 'x-a', value: '1', type: 'Exact' },
            { name: 'x-b', value: '1', type: 'Exact' },
          ],
        },
      ]),
      rule('regex', [{ path: { type: 'RegularExpression', value: '/api/v1/.*' } }]),
    ], { createdAt: '2024-01-01T00:00:00Z' }),
  ]);
  const cases: [RequestAttrs, string][] = [
    [req('/api/v1/users'), 'match:exact'],
    [req('/api/v1/things'), 'match:regex'],
    [req('/api/v1'), 'match:prefix-long'],
    [req('/api/v2'), 'match:prefix-short'],
    [req('/api/v2', { method: 'POST' }), 'match:method'],
    [req('/api/v2', { method: 'POST', headers: { 'x-canary': 'yes' } }), 'match:header'],
    [req('/api/v2?debug=1'), 'match:query'],
    [req('/api/v2?debug=1', { method: 'POST' }), 'match:method'],
    [req('/api/v2?debug=1', { headers: { 'x-a': '1' } }), 'match:query'],
    [req('/api/v2?debug=1', { headers: { 'x-a': '1', 'x-b': '1' } }), 'match:two-headers'],
  ];
  for (const [r, want] of cases) t.equal(where(table, r), want, `${r.method} ${r.path} ${JSON.stringify(r.headers)}`);
});

t.test('ties between routes: oldest creation, then namespace/name; within a route the first rule', async (t) => {
  const p = (name: string, created?: string) =>
    route(name, [rule(`${name}-1`, [{ path: { type: 'PathPrefix', value: '/x' } }]), rule(`${name}-2`, [{ path: { type: 'PathPrefix', value: '/x' } }])], created ? { createdAt: created } : {});
  t.equal(where(RouteTable.compile([p('zz', '2020-01-01T00:00:00Z'), p('aa', '2021-01-01T00:00:00Z')]), req('/x')), 'match:zz-1', 'older wins over name');
  t.equal(where(RouteTable.compile([p('zz', '2020-01-01T00:00:00Z'), p('aa', '2020-01-01T00:00:00Z')]), req('/x')), 'match:aa-1', 'same age: name');
  t.equal(where(RouteTable.compile([p('zz'), p('aa', '2030-01-01T00:00:00Z')]), req('/x')), 'match:aa-1', 'a timestamp beats none');
});

t.test('headers: names case-insensitive, first entry per name, repeated values, regex; bad regex never matches', async (t) => {
  const table = RouteTable.compile([
    route('r', [
      rule('dup', [{ headers: [{ name: 'X-Env', value: 'a', type: 'Exact' }, { name: 'x-env', value: 'b', type: 'Exact' }] }]),
      rule('re', [{ headers: [{ name: 'x-user', value: 'u[0-9]+', type: 'RegularExpression' }] }]),
      rule('bad', [{ headers: [{ name: 'x-bad', value: '(', type: 'RegularExpression' }] }]),
    ]),
  ]);
  t.equal(where(table, req('/', { headers: { 'x-env': 'a' } })), 'match:dup');
  t.equal(where(table, req('/', { headers: { 'x-env': 'b' } })), 'no-match', 'the second entry for a name is ignored');
  t.equal(where(table, req('/', { headers: { 'x-env': ['z', 'a'] } })), 'match:dup', 'any value of a repeated header');
  t.equal(where(table, req('/', { headers: { 'x-user': 'u42' } })), 'match:re');
  t.equal(where(table, req('/', { headers: { 'x-user': 'xu42' } })), 'no-match', 'full match only');
  t.equal(where(table, req('/', { headers: { 'x-bad': '(' } })), 'no-match');
});

t.test('query params: exact-case names, first value of a repeat, percent-decoded', async (t) => {
  const table = RouteTable.compile([route('r', [rule('q', [{ queryParams: [{ name: 'v', value: 'a b', type: 'Exact' }] }])])]);
  t.equal(where(table, req('/?v=a%20b')), 'match:q');
  t.equal(where(table, req('/?x=1&v=a+b')), 'match:q');
  t.equal(where(table, req('/?v=c&v=a%20b')), 'no-match', 'first value only');
  t.equal(where(table, req('/?V=a%20b')), 'no-match', 'names are case-sensitive');
  t.equal(firstQueryValue('a=1&b&c=', 'b'), '');
  t.equal(firstQueryValue('a=1&b&c=', 'c'), '');
  t.equal(firstQueryValue('a=1&&a=2', 'a'), '1');
  t.equal(firstQueryValue('a=%zz', 'a'), '%zz', 'bad escapes kept verbatim');
});

t.test('GAMMA: producer routes for everyone, consumer routes only for their namespace and then exclusively', async (t) => {
  const producer = route('producer', [rule('p', [])]);
  const consumer = route('consumer', [rule('c', [{ path: { type: 'PathPrefix', value: '/only' } }])], { namespace: 'web', parents: [{ namespace: 'prod', name: 'api' }] });
  const table = RouteTable.compile([producer, consumer]);
  t.equal(where(table, req('/x'), 'batch'), 'match:p', 'other namespaces: producer routes');
  t.equal(where(table, req('/x'), 'prod'), 'match:p', "the Service's own namespace: producer routes");
  t.equal(where(table, req('/only/1'), 'web'), 'match:c', 'consumer namespace: its route');
  t.equal(where(table, req('/x'), 'web'), 'no-match', 'and only its routes (producer rules do not apply)');
  const stray = route('stray', [rule('s', [])], { namespace: 'elsewhere', parents: [{ namespace: 'prod', name: 'api' }] });
  t.equal(where(RouteTable.compile([stray]), req('/x'), 'web'), 'none', 'a consumer route of another namespace does not apply');
});

t.test('parent port: the route applies to that Service port only; hostnames are ignored', async (t) => {
  const table = RouteTable.compile([route('r', [rule('p80', [])], { parents: [{ namespace: 'prod', name: 'api', port: 80 }], hostnames: ['nope.example'] })]);
  t.equal(where(table, req('/'), 'web', 80), 'match:p80');
  t.equal(where(table, req('/'), 'web', 8080), 'none');
});

t.test('GRPCRoute: wins the port over HTTPRoutes; service/method precedence; gRPC falls back to HTTPRoutes', async (t) => {
  const g = (name: string, grpc: RouteMatch['grpc'], headers?: RouteMatch['headers']) => rule(name, [{ grpc, headers }]);
  const grpcRoute = route(
    'g',
    [
      g('any', undefined),
      g('svc', { type: 'Exact', service: 'pkg.Users' }),
      g('svc-method', { type: 'Exact', service: 'pkg.Users', method: 'Get' }),
      g('method', { type: 'Exact', method: 'Get' }),
      g('re', { type: 'RegularExpression', service: 'pkg\\..*', method: 'List.*' }),
      g('hdr', { type: 'Exact', service: 'pkg.Users' }, [{ name: 'x-v', value: '2', type: 'Exact' }]),
    ],
    { kind: 'GRPCRoute' },
  );
  const http = route('h', [rule('http', [])]);
  const both = RouteTable.compile([grpcRoute, http]);
  const gr = (path: string, headers = {}) => req(path, { method: 'POST', grpc: true, headers });
  t.equal(where(both, gr('/pkg.Users/Get')), 'match:svc-method');
  t.equal(where(both, gr('/pkg.Users/Put')), 'match:svc');
  t.equal(where(both, gr('/pkg.Users/Put', { 'x-v': '2' })), 'match:hdr');
  t.equal(where(both, gr('/pkg.Orders/Get')), 'match:method');
  t.equal(where(both, gr('/pkg.Orders/ListAll')), 'match:re');
  t.equal(where(both, gr('/other.Svc/Do')), 'match:any');
  t.equal(where(both, gr('/bad')), 'match:any', 'a malformed path still matches a rule without a method match');
  t.equal(where(both, req('/plain')), 'no-match', 'non-gRPC request on a port with GRPCRoutes: HTTPRoutes are conflicted (GEP-1426)');
  t.equal(where(RouteTable.compile([http]), gr('/pkg.Users/Get')), 'match:http', 'gRPC without GRPCRoutes uses HTTPRoutes');
});

t.test('weighted backends: smooth WRR is exact over every window; weight 0 never; no backend -> undefined', async (t) => {
  const r = route('r', [
    rule('w', [], [
      { namespace: 'prod', name: 'a', weight: 80 },
      { namespace: 'prod', name: 'b', weight: 20 },
      { namespace: 'prod', name: 'z', weight: 0 },
    ]),
  ]);
  const table = RouteTable.compile([r]);
  const counts: Record<string, number> = {};
  for (let i = 0; i < 1000; i++) {
    const w = where(table, req('/'));
    counts[w] = (counts[w] ?? 0) + 1;
  }
  t.same(counts, { 'match:a': 800, 'match:b': 200 });
  t.equal(where(RouteTable.compile([route('e', [rule('none', [], [])])]), req('/')), 'match:-', 'rule without backends');
  t.equal(where(RouteTable.compile([route('e', [rule('zero', [], [{ namespace: 'prod', name: 'a', weight: 0 }])])]), req('/')), 'match:-', 'all weights zero');

  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 50 }), { minLength: 1, maxLength: 6 }), fc.integer({ min: 0, max: 3 }), (weights, rounds) => {
      const total = weights.reduce((a, b) => a + b, 0);
      const tb = RouteTable.compile([route('p', [rule('p', [], weights.map((w, i) => ({ namespace: 'prod', name: `b${i}`, weight: w })))])]);
      for (let k = 0; k < rounds; k++) where(tb, req('/')); // any starting point of the window
      const got = weights.map(() => 0);
      for (let i = 0; i < total; i++) {
        const l = tb.lookup('web', svc, 80, req('/'));
        if (l.kind === 'match' && l.backend) got[Number(l.backend.name.slice(1))]!++;
      }
      return total === 0 || got.every((g, i) => g === weights[i]);
    }),
  );
});

t.test('a lookup never throws, whatever the request or the compiled patterns', async (t) => {
  const str = fc.string({ maxLength: 12 });
  const matchArb = fc.record(
    {
      path: fc.record({ type: fc.constantFrom('Exact', 'PathPrefix', 'RegularExpression'), value: str }),
      method: fc.constantFrom('GET', 'POST'),
      headers: fc.array(fc.record({ name: fc.constantFrom('a', 'B'), value: str, type: fc.constantFrom('Exact', 'RegularExpression') }), { maxLength: 2 }),
      queryParams: fc.array(fc.record({ name: fc.constantFrom('q', 'r'), value: str, type: fc.constantFrom('Exact', 'RegularExpression') }), { maxLength: 2 }),
      grpc: fc.record({ type: fc.constantFrom('Exact', 'RegularExpression'), service: str, method: str }, { requiredKeys: ['type'] }),
    },
    { requiredKeys: [] },
  ) as fc.Arbitrary<RouteMatch>;
  const routeArb = fc.record({
    kind: fc.constantFrom('HTTPRoute', 'GRPCRoute'),
    namespace: fc.constantFrom('prod', 'web'),
    name: fc.constantFrom('r1', 'r2', 'r3'),
    port: fc.option(fc.constantFrom(80, 81), { nil: undefined }),
    matches: fc.array(matchArb, { maxLength: 3 }),
    weights: fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 3 }),
  });
  const reqArb = fc.record({
    method: fc.constantFrom('GET', 'POST'),
    path: fc.string({ maxLength: 20 }),
    headers: fc.dictionary(fc.constantFrom('a', 'b'), fc.oneof(fc.string(), fc.array(fc.string(), { maxLength: 3 }))),
    grpc: fc.boolean(),
  });
  fc.assert(
    fc.property(fc.array(routeArb, { maxLength: 4 }), fc.array(reqArb, { minLength: 1, maxLength: 5 }), fc.constantFrom('prod', 'web', 'other'), (rs, reqs, client) => {
      const table = RouteTable.compile(
        rs.map((r) => ({
          kind: r.kind as MeshRoute['kind'],
          namespace: r.namespace,
          name: r.name,
          parents: [{ namespace: 'prod', name: 'api', port: r.port }],
          hostnames: [],
          rules: [{ matches: r.matches, backends: r.weights.map((w, i) => ({ namespace: 'prod', name: `b${i}`, weight: w })) }],
        })),
      );
      for (const r of reqs) {
        const l = table.lookup(client, svc, 80, r);
        if (rs.length === 0 && l.kind !== 'none') return false;
      }
      return true;
    }),
    { numRuns: 300 },
  );
  t.pass('300 random tables x requests looked up without throwing');
});

t.test('rewritePath: ReplaceFullPath and ReplacePrefixMatch as the spec table; the query stays', async (t) => {
  const cases: [string, string, string, string][] = [
    ['/foo', '/foo/bar', '/xyz', '/xyz/bar'],
    ['/foo', '/foo/bar', '/xyz/', '/xyz/bar'],
    ['/foo/', '/foo/bar', '/xyz', '/xyz/bar'],
    ['/foo/', '/foo/bar', '/xyz/', '/xyz/bar'],
    ['/foo', '/foo', '/xyz', '/xyz'],
    ['/foo', '/foo/', '/xyz', '/xyz/'],
    ['/foo/', '/foo', '/xyz', '/xyz'],
    ['/foo', '/foo/bar', '/', '/bar'],
    ['/foo', '/foo', '/', '/'],
    ['/foo', '/foo/', '/', '/'],
    ['/', '/foo', '/xyz', '/xyz/foo'],
    ['/foo', '/foo/bar?a=1', '/xyz', '/xyz/bar?a=1'],
  ];
  for (const [prefix, path, value, want] of cases) t.equal(rewritePath(path, prefix, { type: 'ReplacePrefixMatch', value }), want, `${prefix} ${path} ${value}`);
  t.equal(rewritePath('/a/b?x=1', undefined, { type: 'ReplaceFullPath', value: '/c' }), '/c?x=1');
  t.equal(rewritePath('/a/b', undefined, { type: 'ReplacePrefixMatch', value: '/c' }), '/a/b', 'no prefix matched: unchanged');
});

t.test('the matched prefix is exposed for ReplacePrefixMatch', async (t) => {
  const table = RouteTable.compile([route('r', [rule('p', [{ path: { type: 'PathPrefix', value: '/old/' } }])])]);
  const l = table.lookup('web', svc, 80, req('/old/x?y'));
  t.equal(l.kind === 'match' && l.matchedPrefix, '/old/');
  t.equal(l.kind === 'match' && rewritePath('/old/x?y', l.matchedPrefix, { type: 'ReplacePrefixMatch', value: '/new' }), '/new/x?y');
});

t.test('redirectLocation: scheme, host, port defaults per spec', async (t) => {
  const r = { scheme: 'http' as const, host: 'api.prod:8080', port: 8080, target: '/a?b=1' };
  t.equal(redirectLocation(r, undefined, { statusCode: 302 }), 'http://api.prod:8080/a?b=1');
  t.equal(redirectLocation(r, undefined, { statusCode: 301, scheme: 'https' }), 'https://api.prod/a?b=1', 'scheme set: its well-known port, omitted');
  t.equal(redirectLocation(r, undefined, { statusCode: 301, hostname: 'x.example', port: 80 }), 'http://x.example/a?b=1');
  t.equal(redirectLocation(r, '/a', { statusCode: 302, path: { type: 'ReplacePrefixMatch', value: '/z' } }), 'http://api.prod:8080/z?b=1');
  t.equal(redirectLocation({ ...r, host: '[fd00::1]:8080' }, undefined, { statusCode: 302 }), 'http://[fd00::1]:8080/a?b=1');
});

t.test('applyHeaderModifier: set replaces, add appends, remove deletes, names case-insensitive', async (t) => {
  const h: Record<string, string | string[] | undefined> = { 'x-a': '1', 'x-b': '2', 'x-c': ['3'] };
  applyHeaderModifier(h, {
    set: [{ name: 'X-A', value: 'one' }],
    add: [
      { name: 'X-B', value: 'two' },
      { name: 'x-c', value: 'three' },
      { name: 'x-new', value: 'n' },
    ],
    remove: ['X-C'],
  });
  t.same(h, { 'x-a': 'one', 'x-b': ['2', 'two'], 'x-new': 'n' });
});
