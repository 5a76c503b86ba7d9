import t from 'tap';
import type { Endpoint, NodeInfo, Service, ServicePort } from '../../../src/config/model.js';
import type { BackendTrafficPolicy } from '../../../src/config/policy-model.js';
import { BackendStates } from '../../../src/routing/backend-state.js';
import { closestUsable, localityTiers, zonesOf } from '../../../src/routing/locality.js';

const ep = (ip: string, node: string, ready = true): Endpoint => ({ ip, node, ready, ports: { http: 8080 }, meshEnabled: true });
const nodes: NodeInfo[] = [
  { name: 'n1', podCIDRs: [], zone: 'z1' },
  { name: 'n2', podCIDRs: [], zone: 'z1' },
  { name: 'n3', podCIDRs: [], zone: 'z2' },
  { name: 'n4', podCIDRs: [] },
];
const service = (endpoints: Endpoint[], lb: Service['loadBalancer'] = 'ROUND_ROBIN'): Service => ({
  namespace: 'prod',
  name: 'api',
  hostname: 'api.prod.svc.cluster.local',
  vips: ['10.96.0.10'],
  ports: [{ name: 'http', port: 80, targetPort: 8080 }],
  endpoints,
  loadBalancer: lb,
});
const sp = (s: Service): ServicePort => s.ports[0]!;
const policy = (over: Partial<BackendTrafficPolicy> = {}): BackendTrafficPolicy => ({ namespace: 'prod', name: 'btp', targets: ['prod/api'], ...over });

t.test('locality tiers: node, zone, rest; closest usable tier wins', async (t) => {
  const zones = zonesOf(nodes);
  const list = [ep('a', 'n1'), ep('b', 'n2'), ep('c', 'n3'), ep('d', 'n4'), { ...ep('e', ''), node: undefined }];
  const tiers = localityTiers(list, 'n1', zones);
  t.same(
    tiers.map((tier) => tier.map((e) => e.ip)),
    [['a'], ['b'], ['c', 'd', 'e']],
  );
  t.equal(closestUsable(tiers), tiers[0], 'no filter: the tier itself, no copy');
  t.same(
    closestUsable(tiers, (e) => e.ip !== 'a').map((e) => e.ip),
    ['b'],
    'node tier unusable: zone tier',
  );
  t.same(
    closestUsable(tiers, (e) => e.ip === 'd').map((e) => e.ip),
    ['d'],
  );
  t.same(closestUsable(tiers, () => false), []);
  t.same(
    localityTiers(list, 'n4', zones).map((tier) => tier.length),
    [1, 0, 4],
    'a node without a zone has no zone tier',
  );
});

t.test('no policy: the Service annotation algorithm, only ready endpoints with the port', async (t) => {
  const states = new BackendStates({ random: () => 0.5 });
  const s = service([ep('10.0.0.1', 'n1'), ep('10.0.0.2', 'n2', false), ep('10.0.0.3', 'n3')]);
  states.update([s], [], nodes);
  const st = states.for(s);
  t.equal(st.policy, undefined);
  t.equal(st.algorithm, 'ROUND_ROBIN');
  const picks = [0, 1, 2, 3].map(() => st.pick(sp(s), { localNode: 'n1' })!);
  t.same(new Set(picks.map((p) => p.endpoint.ip)), new Set(['10.0.0.1', '10.0.0.3']));
  t.equal(picks[0]!.port, 8080);
  t.equal(st.inFlight('10.0.0.1') + st.inFlight('10.0.0.3'), 4, 'picks count as started');
  for (const p of picks) st.finish(p.endpoint, 'success', 5);
  t.equal(st.inFlight('10.0.0.1'), 0);
  t.equal(st.breaker.tryAcquire('requests'), true, 'no policy: no limits');
  t.equal(st.budget, undefined);
  t.equal(st.outliers, undefined);
  const s2 = service(s.endpoints, 'LEAST_REQUEST');
  states.update([s2], [], nodes);
  t.equal(states.for(s2).algorithm, 'LEAST_REQUEST');
  t.equal(states.for(s2), st, 'same state object across updates');
  t.equal(states.for(service([])).pick(sp(s), { localNode: 'n1' }), undefined, 'no endpoint: undefined');
});

t.test('policy: oldest wins a target, losers reported; parts keep state while their section is unchanged', async (t) => {
  const states = new BackendStates({ now: () => 0, random: () => 0.1 });
  const s = service([ep('10.0.0.1', 'n1'), ep('10.0.0.2', 'n2')]);
  const old = policy({
    name: 'old',
    createdAt: '2024-01-01T00:00:00Z',
    loadBalancer: { algorithm: 'LEAST_REQUEST' },
    circuitBreaker: { maxRequests: 1 },
    retry: { attempts: 2, retryOn: ['5xx'], backoff: { baseMs: 10, maxMs: 100 }, budget: { percent: 20, minRetriesPerSecond: 1 } },
    outlierDetection: { consecutive5xx: 1, intervalMs: 1000, baseEjectionTimeMs: 10_000, maxEjectionTimeMs: 60_000, maxEjectionPercent: 100 },
  });
  const newer = policy({ name: 'newer', createdAt: '2024-06-01T00:00:00Z', loadBalancer: { algorithm: 'PEAK_EWMA' } });
  states.update([s], [newer, old], nodes);
  const st = states.for(s);
  t.equal(st.policy?.name, 'old');
  t.equal(st.algorithm, 'LEAST_REQUEST');
  t.same(states.conflicts(), [{ target: 'prod/api', winner: 'prod/old', losers: ['prod/newer'] }]);
  t.ok(st.breaker.tryAcquire('requests'));
  t.notOk(st.breaker.tryAcquire('requests'));
  const p = st.pick(sp(s), { localNode: 'n1' })!;
  st.finish(p.endpoint, '5xx', 3);
  t.ok(st.outliers?.isEjected(p.endpoint.ip));
  // Same sections, new objects: state kept.
  const s2 = service([...s.endpoints]);
  states.update([s2], [structuredClone(old)], nodes);
  t.equal(states.for(s2), st);
  t.ok(st.outliers?.isEjected(p.endpoint.ip), 'ejections survive an update');
  t.equal(st.breaker.current('requests'), 1, 'breaker counts survive an update');
  // Changed breaker: new breaker; outliers still kept.
  states.update([s2], [{ ...old, circuitBreaker: { maxRequests: 5 } }], nodes);
  t.equal(st.breaker.current('requests'), 0);
  t.equal(st.breaker.limit('requests'), 5);
  t.ok(st.outliers?.isEjected(p.endpoint.ip));
  t.same(states.conflicts(), []);
  states.update([], [], nodes);
  t.not(states.for(s2), st, 'a Service that went away starts over');
});

t.test('pick skips ejected endpoints; panic mode when all are ejected; exclude for retries', async (t) => {
  let now = 0;
  const states = new BackendStates({ now: () => now, random: () => 0.3 });
  const s = service([ep('10.0.0.1', 'n1'), ep('10.0.0.2', 'n2'), ep('10.0.0.3', 'n3')]);
  states.update([s], [policy({ outlierDetection: { consecutiveGatewayErrors: 1, intervalMs: 1000, baseEjectionTimeMs: 5000, maxEjectionTimeMs: 5000, maxEjectionPercent: 100 } })], nodes);
  const st = states.for(s);
  const all = s.endpoints;
  st.finish(all[0]!, 'gateway-error', 1);
  const ips = new Set<string>();
  for (let i = 0; i < 20; i++) {
    const p = st.pick(sp(s), { localNode: 'n1' })!;
    ips.add(p.endpoint.ip);
    st.finish(p.endpoint, 'success', 1);
  }
  t.same([...ips].sort(), ['10.0.0.2', '10.0.0.3'], 'the ejected endpoint is skipped');
  const excl = st.pick(sp(s), { localNode: 'n1', exclude: new Set(['10.0.0.2']) })!;
  t.equal(excl.endpoint.ip, '10.0.0.3', 'a retry avoids what it tried');
  st.finish(excl.endpoint, 'success', 1);
  const both = st.pick(sp(s), { localNode: 'n1', exclude: new Set(['10.0.0.2', '10.0.0.3']) })!;
  t.ok(['10.0.0.2', '10.0.0.3'].includes(both.endpoint.ip), 'everything tried: try again rather than fail');
  st.finish(both.endpoint, 'success', 1);
  st.finish(all[1]!, 'connect-failure', 1);
  st.finish(all[2]!, 'gateway-error', 1);
  t.equal(st.outliers?.ejected().length, 3);
  t.ok(st.pick(sp(s), { localNode: 'n1' }), 'panic: every endpoint ejected, all ready ones are used');
  t.ok(st.panics > 0);
  now = 5000;
  t.equal(st.outliers?.ejected().length, 0, 'ejections end with time');
  t.ok((st.describe() as { panics: number }).panics > 0);
});

t.test('PreferClose: node, then zone, then the rest; falls over when a tier is ejected', async (t) => {
  const states = new BackendStates({ now: () => 0, random: () => 0.4 });
  const s = service([ep('10.0.0.1', 'n1'), ep('10.0.0.2', 'n2'), ep('10.0.0.3', 'n3')]);
  states.update(
    [s],
    [policy({ loadBalancer: { algorithm: 'ROUND_ROBIN', locality: 'PreferClose' }, outlierDetection: { consecutive5xx: 1, intervalMs: 1000, baseEjectionTimeMs: 5000, maxEjectionTimeMs: 5000, maxEjectionPercent: 100 } })],
    nodes,
  );
  const st = states.for(s);
  const pickIp = (node: string) => {
    const p = st.pick(sp(s), { localNode: node })!;
    st.finish(p.endpoint, 'other', 1);
    return p.endpoint.ip;
  };
  t.same([pickIp('n1'), pickIp('n1'), pickIp('n1')], ['10.0.0.1', '10.0.0.1', '10.0.0.1'], 'same node');
  t.equal(pickIp('n2'), '10.0.0.2');
  st.finish(s.endpoints[0]!, '5xx', 1);
  t.equal(pickIp('n1'), '10.0.0.2', 'local endpoint ejected: same zone');
  t.same(new Set([pickIp('n4'), pickIp('n4')]), new Set(['10.0.0.2', '10.0.0.3']), 'a node without a zone: the rest, round robin');
});

t.test('consistent hash and peak EWMA through the composition', async (t) => {
  const states = new BackendStates({ now: () => 0, random: () => 0.7 });
  const s = service([ep('10.0.0.1', 'n1'), ep('10.0.0.2', 'n2'), ep('10.0.0.3', 'n3')]);
  states.update([s], [policy({ loadBalancer: { algorithm: 'CONSISTENT_HASH', hash: { header: 'x-user' } } })], nodes);
  const st = states.for(s);
  const first = st.pick(sp(s), { localNode: 'n1', hashKey: 'alice' })!.endpoint.ip;
  for (let i = 0; i < 50; i++) t.equal(st.pick(sp(s), { localNode: 'n1', hashKey: 'alice' })!.endpoint.ip, first);
  states.update([s], [policy({ loadBalancer: { algorithm: 'PEAK_EWMA' } })], nodes);
  t.equal(states.for(s).algorithm, 'PEAK_EWMA');
  const d = states.for(s).describe() as { algorithm: string; service: string; policy: string };
  t.same([d.algorithm, d.service, d.policy], ['PEAK_EWMA', 'prod/api', 'prod/btp']);
});
