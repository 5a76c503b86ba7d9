import { Registry } from 'prom-client';
import t from 'tap';
import { flagsLabel, IstioMetrics, ISTIO_BUCKETS, REQUEST_LABELS, type RequestLabels, type TcpLabels, TCP_LABELS } from '../../../src/telemetry/istio-metrics.js';

function labels(over: Partial<RequestLabels> = {}): RequestLabels {
  const l = Object.fromEntries(REQUEST_LABELS.map((n) => [n, 'unknown'])) as RequestLabels;
  return { ...l, reporter: 'destination', response_code: '200', grpc_response_status: '', response_flags: '-', connection_security_policy: 'mutual_tls', ...over };
}

function tcpLabels(over: Partial<TcpLabels> = {}): TcpLabels {
  const l = Object.fromEntries(TCP_LABELS.map((n) => [n, 'unknown'])) as TcpLabels;
  return { ...l, reporter: 'source', request_protocol: 'tcp', response_flags: '-', connection_security_policy: 'mutual_tls', ...over };
}

t.test('requests, durations and sizes as Istio names them, in Istio buckets', async (t) => {
  const registry = new Registry();
  const m = new IstioMetrics({ registry });
  const s = m.lookupRequest('k') ?? m.bindRequest('k', labels({ destination_service: 'echo.shop.svc.cluster.local' }));
  t.equal(m.lookupRequest('k'), s, 'a bound key is one lookup');
  m.request(s, 3, 10, 2000);
  m.request(s, 700, 0, undefined);
  const text = await registry.metrics();
  t.match(text, /istio_requests_total\{reporter="destination",source_workload="unknown",.*destination_service="echo.shop.svc.cluster.local",.*response_code="200",grpc_response_status="",response_flags="-",connection_security_policy="mutual_tls"\} 2/);
  t.match(text, /# TYPE istio_request_duration_milliseconds histogram/);
  t.match(text, /istio_request_duration_milliseconds_bucket\{le="1",reporter="destination",[^}]*\} 0/);
  t.match(text, /istio_request_duration_milliseconds_bucket\{le="5",reporter="destination",[^}]*\} 1/);
  t.match(text, /istio_request_duration_milliseconds_bucket\{le="1000",reporter="destination",[^}]*\} 2/);
  t.match(text, /istio_request_duration_milliseconds_bucket\{le="\+Inf",reporter="destination",[^}]*\} 2/);
  t.match(text, /istio_request_duration_milliseconds_sum\{reporter="destination",[^}]*\} 703/);
  t.match(text, /istio_request_duration_milliseconds_count\{reporter="destination",[^}]*\} 2/);
  t.match(text, /istio_request_bytes_count\{[^}]*\} 2/);
  t.match(text, /istio_request_bytes_sum\{[^}]*\} 10/);
  t.match(text, /istio_response_bytes_count\{[^}]*\} 1/, 'a size not known is not observed');
  t.equal(ISTIO_BUCKETS.length, 19);
});

t.test('two keys with the same labels are one series; invalidate keeps the counts', async (t) => {
  const registry = new Registry();
  const m = new IstioMetrics({ registry });
  const a = m.bindRequest('a', labels());
  const b = m.bindRequest('b', labels());
  t.equal(a, b);
  m.request(a, 1, undefined, undefined);
  m.invalidate();
  t.equal(m.lookupRequest('a'), undefined, 'keys are re-resolved after a config change');
  const again = m.bindRequest('a', labels());
  t.equal(again, a, 'the same label set is the same series');
  m.request(again, 1, undefined, undefined);
  t.match(await registry.metrics(), /istio_requests_total\{[^}]*\} 2/);
});

t.test('the cap: label sets beyond it are counted as dropped, never kept', async (t) => {
  const registry = new Registry();
  const m = new IstioMetrics({ registry, maxSeries: 3 });
  for (let i = 0; i < 10; i++) {
    const s = m.bindRequest(`k${i}`, labels({ source_workload: `w${i}` }));
    m.request(s, 1, 1, 1);
    const c = m.bindTcp(`t${i}`, tcpLabels({ source_workload: `w${i}` }));
    m.connection(c, 5, 7);
  }
  t.same(m.seriesCount(), { request: 3, tcp: 3 });
  const text = await registry.metrics();
  t.equal(text.match(/^istio_requests_total\{/gm)?.length, 3);
  t.equal(text.match(/^istio_tcp_connections_opened_total\{/gm)?.length, 3);
  t.match(text, /skein_metrics_series_dropped_total\{family="request"\} 7/);
  t.match(text, /skein_metrics_series_dropped_total\{family="tcp"\} 7/);
  t.notMatch(text, /w5/);
});

t.test('TCP: bytes each way, opened and closed, without request-only labels', async (t) => {
  const registry = new Registry();
  const m = new IstioMetrics({ registry });
  const s = m.bindTcp('x', tcpLabels({ destination_service: 'echo.shop.svc.cluster.local' }));
  m.connection(s, 1000, 2000);
  m.connection(s, 1, 2);
  const text = await registry.metrics();
  t.match(text, /istio_tcp_received_bytes_total\{reporter="source",[^}]*\} 1001/);
  t.match(text, /istio_tcp_sent_bytes_total\{[^}]*\} 2002/);
  t.match(text, /istio_tcp_connections_opened_total\{[^}]*\} 2/);
  t.match(text, /istio_tcp_connections_closed_total\{[^}]*\} 2/);
  t.notMatch(text, /istio_tcp_sent_bytes_total\{[^}]*response_code/);
});

t.test('label values are escaped; flags are a closed set', async (t) => {
  const registry = new Registry();
  const m = new IstioMetrics({ registry });
  m.request(m.bindRequest('q', labels({ destination_app: 'a"b\\c' })), 1, undefined, undefined);
  t.match(await registry.metrics(), /destination_app="a\\"b\\\\c"/);
  t.equal(flagsLabel(undefined), '-');
  t.equal(flagsLabel('UH'), 'UH');
  t.equal(flagsLabel('UF,URX'), 'UF,URX');
  t.equal(flagsLabel('whatever a peer said'), '-');
});
