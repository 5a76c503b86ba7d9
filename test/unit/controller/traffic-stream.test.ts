// Seeing the mesh end to end in one process: agents' ControllerConfigSources report their
// MeshTraffic on the config stream; the controller serves the window over GetTraffic (skein
// top) and the graph page; a tap session goes to every agent on its stream and the events
// come back; all of it needs the credentials `skein status` needs.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import t from 'tap';
import type { TapEvent } from '../../../src/api/config-wire.js';
import { ControllerConfigSource } from '../../../src/config/controller-source.js';
import { Controller } from '../../../src/controller/controller.js';
import { graphHandler } from '../../../src/controller/graph-page.js';
import { fetchControllerTraffic, tapController } from '../../../src/controller/status-client.js';
import { BootstrapTokenAuthenticator } from '../../../src/identity/ca/bootstrap-tokens.js';
import { type EdgeLabels, MeshTraffic } from '../../../src/telemetry/mesh-traffic.js';
import { baseCluster, tempDir, TOKENS, until, writeCluster } from './helpers.js';

const src = (over: Partial<EdgeLabels> = {}): EdgeLabels =>
  Object.freeze({
    reporter: 'source',
    source_workload: 'client',
    source_workload_namespace: 'shop',
    source_principal: 'spiffe://cluster.local/ns/shop/sa/client',
    destination_workload: 'web',
    destination_workload_namespace: 'shop',
    destination_service: 'web.shop.svc.cluster.local',
    destination_principal: 'spiffe://cluster.local/ns/shop/sa/web',
    request_protocol: 'http',
    connection_security_policy: 'mutual_tls',
    ...over,
  });

async function agent(t: Tap.Test, node: string, address: string): Promise<MeshTraffic> {
  const traffic = new MeshTraffic({ node, tapFlushMs: 10 });
  const source = new ControllerConfigSource({ address, node, token: (TOKENS as Record<string, string>)[node], traffic, trafficReportMs: 100, backoff: { initialMs: 50, maxMs: 200 } });
  t.teardown(() => source.stop());
  await source.start(
    () => {},
    () => {},
  );
  return traffic;
}

t.test('reports, GetTraffic, the graph page and tap over the config stream', async (t) => {
  const dir = tempDir(t, 'traffic');
  writeCluster(dir, baseCluster());
  const c = new Controller({ folder: dir, folderRescanMs: 0, authenticator: BootstrapTokenAuthenticator.fromTokens(TOKENS), configAddress: '127.0.0.1:0' });
  const { configPort } = await c.start();
  t.teardown(() => c.stop());
  const address = `127.0.0.1:${configPort}`;
  const a = await agent(t, 'node-a', address);
  const b = await agent(t, 'node-b', address);
  await until('both agents connected', () => c.status().agents.length === 2);

  for (let i = 0; i < 30; i++) a.request(src(), { method: 'GET', path: '/', status: 200, durationMs: 3, flags: '-' });
  for (let i = 0; i < 30; i++) b.request(src({ reporter: 'destination', source_workload: 'unknown' }), { method: 'GET', path: '/', status: 200, durationMs: 2, flags: '-' });
  b.request(src({ reporter: 'destination', source_workload: 'unknown' }), { method: 'GET', path: '/admin', status: 403, durationMs: 1, flags: 'RBAC' });
  a.request(src(), { method: 'GET', path: '/admin', status: 403, durationMs: 1, flags: '-' });

  const creds = { address, token: TOKENS['node-a'] };
  let traffic = await fetchControllerTraffic(creds);
  await until('both reports in', async () => {
    traffic = await fetchControllerTraffic(creds);
    // Both sides' summaries: node-b's alone also count 31 requests and 1 denial, and node-a
    // may be among `nodes` with an empty report sent before its requests (a race seen under load).
    return traffic.nodes.length === 2 && (traffic.edges[0]?.reporters.length ?? 0) === 2 && (traffic.edges[0]?.requests ?? 0) === 31 && (traffic.edges[0]?.denials ?? 0) === 1;
  });
  t.equal(traffic.edges.length, 1, JSON.stringify(traffic.edges));
  t.match(traffic.edges[0], { source: 'shop/client', destination: 'shop/web', protocol: 'http', mtls: true, requests: 31, errors: 1, denials: 1 });
  t.same(traffic.edges[0]!.reporters, ['source', 'destination']);

  await t.rejects(fetchControllerTraffic({ address, token: 'nope' }), { code: grpc.status.UNAUTHENTICATED }, 'GetTraffic needs a credential');

  await t.test('the graph page and its data', async (t) => {
    const handler = graphHandler('/graph', () => c.configServer.traffic.snapshot());
    const server = http.createServer((req, res) => {
      if (!handler(req, res)) res.writeHead(404).end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    t.teardown(() => server.close());
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const page = await fetch(`${base}/graph`);
    t.equal(page.status, 200);
    const html = await page.text();
    t.match(html, /<svg|createElementNS/, 'draws SVG itself');
    t.notMatch(html, /<script[^>]+src=|<link[^>]+href=|https?:\/\/(?!www\.w3\.org\/2000\/svg)/, 'nothing from elsewhere');
    t.match(html, /"\/graph\/traffic\.json"/);
    const data = (await (await fetch(`${base}/graph/traffic.json`)).json()) as { edges: { requests: number }[] };
    t.equal(data.edges[0]?.requests, 31);
    t.equal((await fetch(`${base}/other`)).status, 404);
  });

  await t.test('tap: asked of every agent, events back, ended by its limit; agents stop', async (t) => {
    const events: TapEvent[] = [];
    const session = tapController({ address, token: TOKENS['node-b'] }, { filter: { namespace: 'shop', from: '', to: 'web', path: '/api' }, max_per_second: 50, max_events: 4, duration_seconds: 30 }, (e) => events.push(e));
    await until('both agents run the session', () => a.tapSessions().length === 1 && b.tapSessions().length === 1);
    a.request(src(), { method: 'GET', path: '/web?x=1', status: 200, durationMs: 1, flags: '-' }); // not /api
    a.request(src(), { method: 'POST', path: '/api/orders?card=4111', status: 201, durationMs: 2.5, flags: '-' });
    b.request(src({ reporter: 'destination' }), { method: 'POST', path: '/api/orders', status: 403, durationMs: 0.5, flags: 'RBAC' });
    await until('two events', () => events.length === 2);
    t.same(events.map((e) => [e.node, e.reporter, e.method, e.path, e.status]).sort(), [
      ['node-a', 'source', 'POST', '/api/orders', 201],
      ['node-b', 'destination', 'POST', '/api/orders', 403],
    ]);
    t.equal(events.find((e) => e.node === 'node-b')?.response_flags, 'RBAC');
    a.request(src(), { method: 'GET', path: '/api/1', status: 200, durationMs: 1, flags: '-' });
    a.request(src(), { method: 'GET', path: '/api/2', status: 200, durationMs: 1, flags: '-' });
    a.request(src(), { method: 'GET', path: '/api/3', status: 200, durationMs: 1, flags: '-' });
    await session.done;
    t.equal(events.length, 4, 'ended after max_events');
    await until('agents told to stop', () => a.tapSessions().length === 0 && b.tapSessions().length === 0);
    t.equal(c.configServer.taps.size, 0);
  });

  await t.test('tap: the caller going away ends the session; no credential, no tap', async (t) => {
    const session = tapController({ address, token: TOKENS['node-a'] }, { filter: null, max_per_second: 0, max_events: 0, duration_seconds: 0 }, () => {});
    await until('running', () => a.tapSessions().length === 1);
    session.stop();
    await session.done;
    await until('agents told to stop', () => a.tapSessions().length === 0 && c.configServer.taps.size === 0);
    const refused = tapController({ address, token: 'nope' }, { filter: null, max_per_second: 0, max_events: 0, duration_seconds: 0 }, () => {});
    await t.rejects(refused.done, { code: grpc.status.UNAUTHENTICATED });
  });

  await t.test('an agent that connects during a session is asked too', async (t) => {
    const session = tapController({ address, token: TOKENS['node-a'] }, { filter: null, max_per_second: 0, max_events: 0, duration_seconds: 0 }, () => {});
    await until('running', () => a.tapSessions().length === 1);
    const late = new MeshTraffic({ node: 'node-b' });
    const source = new ControllerConfigSource({ address, node: 'node-b', token: TOKENS['node-b'], traffic: late });
    await source.start(
      () => {},
      () => {},
    );
    await until('the new stream runs it', () => late.tapSessions().length === 1);
    t.equal(c.configServer.taps.size, 1, 'one session, asked of every agent');
    await source.stop();
    session.stop();
    await session.done;
  });
});
