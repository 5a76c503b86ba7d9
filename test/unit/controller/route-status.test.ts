// Route and BackendTrafficPolicy status in kube mode, written against a STAND-IN API server
// (fake-apiserver.ts: an HTTPS server speaking list/watch and merge patches on /status, since
// no real API server can run here), through @kubernetes/client-node's CustomObjectsApi. Routes get the Gateway API shape: status.parents[] per
// parentRef with controllerName, Accepted and ResolvedRefs (spec reasons),
// observedGeneration and lastTransitionTime; another controller's entries are kept.
import t from 'tap';
import { Controller } from '../../../src/controller/controller.js';
import { KubeSource } from '../../../src/controller/kube/kube-source.js';
import { KubeStatusWriter, SKEIN_CONTROLLER_NAME, StatusReporter } from '../../../src/controller/kube/status-writer.js';
import { BootstrapTokenAuthenticator } from '../../../src/identity/ca/bootstrap-tokens.js';
import { standInClient } from './stand-in-kube.js';
import { baseCluster, type Obj, service, TOKENS, until } from './helpers.js';
import { btp, httpRoute } from './traffic-fixtures.js';

const GW = 'gateway.networking.k8s.io/v1';
const BTP = 'networking.skein.io/v1alpha1';

t.test('routes and backend traffic policies get their status the Gateway API way', async (t) => {
  const { api, client } = await standInClient(t);
  for (const objs of Object.values(baseCluster())) for (const o of objs) api.apply(structuredClone(o));
  api.apply(service('shop', 'mirror', '10.96.0.12', { app: 'mirror' }));
  const c = new Controller({
    authenticator: BootstrapTokenAuthenticator.fromTokens(TOKENS),
    configAddress: '127.0.0.1:0',
    sources: [(store) => new KubeSource(store, { client, watchTimeoutSeconds: 30, backoffInitialMs: 20, backoffMaxMs: 200 })],
  });
  await c.start();
  t.teardown(() => c.stop());
  let clock = Date.parse('2026-03-01T10:00:00Z');
  const reporter = new StatusReporter(c.index, c.store, new KubeStatusWriter(client, () => new Date(clock)));
  reporter.start();
  t.teardown(() => reporter.stop());

  const be = (name: string) => ({ name, port: 80 });
  const good = httpRoute({ rules: [{ name: 'api', backendRefs: [be('web')], filters: [{ type: 'RequestMirror', requestMirror: { backendRef: be('mirror'), percent: 10 } }] }] }, 'good');
  // Another controller (a Gateway implementation) already reports on this route: kept.
  good.status = { parents: [{ parentRef: { name: 'gw' }, controllerName: 'example.com/gateway', conditions: [{ type: 'Accepted', status: 'True', reason: 'Accepted' }] }] };
  api.apply(good);
  api.apply(httpRoute({ rules: [{ backendRefs: [be('ghost')] }] }, 'ghost'));
  api.apply({ ...httpRoute({}, 'orphan'), spec: { parentRefs: [{ group: '', kind: 'Service', name: 'nowhere', port: 80 }], rules: [] } });
  api.apply(httpRoute({ rules: [{ matches: [{ path: { type: 'RegularExpression', value: '(' } }] }] }, 'bad-regex'));
  api.apply({ ...btp({ targetRefs: [{ kind: 'Service', name: 'web' }], retry: { attempts: 2 } }, 'older'), metadata: { name: 'older', namespace: 'shop', creationTimestamp: '2026-01-01T00:00:00Z', generation: 1 } });
  api.apply(btp({ targetRefs: [{ kind: 'Service', name: 'web' }], timeout: { request: '1s' } }, 'newer', '2026-02-01T00:00:00Z'));

  const parentsOf = (name: string) => ((api.get(GW, 'HTTPRoute', 'shop', name)?.status as Obj | undefined)?.parents ?? []) as Obj[];
  const mine = (name: string) => parentsOf(name).find((p) => p.controllerName === SKEIN_CONTROLLER_NAME);
  const cond = (name: string, type: string) => ((mine(name)?.conditions ?? []) as Obj[]).find((x) => x.type === type);
  await until('every route reported', () => ['good', 'ghost', 'orphan', 'bad-regex'].every((n) => mine(n) !== undefined));
  await until('policies reported', () => ['older', 'newer'].every((n) => (api.get(BTP, 'BackendTrafficPolicy', 'shop', n)?.status as Obj | undefined)?.conditions));
  await reporter.idle();

  t.equal(SKEIN_CONTROLLER_NAME, 'skein.io/mesh-controller');
  t.same(mine('good'), {
    parentRef: { group: '', kind: 'Service', name: 'web', port: 80 },
    controllerName: 'skein.io/mesh-controller',
    conditions: [
      { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'served to agents', lastTransitionTime: '2026-03-01T10:00:00Z', observedGeneration: 1 },
      { type: 'ResolvedRefs', status: 'True', reason: 'ResolvedRefs', message: 'every backend exists', lastTransitionTime: '2026-03-01T10:00:00Z', observedGeneration: 1 },
    ],
  });
  t.match(parentsOf('good'), [{ controllerName: 'example.com/gateway', parentRef: { name: 'gw' } }, { controllerName: SKEIN_CONTROLLER_NAME }], "another controller's parent entry is kept");
  t.match(cond('ghost', 'Accepted'), { status: 'False', reason: 'UnsupportedValue', message: 'spec.rules[0].backendRefs[0]: Service shop/ghost does not exist' });
  t.match(cond('ghost', 'ResolvedRefs'), { status: 'False', reason: 'BackendNotFound' });
  t.match(cond('orphan', 'Accepted'), { status: 'False', reason: 'NoMatchingParent', message: /Service shop\/nowhere does not exist/ });
  t.match(cond('bad-regex', 'Accepted'), { status: 'False', reason: 'UnsupportedValue', message: /spec.rules\[0\].matches\[0\].path.value: not a valid regular expression/ });
  t.notOk(cond('bad-regex', 'ResolvedRefs'), 'references not checked: no ResolvedRefs claim');
  const btpConditions = (n: string) => ((api.get(BTP, 'BackendTrafficPolicy', 'shop', n)?.status ?? {}) as Obj).conditions as Obj[];
  t.match(btpConditions('older'), [{ type: 'Accepted', status: 'True', reason: 'Accepted', observedGeneration: 1 }]);
  t.match(btpConditions('newer'), [{ type: 'Accepted', status: 'False', reason: 'Conflicted', message: /spec.targetRefs\[0\]: conflicts with BackendTrafficPolicy shop\/older \(older\)/ }]);

  // Fix the ghost route (a new generation): Accepted=True, observedGeneration 2, a new transition time.
  clock += 60_000;
  const fixed = httpRoute({ rules: [{ matches: [{ path: { value: '/ghost' } }], backendRefs: [be('web')] }] }, 'ghost');
  (fixed.metadata as Obj).generation = 2;
  api.apply(fixed);
  await until('ghost accepted', () => cond('ghost', 'Accepted')?.status === 'True');
  await reporter.idle();
  t.match(cond('ghost', 'Accepted'), { reason: 'Accepted', observedGeneration: 2, lastTransitionTime: '2026-03-01T10:01:00Z' });
  t.match(cond('ghost', 'ResolvedRefs'), { status: 'True', reason: 'ResolvedRefs' });

  // A new generation of the good route that stays accepted keeps its lastTransitionTime.
  const good2 = httpRoute({ rules: [{ name: 'api', backendRefs: [be('web')] }] }, 'good');
  (good2.metadata as Obj).generation = 2;
  good2.status = api.get(GW, 'HTTPRoute', 'shop', 'good')!.status;
  api.apply(good2);
  await until('good at generation 2', () => cond('good', 'Accepted')?.observedGeneration === 2);
  t.equal(cond('good', 'Accepted')?.lastTransitionTime, '2026-03-01T10:00:00Z', 'status unchanged: transition time kept');

  const writes = reporter.writes;
  await new Promise((r) => setTimeout(r, 200));
  t.equal(reporter.writes, writes, 'no status write loop');
});
