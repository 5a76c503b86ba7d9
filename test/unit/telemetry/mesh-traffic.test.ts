// The agent's per-edge summaries and tap sessions (telemetry/mesh-traffic.ts): what an edge
// counts, the fixed-bucket latency, the edge cap, and tap's filter, rate, time to live and
// the metadata an event may carry.
import t from 'tap';
import {
  type EdgeLabels,
  histogramQuantile,
  LATENCY_BOUNDS_MS,
  latencyBucket,
  MeshTraffic,
  type TapEventData,
  tapMatches,
  tapPath,
} from '../../../src/telemetry/mesh-traffic.js';

const labels = (over: Partial<EdgeLabels> = {}): EdgeLabels =>
  Object.freeze({
    reporter: 'source',
    source_workload: 'client',
    source_workload_namespace: 'shop',
    source_principal: 'spiffe://cluster.local/ns/shop/sa/client',
    destination_workload: 'echo',
    destination_workload_namespace: 'shop',
    destination_service: 'echo.shop.svc.cluster.local',
    destination_principal: 'spiffe://cluster.local/ns/shop/sa/echo',
    request_protocol: 'http',
    connection_security_policy: 'mutual_tls',
    ...over,
  });

t.test('latency buckets and quantiles', async (t) => {
  t.equal(latencyBucket(0), 0);
  t.equal(latencyBucket(1), 0, 'bounds are inclusive');
  t.equal(latencyBucket(1.01), 1);
  t.equal(latencyBucket(1e9), LATENCY_BOUNDS_MS.length, 'above the last bound: the overflow bucket');
  const counts = new Array(LATENCY_BOUNDS_MS.length + 1).fill(0);
  t.equal(histogramQuantile(LATENCY_BOUNDS_MS, counts, 0.5), 0, 'empty: 0');
  counts[latencyBucket(4)] = 100; // (3, 5]
  t.equal(histogramQuantile(LATENCY_BOUNDS_MS, counts, 0.5), 4, 'interpolated inside the bucket');
  t.equal(histogramQuantile(LATENCY_BOUNDS_MS, counts, 1), 5, 'at most the bucket bound');
  counts[latencyBucket(400)] = 1;
  t.ok(histogramQuantile(LATENCY_BOUNDS_MS, counts, 0.999) > 300, 'the tail reads the slow bucket');
  counts.fill(0);
  counts[LATENCY_BOUNDS_MS.length] = 3;
  t.equal(histogramQuantile(LATENCY_BOUNDS_MS, counts, 0.5), LATENCY_BOUNDS_MS.at(-1), 'overflow reads as the last bound');
});

t.test('an edge counts requests, errors, denials, latency and bytes; drain starts afresh', async (t) => {
  let now = 1000;
  const m = new MeshTraffic({ node: 'node-a', now: () => now });
  const l = labels();
  const l404 = labels(); // another series (another response code) of the same edge
  for (let i = 0; i < 8; i++) m.request(l, { status: 200, durationMs: 2, requestBytes: 10, responseBytes: 20, flags: '-' });
  m.request(l404, { status: 404, durationMs: 2, flags: '-' });
  m.request(l, { status: 503, durationMs: 40, flags: 'UF' });
  m.request(labels({ reporter: 'destination' }), { status: 403, durationMs: 1, flags: 'RBAC' });
  m.request(labels({ request_protocol: 'grpc' }), { status: 200, grpcStatus: 14, durationMs: 1, flags: '-' });
  m.connection(labels({ request_protocol: 'tcp' }), { durationMs: 100, towardsDestination: 7, towardsSource: 9, flags: '-' });
  m.connection(labels({ request_protocol: 'tcp', reporter: 'destination' }), { durationMs: 0, towardsDestination: 0, towardsSource: 0, flags: 'RBAC' });
  m.request(undefined, { status: 200, durationMs: 1, flags: '-' });
  now = 6000;
  const r = m.drain();
  t.equal(r.interval_ms, 5000);
  t.same(r.latency_bounds_ms, LATENCY_BOUNDS_MS);
  t.equal(r.dropped, 1, 'a record the agent could not label is counted, not lost silently');
  t.equal(r.edges.length, 5, 'one edge per reporter and protocol');
  const http = r.edges.find((e) => e.reporter === 'source' && e.protocol === 'http')!;
  t.match(http, { source_workload: 'client', source_namespace: 'shop', destination_workload: 'echo', destination_service: 'echo.shop.svc.cluster.local', mtls: true });
  t.equal(http.requests, 10);
  t.equal(http.errors, 1, '5xx counts; 404 does not');
  t.equal(http.denials, 0);
  t.equal(http.bytes_sent, 80);
  t.equal(http.bytes_received, 160);
  t.equal(http.latency_counts.reduce((a, b) => a + b, 0), 10);
  t.equal(http.latency_counts[latencyBucket(2)], 9);
  const denied = r.edges.find((e) => e.reporter === 'destination' && e.protocol === 'http')!;
  t.match(denied, { requests: 1, errors: 1, denials: 1 }, 'a denial is an error and a denial');
  t.match(r.edges.find((e) => e.protocol === 'grpc'), { requests: 1, errors: 1 }, 'gRPC non-OK is an error');
  t.match(r.edges.find((e) => e.protocol === 'tcp' && e.reporter === 'source'), { requests: 1, errors: 0, bytes_sent: 7, bytes_received: 9 });
  t.match(r.edges.find((e) => e.protocol === 'tcp' && e.reporter === 'destination'), { requests: 1, errors: 1, denials: 1 });
  const next = m.drain();
  t.same(next.edges, [], 'the next interval starts empty');
  t.equal(next.dropped, 0);
});

t.test('at most maxEdges edges an interval; the rest are counted as dropped', async (t) => {
  const m = new MeshTraffic({ node: 'n', maxEdges: 3 });
  for (let i = 0; i < 10; i++) for (let k = 0; k < 2; k++) m.request(labels({ source_workload: `w${i}` }), { status: 200, durationMs: 1, flags: '-' });
  t.equal(m.edgeCount, 3);
  const r = m.drain();
  t.equal(r.edges.length, 3);
  t.equal(r.edges.reduce((n, e) => n + e.requests, 0), 6, 'the edges held keep counting');
  t.equal(r.dropped, 14, 'records of the edges over the cap');
});

t.test('tap: filters, metadata only, rate, time to live, stop', async (t) => {
  t.ok(tapMatches({ namespace: 'shop', from: '', to: '', path: '' }, labels(), '/'));
  t.notOk(tapMatches({ namespace: 'legacy', from: '', to: '', path: '' }, labels(), '/'));
  t.ok(tapMatches({ namespace: '', from: 'client', to: 'shop/echo', path: '/api' }, labels(), '/api/x'));
  t.ok(tapMatches({ namespace: '', from: 'shop/client', to: 'echo', path: '' }, labels({ destination_workload: 'echo-v2' }), '/'), '--to matches the Service too');
  t.notOk(tapMatches({ namespace: '', from: 'other/client', to: '', path: '' }, labels(), '/'));
  t.notOk(tapMatches({ namespace: '', from: '', to: '', path: '/api' }, labels(), '/web'));
  t.notOk(tapMatches({ namespace: '', from: '', to: '', path: '/api' }, labels(), undefined), 'a path filter leaves TCP out');
  t.equal(tapPath('/search?q=secret#x'), '/search', 'never the query string');
  t.equal(tapPath(`/${'a'.repeat(1000)}`).length, 257);

  let now = 0;
  const m = new MeshTraffic({ node: 'node-a', now: () => now, tapFlushMs: 1 });
  const got: TapEventData[] = [];
  m.setTapSink((events) => got.push(...events));
  m.request(labels(), { method: 'GET', path: '/a', status: 200, durationMs: 1, flags: '-' });
  m.flushTap();
  t.same(got, [], 'no session, no events');
  m.tapControl({ session: 's1', stop: false, filter: { namespace: '', from: '', to: 'echo', path: '' }, max_per_second: 5, ttl_seconds: 10 });
  for (let i = 0; i < 20; i++) m.request(labels(), { method: 'POST', path: `/p?token=${i}`, status: 200, durationMs: 1.5, flags: '-' });
  m.request(labels({ destination_workload: 'other', destination_service: 'other.shop.svc.cluster.local' }), { method: 'GET', path: '/', status: 200, durationMs: 1, flags: '-' });
  m.flushTap();
  t.equal(got.length, 5, 'at most max_per_second a second');
  t.equal(m.tapDropped, 15);
  t.match(got[0], {
    session: 's1',
    node: 'node-a',
    reporter: 'source',
    method: 'POST',
    path: '/p',
    status: 200,
    grpc_status: '',
    duration_ms: 1.5,
    mtls: true,
    source_principal: 'spiffe://cluster.local/ns/shop/sa/client',
    destination_principal: 'spiffe://cluster.local/ns/shop/sa/echo',
  });
  t.same(Object.keys(got[0]!).sort(), [
    'at', 'destination_namespace', 'destination_principal', 'destination_service', 'destination_workload', 'duration_ms', 'grpc_status', 'method', 'mtls', 'node', 'path',
    'protocol', 'reporter', 'response_flags', 'session', 'source_namespace', 'source_principal', 'source_workload', 'status',
  ], 'metadata only');
  now = 1000;
  m.request(labels(), { method: 'GET', path: '/b', status: 200, durationMs: 1, flags: '-' });
  m.flushTap();
  t.equal(got.length, 6, 'the rate refills');
  now = 11_000;
  m.request(labels(), { method: 'GET', path: '/c', status: 200, durationMs: 1, flags: '-' });
  m.flushTap();
  t.equal(got.length, 6, 'the session ended by itself after its time to live');
  t.same(m.tapSessions(), []);
  m.tapControl({ session: 's2', stop: false, filter: null, max_per_second: 1000, ttl_seconds: 60 });
  m.tapControl({ session: 's2', stop: true, filter: null, max_per_second: 0, ttl_seconds: 0 });
  t.same(m.tapSessions(), [], 'stopped');
  for (let i = 0; i < 100; i++) m.tapControl({ session: `x${i}`, stop: false, filter: null, max_per_second: 1, ttl_seconds: 60 });
  t.equal(m.tapSessions().length, 16, 'sessions are capped');
  m.close();
});
