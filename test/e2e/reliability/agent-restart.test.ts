/**
 * Reliability: an agent SIGKILLed under steady load (issue 15). What skein promises:
 * - while no agent runs on the node, its pods' mesh traffic is refused (fails closed: connects
 *   to the captured ports find no listener) and never leaves in plaintext;
 * - the lab's supervisor (the kubelet's part) restarts the agent with back-off, and from the
 *   moment the new agent is ready nothing fails;
 * - the new agent adopts the pinned programs: exactly one copy of each attached.
 *
 * Short form (CI, `make test`): 200 req/s for 12 s, back-off base 200 ms. Long form
 * (SKEIN_RELIABILITY=long, `make test-reliability`): 200 req/s for 60 s with the kubelet's own
 * 10 s back-off. Figures are printed as test comments.
 */
import t from 'tap';
import { labStatus } from '../../../src/lab/lab.js';
import { agentPidOf } from '../../../src/lab/mesh.js';
import { agentReady, attachedAtRoot, CGROUP_HOOKS, captureUnderlay, longForm, netnsInode, pinnedPrograms, skLookupLinks, steadyLoad } from '../support/agent-lifecycle.js';
import { isRoot, startLab } from '../support/lab.js';
import { agentGet, waitUntil } from '../support/mesh.js';

const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });

t.test('agent SIGKILL under steady load: fails closed while down, nothing fails after the restart, one copy of every program', opts(), async (t) => {
  const long = longForm();
  const loadMs = long ? 60_000 : 12_000;
  const backoffMs = long ? 10_000 : 200;
  const rec = await startLab(t, undefined, { mesh: true, agentRestartBackoffMs: backoffMs });
  const node = 'node-a'; // runs shop/client-0 (the load's source) and shop/echo-0 (one of its destinations)
  const before = await pinnedPrograms(rec, node);
  const capture = captureUnderlay(rec, Math.ceil(loadMs / 1000) + 30);
  t.teardown(() => capture.remove());
  await new Promise((r) => setTimeout(r, 1500)); // tshark listening

  // Every kind through the Service VIP: endpoints on both nodes, so same-node and cross-node.
  const load = steadyLoad(rec, 'shop/client-0', ['--host', 'echo.shop', '--http1', '80', '--h2c', '8081', '--grpc', '9090', '--rate', '200'], loadMs);
  await new Promise((r) => setTimeout(r, 3000));
  const oldPid = agentPidOf(rec, node)!;
  const killedAt = Date.now();
  process.kill(oldPid, 'SIGKILL');
  await waitUntil(async () => {
    const pid = agentPidOf(rec, node);
    return pid !== undefined && pid !== oldPid;
  }, backoffMs * 3 + 15_000);
  const restartedAt = Date.now();
  await waitUntil(() => agentReady(rec, node), 30_000, 20);
  const readyAt = Date.now();
  const summary = await load;
  await capture.stop();

  // Failures: only between the kill and the new agent's readiness (a request's start is
  // before it, its failure after the kill; 300 ms of slack for this poll's own granularity).
  const slack = 300;
  const outside = summary.failures.filter((f) => f.end < killedAt || f.start > readyAt + slack);
  const after = summary.ok > 0 ? summary.failures.filter((f) => f.start > readyAt + slack).length : 0;
  const downMs = readyAt - killedAt;
  t.comment(
    `agent SIGKILL: ${summary.sent} requests at ${summary.achievedRate}/s over ${loadMs / 1000}s; ` +
      `no agent for ${restartedAt - killedAt} ms (back-off base ${backoffMs} ms), ready again ${downMs} ms after the kill; ` +
      `${summary.failed} failed (${JSON.stringify(Object.fromEntries(Object.entries(summary.byKind).map(([k, v]) => [k, v.errors])))}), ` +
      `${outside.length} outside that window, ${after} after the restart; latency of the served p50 ${summary.latencyMs.p50} ms, p99 ${summary.latencyMs.p99} ms`,
  );
  t.ok(summary.ok > summary.sent * 0.5, `most requests served (${summary.ok}/${summary.sent})`);
  t.same(outside, [], 'no request failed before the kill or after the restarted agent was ready');
  t.equal(after, 0, 'nothing fails after the restart');
  if (summary.failures.length > 0) {
    const first = Math.min(...summary.failures.map((f) => f.end));
    const last = Math.max(...summary.failures.map((f) => f.end));
    t.comment(`failures from +${first - killedAt} ms to +${last - killedAt} ms after the kill`);
  }

  // Fail closed: nothing in clear between the nodes, before, during or after.
  const payload = await capture.payloadPackets();
  const tls = await capture.tunnelTlsRecords();
  const clear = await capture.plaintext();
  t.comment(`underlay: ${payload} TCP payload packets, ${tls} TLS records on the tunnel port`);
  t.ok(tls > 100, 'cross-node requests went through the tunnel, as TLS');
  t.equal(clear.offPorts, '', 'no payload on any port but the tunnel and the controller (TLS)');
  t.equal(clear.http, '', 'nothing tshark reads as HTTP, HTTP/2 or gRPC');

  // One copy of every program: the new agent swapped its programs into the pinned links.
  const now = await pinnedPrograms(rec, node);
  const attached = await attachedAtRoot(rec);
  for (const hook of CGROUP_HOOKS) {
    t.not(now[hook], before[hook], `${hook}: the restarted agent's program is in the pinned link`);
    t.equal(attached.filter((id) => id === now[hook]).length, 1, `${hook}: attached once at the cgroup root`);
    t.notOk(attached.includes(before[hook]), `${hook}: the killed agent's program is no longer attached`);
  }
  const enrolled = await agentGet<{ pods: { pod: string; state: string }[] }>(rec, node, '/workloads');
  const local = rec.plan.pods.filter((p) => p.node === node && enrolled.pods.some((w) => w.pod === `${p.namespace}/${p.name}` && w.state === 'serving'));
  t.ok(local.length >= 2, `${local.length} pods served on ${node} again`);
  for (const p of local) t.equal(await skLookupLinks(await netnsInode(p.netns)), 1, `${p.namespace}/${p.name}: one sk_lookup link in its netns`);

  const status = labStatus(rec).agents.find((a) => a.node === node)!;
  t.equal(status.restarts, 1, 'lab status: one restart');
  t.equal(status.lastExit?.signal, 'SIGKILL', 'lab status: the last exit was the SIGKILL');
});
