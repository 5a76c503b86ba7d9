/**
 * Seeing the mesh in the lab: shop/client-0 (node-a) calls the echo Service (pods on both
 * nodes) over HTTP, gRPC and TCP, and one request is denied by an AuthorizationPolicy. The
 * agents report per-edge summaries on their config streams; then
 *   - `skein top --once --json --lab ID` shows the edges with the right counts (and the text view),
 *   - `skein tap --lab ID` shows the requests live while the client runs,
 *   - the controller's graph page, reached on the host's loopback through the lab's port
 *     forward, renders the edges with the right numbers in a real headless Chromium; a
 *     screenshot is kept (SKEIN_GRAPH_SCREENSHOT, default /tmp/skein-graph.png).
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import type { TapEvent, TrafficEdge, TrafficResponse } from '../../../src/api/config-wire.js';
import { labStatus } from '../../../src/lab/lab.js';
import type { LabRecord } from '../../../src/lab/registry.js';
import { labApply, servedBy } from '../support/apply.js';
import { client, isRoot, repo, startLab } from '../support/lab.js';

const execFileP = promisify(execFile);
const skein = join(repo, 'bin', 'skein.js');
const from = 'shop/client-0';
const SVC = 'echo.shop.svc.cluster.local';
const CLIENT_ID = 'spiffe://cluster.local/ns/shop/sa/client';
const ECHO_ID = 'spiffe://cluster.local/ns/shop/sa/echo';
const SCREENSHOT = process.env.SKEIN_GRAPH_SCREENSHOT ?? '/tmp/skein-graph.png';

function chromiumBinary(): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    for (const name of ['chromium', 'chromium-browser']) if (existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });

async function top(rec: LabRecord): Promise<TrafficResponse> {
  const r = await execFileP(process.execPath, [skein, 'top', '--once', '--json', '--lab', rec.id]);
  return JSON.parse(r.stdout) as TrafficResponse;
}

const DENY_ADMIN = {
  apiVersion: 'security.skein.io/v1alpha1',
  kind: 'AuthorizationPolicy',
  metadata: { name: 'deny-admin', namespace: 'shop' },
  spec: { selector: { matchLabels: { app: 'echo' } }, action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin*'] } }] }] },
};

const edgeOf = (t: TrafficResponse, protocol: string): TrafficEdge | undefined => t.edges.find((e) => e.source === 'shop/client' && e.destination === 'shop/echo' && e.protocol === protocol);

t.test('skein top, skein tap and the graph page show the demo\'s traffic', opts(), async (t) => {
  // Reports every second, so the test sees them soon (the default is 5 s).
  const rec = await startLab(t, undefined, { mesh: true, agentArgs: ['--traffic-report', '1'] });
  t.match(rec.graph?.url, /^http:\/\/127\.0\.0\.1:\d+\/graph$/, 'the graph page on the host loopback');
  t.equal(labStatus(rec).graph, rec.graph!.url);
  t.match((await execFileP(process.execPath, [skein, 'lab', 'status', '--lab', rec.id])).stdout, new RegExp(`graph: ${rec.graph!.url}`), 'lab status prints it');

  const N = 40;
  const G = 30;
  const K = 3;
  // TCP first: a DENY rule with HTTP fields refuses TCP connections to the pods it selects
  // (fails safe, as Istio's), so the policy comes after.
  const tcp = await client(rec, from, ['--protocol', 'tcp', '--target', 'echo.shop:7070', '--count', String(K), '--size', '1000']);
  t.equal(tcp.ok, K, JSON.stringify(tcp.errors));
  await labApply(rec, [DENY_ADMIN]);
  await servedBy(rec, ['node-a', 'node-b'], 'authorizationPolicies', ['deny-admin']);
  const http = await client(rec, from, ['--protocol', 'http1', '--target', 'echo.shop:80', '--count', String(N)]);
  t.equal(http.ok, N, JSON.stringify(http.errors));
  const grpc = await client(rec, from, ['--protocol', 'grpc', '--target', 'echo.shop:9090', '--count', String(G)]);
  t.equal(grpc.ok, G, JSON.stringify(grpc.errors));
  const denied = await client(rec, from, ['--protocol', 'http1', '--target', 'echo.shop:80', '--count', '1', '--path', '/admin']);
  t.same(denied.errors, { HTTP_403: 1 }, 'one request denied by the policy');

  let traffic: TrafficResponse | undefined;
  await t.test('skein top --once --json: the edges with the right counts', async (t) => {
    const deadline = Date.now() + 20_000;
    for (;;) {
      traffic = await top(rec);
      const h = edgeOf(traffic, 'http');
      if ((h?.requests === N + 1 && h.denials === 1 && edgeOf(traffic, 'grpc')?.requests === G && edgeOf(traffic, 'tcp')?.requests === K) || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    t.same(traffic.nodes, ['node-a', 'node-b'], 'both agents report');
    const h = edgeOf(traffic, 'http');
    t.match(h, { destination_service: SVC, mtls: true, requests: N + 1, errors: 1, denials: 1 }, `HTTP edge ${JSON.stringify(h)}`);
    t.same(h?.reporters, ['source', 'destination'], 'seen by both agents, shown once');
    t.ok((h?.success_rate ?? 0) > 0.97 && (h?.success_rate ?? 1) < 1, `success rate ${h?.success_rate}`);
    t.ok((h?.p50_ms ?? 0) > 0 && (h?.p99_ms ?? 0) >= (h?.p50_ms ?? 0), `latency p50 ${h?.p50_ms} p99 ${h?.p99_ms}`);
    t.ok((h?.rps ?? 0) > 0);
    t.match(edgeOf(traffic, 'grpc'), { destination_service: SVC, mtls: true, requests: G, errors: 0, denials: 0, success_rate: 1 }, 'gRPC edge');
    t.match(edgeOf(traffic, 'tcp'), { destination_service: SVC, mtls: true, requests: K, errors: 0 }, 'TCP edge (connections)');
    t.ok((edgeOf(traffic, 'tcp')?.bytes_sent ?? 0) >= K * 1000, `TCP bytes ${edgeOf(traffic, 'tcp')?.bytes_sent}`);
    t.equal(traffic.edges.filter((e) => e.destination === 'shop/echo').length, 3, `no duplicate edges ${JSON.stringify(traffic.edges.map((e) => [e.source, e.destination, e.protocol]))}`);
    t.match(traffic.workloads.find((w) => w.name === 'shop/echo'), { requests: N + 1 + G + K, denials: 1, mtls: true });
    const text = (await execFileP(process.execPath, [skein, 'top', '--once', '--lab', rec.id])).stdout;
    t.match(text, new RegExp(`shop/client\\s+shop/echo\\s+${SVC.replace(/\./g, '\\.')}\\s+http\\s+yes\\s+\\S+\\s+\\S+%\\s+\\S+\\s+\\S+\\s+${N + 1}\\s+1`), `the text view\n${text}`);
    t.match(text, /shop\/echo\s+\S+\s+\S+%/, 'per workload');
  });

  await t.test('the graph page in headless Chromium', { skip: chromiumBinary() ? false : 'chromium is not installed (apt-get install -y chromium, or make deps)' }, async (t) => {
    const chromium = chromiumBinary()!;
    const url = `${rec.graph!.url}#edge=${encodeURIComponent('shop/client>shop/echo>http')}`;
    const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--hide-scrollbars', '--window-size=1300,720', '--virtual-time-budget=6000'];
    const dom = (await execFileP(chromium, [...flags, '--dump-dom', url], { maxBuffer: 16 << 20, timeout: 60_000 })).stdout;
    const edges = [...dom.matchAll(/<g class="edge[^"]*"([^>]*)>/g)].map((m) => Object.fromEntries([...m[1]!.matchAll(/data-([a-z0-9]+)="([^"]*)"/g)].map((a) => [a[1]!, a[2]!])));
    t.same(edges.filter((e) => e.source === 'shop/client' && e.destination === 'shop/echo').map((e) => e.protocol).sort(), ['grpc', 'http', 'tcp'], `the demo's edges drawn ${JSON.stringify(edges)}`);
    const httpEdge = edges.find((e) => e.protocol === 'http');
    t.ok(Number(httpEdge?.requests) >= N + 1, `HTTP edge requests ${httpEdge?.requests}`);
    t.equal(httpEdge?.denials, '1', 'the denial');
    t.equal(httpEdge?.mtls, 'true', 'mTLS');
    t.equal(edges.find((e) => e.protocol === 'grpc')?.requests, String(G));
    t.match(dom, /class="lock"/, 'a lock drawn for mTLS');
    t.match(dom, /1 denied by policy/, 'a mark for the denial');
    t.match(dom, /HTTP\s+[\d.]+ rps · [\d.]+% err · p99 [\d.]+ ms/, 'rps, error rate and p99 on the edge');
    // The edge selected by the URL (what a click does): its numbers in the side panel.
    const field = (name: string) => new RegExp(`data-field="${name}">([^<]*)<`).exec(dom)?.[1];
    t.equal(field('from'), 'shop/client');
    t.equal(field('to'), 'shop/echo');
    t.ok(Number(field('requests')) >= N + 1, `panel requests ${field('requests')}`);
    t.equal(field('denied'), '1');
    t.equal(field('mtls'), 'yes');
    await execFileP(chromium, [...flags, `--screenshot=${SCREENSHOT}`, url], { timeout: 60_000 });
    t.ok(existsSync(SCREENSHOT), `screenshot at ${SCREENSHOT}`);
    t.comment(`graph screenshot: ${SCREENSHOT}`);
  });

  await t.test('skein tap shows live requests while the client runs', async (t) => {
    const tap = spawn(process.execPath, [skein, 'tap', '--lab', rec.id, '--namespace', 'shop', '--to', 'echo', '--path', '/tapped', '--max', '6', '--duration', '30', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    tap.stdout.on('data', (d: Buffer) => {
      out += d;
    });
    tap.stderr.on('data', (d: Buffer) => {
      err += d;
    });
    const exited = new Promise<number>((resolve) => tap.on('exit', (code) => resolve(code ?? -1)));
    t.teardown(() => tap.kill('SIGTERM'));
    await new Promise((r) => setTimeout(r, 2000)); // the session reaches the agents
    const running = client(rec, from, ['--protocol', 'http1', '--target', 'echo.shop:80', '--count', '40', '--rate', '5', '--path', '/tapped?secret=1']);
    const code = await exited;
    await running;
    t.equal(code, 0, `tap ended after --max events ${err}`);
    const events = out
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as TapEvent);
    t.equal(events.length, 6, out);
    for (const e of events) {
      t.match(e, { method: 'GET', path: '/tapped', status: 200, protocol: 'http', mtls: true, source_namespace: 'shop', source_principal: CLIENT_ID, destination_workload: 'echo', destination_principal: ECHO_ID });
      // The agent across the underlay knows the client's principal, not its workload name (see README, Metrics).
      if (e.reporter === 'source' || e.node === 'node-a') t.equal(e.source_workload, 'client');
    }
    t.ok(events.some((e) => e.reporter === 'source'), 'the source\'s agent');
    t.ok(events.every((e) => !JSON.stringify(e).includes('secret')), 'never the query string');
    // And the plain text view.
    const text = spawn(process.execPath, [skein, 'tap', '--lab', rec.id, '--from', 'shop/client', '--max', '1', '--duration', '20'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let line = '';
    text.stdout.on('data', (d: Buffer) => {
      line += d;
    });
    const done = new Promise<number>((resolve) => text.on('exit', (c) => resolve(c ?? -1)));
    t.teardown(() => text.kill('SIGTERM'));
    await new Promise((r) => setTimeout(r, 2000));
    const more = client(rec, from, ['--protocol', 'grpc', '--target', 'echo.shop:9090', '--count', '20', '--rate', '5']);
    t.equal(await done, 0);
    await more;
    t.match(line, /(out|in ) node-[ab] shop\/client -> shop\/echo grpc POST \/\S+ 200 grpc=0 [\d.]+ms tls=mtls src=spiffe:\/\/cluster\.local\/ns\/shop\/sa\/client dst=spiffe:\/\/cluster\.local\/ns\/shop\/sa\/echo/);
  });
});
