/**
 * CA down (reliability suite). The CA runs inside the controller; here only the CA goes: an
 * nftables rule in the lab's underlay netns (where the controller listens) resets every
 * packet to the CA port, established connections included, while the controller's config
 * stream stays up — what agents see when the CA is unreachable. (controller-down.test.ts
 * takes the whole controller away.)
 *
 * Promise: certificates already issued keep serving — 0 failed requests for as long as they
 * are valid — and renewal retries with backoff, counted in
 * skein_identity_certificate_failures_total{reason} and logged ("certificate request
 * failed", with attempt and retryInMs); once the CA is back, certificates are renewed and
 * traffic goes on. Certificates of 40 s (short form) or 300 s (SKEIN_RELIABILITY=long) make
 * renewal fall due during the outage.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { CA_PORT } from '../../../src/lab/mesh.js';
import type { LabRecord } from '../../../src/lab/registry.js';
import { client, isRoot, startLab } from '../support/lab.js';
import { agentGet, waitUntil } from '../support/mesh.js';
import { agentMetrics, describe, FORM_NAME, form, metricSum, sleep, steadyLoad, total } from '../support/reliability-load.js';

const execFileP = promisify(execFile);
const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });
const TTL_S = form(40, 300);
const NODES = ['node-a', 'node-b'];
/** The CA returns this long before the first certificate expires (retries are at most a quarter of the remaining life apart). */
const RETURN_MARGIN_S = form(8, 20);
const TABLE = 'skein_reliability_ca_down';

interface CertStatus {
  identity: string;
  state: 'pending' | 'valid' | 'expired';
  serialNumber?: string;
  notAfter?: string;
  consecutiveFailures: number;
  lastError?: string;
}

async function certs(rec: LabRecord, node: string): Promise<CertStatus[]> {
  return (await agentGet<{ certificates: CertStatus[] }>(rec, node, '/certs')).certificates;
}

async function caReachable(rec: LabRecord, reachable: boolean): Promise<void> {
  const ns = ['netns', 'exec', rec.plan.underlayNetns];
  if (reachable) {
    await execFileP('ip', [...ns, 'nft', 'delete', 'table', 'inet', TABLE]).catch(() => {});
    return;
  }
  const rules = `table inet ${TABLE} {\n chain input {\n  type filter hook input priority -10; policy accept;\n  tcp dport ${CA_PORT} reject with tcp reset\n }\n}\n`;
  await new Promise<void>((resolve, reject) => {
    const c = execFile('ip', [...ns, 'nft', '-f', '-'], (err) => (err ? reject(err) : resolve()));
    c.stdin?.end(rules);
  });
}

interface LogLine {
  msg?: string;
  /** pino's isoTime. */
  time?: string;
  identity?: string;
  code?: string;
  attempt?: number;
  retryInMs?: number;
  certificateValidForMs?: number;
}

function renewalFailureLines(rec: LabRecord, node: string, since: number): LogLine[] {
  return readFileSync(join(rec.logDir, `agent.${node}.log`), 'utf8')
    .split('\n')
    .filter((l) => l.includes('certificate request failed'))
    .map((l) => JSON.parse(l) as LogLine)
    .filter((l) => Date.parse(l.time ?? '') >= since);
}

t.test(`CA down while certificates (TTL ${TTL_S} s) are valid (${FORM_NAME} form)`, opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true, agentArgs: ['--cert-ttl', String(TTL_S)] });
  t.teardown(() => caReachable(rec, true));
  const failuresBefore = await Promise.all(NODES.map(async (n) => metricSum(await agentMetrics(rec, n), 'skein_identity_certificate_failures_total')));

  await caReachable(rec, false);
  const downAt = Date.now();
  const heldBy = async (node: string) => (await certs(rec, node)).filter((c) => c.state === 'valid').map((c) => ({ node, ...c }));
  const held = (await Promise.all(NODES.map(heldBy))).flat();
  t.ok(held.length >= 3, `${held.length} certificates held when the CA went away`);
  const firstExpiry = Math.min(...held.map((c) => Date.parse(c.notAfter!)));
  const serialsBefore = new Map(held.map((c) => [`${c.node} ${c.identity}`, c.serialNumber]));
  // The CA stays away until RETURN_MARGIN_S before the first certificate expires, then comes
  // back; the load runs through both and a little after.
  const outageS = Math.floor((firstExpiry - Date.now()) / 1000) - RETURN_MARGIN_S;
  t.ok(outageS >= TTL_S * 0.25, `the CA is away ${outageS} s, renewal falling due meanwhile`);
  const load = steadyLoad(
    rec,
    'shop/client-0',
    [
      { protocol: 'http1', target: 'echo.shop:80', rate: 25 },
      { protocol: 'grpc', target: 'echo.shop:9090', rate: 25 },
    ],
    outageS + RETURN_MARGIN_S + 5,
  );
  await sleep(outageS * 1000);
  const failuresDuring = await Promise.all(NODES.map(async (n) => metricSum(await agentMetrics(rec, n), 'skein_identity_certificate_failures_total')));
  const statusDuring = (await Promise.all(NODES.map(heldBy))).flat();
  await caReachable(rec, true);
  const backAt = Date.now();
  const renewedMs = await waitUntil(async () => {
    const now = (await Promise.all(NODES.map(heldBy))).flat();
    return [...serialsBefore].every(([k, serial]) => now.some((c) => `${c.node} ${c.identity}` === k && c.serialNumber !== serial && c.consecutiveFailures === 0));
  }, RETURN_MARGIN_S * 1000, 100);
  t.pass(`every certificate renewed ${renewedMs} ms after the CA came back (${((backAt - downAt) / 1000).toFixed(1)} s outage), before the first expiry`);
  const results = await load.done;
  const sum = total(results);
  t.comment(describe(results));
  t.equal(sum.failed, 0, `0 failed of ${sum.requests} through the CA's outage and return ${JSON.stringify(sum.errors)}`);

  // Renewal fell due during the outage: it failed, was counted, logged, and retried with backoff.
  const counted = failuresDuring.reduce((a, b) => a + b, 0) - failuresBefore.reduce((a, b) => a + b, 0);
  t.ok(counted >= 2, `skein_identity_certificate_failures_total grew by ${counted} during the outage`);
  for (const node of NODES) {
    const lines = renewalFailureLines(rec, node, downAt);
    const byIdentity = new Map<string, LogLine[]>();
    for (const l of lines) byIdentity.set(l.identity ?? '', [...(byIdentity.get(l.identity ?? '') ?? []), l]);
    t.ok(byIdentity.size >= 1, `${node}: "certificate request failed" logged for ${byIdentity.size} identit(ies)`);
    for (const [identity, ls] of byIdentity) {
      const attempts = ls.map((l) => l.attempt ?? 0);
      t.same(attempts, attempts.map((_, i) => attempts[0]! + i), `${node} ${identity}: attempts count up (${attempts.join(',')})`);
      t.ok(ls.every((l) => typeof l.retryInMs === 'number' && l.retryInMs >= 100 && l.code), `${node} ${identity}: each says its code and when it retries (${ls.map((l) => l.retryInMs).join(',')} ms)`);
      // Backoff, not a busy loop: retries spaced by the delays they announced (1 s doubling,
      // capped at a quarter of the certificate's remaining life), so far fewer than one a second.
      t.ok(ls.length <= outageS, `${node} ${identity}: ${ls.length} attempts in ${outageS} s`);
    }
  }
  t.ok(statusDuring.some((c) => c.consecutiveFailures >= 2 && c.lastError), `/certs showed the failures ${JSON.stringify(statusDuring.map((c) => [c.node, c.identity, c.consecutiveFailures, c.lastError]))}`);

  await sleep(500);
  const after = await client(rec, 'shop/client-0', ['--protocol', 'http1', '--target', 'echo.shop:80', '--count', '20']);
  t.equal(after.ok, 20, `traffic after the CA returned ${JSON.stringify(after.errors)}`);
});
