import { Registry } from 'prom-client';
import t from 'tap';
import { registerAgentMetrics } from '../../../src/agent/metrics.js';
import { silentLogger } from '../../../src/telemetry/log.js';

t.test('BPF drop counters are read at scrape time', async (t) => {
  const registry = new Registry();
  let counts = { skLookupAssignFailed: 0, skLookupNoSocket: 0 };
  registerAgentMetrics(registry, { capture: { counters: () => counts }, tunnelRefusals: new Map(), log: silentLogger() });
  registerAgentMetrics(registry, { capture: { counters: () => counts }, tunnelRefusals: new Map(), log: silentLogger() }); // once per registry
  counts = { skLookupAssignFailed: 3, skLookupNoSocket: 1 };
  const text = await registry.metrics();
  t.match(text, /skein_capture_inbound_dropped_total\{reason="sk_assign_failed"\} 3/);
  t.match(text, /skein_capture_inbound_dropped_total\{reason="no_agent_socket"\} 1/);
  counts = { skLookupAssignFailed: 4, skLookupNoSocket: 1 };
  t.match(await registry.metrics(), /reason="sk_assign_failed"\} 4/, 'the kernel value, not a sum of scrapes');
});

t.test('an unreadable counter map does not break the scrape', async (t) => {
  const registry = new Registry();
  registerAgentMetrics(registry, {
    capture: {
      counters: () => {
        throw new Error('EBADF');
      },
    },
    tunnelRefusals: new Map(),
    log: silentLogger(),
  });
  t.match(await registry.metrics(), /skein_capture_inbound_dropped_total/);
});

t.test('tunnel refusals by code, read at scrape time', async (t) => {
  const registry = new Registry();
  const refusals = new Map<string, number>([['SKEIN_TUNNEL_TLS_UNKNOWN_CA', 2]]);
  registerAgentMetrics(registry, { capture: { counters: () => ({ skLookupAssignFailed: 0, skLookupNoSocket: 0 }) }, tunnelRefusals: refusals, log: silentLogger() });
  t.match(await registry.metrics(), /skein_tunnel_refusals_total\{code="SKEIN_TUNNEL_TLS_UNKNOWN_CA"\} 2/);
  refusals.set('SKEIN_TUNNEL_TLS_CERT_EXPIRED', 1);
  const text = await registry.metrics();
  t.match(text, /skein_tunnel_refusals_total\{code="SKEIN_TUNNEL_TLS_CERT_EXPIRED"\} 1/);
  t.match(text, /skein_tunnel_refusals_total\{code="SKEIN_TUNNEL_TLS_UNKNOWN_CA"\} 2/);
});

t.test('listener (15001/15006) refusals by code, read at scrape time', async (t) => {
  const registry = new Registry();
  const listenerRefusals = new Map<string, number>();
  registerAgentMetrics(registry, { capture: { counters: () => ({ skLookupAssignFailed: 0, skLookupNoSocket: 0 }) }, tunnelRefusals: new Map(), listenerRefusals, log: silentLogger() });
  listenerRefusals.set('SKEIN_OUTBOUND_CONNECTION_LIMIT', 5);
  t.match(await registry.metrics(), /skein_listener_refusals_total\{code="SKEIN_OUTBOUND_CONNECTION_LIMIT"\} 5/);
});

t.test("the load share: the loop's utilization and each slowed pod's pauses, read at scrape time", async (t) => {
  const registry = new Registry();
  let stats = { utilization: 0.2, lagMs: 0, pods: {} as Record<string, { pauses: number; refused: number; allowance?: number }> };
  registerAgentMetrics(registry, { capture: { counters: () => ({ skLookupAssignFailed: 0, skLookupNoSocket: 0 }) }, tunnelRefusals: new Map(), loadShare: () => stats, log: silentLogger() });
  let text = await registry.metrics();
  t.match(text, /skein_event_loop_utilization 0.2/);
  t.notMatch(text, /skein_pod_load_share_pauses_total\{/);
  stats = { utilization: 0.8, lagMs: 3, pods: { 'shop/flooder-0': { pauses: 12, refused: 1, allowance: 30 } } };
  text = await registry.metrics();
  t.match(text, /skein_event_loop_utilization 0.8/);
  t.match(text, /skein_pod_load_share_pauses_total\{pod="shop\/flooder-0"\} 12/);
});

t.test('pods by state, read at scrape time (pending: captured, refused until the certificate arrives)', async (t) => {
  const registry = new Registry();
  let pods = [{ state: 'serving' }, { state: 'pending' }, { state: 'serving' }];
  registerAgentMetrics(registry, { capture: { counters: () => ({ skLookupAssignFailed: 0, skLookupNoSocket: 0 }) }, tunnelRefusals: new Map(), podStates: () => pods, log: silentLogger() });
  let text = await registry.metrics();
  t.match(text, /skein_pods\{state="serving"\} 2/);
  t.match(text, /skein_pods\{state="pending"\} 1/);
  t.match(text, /skein_pods\{state="failed"\} 0/);
  pods = [{ state: 'serving' }];
  text = await registry.metrics();
  t.match(text, /skein_pods\{state="pending"\} 0/, 'the current count, not a high-water mark');
});

t.test('pods captured and refusing, by reason code, read at scrape time', async (t) => {
  const registry = new Registry();
  let pods: { state: string; code?: string }[] = [
    { state: 'serving' },
    { state: 'pending', code: 'SKEIN_CAPTURE_PORT_HELD' },
    { state: 'pending', code: 'SKEIN_AGENT_IDENTITY_PENDING' },
    { state: 'pending', code: 'SKEIN_CAPTURE_PORT_HELD' },
    { state: 'failed', code: 'SKEIN_CAPTURE_NETNS_UNAVAILABLE' },
  ];
  registerAgentMetrics(registry, { capture: { counters: () => ({ skLookupAssignFailed: 0, skLookupNoSocket: 0 }) }, tunnelRefusals: new Map(), podStates: () => pods, log: silentLogger() });
  let text = await registry.metrics();
  t.match(text, /skein_pods_refusing\{reason="SKEIN_CAPTURE_PORT_HELD"\} 2/);
  t.match(text, /skein_pods_refusing\{reason="SKEIN_AGENT_IDENTITY_PENDING"\} 1/);
  t.notMatch(text, /skein_pods_refusing\{reason="SKEIN_CAPTURE_NETNS_UNAVAILABLE"\}/, 'failed pods are not captured, so not refusing: skein_pods{state="failed"} counts them');
  pods = [{ state: 'serving' }];
  text = await registry.metrics();
  t.notMatch(text, /skein_pods_refusing\{reason=/, 'a pod served again leaves the gauge');
});

t.test('traffic policy and rate limits per Service and pod, read at scrape time', async (t) => {
  const registry = new Registry();
  const rows = [{ service: 'shop/echo', retries: 7, budgetExhausted: 2, ejections: 1, ejectedNow: 1, overflows: { pending: 5, requests: 0, retries: 0 } }];
  const limited: Record<string, number> = {};
  registerAgentMetrics(registry, {
    capture: { counters: () => ({ skLookupAssignFailed: 0, skLookupNoSocket: 0 }) },
    tunnelRefusals: new Map(),
    traffic: () => rows,
    rateLimited: limited,
    log: silentLogger(),
  });
  limited['shop/echo-v2-0:8080'] = 992;
  const text = await registry.metrics();
  t.match(text, /skein_retries_total\{destination_service="shop\/echo"\} 7/);
  t.match(text, /skein_retry_budget_exhausted_total\{destination_service="shop\/echo"\} 2/);
  t.match(text, /skein_outlier_ejections_total\{destination_service="shop\/echo"\} 1/);
  t.match(text, /skein_outlier_ejected\{destination_service="shop\/echo"\} 1/);
  t.match(text, /skein_circuit_breaker_overflows_total\{destination_service="shop\/echo",limit="pending"\} 5/);
  t.match(text, /skein_rate_limited_total\{destination="shop\/echo-v2-0",port="8080"\} 992/);
});

t.test('connects from pod netns: failures by code and in-progress/queued, read at scrape time', async (t) => {
  const registry = new Registry();
  let stats = { inProgress: 3, queued: 7, refusals: { SKEIN_CAPTURE_CONNECT_TIMEOUT: 2 } as Record<string, number> };
  registerAgentMetrics(registry, {
    capture: { counters: () => ({ skLookupAssignFailed: 0, skLookupNoSocket: 0 }), connectStats: () => stats },
    tunnelRefusals: new Map(),
    log: silentLogger(),
  });
  let text = await registry.metrics();
  t.match(text, /skein_pod_connect_failures_total\{code="SKEIN_CAPTURE_CONNECT_TIMEOUT"\} 2/);
  t.match(text, /skein_pod_connects\{state="in_progress"\} 3/);
  t.match(text, /skein_pod_connects\{state="queued"\} 7/);
  stats = { inProgress: 0, queued: 0, refusals: { SKEIN_CAPTURE_CONNECT_TIMEOUT: 2, SKEIN_CAPTURE_TOO_MANY_CONNECTS: 9 } };
  text = await registry.metrics();
  t.match(text, /skein_pod_connect_failures_total\{code="SKEIN_CAPTURE_TOO_MANY_CONNECTS"\} 9/);
  t.match(text, /skein_pod_connects\{state="queued"\} 0/);
});
