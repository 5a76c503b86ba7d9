/**
 * `skein agent --max-outbound-streams N` in a real lab (issue 15): one pod (shop/client-0,
 * node-a) holds many slow requests through its outbound listener (15001, captured by eBPF) —
 * h2c streams on one connection, then HTTP/1 requests on many — and gets the ones over its
 * cap refused (REFUSED_STREAM / 503 naming SKEIN_OUTBOUND_STREAM_LIMIT) and counted by code in
 * /stats and :15020/metrics, while another pod of the same node (shop/echo-0, through the same
 * agent) is served meanwhile. Once the slow requests end, the pod's in-flight count (/stats
 * `openStreams`) is back to 0.
 *
 * 15006 is not exercised: the plaintext inbound listener pipes bytes (L4) and parses no
 * requests, so there is no stream to cap there (its connections are capped by
 * --max-connections, see connection-cap.test.ts).
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { labExecCaptured } from '../../../src/lab/lab.js';
import { client, isRoot, repo, startLab } from '../support/lab.js';
import { agentGet, isServing, waitUntil } from '../support/mesh.js';

const exec = promisify(execFile);
const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });

const CAP = 8;
const SLOW = 20;
const DELAY_MS = 4000;
const CODE = 'SKEIN_OUTBOUND_STREAM_LIMIT';
const REFUSED_STREAM = 7;
const ENHANCE_YOUR_CALM = 0xb;
/** `--h2-reset-budget` for this lab: well under the default 200, so a 100-pair flood trips it only if the flag took. */
const RESET_BUDGET = 20;
const FLOOD_PAIRS = 100;
const flooder = join(repo, 'test', 'e2e', 'support', 'h2-flood-client.ts');

// h2c: SLOW streams at once on one connection, each GET /delay/<ms>; prints the outcomes.
const H2_HOLDER = `
const http2 = require('node:http2');
const [target, n, delay] = [process.argv[1], Number(process.argv[2]), process.argv[3]];
const s = http2.connect('http://' + target);
s.on('error', () => {});
const out = { ok: 0, refused: 0, other: [] };
let left = n;
for (let i = 0; i < n; i++) {
  const r = s.request({ ':path': '/delay/' + delay, ':authority': 'echo.shop.svc' });
  let status = 0;
  r.on('response', (h) => { status = Number(h[':status']); });
  r.on('error', () => {});
  r.resume();
  r.on('close', () => {
    if (status === 200) out.ok++;
    else if (r.rstCode === ${REFUSED_STREAM}) out.refused++;
    else out.other.push(status + '/' + r.rstCode);
    if (--left === 0) { console.log(JSON.stringify(out)); s.close(); }
  });
}
setTimeout(() => { console.log(JSON.stringify({ ...out, timedOut: left })); process.exit(1); }, 30000).unref();
`;

// HTTP/1: SLOW requests at once, each on its own connection; prints the outcomes.
const H1_HOLDER = `
const http = require('node:http');
const [host, port, n, delay] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), process.argv[4]];
const agent = new http.Agent({ keepAlive: false, maxSockets: Infinity });
const out = { ok: 0, refused: 0, codes: {}, other: [] };
let left = n;
const done = () => { if (--left === 0) console.log(JSON.stringify(out)); };
for (let i = 0; i < n; i++) {
  http.get({ host, port, path: '/delay/' + delay, headers: { host: 'echo.shop.svc' }, agent }, (res) => {
    res.resume();
    res.on('end', () => {
      if (res.statusCode === 200) out.ok++;
      else if (res.statusCode === 503) { out.refused++; const c = String(res.headers['skein-code']); out.codes[c] = (out.codes[c] || 0) + 1; }
      else out.other.push(res.statusCode);
      done();
    });
  }).on('error', (e) => { out.other.push(e.code); done(); });
}
setTimeout(() => { console.log(JSON.stringify({ ...out, timedOut: left })); process.exit(1); }, 30000).unref();
`;

interface Stats {
  outbound: { refusals: Record<string, number> };
  tunnel: { refusals: Record<string, number> };
  openStreams: Record<string, { outbound: number; tunnel?: number }>;
}

t.test('a pod over its cap of requests in flight at 15001 is refused by code; another pod of the node is served', opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true, agentArgs: ['--max-outbound-streams', String(CAP), '--h2-reset-budget', String(RESET_BUDGET)] });
  const nodeA = rec.plan.nodes.find((n) => n.name === 'node-a')!;
  const vip = rec.plan.services.find((s) => s.namespace === 'shop' && s.name === 'echo')!.vip;
  for (const pod of ['shop/client-0', 'shop/echo-0']) await waitUntil(() => isServing(rec, 'node-a', pod), 30_000);
  await waitUntil(() => isServing(rec, 'node-b', 'shop/echo-1'), 30_000);
  const stats = () => agentGet<Stats>(rec, 'node-a', '/stats');
  const open = async (pod: string) => (await stats()).openStreams[pod]?.outbound ?? -1;
  // Warm-up, so the measured runs do not pay for first tunnel sessions.
  const warm = await client(rec, 'shop/echo-0', ['--protocol', 'h2c', '--target', `${vip}:8081`, '--count', '4', '--timeout', '5']);
  t.equal(warm.ok, 4, 'warm-up served');
  const refusedBefore = (await stats()).outbound.refusals[CODE] ?? 0;

  // The other pod, while shop/client-0 holds its whole budget.
  const others = async (protocol: 'h2c' | 'http1', target: string) => {
    await waitUntil(async () => (await open('shop/client-0')) === CAP, 15_000, 20);
    return client(rec, 'shop/echo-0', ['--protocol', protocol, '--target', target, '--count', '20', '--concurrency', '4', '--timeout', '5']);
  };

  // h2c, one connection, SLOW streams.
  const [h2, otherH2] = await Promise.all([
    labExecCaptured(rec, 'shop/client-0', [process.execPath, '-e', H2_HOLDER, `${vip}:8081`, String(SLOW), String(DELAY_MS)], 60_000),
    others('h2c', `${vip}:8081`),
  ]);
  const h2Out = JSON.parse(h2.stdout.trim().split('\n').pop() ?? '{}') as { ok: number; refused: number; other: string[] };
  t.comment(`h2c: ${JSON.stringify(h2Out)}; other pod ${otherH2.ok}/20 ok, p99 ${otherH2.latencyMs.p99} ms`);
  t.equal(h2Out.ok, CAP, `h2c: the ${CAP} streams under the cap were served`);
  t.equal(h2Out.refused, SLOW - CAP, `h2c: the ${SLOW - CAP} over it were reset with REFUSED_STREAM`);
  t.same(h2Out.other, [], 'h2c: no other outcome');
  t.equal(otherH2.ok, 20, `another pod of node-a was served meanwhile ${JSON.stringify(otherH2.errors)}`);
  await waitUntil(async () => (await open('shop/client-0')) === 0, 10_000);
  t.pass('the pod\'s in-flight count is back to 0 after its h2c requests ended');

  // HTTP/1, SLOW connections of one request each.
  const [h1, otherH1] = await Promise.all([
    labExecCaptured(rec, 'shop/client-0', [process.execPath, '-e', H1_HOLDER, vip, '80', String(SLOW), String(DELAY_MS)], 60_000),
    others('http1', `${vip}:80`),
  ]);
  const h1Out = JSON.parse(h1.stdout.trim().split('\n').pop() ?? '{}') as { ok: number; refused: number; codes: Record<string, number>; other: unknown[] };
  t.comment(`http1: ${JSON.stringify(h1Out)}; other pod ${otherH1.ok}/20 ok, p99 ${otherH1.latencyMs.p99} ms`);
  t.equal(h1Out.ok, CAP, `http1: the ${CAP} requests under the cap were served`);
  t.equal(h1Out.refused, SLOW - CAP, `http1: the ${SLOW - CAP} over it were answered 503`);
  t.same(h1Out.codes, { [CODE]: SLOW - CAP }, 'http1: each 503 names the code (skein-code)');
  t.same(h1Out.other, [], 'http1: no other outcome');
  t.equal(otherH1.ok, 20, `another pod of node-a was served meanwhile ${JSON.stringify(otherH1.errors)}`);
  await waitUntil(async () => (await open('shop/client-0')) === 0, 10_000);
  t.pass('the pod\'s in-flight count is back to 0 after its HTTP/1 requests ended');

  const after = await stats();
  t.equal((after.outbound.refusals[CODE] ?? 0) - refusedBefore, 2 * (SLOW - CAP), `/stats counts every refusal under ${CODE}`);
  t.equal(after.openStreams['shop/echo-0']?.outbound, 0, 'the other pod holds nothing either');
  const metrics = (await exec('ip', ['netns', 'exec', nodeA.netns, 'curl', '-sf', '--max-time', '5', 'http://127.0.0.1:15020/metrics'], { encoding: 'utf8' })).stdout;
  t.match(metrics, new RegExp(`skein_outbound_refusals_total\\{code="${CODE}"\\} ${after.outbound.refusals[CODE]}\\b`), ':15020/metrics counts them by code');

  // --h2-reset-budget: 100 HEADERS+RST_STREAM pairs, half the default budget of 200, trip a
  // budget of 20: the session is refused (GOAWAY ENHANCE_YOUR_CALM) and counted.
  const resetsBefore = after.outbound.refusals.SKEIN_HTTP2_RAPID_RESET ?? 0;
  const f = await labExecCaptured(rec, 'shop/client-0', [process.execPath, '--import', 'tsx', flooder, vip, '8081', String(FLOOD_PAIRS), 'echo.shop.svc:8081'], 60_000);
  const flood = JSON.parse(f.stdout.trim().split('\n').pop() ?? '{}') as { sent: number; goaways: number[]; goawayLastStreamIds: number[]; closed: boolean };
  t.comment(`flood of ${FLOOD_PAIRS} pairs: ${JSON.stringify(flood)}`);
  t.equal(flood.goaways[0], ENHANCE_YOUR_CALM, `--h2-reset-budget ${RESET_BUDGET}: ${FLOOD_PAIRS} resets get the session refused`);
  t.ok(flood.closed, 'and closed');
  const final = await stats();
  t.equal((final.outbound.refusals.SKEIN_HTTP2_RAPID_RESET ?? 0) - resetsBefore, 1, 'counted once as SKEIN_HTTP2_RAPID_RESET');
  t.equal(final.openStreams['shop/client-0']?.outbound, 0, 'the flood left nothing in flight');
});
