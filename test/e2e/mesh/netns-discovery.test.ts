/**
 * The agent finds each pod's network namespace from the kubelet-layout cgroups on its node
 * (pod UID -> cgroup -> process -> /proc/PID/ns/net), as on a real node: no lab.skein.io/
 * annotation is involved, and a pod author who writes one pointing at another pod's netns
 * changes nothing.
 */
import { execFile, spawn } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { parseAllDocuments } from 'yaml';
import { writeKubeState } from '../../../src/lab/lab.js';
import { enterArgs } from '../../../src/lab/processes.js';
import { writeRecord } from '../../../src/lab/registry.js';
import { client, isRoot, startLab } from '../support/lab.js';
import { agentGet, waitUntil } from '../support/mesh.js';

const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });

interface CaptureView {
  enrolled: { uid: string; netns: string; netnsCookie: string }[];
}

const inode = (path: string) => statSync(path).ino;
const exec = promisify(execFile);

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

t.test('pod netns discovery in the lab', opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true });
  const clientPod = rec.plan.pods.find((p) => p.namespace === 'shop' && p.name === 'client-0')!; // node-a
  const echoPod = rec.plan.pods.find((p) => p.namespace === 'shop' && p.node === clientPod.node && p.name.startsWith('echo'))!;

  const enrolledNetns = async (uid: string) => (await agentGet<CaptureView>(rec, clientPod.node, '/capture')).enrolled.find((e) => e.uid === uid);

  await t.test('no pod carries a lab.skein.io/ annotation; the agent enrolled them from their cgroups', async (t) => {
    const pods = parseAllDocuments(readFileSync(join(rec.stateDir, 'pods.yaml'), 'utf8')).map((d) => d.toJS() as { metadata: { annotations?: Record<string, string> } });
    t.ok(pods.length > 0);
    t.notOk(
      pods.some((p) => Object.keys(p.metadata.annotations ?? {}).some((k) => k.startsWith('lab.skein.io/'))),
      'the state the controller reads says nothing about netns or cgroups',
    );
    t.match(clientPod.cgroup, /kubepods\.slice\/kubepods-besteffort\.slice\/kubepods-besteffort-pod[0-9a-f_]+\.slice\/cri-containerd-[0-9a-f]{64}\.scope$/, 'the kubelet layout');
    const e = await enrolledNetns(clientPod.uid);
    t.ok(e, 'client-0 enrolled');
    t.match(e?.netns, /^\/proc\/\d+\/ns\/net$/, 'found through a process of the pod');
    t.equal(inode(e!.netns), inode(`/var/run/netns/${clientPod.netns}`), "and it is the pod's own netns");
  });

  await t.test('a forged lab.skein.io/netns annotation changes nothing', async (t) => {
    const before = await enrolledNetns(clientPod.uid);
    const echoBefore = await enrolledNetns(echoPod.uid);
    // The pod author points the agent at another pod's namespace on the same node.
    const forged = `/var/run/netns/${echoPod.netns}`;
    const target = rec.plan.pods.find((p) => p.uid === clientPod.uid)!;
    target.annotations = { ...target.annotations, 'lab.skein.io/netns': forged, 'lab.skein.io/cgroup': join(rec.cgroupRoot, echoPod.cgroup) };
    writeRecord(rec);
    writeKubeState(rec);
    // Wait until the agent has the forged object, then give its reconcile a moment.
    await waitUntil(async () => {
      const dump = await agentGet<{ snapshot: { workloads: { uid: string; annotations: Record<string, string> }[] } | null }>(rec, clientPod.node, '/config_dump');
      return dump.snapshot?.workloads.find((w) => w.uid === clientPod.uid)?.annotations['lab.skein.io/netns'] === forged;
    }, 15_000);
    await new Promise((r) => setTimeout(r, 1500));
    const after = await enrolledNetns(clientPod.uid);
    t.same(after, before, 'client-0 still enrolled in its own netns, same capture slot and cookie');
    t.equal(inode(after!.netns), inode(`/var/run/netns/${clientPod.netns}`));
    t.same(await enrolledNetns(echoPod.uid), echoBefore, 'the other pod untouched');
    const r = await client(rec, 'shop/client-0', ['--protocol', 'http1', '--target', 'echo.shop:80', '--count', '6', '--new-connection']);
    t.equal(r.ok, 6, `client-0 still served through its agent ${JSON.stringify(r.errors)}`);
  });

  await t.test('the process the agent found exits: the pod is found through another at once', async (t) => {
    const e = await enrolledNetns(clientPod.uid);
    const oldPid = Number(/^\/proc\/(\d+)\//.exec(e!.netns)?.[1]);
    t.ok(alive(oldPid), `found through pid ${oldPid}`);
    // Another process of the pod (as a second container would be), then the first one goes.
    const other = spawn('/bin/sh', enterArgs(join(rec.cgroupRoot, clientPod.cgroup), clientPod.netns, ['sleep', '120']), { detached: true, stdio: 'ignore' });
    t.teardown(() => other.kill('SIGKILL'));
    await waitUntil(async () => readFileSync(join(rec.cgroupRoot, clientPod.cgroup, 'cgroup.procs'), 'utf8').includes(`${other.pid}\n`), 5000);
    process.kill(oldPid, 'SIGKILL');
    await waitUntil(async () => !alive(oldPid), 5000);
    // Right away, before the agent's periodic reconcile: a connection leaving the mesh starts
    // from the pod's netns, which the agent must reach through the remaining process.
    const outside = spawn('nsenter', [`--net=/var/run/netns/${rec.plan.underlayNetns}`, process.execPath, '-e', `require('net').createServer(s=>s.end('outside\\n')).listen(18081,'${rec.plan.underlayGateway}')`]);
    t.teardown(() => outside.kill('SIGKILL'));
    await new Promise((r) => setTimeout(r, 300));
    const { stdout } = await exec('ip', ['netns', 'exec', clientPod.netns, 'curl', '-s', '--http0.9', '--max-time', '5', `http://${rec.plan.underlayGateway}:18081/`], { encoding: 'utf8' }).catch((err) => ({ stdout: String(err.stdout ?? '') }));
    t.match(stdout, 'outside', 'the passthrough connection was made from the pod netns');
    const r = await client(rec, 'shop/client-0', ['--protocol', 'http1', '--target', 'echo.shop:80', '--count', '4', '--new-connection']);
    t.equal(r.ok, 4, `and the mesh still serves the pod ${JSON.stringify(r.errors)}`);
    await waitUntil(async () => {
      const now = await agentGet<{ pods: { pod: string; state: string; netns?: string }[] }>(rec, clientPod.node, '/workloads');
      const p = now.pods.find((x) => x.pod === 'shop/client-0' && x.state === 'serving');
      return p?.netns === `/proc/${other.pid}/ns/net`;
    }, 10_000);
    t.pass('the agent now names the remaining process');
  });
});
