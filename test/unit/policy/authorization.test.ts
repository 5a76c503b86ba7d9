/**
 * AuthorizationPolicy semantics as Istio documents them, one row per case: scope, allow-
 * nothing, deny-wins, ALLOW with no match, every field and its notX, wildcards, `when` keys,
 * L7 rules on a connection (fail safe), AUDIT and dry run.
 */
import t from 'tap';
import type { Workload } from '../../../src/config/model.js';
import type { AuthorizationPolicy, AuthorizationRule } from '../../../src/config/policy-model.js';
import { type AuthzRequest, policiesFor, WorkloadAuthorizer } from '../../../src/policy/authorization.js';

const web = 'spiffe://cluster.local/ns/shop/sa/web';
const batch = 'spiffe://cluster.local/ns/jobs/sa/batch';

function pol(name: string, action: AuthorizationPolicy['action'], rules: Partial<AuthorizationRule>[], extra: Partial<AuthorizationPolicy> = {}): AuthorizationPolicy {
  return { namespace: 'shop', name, action, rules: rules.map((r) => ({ from: [], to: [], when: [], ...r })), ...extra };
}

const get = (path: string, extra: Partial<AuthzRequest> = {}, headers: Record<string, string> = {}): AuthzRequest => ({
  source: web,
  sourceIp: '10.244.1.11',
  port: 8080,
  http: { method: 'GET', path, authority: 'echo.shop:80', headers },
  ...extra,
});
const tcp = (extra: Partial<AuthzRequest> = {}): AuthzRequest => ({ source: web, sourceIp: '10.244.1.11', port: 7070, ...extra });

interface Row {
  name: string;
  policies: AuthorizationPolicy[];
  req: AuthzRequest;
  allow: boolean;
  by?: string;
}

const rows: Row[] = [
  { name: 'no policy: allowed', policies: [], req: get('/'), allow: true },
  { name: 'ALLOW with no rules (allow-nothing): denied', policies: [pol('nothing', 'ALLOW', [])], req: get('/'), allow: false },
  { name: 'ALLOW with an empty rule: everything allowed', policies: [pol('all', 'ALLOW', [{}])], req: get('/'), allow: true, by: 'shop/all' },
  { name: 'DENY with no rules matches nothing', policies: [pol('d', 'DENY', [])], req: get('/'), allow: true },
  {
    name: 'deny wins over allow',
    policies: [pol('all', 'ALLOW', [{}]), pol('no-admin', 'DENY', [{ to: [{ paths: ['/admin*'] }] }])],
    req: get('/admin/x'),
    allow: false,
    by: 'shop/no-admin',
  },
  { name: 'ALLOW present, no rule matches: denied', policies: [pol('only-batch', 'ALLOW', [{ from: [{ principals: [batch] }] }])], req: get('/'), allow: false },
  { name: 'principal exact (spiffe:// form)', policies: [pol('p', 'ALLOW', [{ from: [{ principals: [web] }] }])], req: get('/'), allow: true },
  { name: "principal in Istio's form (no scheme)", policies: [pol('p', 'ALLOW', [{ from: [{ principals: ['cluster.local/ns/shop/sa/web'] }] }])], req: get('/'), allow: true },
  { name: 'principal suffix wildcard', policies: [pol('p', 'ALLOW', [{ from: [{ principals: ['*/sa/web'] }] }])], req: get('/'), allow: true },
  { name: 'principal prefix wildcard, no match', policies: [pol('p', 'ALLOW', [{ from: [{ principals: ['cluster.local/ns/jobs/*'] }] }])], req: get('/'), allow: false },
  { name: 'notPrincipals excludes the source', policies: [pol('p', 'ALLOW', [{ from: [{ notPrincipals: [web] }] }])], req: get('/'), allow: false },
  { name: 'plaintext (no principal) never matches principals "*"', policies: [pol('p', 'ALLOW', [{ from: [{ principals: ['*'] }] }])], req: tcp({ source: undefined }), allow: false },
  { name: 'namespaces', policies: [pol('n', 'DENY', [{ from: [{ namespaces: ['shop'] }] }])], req: get('/'), allow: false, by: 'shop/n' },
  { name: 'notNamespaces', policies: [pol('n', 'DENY', [{ from: [{ notNamespaces: ['shop'] }] }])], req: get('/'), allow: true },
  { name: 'ipBlocks', policies: [pol('ip', 'DENY', [{ from: [{ ipBlocks: ['10.244.1.0/24'] }] }])], req: get('/'), allow: false },
  { name: 'ipBlocks with a v4-mapped address', policies: [pol('ip', 'DENY', [{ from: [{ ipBlocks: ['10.244.1.11'] }] }])], req: get('/', { sourceIp: '::ffff:10.244.1.11' }), allow: false },
  { name: 'notIpBlocks', policies: [pol('ip', 'DENY', [{ from: [{ notIpBlocks: ['10.244.0.0/16'] }] }])], req: get('/'), allow: true },
  { name: 'fields of one source AND', policies: [pol('s', 'DENY', [{ from: [{ namespaces: ['shop'], principals: [batch] }] }])], req: get('/'), allow: true },
  { name: 'sources of one rule OR', policies: [pol('s', 'DENY', [{ from: [{ principals: [batch] }, { namespaces: ['shop'] }] }])], req: get('/'), allow: false },
  { name: 'ports', policies: [pol('port', 'DENY', [{ to: [{ ports: [8080] }] }])], req: get('/'), allow: false },
  { name: 'notPorts', policies: [pol('port', 'DENY', [{ to: [{ notPorts: [8080] }] }])], req: get('/'), allow: true },
  { name: 'methods', policies: [pol('m', 'ALLOW', [{ to: [{ methods: ['GET', 'HEAD'] }] }])], req: get('/'), allow: true },
  { name: 'notMethods', policies: [pol('m', 'DENY', [{ to: [{ notMethods: ['GET'] }] }])], req: get('/'), allow: true },
  { name: 'paths exact (query ignored)', policies: [pol('p', 'DENY', [{ to: [{ paths: ['/admin'] }] }])], req: get('/admin?x=1'), allow: false },
  { name: 'paths suffix', policies: [pol('p', 'DENY', [{ to: [{ paths: ['*.php'] }] }])], req: get('/x/index.php'), allow: false },
  { name: 'notPaths', policies: [pol('p', 'ALLOW', [{ to: [{ notPaths: ['/private*'] }] }])], req: get('/private/a'), allow: false },
  { name: 'hosts (case-insensitive)', policies: [pol('h', 'DENY', [{ to: [{ hosts: ['ECHO.shop*'] }] }])], req: get('/'), allow: false },
  { name: 'notHosts', policies: [pol('h', 'DENY', [{ to: [{ notHosts: ['echo.*'] }] }])], req: get('/'), allow: true },
  { name: 'when request.headers values', policies: [pol('w', 'DENY', [{ when: [{ key: 'request.headers[X-Debug]', values: ['1'] }] }])], req: get('/', {}, { 'x-debug': '1' }), allow: false },
  { name: 'when request.headers absent does not match', policies: [pol('w', 'DENY', [{ when: [{ key: 'request.headers[x-debug]', values: ['*'] }] }])], req: get('/'), allow: true },
  { name: 'when notValues', policies: [pol('w', 'ALLOW', [{ when: [{ key: 'request.headers[x-env]', notValues: ['prod'] }] }])], req: get('/', {}, { 'x-env': 'prod' }), allow: false },
  { name: 'when source.namespace', policies: [pol('w', 'DENY', [{ when: [{ key: 'source.namespace', values: ['shop'] }] }])], req: tcp(), allow: false },
  { name: 'when destination.port', policies: [pol('w', 'ALLOW', [{ when: [{ key: 'destination.port', values: ['7070'] }] }])], req: tcp(), allow: true },
  { name: 'every when condition must hold', policies: [pol('w', 'DENY', [{ when: [{ key: 'source.namespace', values: ['shop'] }, { key: 'source.ip', values: ['10.9.*'] }] }])], req: tcp(), allow: true },
  { name: 'L7 DENY rule on a TCP connection: fail safe, denied', policies: [pol('l7', 'DENY', [{ to: [{ methods: ['POST'] }] }])], req: tcp(), allow: false, by: 'shop/l7' },
  { name: 'L7 DENY rule on TCP still needs its L4 part to match', policies: [pol('l7', 'DENY', [{ to: [{ ports: [8080], paths: ['/x'] }] }])], req: tcp(), allow: true },
  { name: 'L7 ALLOW rule on a TCP connection never matches', policies: [pol('l7', 'ALLOW', [{ to: [{ paths: ['/'] }] }])], req: tcp(), allow: false },
  { name: 'header condition on TCP in DENY: denied', policies: [pol('w', 'DENY', [{ when: [{ key: 'request.headers[x]', values: ['1'] }] }])], req: tcp(), allow: false },
  { name: 'AUDIT never decides', policies: [pol('a', 'AUDIT', [{}])], req: get('/'), allow: true },
  { name: 'dry-run DENY is not enforced', policies: [pol('dry', 'DENY', [{}], { dryRun: true })], req: get('/'), allow: true },
];

for (const r of rows) {
  t.test(r.name, async (t) => {
    const d = new WorkloadAuthorizer(r.policies).evaluate(r.req);
    t.equal(d.allow, r.allow, d.reason);
    if (r.by) t.equal(d.decidedBy?.policy, r.by);
  });
}

t.test('AUDIT matches and dry-run would-denies are reported', async (t) => {
  const d = new WorkloadAuthorizer([pol('a', 'AUDIT', [{ to: [{ paths: ['/x'] }] }]), pol('dry', 'DENY', [{}], { dryRun: true })]).evaluate(get('/x'));
  t.same(
    d.audits.map((a) => [a.policy, a.action, a.dryRun]),
    [
      ['shop/a', 'AUDIT', false],
      ['shop/dry', 'DENY', true],
    ],
  );
});

t.test('scope: the namespace, the selector, and mesh-wide policies of the root namespace', async (t) => {
  const w = { namespace: 'shop', name: 'echo-0', labels: { app: 'echo' } } as unknown as Workload;
  const all: AuthorizationPolicy[] = [
    pol('ns-wide', 'DENY', []),
    pol('for-echo', 'DENY', [], { selector: { matchLabels: { app: 'echo' } } }),
    pol('for-web', 'DENY', [], { selector: { matchLabels: { app: 'web' } } }),
    { ...pol('other-ns', 'DENY', []), namespace: 'jobs' },
    { ...pol('mesh', 'DENY', [], { selector: { matchLabels: { app: 'echo' } } }), namespace: 'skein-system', meshWide: true },
  ];
  t.same(
    policiesFor(w, all).map((p) => `${p.namespace}/${p.name}`),
    ['shop/ns-wide', 'shop/for-echo', 'skein-system/mesh'],
  );
});
