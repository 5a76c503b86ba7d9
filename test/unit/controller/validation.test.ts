// Bad resources are refused one by one — resource, field and reason visible in the status
// (in-process and over gRPC GetStatus) — while the rest of the config keeps flowing to the
// agents. Also: policies reach only the nodes whose workloads they select.
import t from 'tap';
import { Controller } from '../../../src/controller/controller.js';
import { BootstrapTokenAuthenticator } from '../../../src/identity/ca/bootstrap-tokens.js';
import { fetchControllerStatus } from '../../../src/controller/status-client.js';
import { baseCluster, FakeAgent, type Obj, pod, service, tempDir, TOKENS, until, writeCluster, writeText, writeYaml } from './helpers.js';

const authenticator = BootstrapTokenAuthenticator.fromTokens(TOKENS);

function authz(name: string, spec: Obj): Obj {
  return { apiVersion: 'security.skein.io/v1alpha1', kind: 'AuthorizationPolicy', metadata: { name, namespace: 'shop' }, spec };
}

function route(name: string, created: string, rules: Obj[]): Obj {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name, namespace: 'shop', creationTimestamp: created },
    spec: { parentRefs: [{ group: '', kind: 'Service', name: 'web', port: 80 }], rules },
  };
}

const policies: Obj[] = [
  authz('front-only', { selector: { matchLabels: { tier: 'front' } }, action: 'ALLOW', rules: [{ from: [{ source: { principals: ['spiffe://cluster.local/ns/shop/sa/web'] } }] }] }),
  authz('typo', { selector: { matchLabels: { app: 'web' } }, actoin: 'DENY' }),
  authz('bad-cidr', { rules: [{ from: [{ source: { ipBlocks: ['10.0.0.0/33'] } }] }] }),
  authz('nobody', { selector: { matchLabels: { app: 'ghost' } }, action: 'DENY' }),
  // Istio's shape only: the old flattened one, an unknown when key and a port that is no port are refused.
  authz('flat', { rules: [{ from: [{ principals: ['cluster.local/ns/shop/sa/web'] }] }] }),
  authz('jwt', { rules: [{ when: [{ key: 'request.auth.claims[iss]', values: ['x'] }] }] }),
  authz('sni', { action: 'DENY', rules: [{ when: [{ key: 'connection.sni', values: ['x'] }] }] }),
  authz('bad-port', { action: 'DENY', rules: [{ to: [{ operation: { ports: ['http'] } }] }] }),
  {
    apiVersion: 'security.skein.io/v1alpha1',
    kind: 'PeerAuthentication',
    metadata: { name: 'permissive-web', namespace: 'shop' },
    spec: { selector: { matchLabels: { app: 'web' } }, mtls: { mode: 'PERMISSIVE' } },
  },
  route('canary', '2026-01-01T00:00:00Z', [
    { matches: [{ path: { type: 'PathPrefix', value: '/v2' } }], backendRefs: [{ name: 'web', port: 80, weight: 90 }, { name: 'web-canary', port: 80, weight: 10 }] },
  ]),
  route('canary-copy', '2026-01-02T00:00:00Z', [{ matches: [{ path: { type: 'PathPrefix', value: '/v2' } }], backendRefs: [{ name: 'web', port: 80 }] }]),
  route('zero', '2026-01-03T00:00:00Z', [{ matches: [{ path: { type: 'Exact', value: '/z' } }], backendRefs: [{ name: 'web', port: 80, weight: 0 }] }]),
  {
    apiVersion: 'networking.skein.io/v1alpha1',
    kind: 'BackendTrafficPolicy',
    metadata: { name: 'web-retries', namespace: 'shop' },
    spec: { targetRefs: [{ kind: 'Service', name: 'web' }], retry: { attempts: 3, perTryTimeout: '250ms', budget: { percent: 20 } }, timeout: { request: '2s' } },
  },
  {
    apiVersion: 'networking.skein.io/v1alpha1',
    kind: 'BackendTrafficPolicy',
    metadata: { name: 'orphan', namespace: 'shop' },
    spec: { targetRefs: [{ kind: 'Service', name: 'missing' }], timeout: { request: '2s' } },
  },
  { apiVersion: 'security.skein.io/v1alpha1', kind: 'MagicPolicy', metadata: { name: 'x', namespace: 'shop' }, spec: {} },
  // Root namespace: mesh-wide, its selector matches pods of any namespace (web-2 on node-b).
  {
    apiVersion: 'security.skein.io/v1alpha1',
    kind: 'AuthorizationPolicy',
    metadata: { name: 'mesh-deny-web', namespace: 'skein-system' },
    spec: { selector: { matchLabels: { app: 'web' } }, action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin'] } }] }] },
  },
];

t.test('bad resources are refused with resource, field and reason; the rest flows', async (t) => {
  const dir = tempDir(t, 'valid');
  const files = baseCluster();
  files['pods.yaml']!.push(pod('shop', 'front-1', 'node-a', '10.244.1.30', { app: 'web', tier: 'front' }, 'web'));
  const badPod = pod('shop', 'broken', 'node-a', '10.244.1.31', { app: 'web' });
  (badPod.status as Obj).podIP = '10.244.1.999';
  files['pods.yaml']!.push(badPod);
  files['services.yaml']!.push(service('shop', 'web-canary', '10.96.0.11', { app: 'web' }));
  // Same VIP:port as shop/web, created later: refused, web keeps it.
  files['services.yaml']!.push(service('legacy', 'thief', '10.96.0.10', { app: 'api' }, '2026-02-01T00:00:00Z'));
  files['policies.yaml'] = policies;
  writeCluster(dir, files);
  writeText(dir, 'broken.yaml', 'apiVersion: v1\nkind: Pod\nmetadata: {name: x\n');
  // The same Service declared twice (another file): the first file wins.
  writeYaml(dir, 'zz-dup.yaml', [service('shop', 'web', '10.96.0.99', { app: 'other' })]);

  const c = new Controller({ folder: dir, folderRescanMs: 0, authenticator, configAddress: '127.0.0.1:0' });
  const { configPort } = await c.start();
  t.teardown(() => c.stop());
  const a = new FakeAgent('node-a', `127.0.0.1:${configPort}`);
  const b = new FakeAgent('node-b', `127.0.0.1:${configPort}`);
  t.teardown(() => a.source.stop());
  t.teardown(() => b.source.stop());
  await Promise.all([a.start(), b.start()]);

  const refusals = c.status().refusals;
  const find = (object: string) => refusals.find((r) => r.object === object);
  t.match(find('(file) broken.yaml'), { origin: 'broken.yaml', code: 'SKEIN_CONFIG_PARSE' }, 'unparseable file reported with its name');
  t.match(find('Pod/shop/broken'), { origin: 'pods.yaml', field: 'status.podIP', reason: /not an IP/ });
  t.match(find('AuthorizationPolicy/shop/typo'), { origin: 'policies.yaml', field: 'spec.actoin', reason: 'unknown field' });
  t.match(find('AuthorizationPolicy/shop/bad-cidr'), { field: 'spec.rules[0].from[0].source.ipBlocks[0]', reason: /not a valid CIDR/ });
  t.match(find('AuthorizationPolicy/shop/nobody'), { field: 'spec.selector', reason: /matches no pod/ });
  t.match(find('AuthorizationPolicy/shop/flat'), { field: 'spec.rules[0].from[0].source', reason: /missing/ }, 'the flattened shape is refused');
  t.match(find('AuthorizationPolicy/shop/jwt'), { field: 'spec.rules[0].when[0].key', reason: /unsupported key "request.auth.claims\[iss\]"/ });
  t.match(find('AuthorizationPolicy/shop/sni'), { field: 'spec.rules[0].when[0].key', reason: /unsupported key "connection.sni"/ }, 'a key no agent could check is refused, not ignored');
  t.match(find('AuthorizationPolicy/shop/bad-port'), { field: 'spec.rules[0].to[0].operation.ports[0]', reason: /not a port number/ });
  t.match(find('HTTPRoute/shop/canary-copy'), { field: 'spec.rules[0].matches[0]', reason: /conflicts with HTTPRoute shop\/canary/ });
  t.match(find('HTTPRoute/shop/zero'), { field: 'spec.rules[0].backendRefs', reason: /weights sum to 0/ });
  t.match(find('BackendTrafficPolicy/shop/orphan'), { field: 'spec.targetRefs[0]', reason: /does not exist/ });
  t.match(find('MagicPolicy/shop/x'), { field: 'kind', reason: /unknown skein kind/ });
  t.match(find('Service/legacy/thief'), { field: 'spec.clusterIPs', reason: /10\.96\.0\.10:80 already belongs to Service shop\/web/ });
  t.match(find('Service/shop/web'), { origin: 'zz-dup.yaml', code: 'SKEIN_CONTROLLER_RESOURCE_DUPLICATE' });
  t.equal(refusals.length, 15, 'exactly the bad ones');

  // Everything else flows.
  const sa = a.snapshot();
  t.same(a.workloadNames(), ['legacy/api-1', 'shop/front-1', 'shop/web-1']);
  t.equal(a.store.service('shop', 'web')?.vips[0], '10.96.0.10', 'the first declaration of shop/web is served');
  t.notOk(a.store.service('legacy', 'thief'));
  t.same(sa.routes.map((r) => r.name), ['canary']);
  t.same(sa.routes[0]!.rules[0]!.backends.map((x) => x.weight), [90, 10]);
  t.same(sa.backendTrafficPolicies.map((p) => p.name), ['web-retries']);
  t.match(sa.backendTrafficPolicies[0], { retry: { attempts: 3, perTryTimeoutMs: 250 }, timeout: { requestMs: 2000 } });
  t.same(sa.authorizationPolicies.map((p) => p.name).sort(), ['front-only', 'mesh-deny-web'], 'node-a runs a tier=front pod');
  t.same(b.snapshot().authorizationPolicies.map((p) => p.name), ['mesh-deny-web'], 'node-b runs no tier=front pod: front-only is not sent there');
  t.match(
    sa.authorizationPolicies.find((p) => p.name === 'mesh-deny-web'),
    { meshWide: true, action: 'DENY', rules: [{ to: [{ paths: ['/admin'] }] }] },
    "Istio's shape translated; a root-namespace policy says it is mesh-wide",
  );
  t.same(sa.peerAuthentications.map((p) => p.name), ['permissive-web']);
  t.same(b.snapshot().peerAuthentications.map((p) => p.name), ['permissive-web']);

  // The same refusals over gRPC (what `skein status` reads).
  const status = await fetchControllerStatus({ address: `127.0.0.1:${configPort}`, token: TOKENS['node-a'] });
  t.equal(status.refusals.length, 15);
  // Accepted is not Enforced: a policy is enforced once every agent that must apply it ACKed it.
  const pol = (name: string) => status.policies?.find((p) => p.object === name);
  t.match(pol('AuthorizationPolicy/shop/front-only'), { needed_on: ['node-a'], enforced_on: ['node-a'], enforced: true }, 'front-only: needed and ACKed on node-a only');
  t.match(pol('AuthorizationPolicy/skein-system/mesh-deny-web'), { needed_on: ['node-a', 'node-b'], enforced: true, note: /rule 0 check HTTP fields: on a TCP connection .* deny it/ }, 'a DENY path rule says it fails safe on TCP');
  t.equal(pol('AuthorizationPolicy/shop/front-only')?.note, '', 'a principals-only rule needs no note');
  t.match(pol('PeerAuthentication/shop/permissive-web'), { enforced: true });
  t.ok(status.refusals.some((r) => r.object === 'AuthorizationPolicy/shop/typo' && r.field === 'spec.actoin'));
  t.equal(status.agents.length, 2);

  // Fix the file and the pod: both flow, the refusals go.
  writeText(dir, 'broken.yaml', '');
  (badPod.status as Obj).podIP = '10.244.1.31';
  (badPod.status as Obj).podIPs = [{ ip: '10.244.1.31' }];
  writeYaml(dir, 'pods.yaml', files['pods.yaml']!);
  await c.rescanFolder();
  await until('node-a got the fixed pod', () => a.workloadNames().includes('shop/broken'));
  t.notOk(c.status().refusals.some((r) => r.object === '(file) broken.yaml' || r.object === 'Pod/shop/broken'));
});

t.test('a file that breaks keeps its last good objects', async (t) => {
  const dir = tempDir(t, 'keep');
  writeCluster(dir, baseCluster());
  const c = new Controller({ folder: dir, folderRescanMs: 0, authenticator, configAddress: '127.0.0.1:0' });
  await c.start();
  t.teardown(() => c.stop());
  const before = c.index.entries().size;
  writeText(dir, 'pods.yaml', 'kind: [unclosed\n');
  await c.rescanFolder();
  t.equal(c.index.entries().size, before, 'pods still served');
  t.match(c.status().refusals[0], { object: '(file) pods.yaml', code: 'SKEIN_CONFIG_PARSE' });
});
