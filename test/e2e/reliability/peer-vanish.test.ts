/**
 * A peer node vanishing (reliability suite): node-b's underlay link goes down (`ip link set
 * down` on its veth in the lab's underlay netns) — no FIN, no RST, its packets simply stop —
 * while shop/client-0 on node-a sends steady load to echo.shop, whose endpoints run on both
 * nodes. Promise, with the agents' tunnel keepalive at 1 s PING / 1 s timeout
 * (`--tunnel-keepalive 1 --tunnel-keepalive-timeout 1`, `--tunnel-connect-timeout 1`) and round
 * robin with outlier detection on the Service:
 *  - the tunnel sessions to node-b are closed within interval + timeout (logged as
 *    "tunnel keepalive PING unanswered");
 *  - node-b's endpoints are ejected and traffic continues on node-a's;
 *  - failures happen only inside the detection window [link down − 1 s, link down + 1 s +
 *    1 s + 1.5 s slack], and none after it.
 * The same in both forms; the long form watches the after-window longer (60 s instead of 10 s).
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { labApply, servedBy } from '../support/apply.js';
import { client, isRoot, startLab } from '../support/lab.js';
import { waitUntil } from '../support/mesh.js';
import { describe, FORM_NAME, failureTimes, form, sleep, steadyLoad, total } from '../support/reliability-load.js';

const execFileP = promisify(execFile);
const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });
const KEEPALIVE_S = 1;
const KEEPALIVE_TIMEOUT_S = 1;
const CONNECT_TIMEOUT_S = 1;
const SLACK_MS = 1500;
const AFTER_S = form(10, 60);
const RATE = 60;

const outliers = {
  apiVersion: 'networking.skein.io/v1alpha1',
  kind: 'BackendTrafficPolicy',
  metadata: { name: 'eject-vanished', namespace: 'shop' },
  spec: {
    targetRefs: [{ group: '', kind: 'Service', name: 'echo' }],
    // Round robin keeps tunnel sessions to both nodes busy: peak-EWMA (the HTTP default) can
    // leave node-b's slower, remote endpoint idle for seconds, and then what is measured is
    // the first connect to a dead node rather than the keepalive noticing a live session die.
    loadBalancer: { type: 'RoundRobin' },
    outlierDetection: { consecutiveGatewayErrors: 2, interval: '1s', baseEjectionTime: '120s', maxEjectionPercent: 50 },
  },
};

t.test(`a peer node vanishing under load (${FORM_NAME} form)`, opts(), async (t) => {
  const rec = await startLab(t, undefined, {
    mesh: true,
    // A connect to the vanished node (a session opened after the keepalive closed the old
    // one) fails within the window too, and counts towards the endpoint's ejection.
    agentArgs: ['--tunnel-keepalive', String(KEEPALIVE_S), '--tunnel-keepalive-timeout', String(KEEPALIVE_TIMEOUT_S), '--tunnel-connect-timeout', String(CONNECT_TIMEOUT_S)],
  });
  const nodeB = rec.plan.nodes.find((n) => n.name === 'node-b')!;
  const echo = rec.plan.pods.filter((p) => p.namespace === 'shop' && p.name.startsWith('echo-'));
  const onB = echo.filter((p) => p.node === 'node-b').map((p) => `shop/${p.name}`);
  const onA = echo.filter((p) => p.node === 'node-a').map((p) => `shop/${p.name}`);
  t.ok(onA.length > 0 && onB.length > 0, `echo runs on both nodes (a: ${onA}, b: ${onB})`);
  await labApply(rec, [outliers]);
  await servedBy(rec, ['node-a'], 'backendTrafficPolicies', ['eject-vanished']);
  // Both nodes' endpoints in service before the fault (on a loaded VM node-b's pod can be
  // enrolled a few seconds after the lab is up).
  await waitUntil(
    async () => {
      const r = await client(rec, 'shop/client-0', ['--protocol', 'http1', '--target', 'echo.shop:80', '--count', '10']);
      return onB.some((p) => (r.byPod[p] ?? 0) > 0);
    },
    30_000,
    500,
  );

  const link = (state: 'up' | 'down') => execFileP('ip', ['-n', rec.plan.underlayNetns, 'link', 'set', 'dev', nodeB.underlayIf, state]);
  t.teardown(() => link('up').catch(() => {}));

  const warmS = 5;
  const load = steadyLoad(
    rec,
    'shop/client-0',
    [
      { protocol: 'http1', target: 'echo.shop:80', rate: RATE / 2, timeoutS: 10 },
      { protocol: 'h2c', target: 'echo.shop:8081', rate: RATE / 2, timeoutS: 10 },
    ],
    warmS + 3 + AFTER_S,
  );
  await sleep(warmS * 1000);
  await link('down');
  const vanishedAt = Date.now();
  const results = await load.done;
  const sum = total(results);
  t.comment(describe(results));

  // Traffic reached node-b before, and only node-a after the window.
  const byPod: Record<string, number> = {};
  for (const r of results) for (const [p, n] of Object.entries(r.byPod)) byPod[p] = (byPod[p] ?? 0) + n;
  t.ok(onB.some((p) => (byPod[p] ?? 0) > 0), `node-b's endpoints served before the link went down ${JSON.stringify(byPod)}`);

  const windowEnd = vanishedAt + (KEEPALIVE_S + KEEPALIVE_TIMEOUT_S) * 1000 + SLACK_MS;
  const fails = failureTimes(results);
  const outside = fails.filter((f) => f.at < vanishedAt - 1000 || f.at > windowEnd);
  const rel = (at: number) => `${at - vanishedAt} ms`;
  t.comment(`${fails.length} failures, sent at ${fails.map((f) => `${rel(f.at)} ${f.reason}`).slice(0, 20).join(', ')}${fails.length > 20 ? ' …' : ''}`);
  t.same(outside.map((f) => `${rel(f.at)} ${f.reason}`), [], `every failure was sent within the detection window (link down −1 s … +${windowEnd - vanishedAt} ms)`);
  t.ok(sum.failed <= RATE * ((windowEnd - vanishedAt) / 1000 + 1), `${sum.failed} failed: at most the requests of the window (${RATE}/s)`);
  t.ok(sum.ok >= sum.requests - RATE * 5, `${sum.ok}/${sum.requests} served`);

  // The tunnels noticed: a keepalive closed node-a's sessions to node-b within interval + timeout.
  const noticed = readFileSync(join(rec.logDir, 'agent.node-a.log'), 'utf8')
    .split('\n')
    .filter((l) => l.includes('tunnel keepalive PING unanswered'))
    .map((l) => Date.parse((JSON.parse(l) as { time: string }).time))
    .filter((at) => at >= vanishedAt);
  t.ok(noticed.length > 0, 'node-a logged "tunnel keepalive PING unanswered"');
  if (noticed.length) {
    const ms = Math.min(...noticed) - vanishedAt;
    t.ok(ms <= (KEEPALIVE_S + KEEPALIVE_TIMEOUT_S) * 1000 + 500, `the first dead session closed ${ms} ms after the link went down (keepalive ${KEEPALIVE_S} s + timeout ${KEEPALIVE_TIMEOUT_S} s)`);
  }
});
