/**
 * The agent's exporter against the test receiver (the collector's TraceService from the
 * official protos): a client span, ids and attributes as sent, over OTLP/gRPC.
 */
import t from 'tap';
import { silentLogger } from '../../../src/telemetry/log.js';
import { otlpExporter, Tracing } from '../../../src/telemetry/tracing.js';
import { type ReceivedSpan, startOtlpReceiver } from '../../support/otlp-receiver.js';

t.test('OTLP/gRPC export reaches a TraceService receiver', async (t) => {
  const got: ReceivedSpan[] = [];
  const r = await startOtlpReceiver('127.0.0.1:0', (s) => got.push(s));
  t.teardown(() => r.server.forceShutdown());
  const tracing = new Tracing({ sampling: 1, exporter: otlpExporter(`http://127.0.0.1:${r.port}`, 'grpc', silentLogger()), resource: { 'k8s.node.name': 'node-a' } });
  const h: Record<string, string> = { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01', 'content-type': 'application/grpc' };
  const span = tracing.startClient(h);
  if (!span) throw new Error('sampled parent: a span');
  tracing.endClient(span, {
    source: 'spiffe://cluster.local/ns/shop/sa/client',
    sourceWorkload: 'shop/client-0',
    destination: '10.96.0.7:9090',
    upstream: '10.1.2.3:9090',
    destinationPrincipal: 'spiffe://cluster.local/ns/shop/sa/echo',
    method: 'POST',
    path: '/skein.lab.Echo/Echo',
    authority: 'echo.shop:9090',
    protocol: 'http2',
    status: 200,
    grpcStatus: 14,
  });
  await tracing.flush();
  for (let i = 0; i < 50 && got.length === 0; i++) await new Promise((res) => setTimeout(res, 50));
  await tracing.shutdown();
  t.equal(got.length, 1);
  const s = got[0]!;
  t.equal(s.traceId, '4bf92f3577b34da6a3ce929d0e0e4736');
  t.equal(s.parentSpanId, '00f067aa0ba902b7');
  t.equal(s.spanId, span.spanId);
  t.equal(s.kind, 3, 'CLIENT');
  t.equal(s.name, 'skein.lab.Echo/Echo');
  t.equal(s.status, 2, 'gRPC UNAVAILABLE: ERROR');
  t.match(s.attributes, { 'rpc.system': 'grpc', 'rpc.service': 'skein.lab.Echo', 'rpc.method': 'Echo', 'rpc.grpc.status_code': 14, 'network.peer.address': '10.1.2.3', 'server.port': 9090 });
  t.match(s.resource, { 'service.name': 'skein-agent', 'k8s.node.name': 'node-a' });
  t.equal(h.traceparent, `00-4bf92f3577b34da6a3ce929d0e0e4736-${span.spanId}-01`);
});
