/**
 * HTTP/2 rapid reset from a meshed app (issue 15): one pod floods 20,000 HEADERS+RST_STREAM on
 * one h2c connection to its agent's outbound listener while another pod of the same node sends
 * steady requests through the same agent. The flooding session must be refused early — one
 * GOAWAY(ENHANCE_YOUR_CALM) once the reset budget (200 per second by default) is spent, never a
 * GOAWAY that raises the last-stream-id — the agent must stay alive, the other pod's p99 must
 * stay within a real bound of its own baseline measured in this test, and the refusal must be
 * counted by code in /stats and :15020/metrics.
 *
 * The flooder (test/e2e/support/h2-flood-client.ts) runs inside shop/client-0 and is captured
 * like any app; the steady client is the lab's own client inside shop/echo-0 (another identity,
 * so it shares no tunnel session with the flooder), both on node-a.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { labExecCaptured } from '../../../src/lab/lab.js';
import { client, isRoot, repo, startLab } from '../support/lab.js';
import { agentGet, isServing, waitUntil } from '../support/mesh.js';

const exec = promisify(execFile);
const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });
const flooder = join(repo, 'test', 'e2e', 'support', 'h2-flood-client.ts');

/** The outbound reset budget per window (Http2Forwarder's default). */
const BUDGET = 200;
const PAIRS = 20_000;
const ROUNDS = 3;
const ENHANCE_YOUR_CALM = 0xb;

interface FloodResult {
  sent: number;
  sentAtGoaway: number | null;
  goaways: number[];
  goawayLastStreamIds: number[];
  closed: boolean;
  firstGoawayMs: number | null;
}

interface Stats {
  outbound: { refusals: Record<string, number> };
  memory: NodeJS.MemoryUsage;
}

const CODE = 'SKEIN_HTTP2_RAPID_RESET';

t.test('a rapid-reset flood from one pod is refused early and does not hurt the other pods', opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true });
  const nodeA = rec.plan.nodes.find((n) => n.name === 'node-a')!;
  const vip = rec.plan.services.find((s) => s.namespace === 'shop' && s.name === 'echo')!.vip;
  for (const pod of ['shop/client-0', 'shop/echo-0']) await waitUntil(() => isServing(rec, 'node-a', pod), 30_000);
  for (const node of ['node-a', 'node-b']) await waitUntil(() => isServing(rec, node, node === 'node-a' ? 'shop/echo-0' : 'shop/echo-1'), 30_000);

  // Steady: 40 req/s for ~5 s, HTTP/2 (h2c) to the echo Service, from another pod of node-a.
  const steady = () => client(rec, 'shop/echo-0', ['--protocol', 'h2c', '--target', `${vip}:8081`, '--count', '200', '--rate', '40', '--duration', '20', '--timeout', '5'], 60_000);
  await steady(); // warm-up: sessions, tunnels, JIT
  const baseline = await steady();
  t.equal(baseline.ok, 200, `baseline: every request served ${JSON.stringify(baseline.errors)}`);
  t.comment(`baseline p50 ${baseline.latencyMs.p50} ms, p99 ${baseline.latencyMs.p99} ms, max ${baseline.latencyMs.max} ms`);

  const before = await agentGet<Stats>(rec, 'node-a', '/stats');
  const refusedBefore = before.outbound.refusals[CODE] ?? 0;

  const flood = async (): Promise<FloodResult> => {
    const r = await labExecCaptured(rec, 'shop/client-0', [process.execPath, '--import', 'tsx', flooder, vip, '8081', String(PAIRS), `echo.shop.svc:8081`], 60_000);
    const line = r.stdout.trim().split('\n').pop() ?? '';
    try {
      return JSON.parse(line) as FloodResult;
    } catch {
      throw new Error(`flooder printed no summary (exit ${r.code}): ${r.stderr.slice(0, 500)}`);
    }
  };
  // The flood rounds run while the steady client measures; each round is one new connection.
  const underFlood = steady();
  const floods: FloodResult[] = [];
  await new Promise((r) => setTimeout(r, 500));
  for (let i = 0; i < ROUNDS; i++) floods.push(await flood());
  const during = await underFlood;

  t.ok(floods.some((f) => f.goaways.length > 0), 'at least one flood read its GOAWAY (the frame checks below are not all skipped)');
  for (const [i, f] of floods.entries()) {
    t.comment(
      `flood ${i + 1}: ${f.sent} pairs written (${f.sentAtGoaway ?? '-'} when the GOAWAY was seen), GOAWAY codes ${f.goaways.join(',')} ` +
        `last-stream-ids ${f.goawayLastStreamIds.join(' -> ')}, first GOAWAY after ${f.firstGoawayMs} ms, closed ${f.closed}`,
    );
    if (f.goaways.length === 0 && f.closed) {
      // The known race on a loaded node (h2-abuse-guard.ts, FLUSH_TRIES): the agent closed the
      // session with the flood's unread bytes in its receive buffer, its kernel answered with a
      // reset, and the client's kernel dropped the GOAWAY it had not read yet. What can still be
      // checked here: the connection was cut early; that the agent judged the session abusive
      // is its refusal count below (one per flood); the frame checks run on the other floods.
      t.ok(f.sent < PAIRS / 2, `flood ${i + 1}: no GOAWAY read (lost to the reset race), and cut after ${f.sent} of ${PAIRS} pairs`);
      continue;
    }
    t.equal(f.goaways[0], ENHANCE_YOUR_CALM, `flood ${i + 1}: GOAWAY(ENHANCE_YOUR_CALM)`);
    // Refused early: the GOAWAY names a stream far below the flood's last (2 x 20,000 - 1);
    // it names the highest stream admitted (401 when the budget trips on live streams) or, when
    // the flood came in the bytes already read at session start, the last one nghttp2 parsed.
    t.ok((f.goawayLastStreamIds[0] ?? Infinity) < (2 * PAIRS - 1) / 4, `flood ${i + 1}: refused early (last-stream-id ${f.goawayLastStreamIds[0]} of ${2 * PAIRS - 1})`);
    const ids = f.goawayLastStreamIds;
    t.ok(ids.every((id, k) => k === 0 || id <= ids[k - 1]!), `flood ${i + 1}: no GOAWAY raises the last-stream-id (${ids.join(' -> ')}; RFC 9113 §6.8)`);
    t.ok(f.closed, `flood ${i + 1}: the flooding connection was closed`);
  }

  // No routing work beyond the budget: each flood stream routed is one access-log line (path /flood).
  const routed = readFileSync(join(rec.logDir, 'agent.node-a.log'), 'utf8').split('\n').filter((l) => l.includes('"path":"/flood"') && l.includes('"reporter":"source"')).length;
  t.ok(routed <= ROUNDS * BUDGET, `at most the budget's streams were routed (${routed} for ${ROUNDS} floods of ${PAIRS} pairs)`);

  t.equal(during.ok, 200, `under flood: every steady request served ${JSON.stringify(during.errors)}`);
  const bound = Math.max(3 * baseline.latencyMs.p99, baseline.latencyMs.p99 + 50);
  t.comment(`under flood p50 ${during.latencyMs.p50} ms, p99 ${during.latencyMs.p99} ms, max ${during.latencyMs.max} ms (bound ${bound.toFixed(1)} ms)`);
  t.ok(during.latencyMs.p99 <= bound, `the other pod's p99 ${during.latencyMs.p99} ms stays within max(3x, +50 ms) of its baseline ${baseline.latencyMs.p99} ms`);

  // Alive, counted by code (admin /stats and :15020/metrics), and the memory it took given back.
  await new Promise((r) => setTimeout(r, 2_000));
  const after = await agentGet<Stats>(rec, 'node-a', '/stats');
  t.equal(after.outbound.refusals[CODE] ?? 0, refusedBefore + ROUNDS, `the agent is alive and /stats counts ${ROUNDS} refusals under ${CODE}`);
  const metrics = (await exec('ip', ['netns', 'exec', nodeA.netns, 'curl', '-sf', '--max-time', '5', 'http://127.0.0.1:15020/metrics'], { encoding: 'utf8' })).stdout;
  t.match(metrics, new RegExp(`skein_outbound_refusals_total\\{code="${CODE}"\\} ${refusedBefore + ROUNDS}\\b`), ':15020/metrics counts them by code');
  const mb = (n: number) => (n / 2 ** 20).toFixed(1);
  t.comment(
    `agent memory before/after the floods: heapUsed ${mb(before.memory.heapUsed)} -> ${mb(after.memory.heapUsed)} MB, ` +
      `rss ${mb(before.memory.rss)} -> ${mb(after.memory.rss)} MB`,
  );
  const again = await client(rec, 'shop/client-0', ['--protocol', 'h2c', '--target', `${vip}:8081`, '--count', '5', '--timeout', '5']);
  t.equal(again.ok, 5, `the flooding pod's new, well-behaved sessions are served ${JSON.stringify(again.errors)}`);
});
