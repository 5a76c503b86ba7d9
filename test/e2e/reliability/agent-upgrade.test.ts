/**
 * Reliability: agent upgrade under steady load (issue 15). `skein lab upgrade-agent` plays the
 * DaemonSet's rolling update: a new agent starts with --upgrade, receives the running agent's
 * listening sockets (SCM_RIGHTS), serves them, takes over once every pod is served, and the
 * old agent drains (HTTP/1 Connection: close, HTTP/2 and tunnel GOAWAY, L4 streams until the
 * drain timeout, then a FIN) and exits. What skein promises, checked here:
 * - 0 failed requests: HTTP/1 keep-alive, h2c, gRPC server streams;
 * - a long TCP stream through the upgraded agent runs on, or ends with a FIN at the drain
 *   timeout, never a reset;
 * - one copy of every program attached afterwards, and nothing in clear on the underlay.
 *
 * Both nodes' agents are upgraded in turn: node-a carries the load's source pod (outbound) and
 * one echo pod; node-b the other echo pod (the tunnel server side).
 * Short form (CI): 200 req/s for 16 s, drain timeout 3 s. Long form (SKEIN_RELIABILITY=long):
 * 200 req/s for 90 s, each node upgraded 3 times, drain timeout 5 s.
 */
import t from 'tap';
import { labStatus } from '../../../src/lab/lab.js';
import { upgradeAgent } from '../../../src/lab/mesh.js';
import { attachedAtRoot, CGROUP_HOOKS, captureUnderlay, longForm, pinnedPrograms, steadyLoad } from '../support/agent-lifecycle.js';
import { isRoot, startLab } from '../support/lab.js';

const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });

t.test('agent upgrade under steady load: no request fails, the long TCP stream ends cleanly or runs on', opts(), async (t) => {
  const long = longForm();
  const loadMs = long ? 90_000 : 16_000;
  const drainS = long ? 5 : 3;
  const rounds = long ? 3 : 1;
  const rec = await startLab(t, undefined, { mesh: true, agentRestartBackoffMs: 200, agentArgs: ['--drain-timeout', String(drainS)] });
  const capture = captureUnderlay(rec, Math.ceil(loadMs / 1000) + 30);
  t.teardown(() => capture.remove());
  await new Promise((r) => setTimeout(r, 1500));
  const before = { 'node-a': await pinnedPrograms(rec, 'node-a'), 'node-b': await pinnedPrograms(rec, 'node-b') };

  const load = steadyLoad(rec, 'shop/client-0', ['--host', 'echo.shop', '--http1', '80', '--h2c', '8081', '--grpc', '9090', '--tcp', '7070', '--rate', '200'], loadMs);
  await new Promise((r) => setTimeout(r, 2500));
  const upgrades: { node: string; at: number; ms: number }[] = [];
  for (let i = 0; i < rounds; i++) {
    for (const node of ['node-a', 'node-b']) {
      const at = Date.now();
      const r = await upgradeAgent(rec, node, 60_000);
      upgrades.push({ node, at, ms: r.ms });
      t.comment(`upgrade ${node}: agent ${r.previousPid} -> ${r.agentPid}, old one drained and gone after ${r.ms} ms`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  const summary = await load;
  await capture.stop();

  const kinds = Object.entries(summary.byKind)
    .map(([k, v]) => `${k} ${v.ok}/${v.sent}${v.skipped ? ` (${v.skipped} skipped)` : ''}`)
    .join(', ');
  t.comment(`agent upgrade: ${upgrades.length} upgrades under ${summary.sent} requests at ${summary.achievedRate}/s over ${loadMs / 1000}s (${kinds}); ${summary.failed} failed; ${summary.h2cRefusedRetried} h2c streams refused unprocessed at a GOAWAY and sent again; latency p50 ${summary.latencyMs.p50} ms, p99 ${summary.latencyMs.p99} ms, max ${summary.latencyMs.max} ms`);
  t.ok(summary.sent >= (loadMs / 1000) * 200 * 0.8, `the load ran at about 200/s (${summary.achievedRate}/s)`);
  t.equal(summary.failed, 0, `no request failed ${JSON.stringify(summary.failures.slice(0, 10))}`);
  for (const [k, v] of Object.entries(summary.byKind)) t.equal(v.skipped, 0, `${k}: none held back by the in-flight cap`);

  const tcp = summary.tcp!;
  const firstA = upgrades.find((u) => u.node === 'node-a')!.at;
  t.comment(`long TCP stream: ${tcp.ended}${tcp.endedAt ? ` ${tcp.endedAt - firstA} ms after node-a's first upgrade began` : ''}, ${tcp.bytesSent} bytes sent, ${tcp.bytesEchoed} echoed`);
  t.ok(tcp.connected, 'the long TCP stream connected');
  t.ok(tcp.ended === 'ran' || tcp.ended === 'fin', `the long TCP stream ran on or ended with a FIN, never a reset (${tcp.ended}${tcp.error ? ` ${tcp.error}` : ''})`);
  if (tcp.ended === 'fin') {
    t.ok(tcp.endedAt! - firstA >= drainS * 1000, 'ended no sooner than the drain timeout');
    // Closing a byte stream from the middle cannot deliver what was on the wire at that
    // instant (it is read and dropped, so the close stays a FIN and never becomes a reset).
    t.ok(tcp.bytesEchoed <= tcp.bytesSent && tcp.bytesSent - tcp.bytesEchoed <= 64 * 1024, `only bytes in flight at the FIN were not echoed (${tcp.bytesSent - tcp.bytesEchoed})`);
  }

  const clear = await capture.plaintext();
  t.equal(clear.offPorts, '', 'no payload on the underlay but the tunnel and the controller (TLS)');
  t.equal(clear.http, '', 'nothing tshark reads as HTTP, HTTP/2 or gRPC');

  const attached = await attachedAtRoot(rec);
  for (const node of ['node-a', 'node-b'] as const) {
    const now = await pinnedPrograms(rec, node);
    for (const hook of CGROUP_HOOKS) {
      t.equal(attached.filter((id) => id === now[hook]).length, 1, `${node} ${hook}: one copy attached`);
      t.notOk(attached.includes(before[node][hook]), `${node} ${hook}: the old agent's program was swapped out`);
    }
    const st = labStatus(rec).agents.find((a) => a.node === node)!;
    t.equal(st.upgrades, rounds, `${node}: lab status counts ${rounds} upgrade(s)`);
    t.equal(st.restarts, 0, `${node}: no restart (no agent died)`);
  }
});
