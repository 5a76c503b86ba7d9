/**
 * Soak (reliability suite): mixed HTTP/1, h2c and gRPC load from shop/client-0 (node-a) to
 * echo.shop, whose pods run on both nodes, for 2 minutes at 150 req/s (short form) or 30
 * minutes at 500 req/s (SKEIN_RELIABILITY=long). Both agents' resident memory (VmRSS from
 * /proc/<pid>/status, right after a forced full GC: see agentCollectGarbage) and open file
 * descriptors (/proc/<pid>/fd) are sampled every 10 s (30 s in the long form).
 * Promise: after a warm-up (the first quarter of the run), both stay flat — the mean of the
 * last three samples is less than 5% above the mean of the first three after warm-up — and
 * no request fails.
 */
import t from 'tap';
import { isRoot, startLab } from '../support/lab.js';
import { agentCollectGarbage, agentPid, describe, FORM_NAME, footprint, form, sleep, steadyLoad, total } from '../support/reliability-load.js';

const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });
const DURATION_S = form(120, 1800);
const RATE = form(150, 500);
const SAMPLE_MS = form(10_000, 30_000);
const NODES = ['node-a', 'node-b'];

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

t.test(`soak: ${DURATION_S} s at ${RATE} req/s mixed protocols (${FORM_NAME} form)`, opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true });
  const pids = Object.fromEntries(NODES.map((n) => [n, agentPid(rec, n)]));
  const load = steadyLoad(
    rec,
    'shop/client-0',
    [
      { protocol: 'http1', target: 'echo.shop:80', rate: RATE / 3 },
      { protocol: 'h2c', target: 'echo.shop:8081', rate: RATE / 3 },
      { protocol: 'grpc', target: 'echo.shop:9090', rate: RATE / 3 },
    ],
    DURATION_S,
  );
  const samples: Record<string, { at: number; rssKb: number; fds: number }[]> = Object.fromEntries(NODES.map((n) => [n, []]));
  let finished = false;
  const done = load.done.finally(() => {
    finished = true;
  });
  const t0 = Date.now();
  while (!finished && Date.now() - t0 < (DURATION_S + 60) * 1000) {
    for (const n of NODES) {
      await agentCollectGarbage(rec, n);
      samples[n]!.push({ at: Date.now() - t0, ...footprint(pids[n]!) });
    }
    await Promise.race([sleep(SAMPLE_MS), done.then(() => undefined, () => undefined)]);
  }
  const results = await done;
  const sum = total(results);
  t.comment(describe(results));
  t.equal(sum.failed, 0, `0 failed of ${sum.requests} ${JSON.stringify(sum.errors)}`);
  t.ok(sum.ok >= RATE * DURATION_S * 0.95, `${sum.ok} served (${RATE}/s asked)`);

  const warmUpMs = (DURATION_S * 1000) / 4;
  for (const n of NODES) {
    const after = samples[n]!.filter((s) => s.at >= warmUpMs && s.at <= DURATION_S * 1000);
    t.ok(after.length >= 6, `${n}: ${after.length} samples after warm-up`);
    if (after.length < 6) continue;
    const first = after.slice(0, 3);
    const last = after.slice(-3);
    const rssGrowth = mean(last.map((s) => s.rssKb)) / mean(first.map((s) => s.rssKb)) - 1;
    const fdGrowth = mean(last.map((s) => s.fds)) / mean(first.map((s) => s.fds)) - 1;
    t.comment(`${n}: RSS ${after.map((s) => Math.round(s.rssKb / 1024)).join(' ')} MiB; fds ${after.map((s) => s.fds).join(' ')}`);
    t.ok(rssGrowth < 0.05, `${n}: RSS growth after warm-up ${(rssGrowth * 100).toFixed(1)}% (< 5%)`);
    t.ok(fdGrowth < 0.05, `${n}: open fds growth after warm-up ${(fdGrowth * 100).toFixed(1)}% (< 5%)`);
  }
});
