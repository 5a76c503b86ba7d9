/**
 * Tracing through the whole data path on loopback (outbound proxy -> mTLS tunnel -> inbound ->
 * app): the client span's parent is the app's span, the server span's parent is the client
 * span, the app behind sees the server span as its parent; B3 in; unsampled costs no span and
 * leaves the headers alone; x-request-id generated and kept; access-log fields.
 */
import http from 'node:http';
import type net from 'node:net';
import { SpanKind, SpanStatusCode } from '@opentelemetry/api';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace';
import t from 'tap';
import type { OutboundRecord } from '../../../../src/proxy/outbound/outbound-proxy.js';
import { Tracing } from '../../../../src/telemetry/tracing.js';
import { meshWithApp } from './fixtures/real-mesh.js';

const APP_TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const APP_SPAN = '00f067aa0ba902b7';

async function traced(t: Tap, status = 200) {
  const exporter = new InMemorySpanExporter();
  const tracing = new Tracing({ sampling: 0, exporter, exportDelayMs: 10 });
  const seen: http.IncomingHttpHeaders[] = [];
  const app = http.createServer((req, res) => {
    seen.push(req.headers);
    req.resume();
    res.statusCode = status;
    res.end('ok');
  });
  const records: OutboundRecord[] = [];
  const m = await meshWithApp(t, (s: net.Socket) => app.emit('connection', s), 'http', {
    inbound: { tracing },
    outbound: { tracing, requestIds: true, onRecord: (r) => records.push(r) },
  });
  t.teardown(async () => {
    await tracing.shutdown();
    app.close();
  });
  const get = (headers: Record<string, string>): Promise<number> =>
    new Promise((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: m.port, path: '/a/b?q=1', headers: { host: 'echo.shop', ...headers }, agent: false }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        })
        .on('error', reject);
    });
  const spans = async (n: number): Promise<ReadableSpan[]> => {
    for (let i = 0; i < 100 && exporter.getFinishedSpans().length < n; i++) await new Promise((r) => setTimeout(r, 20));
    await tracing.flush();
    return exporter.getFinishedSpans();
  };
  return { get, spans, seen, records, exporter, m };
}
type Tap = Parameters<typeof meshWithApp>[0];

function parentOf(s: ReadableSpan): string | undefined {
  return s.parentSpanContext?.spanId;
}

t.test('W3C: client span child of the app span, server span child of the client span, the app behind sees the server span', async (t) => {
  const x = await traced(t);
  t.equal(await x.get({ traceparent: `00-${APP_TRACE}-${APP_SPAN}-01`, tracestate: 'vendor=a', 'x-request-id': 'rid-1' }), 200);
  const spans = await x.spans(2);
  t.equal(spans.length, 2, 'two spans');
  const client = spans.find((s) => s.kind === SpanKind.CLIENT);
  const server = spans.find((s) => s.kind === SpanKind.SERVER);
  if (!client || !server) throw new Error('missing span');
  t.equal(client.spanContext().traceId, APP_TRACE, 'client span in the app trace');
  t.equal(server.spanContext().traceId, APP_TRACE, 'server span in the app trace');
  t.equal(parentOf(client), APP_SPAN, "client span's parent is the app's span");
  t.equal(parentOf(server), client.spanContext().spanId, "server span's parent is the client span");
  t.equal(client.spanContext().traceState?.get('vendor'), 'a', 'tracestate kept');
  const h = x.seen[0] ?? {};
  t.equal(h.traceparent, `00-${APP_TRACE}-${server.spanContext().spanId}-01`, 'the app behind sees the server span as its parent');
  t.equal(h.tracestate, 'vendor=a', 'tracestate passed on');
  t.equal(h['x-request-id'], 'rid-1', "the app's request id passes through");
  t.equal(client.name, 'GET');
  t.match(client.attributes, {
    'http.request.method': 'GET',
    'url.path': '/a/b',
    'http.response.status_code': 200,
    'server.address': 'echo.shop',
    'server.port': 80,
    'network.protocol.name': 'http',
    'network.protocol.version': '1.1',
    'skein.source.workload': 'apps/client',
    'http.request.header.x-request-id': ['rid-1'],
  });
  t.equal(client.attributes['skein.source.principal'], x.m.mesh.clientId);
  t.equal(client.attributes['skein.destination.principal'], x.m.mesh.serverId);
  t.equal(server.attributes['skein.source.principal'], x.m.mesh.clientId);
  t.equal(server.attributes['skein.destination.principal'], x.m.mesh.serverId);
  t.equal(server.attributes['network.protocol.version'], '2', 'the server span: the request as it came between agents');
  t.equal(client.status.code, SpanStatusCode.UNSET);
  const rec = x.records[0];
  t.equal(rec?.traceId, APP_TRACE, 'access-log record: trace id');
  t.equal(rec?.spanId, client.spanContext().spanId, 'access-log record: span id');
  t.equal(rec?.requestId, 'rid-1', 'access-log record: request id');
});

t.test('B3 multi and single headers are accepted and rewritten in their own form', async (t) => {
  const x = await traced(t);
  await x.get({ 'x-b3-traceid': APP_TRACE, 'x-b3-spanid': APP_SPAN, 'x-b3-sampled': '1' });
  let spans = await x.spans(2);
  let client = spans.find((s) => s.kind === SpanKind.CLIENT);
  let server = spans.find((s) => s.kind === SpanKind.SERVER);
  t.equal(client?.spanContext().traceId, APP_TRACE);
  t.equal(parentOf(client!), APP_SPAN);
  t.equal(parentOf(server!), client?.spanContext().spanId);
  t.equal(x.seen[0]?.['x-b3-spanid'], server?.spanContext().spanId, 'x-b3-spanid: the server span');
  t.equal(x.seen[0]?.['x-b3-parentspanid'], client?.spanContext().spanId, 'x-b3-parentspanid: the client span');
  t.equal(x.seen[0]?.traceparent?.slice(36, 52), server?.spanContext().spanId, 'traceparent added');
  x.exporter.reset();
  await x.get({ b3: `${APP_SPAN}${APP_SPAN}-${APP_SPAN}-1` });
  spans = await x.spans(2);
  client = spans.find((s) => s.kind === SpanKind.CLIENT);
  server = spans.find((s) => s.kind === SpanKind.SERVER);
  t.equal(client?.spanContext().traceId, `${APP_SPAN}${APP_SPAN}`);
  t.equal(x.seen[1]?.b3, `${APP_SPAN}${APP_SPAN}-${server?.spanContext().spanId}-1`, 'b3 rewritten');
});

t.test('unsampled: no span, the headers pass unchanged; sampling 0 starts no trace', async (t) => {
  const x = await traced(t);
  const tp = `00-${APP_TRACE}-${APP_SPAN}-00`;
  t.equal(await x.get({ traceparent: tp }), 200);
  t.equal(await x.get({}), 200);
  await new Promise((r) => setTimeout(r, 100));
  t.same(await x.spans(0), [], 'no span');
  t.equal(x.seen[0]?.traceparent, tp, 'traceparent untouched');
  t.equal(x.seen[1]?.traceparent, undefined, 'none added');
  t.match(x.seen[1]?.['x-request-id'], /^[0-9a-f-]{36}$/, 'x-request-id generated when the app sent none');
  t.equal(x.records[0]?.traceId, APP_TRACE, "access log: the app's trace id");
  t.equal(x.records[0]?.spanId, undefined, 'no span id');
  t.equal(x.records[1]?.requestId, x.seen[1]?.['x-request-id'], 'access log: the generated request id');
});

t.test('5xx: both spans have status ERROR', async (t) => {
  const x = await traced(t, 503);
  await x.get({ traceparent: `00-${APP_TRACE}-${APP_SPAN}-01` });
  const spans = await x.spans(2);
  t.equal(spans.length, 2);
  for (const s of spans) {
    t.equal(s.status.code, SpanStatusCode.ERROR, `${SpanKind[s.kind]} span ERROR`);
    t.equal(s.attributes['error.type'], '503');
  }
});
