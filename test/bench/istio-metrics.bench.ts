/**
 * Cost per record of Istio's metrics on the hot path: RequestTelemetry (key from the record,
 * one Map lookup, four families updated) against prom-client's own Counter and Histograms
 * with the same 19 labels (which hash the label object on every call). In process, no I/O.
 *
 *   node --import tsx test/bench/istio-metrics.bench.ts   (QUICK=1: fewer rounds)
 */
import { Counter, Histogram, Registry } from 'prom-client';
import { RequestTelemetry, type SourceRecord } from '../../src/agent/request-telemetry.js';
import { ConfigStore } from '../../src/config/store.js';
import { ISTIO_BUCKETS, IstioMetrics, REQUEST_LABELS, type RequestLabels } from '../../src/telemetry/istio-metrics.js';
import type { InboundRequestRecord } from '../../src/proxy/inbound/inbound-http.js';
import { snapshotFor, VIP } from '../unit/proxy/outbound/fixtures/harness.js';

const N = process.env.QUICK === '1' ? 200_000 : 1_000_000;
const store = new ConfigStore();
store.apply(snapshotFor([{ ip: '10.0.2.7', port: 8080 }, { ip: '10.0.2.8', port: 8080 }]));
const registry = new Registry();
const telemetry = new RequestTelemetry(store, new IstioMetrics({ registry }));

const out: SourceRecord[] = [200, 200, 404, 503].flatMap((status) =>
  ['10.0.2.7:8080', '10.0.2.8:8080'].map((upstream) => ({
    reporter: 'source' as const,
    kind: 'http' as const,
    protocol: 'http1' as const,
    source: 'spiffe://cluster.local/ns/apps/sa/client',
    sourceWorkload: 'apps/client',
    destination: `${VIP}:80`,
    destinationService: 'server.apps.svc.cluster.local',
    upstream,
    destinationPrincipal: 'spiffe://cluster.local/ns/apps/sa/server-0',
    connectionSecurityPolicy: 'mutual_tls' as const,
    method: 'GET',
    path: '/',
    authority: 'server.apps',
    status,
    durationMs: 3,
    requestBytes: 100,
    responseBytes: 2000,
  })),
);
const inb: InboundRequestRecord[] = out.map((r) => ({
  reporter: 'destination',
  connectionSecurityPolicy: 'mutual_tls',
  protocol: 'http2',
  method: 'GET',
  path: '/',
  authority: 'server.apps',
  status: r.status!,
  durationMs: 3,
  transport: 'hbone',
  source: r.source,
  sourceIp: '10.0.1.5',
  workload: 'apps/server-0',
  destinationIdentity: 'spiffe://cluster.local/ns/apps/sa/server-0',
  port: 8080,
  grpc: false,
  requestBytes: 100,
  responseBytes: 2000,
}));

function time(name: string, fn: (i: number) => void): number {
  for (let i = 0; i < 50_000; i++) fn(i); // warm up (and bind every key)
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) fn(i);
  const ns = Number(process.hrtime.bigint() - t0) / N;
  process.stdout.write(`${name.padEnd(58)} ${ns.toFixed(0).padStart(6)} ns/record\n`);
  return ns;
}

// prom-client's way: the same four families, labels hashed per call.
const promReg = new Registry();
const labelNames = [...REQUEST_LABELS];
const c = new Counter({ name: 'c_total', help: 'h', labelNames, registers: [promReg] });
const h1 = new Histogram({ name: 'h1', help: 'h', labelNames, buckets: [...ISTIO_BUCKETS], registers: [promReg] });
const h2 = new Histogram({ name: 'h2', help: 'h', labelNames, buckets: [...ISTIO_BUCKETS], registers: [promReg] });
const h3 = new Histogram({ name: 'h3', help: 'h', labelNames, buckets: [...ISTIO_BUCKETS], registers: [promReg] });
const labelSets: RequestLabels[] = out.map((r) => {
  const l = Object.fromEntries(REQUEST_LABELS.map((n) => [n, 'unknown'])) as RequestLabels;
  return { ...l, reporter: 'source', destination_service: r.destinationService!, response_code: String(r.status), destination_workload: r.upstream! };
});

const a = time('RequestTelemetry.outbound (reporter source)', (i) => telemetry.outbound(out[i & 7]!));
const b = time('RequestTelemetry.inboundRequest (reporter destination)', (i) => telemetry.inboundRequest(inb[i & 7]!));
const p = time('prom-client Counter.inc + 3 Histogram.observe, 19 labels', (i) => {
  const l = labelSets[i & 7]!;
  c.inc(l);
  h1.observe(l, 3);
  h2.observe(l, 100);
  h3.observe(l, 2000);
});
process.stdout.write(`prom-client per record / ours: ${(p / a).toFixed(1)}x (source), ${(p / b).toFixed(1)}x (destination)\n`);
const t0 = performance.now();
const text = await registry.metrics();
process.stdout.write(`scrape of ${text.split('\n').length} lines: ${(performance.now() - t0).toFixed(1)} ms\n`);
