/**
 * Controller down under load (reliability suite): the agents keep serving on their last good
 * config while the controller (config stream and CA) is gone — 0 failed requests — and a
 * change made meanwhile (an AuthorizationPolicy written to the controller's input, the lab's
 * state folder, as `kubectl apply` would write to the API server) is in force on the data
 * path once it returns. Short form 30 s down; SKEIN_RELIABILITY=long: 5 minutes.
 */
import t from 'tap';
import { startControlPlane } from '../../../src/lab/mesh.js';
import { writeRecord } from '../../../src/lab/registry.js';
import { labApply, servedBy } from '../support/apply.js';
import { client, isRoot, startLab } from '../support/lab.js';
import { describe, FORM_NAME, form, sleep, steadyLoad, total } from '../support/reliability-load.js';

const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });
const DOWN_S = form(30, 300);
const RATE = form(40, 100);
const CLIENT = 'shop/client-0';

const denyPath = {
  apiVersion: 'security.skein.io/v1alpha1',
  kind: 'AuthorizationPolicy',
  metadata: { name: 'deny-during-outage', namespace: 'shop' },
  spec: { selector: { matchLabels: { app: 'echo' } }, action: 'DENY', rules: [{ to: [{ operation: { paths: ['/outage-denied'] } }] }] },
};

t.test(`controller down ${DOWN_S} s under load (${FORM_NAME} form)`, opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true });
  const before = await client(rec, CLIENT, ['--protocol', 'http1', '--target', 'echo.shop:80', '--path', '/outage-denied', '--count', '4']);
  t.equal(before.ok, 4, 'before the outage, /outage-denied is served');

  const load = steadyLoad(
    rec,
    CLIENT,
    [
      { protocol: 'http1', target: 'echo.shop:80', rate: RATE / 2 },
      { protocol: 'h2c', target: 'echo.shop:8081', rate: RATE / 2 },
    ],
    DOWN_S + 10,
  );
  await sleep(3000);
  const ctl = rec.processes.find((p) => p.kind === 'controller');
  if (!ctl) throw new Error('the lab runs no controller');
  process.kill(ctl.pid, 'SIGKILL');
  const downAt = Date.now();
  await sleep(2000);
  // The change made while the controller is away: written to its input only.
  await labApply(rec, [denyPath]);
  await sleep(Math.max(0, DOWN_S * 1000 - (Date.now() - downAt)));
  const back = await startControlPlane(rec, { restart: true });
  rec.processes = rec.processes.filter((p) => p !== ctl).concat(back);
  writeRecord(rec);
  const backAt = Date.now();
  t.comment(`controller was down ${((backAt - downAt) / 1000).toFixed(1)} s`);

  const results = await load.done;
  const sum = total(results);
  t.comment(describe(results));
  t.equal(sum.failed, 0, `0 failed of ${sum.requests} requests while the controller was down ${JSON.stringify(sum.errors)}`);
  t.ok(sum.ok >= RATE * (DOWN_S + 10) * 0.95, `${sum.ok} requests served (≈ ${RATE}/s)`);

  const appliedMs = await servedBy(rec, ['node-a', 'node-b'], 'authorizationPolicies', ['deny-during-outage'], 30_000);
  t.comment(`both agents serve the policy made during the outage ${Date.now() - backAt} ms after the controller returned (poll ${appliedMs} ms)`);
  const denied = await client(rec, CLIENT, ['--protocol', 'http1', '--target', 'echo.shop:80', '--path', '/outage-denied', '--count', '6']);
  t.equal(denied.ok, 0, `the data path changed: /outage-denied is refused ${JSON.stringify(denied.errors)}`);
  t.ok(Object.keys(denied.errors).some((k) => k.includes('403')), `refused with 403 ${JSON.stringify(denied.errors)}`);
  const other = await client(rec, CLIENT, ['--protocol', 'http1', '--target', 'echo.shop:80', '--count', '6']);
  t.equal(other.ok, 6, 'other paths are still served');
});
