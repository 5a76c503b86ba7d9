// What `skein top` and `skein tap` print.
import t from 'tap';
import type { TapEvent, TrafficResponse } from '../../../src/api/config-wire.js';
import { formatTapEvent } from '../../../src/cli/tap.js';
import { filterNamespace, formatMs, formatSuccess, renderTop } from '../../../src/cli/top.js';

const traffic: TrafficResponse = {
  window_seconds: 60,
  nodes: ['node-a', 'node-b'],
  dropped: 0,
  edges: [
    { source: 'shop/client', destination: 'shop/echo', destination_service: 'echo.shop.svc.cluster.local', protocol: 'grpc', mtls: true, requests: 120, errors: 0, denials: 0, rps: 2, success_rate: 1, p50_ms: 1.234, p99_ms: 12.5, bytes_sent: 0, bytes_received: 0, reporters: ['source', 'destination'] },
    { source: 'shop/client', destination: 'shop/echo', destination_service: 'echo.shop.svc.cluster.local', protocol: 'http', mtls: true, requests: 61, errors: 1, denials: 1, rps: 1.017, success_rate: 0.9836, p50_ms: 2, p99_ms: 150, bytes_sent: 0, bytes_received: 0, reporters: ['source', 'destination'] },
    { source: 'legacy/client', destination: 'legacy/echo', destination_service: 'echo.legacy.svc.cluster.local', protocol: 'tcp', mtls: false, requests: 3, errors: 0, denials: 0, rps: 0.05, success_rate: 1, p50_ms: 0, p99_ms: 0, bytes_sent: 0, bytes_received: 0, reporters: ['source'] },
  ],
  workloads: [
    { name: 'shop/client', requests: 0, errors: 0, denials: 0, rps: 0, success_rate: 1, p50_ms: 0, p99_ms: 0, outbound_rps: 3.017, mtls: false },
    { name: 'shop/echo', requests: 181, errors: 1, denials: 1, rps: 3.017, success_rate: 0.9945, p50_ms: 1.5, p99_ms: 140, outbound_rps: 0, mtls: true },
  ],
};

t.test('skein top: workloads and edges, rates, success, latency', async (t) => {
  t.equal(formatMs(0), '-');
  t.equal(formatMs(1.234), '1.23ms');
  t.equal(formatMs(12.5), '12.5ms');
  t.equal(formatMs(150), '150ms');
  t.equal(formatSuccess(1, 10), '100%');
  t.equal(formatSuccess(0.9836, 61), '98.36%');
  t.equal(formatSuccess(1, 0), '-');
  const text = renderTop(traffic, new Date('2026-01-01T10:11:12Z'));
  t.match(text, /^skein top — 10:11:12 — the last 60 s, from node-a, node-b\n/);
  t.match(text, /WORKLOAD\s+RPS IN\s+SUCCESS\s+P50\s+P99\s+RPS OUT\s+DENIED\s+MTLS/);
  t.match(text, /shop\/echo\s+3\.02\s+99\.45%\s+1\.50ms\s+140ms\s+0\.00\s+1\s+yes/);
  t.match(text, /shop\/client\s+0\.00\s+-\s+-\s+-\s+3\.02\s+0\s+-/);
  t.match(text, /SOURCE\s+DESTINATION\s+SERVICE\s+PROTO\s+MTLS\s+RPS\s+SUCCESS\s+P50\s+P99\s+REQUESTS\s+DENIED/);
  t.match(text, /shop\/client\s+shop\/echo\s+echo\.shop\.svc\.cluster\.local\s+http\s+yes\s+1\.02\s+98\.36%\s+2\.00ms\s+150ms\s+61\s+1/);
  t.match(text, /legacy\/client\s+legacy\/echo\s+echo\.legacy\.svc\.cluster\.local\s+tcp\s+no\s+0\.05/);
  t.match(renderTop({ ...traffic, edges: [], workloads: [], nodes: [] }, new Date()), /no traffic in the window/);
  const shop = filterNamespace(traffic, 'shop');
  t.equal(shop.edges.length, 2);
  t.same(filterNamespace(traffic, undefined), traffic);
});

t.test('skein tap: one line per request', async (t) => {
  const e: TapEvent = {
    session: 's',
    node: 'node-b',
    reporter: 'destination',
    at: '2026-01-01T10:11:12.345Z',
    source_workload: 'client',
    source_namespace: 'shop',
    source_principal: 'spiffe://cluster.local/ns/shop/sa/client',
    destination_workload: 'echo',
    destination_namespace: 'shop',
    destination_service: 'echo.shop.svc.cluster.local',
    destination_principal: 'spiffe://cluster.local/ns/shop/sa/echo',
    protocol: 'http',
    method: 'GET',
    path: '/admin',
    status: 403,
    grpc_status: '',
    duration_ms: 0.42,
    response_flags: 'RBAC',
    mtls: true,
  };
  t.equal(
    formatTapEvent(e),
    '10:11:12.345 in  node-b shop/client -> shop/echo http GET /admin 403 0.42ms flags=RBAC tls=mtls src=spiffe://cluster.local/ns/shop/sa/client dst=spiffe://cluster.local/ns/shop/sa/echo',
  );
  t.match(formatTapEvent({ ...e, reporter: 'source', protocol: 'grpc', method: 'POST', path: '/skein.lab.Echo/Echo', status: 200, grpc_status: '0', response_flags: '-' }), / out node-b .* grpc POST \/skein\.lab\.Echo\/Echo 200 grpc=0 0\.42ms tls=mtls/);
  t.match(formatTapEvent({ ...e, protocol: 'tcp', method: '', path: '', response_flags: '-', mtls: false }), /tcp connection ok 0\.42ms tls=none/);
});
