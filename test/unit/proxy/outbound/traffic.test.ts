/**
 * Routes and traffic policy in the outbound proxy, on loopback: HTTPRoute matches, weights,
 * filters, timeouts, retries with budgets, circuit breaking, outlier detection, consistent
 * hashing and faults, as the TrafficRouter plans them and ManagedExchange serves them, for
 * HTTP/1.1 and h2c clients. Backends are plain HTTP/1.1 servers on 127.0.0.x (the lab's e2e
 * tests cover the same over real agents).
 */
import http from 'node:http';
import http2 from 'node:http2';
import t, { type Test } from 'tap';
import type { Endpoint, MeshSnapshot, Service } from '../../../../src/config/model.js';
import type { BackendTrafficPolicy, ControlledMeshSnapshot, MeshRoute, RouteRule } from '../../../../src/config/policy-model.js';
import { type Backend, listenOn, startProxy, VIP, workload, client as clientPod } from './fixtures/harness.js';

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  ms: number;
}

/** What each backend saw: requests by path, the last request's headers. */
interface Seen {
  count: number;
  paths: string[];
  headers: http.IncomingHttpHeaders[];
}

const IPS = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'];

/**
 * Backends answering: /delay/MS after MS ms, /status/N with N, /flaky (503 for the first
 * `flaky` requests), else 200 with their index in `x-backend` and the path in the body.
 */
async function startBackends(t: Test, n: number, behave: (i: number) => { failStatus?: number; flaky?: number; reset?: boolean } = () => ({})): Promise<{ backends: Backend[]; seen: Seen[] }> {
  const backends: Backend[] = [];
  const seen: Seen[] = [];
  for (let i = 0; i < n; i++) {
    const s: Seen = { count: 0, paths: [], headers: [] };
    seen.push(s);
    let flaky = behave(i).flaky ?? 0;
    const server = http.createServer((req, res) => {
      s.count++;
      s.paths.push(req.url ?? '');
      s.headers.push(req.headers);
      req.resume();
      req.on('end', () => {
        const url = req.url ?? '/';
        if (behave(i).reset) {
          req.socket.destroy(); // no answer at all, as from a peer that vanished
          return;
        }
        const fail = behave(i).failStatus;
        if (fail) {
          res.writeHead(fail, { 'x-backend': String(i) });
          res.end('failing\n');
          return;
        }
        if (url.startsWith('/flaky') && flaky > 0) {
          flaky--;
          res.writeHead(503, { 'x-backend': String(i) });
          res.end('flaky\n');
          return;
        }
        const delay = /^\/delay\/(\d+)/.exec(url);
        const status = /^\/status\/(\d+)/.exec(url);
        const answer = () => {
          res.writeHead(status ? Number(status[1]) : 200, { 'x-backend': String(i), 'content-type': 'text/plain' });
          res.end(`${i} ${url}`);
        };
        if (delay) setTimeout(answer, Number(delay[1]));
        else answer();
      });
    });
    t.teardown(() => {
      server.closeAllConnections();
      server.close();
    });
    backends.push(await listenOn(server, IPS[i] as string));
  }
  return { backends, seen };
}

function endpointOf(b: Backend, i: number): Endpoint {
  return { workloadUid: `uid-server-${i}`, ip: b.ip, node: 'node-b', identity: `spiffe://cluster.local/ns/apps/sa/server-${i}`, ready: true, ports: { web: b.port }, meshEnabled: true };
}

function service(name: string, vip: string, endpoints: Endpoint[]): Service {
  return {
    namespace: 'apps',
    name,
    hostname: `${name}.apps.svc.cluster.local`,
    vips: [vip],
    ports: [{ name: 'web', port: 80, targetPort: 0, appProtocol: 'http' }],
    endpoints,
    loadBalancer: 'ROUND_ROBIN',
  };
}

/**
 * A mesh with Service `server` (VIP, every backend) and one Service per backend
 * (`server-0`...), plus the given routes and policies.
 */
function snapshot(backends: Backend[], routes: MeshRoute[] = [], policies: BackendTrafficPolicy[] = [], version = '1'): ControlledMeshSnapshot {
  const eps = backends.map(endpointOf);
  const base: MeshSnapshot = {
    version,
    trustDomain: 'cluster.local',
    clusterDomain: 'cluster.local',
    nodes: [],
    workloads: [clientPod, ...backends.map((b, i) => workload(`server-${i}`, b.ip))],
    services: [service('server', VIP, eps), ...eps.map((e, i) => service(`server-${i}`, `10.96.1.${i + 1}`, [e]))],
  };
  return { ...base, routes, authorizationPolicies: [], peerAuthentications: [], backendTrafficPolicies: policies };
}

function route(rules: RouteRule[], extra: Partial<MeshRoute> = {}): MeshRoute {
  return { kind: 'HTTPRoute', namespace: 'apps', name: 'r', parents: [{ namespace: 'apps', name: 'server' }], hostnames: [], rules, createdAt: '2026-01-01T00:00:00Z', ...extra };
}

const to = (i: number, weight = 1) => ({ namespace: 'apps', name: `server-${i}`, weight });

function policy(spec: Partial<BackendTrafficPolicy>): BackendTrafficPolicy {
  return { namespace: 'apps', name: 'p', targets: ['apps/server'], createdAt: '2026-01-01T00:00:00Z', ...spec };
}

function get(port: number, path: string, headers: Record<string, string> = {}, agent?: http.Agent, method = 'GET'): Promise<Reply> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, headers: { host: 'server.apps', ...headers }, ...(agent ? { agent } : { agent: false }) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        body += c;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, ms: performance.now() - t0 }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

async function h2get(port: number, path: string, headers: Record<string, string> = {}): Promise<Reply> {
  const t0 = performance.now();
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => {});
  try {
    return await new Promise<Reply>((resolve, reject) => {
      const s = session.request({ ':path': path, ':authority': 'server.apps', ...headers });
      let head: http2.IncomingHttpHeaders = {};
      let body = '';
      s.setEncoding('utf8');
      s.on('response', (h) => {
        head = h;
      });
      s.on('data', (c: string) => {
        body += c;
      });
      s.on('end', () => resolve({ status: Number(head[':status']), headers: head as http.IncomingHttpHeaders, body, ms: performance.now() - t0 }));
      s.on('error', reject);
    });
  } finally {
    session.close();
  }
}

function tally(replies: Reply[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of replies) {
    const k = `${r.status}:${r.headers['x-backend'] ?? '-'}`;
    out[k] = (out[k] ?? 0) + 1;
  }
  return out;
}

t.test('weights split exactly; matches by path, header, query and method pick their rule; no match is 404', async (t) => {
  const { backends } = await startBackends(t, 3);
  const rules: RouteRule[] = [
    { matches: [{ path: { type: 'PathPrefix', value: '/canary' } }], backends: [to(0, 80), to(1, 20)] },
    { matches: [{ path: { type: 'Exact', value: '/exact' } }], backends: [to(2)] },
    { matches: [{ path: { type: 'RegularExpression', value: '/re/[0-9]+' } }], backends: [to(1)] },
    { matches: [{ headers: [{ name: 'x-user', value: 'beta', type: 'Exact' }] }], backends: [to(2)] },
    { matches: [{ queryParams: [{ name: 'v', value: '2', type: 'Exact' }] }], backends: [to(1)] },
    { matches: [{ method: 'DELETE' }], backends: [to(0)] },
    { matches: [{ path: { type: 'PathPrefix', value: '/any' } }], backends: [to(0)] },
  ];
  const h = await startProxy(snapshot(backends.slice(0, 3), [route(rules)]));
  t.teardown(() => h.close());
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  t.teardown(() => agent.destroy());
  const split = await Promise.all(Array.from({ length: 100 }, () => get(h.port, '/canary/x', {}, agent)));
  t.same(tally(split), { '200:0': 80, '200:1': 20 }, '80/20 over 100 requests, exactly');
  t.equal((await get(h.port, '/exact')).headers['x-backend'], '2', 'Exact path');
  t.equal((await get(h.port, '/exact/more')).status, 404, 'Exact does not match a longer path; nothing else does: 404');
  t.equal((await get(h.port, '/re/123')).headers['x-backend'], '1', 'RegularExpression path');
  t.equal((await get(h.port, '/other', { 'x-user': 'beta' })).headers['x-backend'], '2', 'header');
  t.equal((await get(h.port, '/other?v=2')).headers['x-backend'], '1', 'query parameter');
  t.equal((await get(h.port, '/any?v=2', { 'x-user': 'beta' })).headers['x-backend'], '0', 'the longest path prefix outranks header and query matches (Gateway API precedence)');
  t.equal((await get(h.port, '/any', {}, undefined, 'DELETE')).headers['x-backend'], '0', 'method');
  const h2 = await h2get(h.port, '/canary/h2');
  t.ok(['0', '1'].includes(String(h2.headers['x-backend'])), 'an h2c client is routed the same way');
  t.equal((await h2get(h.port, '/nowhere')).status, 404, 'h2c: no match is 404');
  const nr = h.records.find((r) => r.status === 404);
  t.match(nr?.responseFlags, /NR/, 'the record carries the NR flag');
  t.match(h.records.find((r) => r.path === '/exact')?.route, /^HTTPRoute\/apps\/r#1$/, 'the record names the rule');
});

t.test('filters: header modifiers, redirect, URL rewrite, mirror', async (t) => {
  const { backends, seen } = await startBackends(t, 3);
  const rules: RouteRule[] = [
    {
      matches: [{ path: { type: 'PathPrefix', value: '/mod' } }],
      backends: [to(0)],
      filters: {
        requestHeaders: { set: [{ name: 'x-set', value: 'yes' }], add: [{ name: 'x-add', value: 'more' }], remove: ['x-drop'] },
        responseHeaders: { set: [{ name: 'x-res', value: 'set' }] },
      },
    },
    { matches: [{ path: { type: 'PathPrefix', value: '/old' } }], backends: [], filters: { redirect: { path: { type: 'ReplacePrefixMatch', value: '/new' }, statusCode: 301 } } },
    { matches: [{ path: { type: 'PathPrefix', value: '/api/v1' } }], backends: [to(1)], filters: { rewrite: { hostname: 'internal.apps', path: { type: 'ReplacePrefixMatch', value: '/v2' } } } },
    { matches: [{ path: { type: 'PathPrefix', value: '/mirror' } }], backends: [to(0)], filters: { mirrors: [{ namespace: 'apps', name: 'server-2', percent: 100 }] } },
  ];
  const h = await startProxy(snapshot(backends, [route(rules)]));
  t.teardown(() => h.close());
  const mod = await get(h.port, '/mod', { 'x-drop': 'gone', 'x-add': 'first' });
  const sent = seen[0]?.headers.at(-1) ?? {};
  t.equal(sent['x-set'], 'yes', 'set');
  t.equal(sent['x-add'], 'first, more', 'add appends');
  t.equal(sent['x-drop'], undefined, 'remove');
  t.equal(mod.headers['x-res'], 'set', 'response header set');
  const red = await get(h.port, '/old/page?q=1');
  t.equal(red.status, 301, 'redirect status');
  t.equal(red.headers.location, 'http://server.apps/new/page?q=1', 'Location keeps the host and query, replaces the prefix');
  const rw = await get(h.port, '/api/v1/users');
  t.equal(rw.body, '1 /v2/users', 'the backend got the rewritten path');
  t.equal(seen[1]?.headers.at(-1)?.host, 'internal.apps', 'and the rewritten host');
  const before = seen[2]?.count ?? 0;
  const m = await get(h.port, '/mirror/x');
  t.equal(m.headers['x-backend'], '0', 'the client gets the real answer');
  await new Promise((r) => setTimeout(r, 100));
  t.equal((seen[2]?.count ?? 0) - before, 1, 'the mirror got a copy');
  t.equal(seen[2]?.paths.at(-1), '/mirror/x');
});

t.test('timeouts answer 504 on time (HTTP/1.1 and h2c); retries turn failures into success, within the budget', async (t) => {
  const { backends, seen } = await startBackends(t, 2, (i) => (i === 0 ? { flaky: 4 } : {}));
  const rules: RouteRule[] = [
    { matches: [{ path: { type: 'PathPrefix', value: '/delay' } }], backends: [to(0)], timeoutMs: 200 },
    { matches: [{ path: { type: 'PathPrefix', value: '/flaky' } }], backends: [to(0)], retry: { codes: [503], attempts: 5, backoffMs: 1 } },
  ];
  const h = await startProxy(snapshot(backends, [route(rules)]));
  t.teardown(() => h.close());
  const slow = await get(h.port, '/delay/1000');
  t.equal(slow.status, 504, 'HTTP/1.1: 504');
  t.ok(slow.ms >= 195 && slow.ms < 400, `HTTP/1.1: after ${slow.ms.toFixed(0)} ms`);
  const slow2 = await h2get(h.port, '/delay/1000');
  t.equal(slow2.status, 504, 'h2c: 504');
  t.ok(slow2.ms >= 195 && slow2.ms < 400, `h2c: after ${slow2.ms.toFixed(0)} ms`);
  t.match(h.records.find((r) => r.status === 504)?.responseFlags, /UT/, 'flag UT');
  const ok = await get(h.port, '/flaky');
  t.equal(ok.status, 200, 'a request failing 4 times then served: 200 after retries');
  t.equal(seen[0]?.paths.filter((p) => p === '/flaky').length, 5, 'five tries reached the backend');
  t.equal(h.records.find((r) => r.path === '/flaky')?.attempts, 5, 'the record counts the tries');
});

t.test('a retry budget caps retries against an endpoint that always fails', async (t) => {
  const { backends, seen } = await startBackends(t, 1, () => ({ failStatus: 503 }));
  const h = await startProxy(
    snapshot(backends, [], [
      policy({
        targets: ['apps/server'],
        retry: { attempts: 3, retryOn: ['5xx'], backoff: { baseMs: 1, maxMs: 2 }, budget: { percent: 20, minRetriesPerSecond: 1 } },
      }),
    ]),
  );
  t.teardown(() => h.close());
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(() => agent.destroy());
  const n = 50;
  for (let i = 0; i < n; i++) t.equal((await get(h.port, '/', {}, agent)).status, 503, 'failing answer relayed');
  const hits = seen[0]?.count ?? 0;
  // Budget over the 10 s window: max(1 per s * 10, 20% of 50) = 10 retries at most.
  t.ok(hits - n <= 10, `${hits - n} retries for ${n} requests (without a budget: ${n * 3})`);
  t.ok(hits - n >= 1, 'some retries were made');
  const stats = h.proxy.trafficStats().find((r) => r.service === 'apps/server');
  t.equal(stats?.retries, hits - n, 'the retries sent are counted (skein_retries_total)');
  t.ok((stats?.budgetExhausted ?? 0) > 0, 'and the ones the budget refused');
});

t.test('circuit breaker: pending requests over the limit fail fast with 503 and UO', async (t) => {
  const { backends } = await startBackends(t, 1);
  const h = await startProxy(snapshot(backends, [], [policy({ circuitBreaker: { maxPendingRequests: 3 } })]));
  t.teardown(() => h.close());
  const replies = await Promise.all(Array.from({ length: 8 }, () => get(h.port, '/delay/300')));
  const fast = replies.filter((r) => r.status === 503);
  t.equal(fast.length, 5, '5 of 8 refused');
  t.ok(fast.every((r) => r.ms < 150), 'refused at once');
  t.equal(replies.filter((r) => r.status === 200).length, 3, '3 served');
  t.ok(h.records.filter((r) => r.responseFlags?.includes('UO')).length === 5, 'flag UO on each');
  t.equal(h.proxy.trafficStats()[0]?.overflows.pending, 5, 'counted as pending overflows');
});

t.test('outlier detection ejects a failing endpoint; consistent hashing keeps a key on one endpoint', async (t) => {
  const { backends, seen } = await startBackends(t, 3, (i) => (i === 0 ? { failStatus: 503 } : {}));
  const h = await startProxy(
    snapshot(backends, [], [policy({ outlierDetection: { consecutive5xx: 3, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionTimeMs: 300_000, maxEjectionPercent: 50 } })]),
  );
  t.teardown(() => h.close());
  const replies: Reply[] = [];
  for (let i = 0; i < 30; i++) replies.push(await get(h.port, '/'));
  t.equal(seen[0]?.count, 3, 'the failing endpoint got 3 requests, then was ejected');
  t.equal(replies.filter((r) => r.status === 200).length, 27, 'traffic continued on the others');
  const dump = h.proxy.describeRouting() as { services: Record<string, unknown> };
  t.match(JSON.stringify(dump.services['apps/server']), /127\.0\.0\.2/, 'config_dump shows the ejection');
  t.match(h.proxy.trafficStats().find((r) => r.service === 'apps/server'), { ejections: 1, ejectedNow: 1 }, 'and the metrics count it');

  const h2 = await startProxy(snapshot(backends.slice(1), [], [policy({ loadBalancer: { algorithm: 'CONSISTENT_HASH', hash: { header: 'x-user' } } })]));
  t.teardown(() => h2.close());
  const users = ['ann', 'bob', 'cy', 'dee', 'eve', 'fay'];
  for (const u of users) {
    const got = new Set<string>();
    for (let i = 0; i < 10; i++) got.add(String((await get(h2.port, '/', { 'x-user': u })).headers['x-backend']));
    t.equal(got.size, 1, `user ${u} always lands on one endpoint (${[...got]})`);
  }
});

t.test('outlier detection counts an upstream that resets without answering as a gateway error (it was counted a success)', async (t) => {
  const { backends, seen } = await startBackends(t, 3, (i) => (i === 0 ? { reset: true } : {}));
  const h = await startProxy(
    snapshot(backends, [], [policy({ outlierDetection: { consecutiveGatewayErrors: 2, intervalMs: 10_000, baseEjectionTimeMs: 30_000, maxEjectionTimeMs: 300_000, maxEjectionPercent: 50 } })]),
  );
  t.teardown(() => h.close());
  const replies: Reply[] = [];
  for (let i = 0; i < 30; i++) replies.push(await get(h.port, '/'));
  t.equal(seen[0]?.count, 2, 'the resetting endpoint got 2 requests, then was ejected');
  t.equal(replies.filter((r) => r.status === 200).length, 28, 'traffic continued on the others');
  t.match(h.proxy.trafficStats().find((r) => r.service === 'apps/server'), { ejections: 1, ejectedNow: 1 });
});

t.test('fault injection: aborts and delays the configured share', async (t) => {
  const { backends } = await startBackends(t, 1);
  const h = await startProxy(snapshot(backends, [], [policy({ faultInjection: { abort: { httpStatus: 418, percent: 50 } } })]));
  t.teardown(() => h.close());
  const replies = await Promise.all(Array.from({ length: 400 }, () => get(h.port, '/')));
  const aborted = replies.filter((r) => r.status === 418).length;
  t.ok(aborted >= 160 && aborted <= 240, `${aborted} of 400 aborted (50% ± 10)`);
  t.equal(replies.filter((r) => r.status === 200).length, 400 - aborted, 'the rest served');
  t.ok(h.records.filter((r) => r.responseFlags?.includes('FI')).length === aborted, 'flag FI');
  h.store.apply(snapshot(backends, [], [policy({ faultInjection: { delay: { delayMs: 150, percent: 100 } } })], '2'));
  const d = await get(h.port, '/');
  t.equal(d.status, 200);
  t.ok(d.ms >= 145, `delayed ${d.ms.toFixed(0)} ms`);
});

t.test('records count request and response body bytes (HTTP/1.1 and h2c clients)', async (t) => {
  const { backends } = await startBackends(t, 1);
  const h = await startProxy(snapshot(backends));
  t.teardown(() => h.close());
  const body = Buffer.alloc(1234, 1);
  await new Promise<void>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: h.port, path: '/bytes', method: 'POST', headers: { host: 'server.apps', 'content-length': body.length }, agent: false }, (res) => {
      res.resume();
      res.on('end', resolve);
    });
    req.on('error', reject);
    req.end(body);
  });
  await h2get(h.port, '/h2bytes');
  await new Promise((r) => setTimeout(r, 20));
  const h1 = h.records.find((r) => r.path === '/bytes');
  t.equal(h1?.requestBytes, 1234, 'HTTP/1.1 request body');
  t.equal(h1?.responseBytes, Buffer.byteLength('0 /bytes'), 'HTTP/1.1 response body');
  const h2 = h.records.find((r) => r.path === '/h2bytes');
  t.equal(h2?.requestBytes, 0, 'h2c: no request body');
  t.equal(h2?.responseBytes, Buffer.byteLength('0 /h2bytes'), 'h2c response body');
});

t.test('a retry goes to another endpoint than the one that failed, even when a hash key pins the first', async (t) => {
  const { backends, seen } = await startBackends(t, 2, (i) => (i === 0 ? { failStatus: 503 } : {}));
  const h = await startProxy(
    snapshot(backends, [], [
      policy({
        loadBalancer: { algorithm: 'CONSISTENT_HASH', hash: { header: 'x-user' } },
        retry: { attempts: 1, retryOn: ['5xx'], backoff: { baseMs: 1, maxMs: 2 }, budget: { percent: 100, minRetriesPerSecond: 100 } },
      }),
    ]),
  );
  t.teardown(() => h.close());
  const replies: Reply[] = [];
  for (let i = 0; i < 20; i++) replies.push(await get(h.port, '/', { 'x-user': `user-${i}` }));
  t.ok((seen[0]?.count ?? 0) > 0, `some keys hash to the failing endpoint (${seen[0]?.count})`);
  t.same(tally(replies), { '200:1': 20 }, 'each of them was retried on the other one: one retry was enough');
});
