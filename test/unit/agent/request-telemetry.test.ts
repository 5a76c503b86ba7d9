import { Registry } from 'prom-client';
import t from 'tap';
import { hostOf, RequestTelemetry, sourceFlags, type SourceRecord } from '../../../src/agent/request-telemetry.js';
import { ConfigStore } from '../../../src/config/store.js';
import { IstioMetrics } from '../../../src/telemetry/istio-metrics.js';
import { client, snapshotFor, VIP } from '../proxy/outbound/fixtures/harness.js';

const CLIENT_ID = client.identity;
const SERVER_ID = 'spiffe://cluster.local/ns/apps/sa/server-0';

function setup() {
  const store = new ConfigStore();
  const snap = snapshotFor([{ ip: '10.0.2.7', port: 8080 }]);
  snap.workloads = snap.workloads.map((w) =>
    w.name === 'server-0' ? { ...w, workloadName: 'server', labels: { 'app.kubernetes.io/name': 'srv', version: 'v2' } } : { ...w, workloadName: 'client' },
  );
  const r = store.apply(snap);
  if (!r.ok) throw r.error;
  const registry = new Registry();
  const metrics = new IstioMetrics({ registry });
  return { store, registry, metrics, telemetry: new RequestTelemetry(store, metrics) };
}

const httpRecord = (over: Partial<SourceRecord> = {}): SourceRecord => ({
  reporter: 'source',
  kind: 'http',
  protocol: 'http1',
  source: CLIENT_ID,
  sourceWorkload: 'apps/client',
  destination: `${VIP}:80`,
  destinationService: 'server.apps.svc.cluster.local',
  upstream: '10.0.2.7:8080',
  destinationPrincipal: SERVER_ID,
  connectionSecurityPolicy: 'mutual_tls',
  method: 'GET',
  path: '/',
  authority: 'server.apps',
  status: 200,
  durationMs: 4,
  ...over,
});

t.test('reporter source: workloads (not pods), apps, versions, the Service, mutual_tls', async (t) => {
  const { registry, telemetry } = setup();
  telemetry.outbound(httpRecord());
  telemetry.outbound(httpRecord({ requestBytes: 12, responseBytes: 34 }));
  const text = await registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith('istio_requests_total{'));
  t.ok(line);
  for (const want of [
    'reporter="source"',
    'source_workload="client"',
    'source_workload_namespace="apps"',
    `source_principal="${CLIENT_ID}"`,
    'source_app="client"',
    'source_version="unknown"',
    'destination_workload="server"',
    'destination_workload_namespace="apps"',
    `destination_principal="${SERVER_ID}"`,
    'destination_app="srv"',
    'destination_version="v2"',
    'destination_service="server.apps.svc.cluster.local"',
    'destination_service_name="server"',
    'destination_service_namespace="apps"',
    'request_protocol="http"',
    'response_code="200"',
    'response_flags="-"',
    'connection_security_policy="mutual_tls"',
  ]) {
    t.ok(line!.includes(want), want);
  }
  t.match(line, /\} 2$/);
  t.match(text, /istio_request_bytes_count\{[^}]*\} 1/, 'sizes counted only when the record has them');
  t.match(text, /istio_response_bytes_sum\{[^}]*\} 34/);
});

t.test('reporter destination: the source pod only when its IP and identity agree', async (t) => {
  const { registry, telemetry } = setup();
  const base = {
    reporter: 'destination' as const,
    connectionSecurityPolicy: 'mutual_tls' as const,
    protocol: 'http2' as const,
    method: 'GET',
    path: '/',
    authority: '10.96.0.10:80',
    status: 403,
    durationMs: 1,
    transport: 'hbone' as const,
    workload: 'apps/server-0',
    destinationIdentity: SERVER_ID,
    port: 8080,
    grpc: false,
    requestBytes: 0,
    responseBytes: 20,
    responseFlags: 'RBAC',
  };
  telemetry.inboundRequest({ ...base, source: CLIENT_ID, sourceIp: '10.0.1.5' });
  telemetry.inboundRequest({ ...base, source: 'spiffe://cluster.local/ns/other/sa/liar', sourceIp: '10.0.1.5' });
  const lines = (await registry.metrics()).split('\n').filter((l) => l.startsWith('istio_requests_total{'));
  t.equal(lines.length, 2);
  const honest = lines.find((l) => l.includes(`source_principal="${CLIENT_ID}"`))!;
  t.match(honest, /source_workload="client",source_workload_namespace="apps"/);
  t.match(honest, /destination_workload="server",destination_workload_namespace="apps"/);
  t.match(honest, /destination_service="server.apps.svc.cluster.local"/);
  t.match(honest, /response_code="403",grpc_response_status="",response_flags="RBAC"/);
  const liar = lines.find((l) => l.includes('sa/liar'))!;
  t.match(liar, /source_workload="unknown",source_workload_namespace="other"/, 'an IP claimed by another identity is not believed');
  // A pod the destination does not know (another node, no Service endpoint): its agent's
  // peer metadata names the workload; the namespace stays the principal's.
  telemetry.inboundRequest({ ...base, source: 'spiffe://cluster.local/ns/batch/sa/cron', sourceIp: '10.0.9.9', sourcePeer: { workload: 'nightly', app: 'reports', version: 'v3' } });
  const peer = (await registry.metrics()).split('\n').find((l) => l.startsWith('istio_requests_total{') && l.includes('sa/cron'))!;
  t.match(peer, /source_workload="nightly",source_workload_namespace="batch"/, 'named by the peer metadata, namespace from the identity');
  t.match(peer, /source_app="reports",source_version="v3"/);
});

t.test('TCP at both reporters; passthrough is PassthroughCluster', async (t) => {
  const { registry, telemetry } = setup();
  telemetry.outbound(httpRecord({ kind: 'tcp', protocol: undefined, status: 200, bytesSent: 100, bytesReceived: 300, end: 'complete' }));
  telemetry.outbound({ ...httpRecord({ kind: 'passthrough', destination: '1.2.3.4:443', upstream: '1.2.3.4:443', connectionSecurityPolicy: 'none', bytesSent: 5, bytesReceived: 6 }), destinationPrincipal: undefined, destinationService: undefined } as SourceRecord);
  telemetry.inboundConnection({
    reporter: 'destination',
    connectionSecurityPolicy: 'mutual_tls',
    transport: 'hbone',
    source: CLIENT_ID,
    sourceIp: '10.0.1.5',
    workload: 'apps/server-0',
    destinationIdentity: SERVER_ID,
    port: 8080,
    status: 200,
    bytesReceived: 100,
    bytesSent: 300,
    durationMs: 3,
  });
  const text = await registry.metrics();
  t.match(text, /istio_tcp_received_bytes_total\{reporter="source",source_workload="client",[^}]*destination_service="server.apps.svc.cluster.local"[^}]*\} 100/);
  t.match(text, /istio_tcp_sent_bytes_total\{reporter="source",[^}]*destination_service="server.apps.svc.cluster.local"[^}]*\} 300/);
  t.match(text, /istio_tcp_received_bytes_total\{reporter="destination",source_workload="client",[^}]*destination_workload="server"[^}]*\} 100/);
  t.match(text, /istio_tcp_connections_opened_total\{reporter="source",[^}]*destination_service="1.2.3.4",destination_service_name="PassthroughCluster"[^}]*connection_security_policy="none"\} 1/);
});

t.test('flags from what source records say', async (t) => {
  t.equal(sourceFlags(httpRecord({ status: 503, upstream: undefined })), 'UH');
  t.equal(sourceFlags(httpRecord({ status: 503 })), '-', 'a 503 from the endpoint may be the app\'s own');
  t.equal(sourceFlags(httpRecord({ status: 0 })), 'DC');
  t.equal(sourceFlags(httpRecord({ status: 503, responseFlags: 'UF' })), 'UF');
  t.equal(sourceFlags(httpRecord({ kind: 'tcp', end: 'connect-failed', status: 503 })), 'UF');
  t.equal(hostOf('echo.shop:80'), 'echo.shop');
  t.equal(hostOf('[fd00::1]:80'), 'fd00::1');
  t.equal(hostOf('fd00::1'), 'fd00::1');
});

t.test('a new config relabels the same records', async (t) => {
  const { store, registry, telemetry } = setup();
  telemetry.outbound(httpRecord());
  const snap = snapshotFor([{ ip: '10.0.2.7', port: 8080 }], { version: '2' });
  snap.workloads = snap.workloads.map((w) => (w.name === 'server-0' ? { ...w, workloadName: 'server', labels: { app: 'srv', version: 'v3' } } : w));
  t.ok(store.apply(snap).ok);
  telemetry.outbound(httpRecord());
  const text = await registry.metrics();
  t.match(text, /istio_requests_total\{[^}]*destination_version="v2"[^}]*\} 1/);
  t.match(text, /istio_requests_total\{[^}]*destination_version="v3"[^}]*\} 1/);
});

t.test('a peer on another node: named by the Service endpoint it is, when its identity agrees', async (t) => {
  const store = new ConfigStore();
  const snap = snapshotFor([{ ip: '10.0.2.7', port: 8080 }]);
  // This agent holds only its own node's pods: the server pod is not among its workloads.
  snap.workloads = snap.workloads.filter((w) => w.name !== 'server-0');
  snap.services[0]!.endpoints[0]!.peer = { namespace: 'apps', workloadName: 'server', app: 'srv', version: 'v9' };
  t.ok(store.apply(snap).ok);
  const registry = new Registry();
  const telemetry = new RequestTelemetry(store, new IstioMetrics({ registry }));
  telemetry.outbound(httpRecord());
  telemetry.outbound(httpRecord({ destinationPrincipal: 'spiffe://cluster.local/ns/apps/sa/other', upstream: '10.0.2.7:8080' }));
  const text = await registry.metrics();
  t.match(text, /istio_requests_total\{[^}]*destination_workload="server",destination_workload_namespace="apps",[^}]*destination_app="srv",destination_version="v9"[^}]*\} 1/);
  t.match(text, /istio_requests_total\{[^}]*destination_workload="unknown",destination_workload_namespace="apps",destination_principal="spiffe:\/\/cluster.local\/ns\/apps\/sa\/other"[^}]*\} 1/, 'another identity at that IP is not that pod');
});
