/**
 * Enrolment when the app already holds a port the agent needs in the pod's netns (issue 15):
 * before, the failed listener released capture, so a STRICT pod then took plaintext and sent
 * unencrypted. Now the pod is kept captured in a refusing state: its connects are refused
 * (connect4/6, EPERM: nothing leaves it in plaintext), inbound plaintext is dropped (sk_lookup
 * finds no agent socket for it), and it is reported — /workloads (state pending, code
 * SKEIN_CAPTURE_PORT_HELD), skein_pods_refusing{reason} and `skein status` (pod, node,
 * reason). Once the app lets go of the port, the next reconcile serves the pod.
 *
 * The "app" holding the port is a second process in legacy/echo-1's netns and cgroup that
 * listens on 0.0.0.0:15001 until the test removes its flag file (bounded: 120 s at most).
 */
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { labExecCaptured } from '../../../src/lab/lab.js';
import { labelNamespace } from '../../../src/lab/mutate.js';
import { skeinCommand } from '../../../src/paths.js';
import { client, isRoot, startLab } from '../support/lab.js';
import { agentGet, waitUntil } from '../support/mesh.js';

const exec = promisify(execFile);
const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });

interface Workloads {
  pods: { uid: string; pod: string; state: string; code?: string; error?: string }[];
}
interface Stats {
  capture: { skLookupNoSocket: number };
}

const HELD_PORT = 15001; // the agent's outbound listener port inside every pod netns

t.test('an app holding a port the agent needs keeps its pod captured and refusing, then it is served', opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true });
  const echo0 = rec.plan.pods.find((p) => p.namespace === 'legacy' && p.name === 'echo-0')!; // node-a
  const echo1 = rec.plan.pods.find((p) => p.namespace === 'legacy' && p.name === 'echo-1')!; // node-b
  const nodeA = rec.plan.nodes.find((n) => n.name === 'node-a')!;
  const nodeB = rec.plan.nodes.find((n) => n.name === 'node-b')!;
  const curlFromNodeA = (url: string) =>
    exec('ip', ['netns', 'exec', nodeA.netns, 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '3', url], { encoding: 'utf8' }).then(
      (r) => r.stdout.trim(),
      (e: { stdout?: string; code?: number }) => `failed (curl exit ${e.code})`,
    );

  // Outside the mesh, plaintext both ways works: the checks below can fail.
  t.equal(await curlFromNodeA(`http://${echo1.ip}:8080/`), '200', 'before: plaintext from outside reaches legacy/echo-1');
  const outBefore = await client(rec, 'legacy/echo-1', ['--protocol', 'http1', '--target', `${echo0.ip}:8080`, '--count', '2', '--timeout', '5']);
  t.equal(outBefore.ok, 2, 'before: legacy/echo-1 calls legacy/echo-0 in plaintext');

  // The app takes the agent's port first.
  const dir = mkdtempSync(join(tmpdir(), 'skein-e2e-held-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const flag = join(dir, 'hold');
  const ready = join(dir, 'ready');
  writeFileSync(flag, '');
  const script = `
    const net = await import('node:net'); const fs = await import('node:fs');
    const srv = net.createServer((s) => s.destroy());
    srv.listen(${HELD_PORT}, '0.0.0.0', () => fs.writeFileSync(${JSON.stringify(ready)}, 'up'));
    const until = Date.now() + 120_000;
    const poll = setInterval(() => { if (!fs.existsSync(${JSON.stringify(flag)}) || Date.now() > until) { clearInterval(poll); srv.close(); console.log('released'); } }, 100);`;
  const holder = labExecCaptured(rec, 'legacy/echo-1', [process.execPath, '--input-type=module', '-e', script], 150_000);
  t.teardown(async () => {
    rmSync(flag, { force: true });
    await holder.catch(() => undefined);
  });
  await waitUntil(async () => existsSync(ready), 10_000);

  const noSocketBefore = (await agentGet<Stats>(rec, 'node-b', '/stats')).capture.skLookupNoSocket;
  await labelNamespace(rec, 'legacy', ['skein.io/mesh=enabled']);
  const state = async () => (await agentGet<Workloads>(rec, 'node-b', '/workloads')).pods.find((p) => p.pod === 'legacy/echo-1');
  const ms = await waitUntil(async () => (await state())?.state === 'pending', 40_000, 250);
  t.comment(`legacy/echo-1 reported pending ${ms} ms after the namespace joined: ${JSON.stringify(await state())}`);
  t.match(await state(), { state: 'pending', code: 'SKEIN_CAPTURE_PORT_HELD', error: new RegExp(`port ${HELD_PORT}`) }, '/workloads: pending, with the reason code and the port');
  const uid = (await state())!.uid;
  const capture = await agentGet<{ enrolled: { uid: string }[] }>(rec, 'node-b', '/capture');
  t.ok(capture.enrolled.some((e) => e.uid === uid), 'the pod stays captured (in /capture)');

  const metrics = (await exec('ip', ['netns', 'exec', nodeB.netns, 'curl', '-sf', '--max-time', '5', 'http://127.0.0.1:15020/metrics'], { encoding: 'utf8' })).stdout;
  t.match(metrics, /skein_pods_refusing\{reason="SKEIN_CAPTURE_PORT_HELD"\} 1\b/, 'skein_pods_refusing counts it under its reason');
  t.match(metrics, /skein_pods\{state="pending"\} [1-9]/, 'skein_pods counts it pending');

  const status = spawnSync(skeinCommand()[0]!, [...skeinCommand().slice(1), 'status', '--lab', rec.id], { encoding: 'utf8', timeout: 30_000 });
  t.comment(status.stdout);
  t.match(status.stdout, /PENDING \/ REFUSING POD\s+NODE\s+STATE\s+REASON/, '`skein status` has a pending/refusing pods section');
  t.match(status.stdout, /legacy\/echo-1\s+node-b\s+pending\s+SKEIN_CAPTURE_PORT_HELD/, '`skein status` names the pod, its node and the reason');

  // Fail closed both ways.
  t.not(await curlFromNodeA(`http://${echo1.ip}:8080/`), '200', 'inbound plaintext from outside the mesh is refused');
  const noSocketAfter = (await agentGet<Stats>(rec, 'node-b', '/stats')).capture.skLookupNoSocket;
  t.ok(noSocketAfter > noSocketBefore, `sk_lookup dropped it for want of an agent socket (${noSocketBefore} -> ${noSocketAfter})`);
  const out = await client(rec, 'legacy/echo-1', ['--protocol', 'http1', '--target', `${echo0.ip}:8080`, '--count', '2', '--timeout', '5']);
  t.equal(out.ok, 0, `its outbound call is refused, not sent in plaintext ${JSON.stringify(out.errors)}`);
  t.match(JSON.stringify(out.errors), /EPERM|not permitted/i, 'refused at connect() by the capture program (EPERM)');

  // The app lets go of the port: the pod is served through the mesh.
  rmSync(flag, { force: true });
  const released = await holder;
  t.match(released.stdout, /released/, 'the app released the port');
  const back = await waitUntil(async () => (await state())?.state === 'serving', 60_000, 250);
  t.comment(`served ${back} ms after the port was released`);
  const meshed = await client(rec, 'shop/client-0', ['--protocol', 'http1', '--target', `${echo1.ip}:8080`, '--count', '3', '--timeout', '10']);
  t.equal(meshed.ok, 3, `a meshed client reaches it through the mesh ${JSON.stringify(meshed.errors)}`);
  const outAfter = await client(rec, 'legacy/echo-1', ['--protocol', 'http1', '--target', `${echo0.ip}:8080`, '--count', '2', '--timeout', '10']);
  t.equal(outAfter.ok, 2, `its own calls go out again, through the mesh ${JSON.stringify(outAfter.errors)}`);
  const metricsAfter = (await exec('ip', ['netns', 'exec', nodeB.netns, 'curl', '-sf', '--max-time', '5', 'http://127.0.0.1:15020/metrics'], { encoding: 'utf8' })).stdout;
  t.notMatch(metricsAfter, /skein_pods_refusing\{reason="SKEIN_CAPTURE_PORT_HELD"\} [1-9]/, 'no longer counted as refusing');
});
