// The controller's sliding window of the agents' per-edge summaries (controller/traffic-window.ts):
// rates over the time covered, both reporters of an edge shown once, denials from the
// destination, old reports leaving the window, and the cap.
import t from 'tap';
import type { EdgeSummary, TrafficReport } from '../../../src/api/config-wire.js';
import { TrafficWindow } from '../../../src/controller/traffic-window.js';
import { LATENCY_BOUNDS_MS, latencyBucket } from '../../../src/telemetry/mesh-traffic.js';

const CLIENT = 'spiffe://cluster.local/ns/shop/sa/client';
const ECHO = 'spiffe://cluster.local/ns/shop/sa/echo';

function latency(ms: number, n: number): number[] {
  const c = new Array(LATENCY_BOUNDS_MS.length + 1).fill(0);
  c[latencyBucket(ms)] = n;
  return c;
}

function edge(over: Partial<EdgeSummary>): EdgeSummary {
  return {
    reporter: 'source',
    source_workload: 'client',
    source_namespace: 'shop',
    source_principal: CLIENT,
    destination_workload: 'echo',
    destination_namespace: 'shop',
    destination_service: 'echo.shop.svc.cluster.local',
    destination_principal: ECHO,
    protocol: 'http',
    mtls: true,
    requests: 0,
    errors: 0,
    denials: 0,
    latency_counts: latency(2, over.requests ?? 0),
    latency_sum_ms: 0,
    bytes_sent: 0,
    bytes_received: 0,
    ...over,
  };
}

const report = (edges: EdgeSummary[], interval_ms = 5000, dropped = 0): TrafficReport => ({ interval_ms, latency_bounds_ms: [...LATENCY_BOUNDS_MS], edges, dropped });

t.test('an edge both agents saw is shown once: the source\'s numbers, the destination\'s denials', async (t) => {
  let now = 100_000;
  const w = new TrafficWindow({ windowMs: 30_000, now: () => now });
  // node-a runs the client (source) and one echo pod; node-b the other echo pod, whose agent
  // does not know the client's workload name (only its principal).
  w.add('node-a', report([edge({ requests: 60, bytes_sent: 600, bytes_received: 1200 }), edge({ reporter: 'destination', requests: 31, errors: 1, denials: 1 })]));
  w.add('node-b', report([edge({ reporter: 'destination', source_workload: 'unknown', requests: 30 })]));
  now += 5000;
  w.add('node-a', report([edge({ requests: 40, latency_counts: latency(40, 40) })]));
  const s = w.snapshot();
  t.equal(s.window_seconds, 10, 'the time covered so far (two 5 s intervals)');
  t.same(s.nodes, ['node-a', 'node-b']);
  t.equal(s.edges.length, 1, `one edge ${JSON.stringify(s.edges)}`);
  const e = s.edges[0]!;
  t.match(e, { source: 'shop/client', destination: 'shop/echo', destination_service: 'echo.shop.svc.cluster.local', protocol: 'http', mtls: true, requests: 100, denials: 1, errors: 1, rps: 10 });
  t.same(e.reporters, ['source', 'destination']);
  t.equal(e.success_rate, 0.99);
  t.ok(e.p50_ms > 1 && e.p50_ms <= 2, `p50 ${e.p50_ms}`);
  t.ok(e.p99_ms > 30 && e.p99_ms <= 50, `p99 ${e.p99_ms}`);
  t.equal(e.bytes_sent, 600);
  const echo = s.workloads.find((x) => x.name === 'shop/echo')!;
  t.match(echo, { requests: 100, errors: 1, denials: 1, rps: 10, mtls: true, outbound_rps: 0 });
  t.match(s.workloads.find((x) => x.name === 'shop/client'), { requests: 0, rps: 0, outbound_rps: 10 });
});

t.test('edges only one side saw keep that side\'s numbers; protocols are apart', async (t) => {
  const w = new TrafficWindow({ now: () => 0 });
  w.add('node-b', report([
    edge({ reporter: 'destination', source_workload: 'unknown', source_namespace: 'unknown', source_principal: 'unknown', mtls: false, protocol: 'tcp', requests: 4 }),
    edge({ protocol: 'grpc', requests: 5, errors: 2 }),
  ]));
  const s = w.snapshot();
  t.same(s.edges.map((e) => [e.source, e.destination, e.protocol, e.requests, e.reporters.join('+')]), [
    ['shop/client', 'shop/echo', 'grpc', 5, 'source'],
    ['unknown/unknown', 'shop/echo', 'tcp', 4, 'destination'],
  ]);
  t.equal(s.edges[0]!.success_rate, 0.6);
  t.equal(s.window_seconds, 5, 'the interval of the only report');
  t.equal(s.workloads.find((x) => x.name === 'shop/echo')?.mtls, false, 'not every inbound edge is mTLS');
});

t.test('reports leave the window as time passes', async (t) => {
  let now = 0;
  const w = new TrafficWindow({ windowMs: 30_000, now: () => now });
  w.add('node-a', report([edge({ requests: 10 })]));
  now = 20_000;
  w.add('node-a', report([edge({ requests: 5 })]));
  t.equal(w.snapshot().edges[0]?.requests, 15);
  now = 31_000;
  t.equal(w.snapshot().edges[0]?.requests, 5, 'the first report left the window');
  t.equal(w.size, 1);
  now = 60_000;
  t.same(w.snapshot().edges, [], 'an idle mesh shows no edges');
  t.equal(w.size, 0);
});

t.test('at most maxEntries entries over the window; the rest and the agents\' drops are counted', async (t) => {
  const w = new TrafficWindow({ maxEntries: 3, now: () => 0 });
  w.add('node-a', report([edge({ requests: 1, source_workload: 'a' }), edge({ requests: 1, source_workload: 'b' })], 5000, 7));
  w.add('node-b', report([edge({ requests: 1, source_workload: 'c' }), edge({ requests: 1, source_workload: 'd' })]));
  const s = w.snapshot();
  t.equal(w.size, 3);
  t.equal(s.edges.length, 3);
  t.equal(s.dropped, 8, '7 the agent could not summarise, 1 over the window\'s cap');
});

t.test('latency from another agent version\'s buckets lands by bound', async (t) => {
  const w = new TrafficWindow({ now: () => 0 });
  w.add('node-a', { interval_ms: 5000, latency_bounds_ms: [10, 100], edges: [edge({ requests: 4, latency_counts: [0, 4, 0] })], dropped: 0 });
  const e = w.snapshot().edges[0]!;
  t.ok(e.p50_ms > 75 && e.p50_ms <= 100, `p50 ${e.p50_ms} in the (75, 100] bucket`);
});
