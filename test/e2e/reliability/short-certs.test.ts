/**
 * Certificates of 10 s lifetime rotated under load (reliability suite): every agent asks the
 * CA for 10 s workload certificates (`--cert-ttl 10`), so each identity is renewed about every
 * 5 s (half-life) and tunnel sessions move to the new credentials while requests flow. Promise:
 * 0 failed requests. Short form 40 s; SKEIN_RELIABILITY=long: 5 minutes.
 */
import t from 'tap';
import type { LabRecord } from '../../../src/lab/registry.js';
import { isRoot, startLab } from '../support/lab.js';
import { agentGet } from '../support/mesh.js';
import { agentMetrics, describe, FORM_NAME, form, metricSum, steadyLoad, total } from '../support/reliability-load.js';

const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });
const TTL_S = 10;
const DURATION_S = form(40, 300);
const NODES = ['node-a', 'node-b'];

async function issued(rec: LabRecord): Promise<number[]> {
  return Promise.all(NODES.map(async (n) => metricSum(await agentMetrics(rec, n), 'skein_identity_certificates_issued_total')));
}

t.test(`certificates of ${TTL_S} s rotated for ${DURATION_S} s under load (${FORM_NAME} form)`, opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true, agentArgs: ['--cert-ttl', String(TTL_S)] });
  const before = await issued(rec);
  const load = steadyLoad(
    rec,
    'shop/client-0',
    [
      { protocol: 'http1', target: 'echo.shop:80', rate: 30 },
      { protocol: 'h2c', target: 'echo.shop:8081', rate: 30 },
      { protocol: 'grpc', target: 'echo.shop:9090', rate: 30 },
    ],
    DURATION_S,
  );
  const results = await load.done;
  const after = await issued(rec);
  const sum = total(results);
  t.comment(describe(results));
  t.equal(sum.failed, 0, `0 failed of ${sum.requests} requests while certificates rotated ${JSON.stringify(sum.errors)}`);
  t.ok(sum.ok >= 90 * DURATION_S * 0.95, `${sum.ok} served`);
  for (const [i, node] of NODES.entries()) {
    const rotations = after[i]! - before[i]!;
    // Each identity on the node renews about every TTL/2; at least once per lifetime proves rotation happened.
    t.ok(rotations >= DURATION_S / TTL_S, `${node}: ${rotations} certificates issued during the ${DURATION_S} s run`);
  }
  const held = (await Promise.all(NODES.map((n) => agentGet<{ certificates: { identity: string; state: string }[] }>(rec, n, '/certs')))).flatMap((c) => c.certificates);
  t.ok(held.length > 0 && held.every((c) => c.state === 'valid'), `every held certificate valid at the end ${JSON.stringify(held.map((c) => c.state))}`);
});
