/**
 * Capture in a real lab with the mesh running: the agents' eBPF programs steer enrolled pods'
 * traffic into their listeners, leave everyone else alone, and survive agent restarts.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { annotateNamespace, labelNamespace } from '../../../src/lab/mutate.js';
import { agentPidOf, pinRootOf, waitAgentReady } from '../../../src/lab/mesh.js';
import { labStatus } from '../../../src/lab/lab.js';
import { client, isRoot, startLab } from '../support/lab.js';
import { agentGet, isServing, outboundConnections, waitUntil } from '../support/mesh.js';

const exec = promisify(execFile);
const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });

t.test('capture in the lab', opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true, agentRestartBackoffMs: 200 });
  const shopClient = 'shop/client-0'; // node-a, enrolled
  const legacyClient = 'legacy/client-0'; // node-b, not enrolled

  await t.test('an enrolled pod reaches a Service VIP, a pod IP and an outside address through its agent', async (t) => {
    const echoPod = rec.plan.pods.find((p) => p.namespace === 'shop' && p.name === 'echo-1')!;
    // "Outside the cluster": a server in the underlay netns on the bridge address, which is no
    // pod and no Service, so the agent passes the connection through to exactly that address.
    const outside = spawn('nsenter', [`--net=/var/run/netns/${rec.plan.underlayNetns}`, process.execPath, '-e', `require('net').createServer(s=>s.end('outside:'+s.remoteAddress+'\\n')).listen(18080,'${rec.plan.underlayGateway}')`]);
    t.teardown(() => outside.kill('SIGKILL'));
    await new Promise((r) => setTimeout(r, 300));
    const before = await outboundConnections(rec, 'node-a');
    const vip = await client(rec, shopClient, ['--protocol', 'http1', '--target', `${rec.plan.services[0]!.vip}:80`, '--count', '4', '--new-connection']);
    t.equal(vip.ok, 4, 'VIP answered');
    const podIp = await client(rec, shopClient, ['--protocol', 'tcp', '--target', `${echoPod.ip}:7070`, '--count', '2', '--size', '1000']);
    t.equal(podIp.ok, 2, 'pod IP answered');
    t.same(Object.keys(podIp.byPod), ['shop/echo-1'], 'the pod IP it asked for, exactly');
    const { stdout } = await exec('ip', ['netns', 'exec', rec.plan.pods.find((p) => p.name === 'client-0' && p.namespace === 'shop')!.netns, 'curl', '-s', '--http0.9', '--max-time', '5', `http://${rec.plan.underlayGateway}:18080/`], { encoding: 'utf8' }).catch((e) => ({ stdout: String(e.stdout ?? '') }));
    const nodeA = rec.plan.nodes.find((n) => n.name === 'node-a')!;
    t.match(stdout, `outside:`, 'the outside server got the connection');
    // The agent connects from inside the pod netns, so the connection leaves the cluster like
    // the pod's own would: masqueraded to its node's address.
    t.match(stdout, nodeA.address, `from node-a's address (${stdout.trim()})`);
    const after = await outboundConnections(rec, 'node-a');
    t.ok(after - before >= 4 + 2 + 1, `node-a agent accepted the pod's connections (${after - before})`);
    const stats = await agentGet<{ outbound: { connections: { passthrough: number } } }>(rec, 'node-a', '/stats');
    t.ok(stats.outbound.connections.passthrough >= 1, 'the outside connection went through the passthrough path');
  });

  await t.test('a pod in a namespace without the label connects directly', async (t) => {
    const before = await outboundConnections(rec, 'node-b');
    const r = await client(rec, legacyClient, ['--protocol', 'http1', '--target', 'echo.legacy:80', '--count', '6', '--new-connection']);
    t.equal(r.ok, 6);
    t.equal(await outboundConnections(rec, 'node-b'), before, 'node-b agent saw none of it');
  });

  await t.test('inbound plaintext to an enrolled pod lands on 15006 (STRICT refuses); 15008 is not stolen', async (t) => {
    const echo0 = rec.plan.pods.find((p) => p.namespace === 'shop' && p.name === 'echo-0')!;
    const strict = await client(rec, legacyClient, ['--protocol', 'http1', '--target', `${echo0.ip}:8080`, '--count', '3', '--new-connection', '--timeout', '3']);
    t.equal(strict.ok, 0, `STRICT: refused ${JSON.stringify(strict.errors)}`);
    const inbound = await agentGet<{ inbound: { refused: number } }>(rec, 'node-a', '/stats');
    t.ok(inbound.inbound.refused >= 3, 'refusals counted by the agent that owns the pod');
    // 15008 answers with the tunnel's TLS: the server certificate names the pod's identity.
    const legacy = rec.plan.pods.find((p) => p.namespace === 'legacy' && p.name === 'client-0')!;
    const { stdout } = await exec('ip', ['netns', 'exec', legacy.netns, 'sh', '-c', `echo | timeout 5 openssl s_client -connect ${echo0.ip}:15008 -alpn h2 2>/dev/null | openssl x509 -noout -ext subjectAltName`], { encoding: 'utf8' });
    t.match(stdout, 'URI:spiffe://cluster.local/ns/shop/sa/echo', '15008 reached the tunnel server of that pod');
  });

  await t.test('enrol and release a running pod while a client loop runs', async (t) => {
    const load = client(rec, legacyClient, ['--protocol', 'http1', '--target', 'echo.legacy:80', '--rate', '20', '--count', '200', '--duration', '10', '--new-connection']);
    await new Promise((r) => setTimeout(r, 1000));
    // The migration runbook: PERMISSIVE while a namespace joins, so its own pods that join a
    // moment later (each node's agent acts on its own) are not refused as plaintext meanwhile.
    await annotateNamespace(rec, 'legacy', ['skein.io/peer-authentication=PERMISSIVE']);
    await labelNamespace(rec, 'legacy', ['skein.io/mesh=enabled']);
    const onMs = await waitUntil(() => isServing(rec, 'node-b', legacyClient), 5000);
    t.ok(onMs < 1000, `capture on within ${onMs} ms of the label`);
    const before = await outboundConnections(rec, 'node-b');
    await new Promise((r) => setTimeout(r, 1500));
    t.ok((await outboundConnections(rec, 'node-b')) > before, 'its connections now go through the agent');
    await labelNamespace(rec, 'legacy', ['skein.io/mesh-']);
    const offMs = await waitUntil(async () => !(await isServing(rec, 'node-b', legacyClient)), 5000);
    t.ok(offMs < 1000, `capture off within ${offMs} ms of removing the label`);
    const s = await load;
    t.equal(s.failed, 0, `no failed request across enrol and release ${JSON.stringify(s.errors)}`);
    const pod = rec.plan.pods.find((p) => p.namespace === 'legacy' && p.name === 'client-0')!;
    const { stdout: ss } = await exec('ip', ['netns', 'exec', pod.netns, 'ss', '-Hltn'], { encoding: 'utf8' });
    t.notMatch(ss, /:1500[168]\b/, 'no skein listener left in the released pod');
    const { stdout: links } = await exec('bpftool', ['-j', 'link', 'show'], { encoding: 'utf8' });
    const podIno = (await exec('stat', ['-Lc', '%i', `/var/run/netns/${pod.netns}`], { encoding: 'utf8' })).stdout.trim();
    const skLookups = (JSON.parse(links) as { type: string; netns_ino?: number }[]).filter((l) => l.type === 'netns' && String(l.netns_ino) === podIno);
    t.equal(skLookups.length, 0, 'no sk_lookup link left in its netns');
  });

  await t.test('SIGKILL the agent, the lab restarts it: pins adopted, one copy, capture works', async (t) => {
    // Other labs may run agents too: look at this lab's pinned links only.
    const linkProg = async (node: string) => {
      const { stdout } = await exec('bpftool', ['-j', 'link', 'show', 'pinned', `${pinRootOf(rec, node)}/links/connect4`], { encoding: 'utf8' });
      return (JSON.parse(stdout) as { prog_id: number }).prog_id;
    };
    const attachedAtRoot = async () => {
      const { stdout } = await exec('bpftool', ['-j', 'cgroup', 'show', rec.cgroupRoot], { encoding: 'utf8' });
      return (JSON.parse(stdout) as { id: number; name?: string }[]).filter((p) => p.name === 'skein_connect4').map((p) => p.id);
    };
    const oldProg = await linkProg('node-a');
    t.ok((await attachedAtRoot()).includes(oldProg), `node-a's connect4 (prog ${oldProg}) attached at the cgroup root`);
    const oldPid = agentPidOf(rec, 'node-a')!;
    process.kill(oldPid, 'SIGKILL');
    // The lab's supervisor restarts it (back-off 200 ms here), as the kubelet would.
    await waitUntil(async () => {
      const pid = agentPidOf(rec, 'node-a');
      return pid !== undefined && pid !== oldPid;
    }, 15_000);
    const node = rec.plan.nodes.find((n) => n.name === 'node-a')!;
    const pid = agentPidOf(rec, 'node-a')!;
    await waitAgentReady(rec, node, { kind: 'agent', name: 'node-a', pid, log: '', cgroup: '', netns: node.netns });
    t.equal(labStatus(rec).agents.find((a) => a.node === 'node-a')?.restarts, 1, 'lab status counts one restart');
    await waitUntil(() => isServing(rec, 'node-a', shopClient), 5000);
    const newProg = await linkProg('node-a');
    const attached = await attachedAtRoot();
    t.ok(attached.includes(newProg), `the restarted agent's program (${newProg}) is the one attached`);
    t.not(newProg, oldProg, 'the restarted agent swapped its own program into the pinned link');
    t.notOk(attached.includes(oldProg), 'the old program is no longer attached (adopted, not stacked)');
    t.equal(attached.filter((id) => id === newProg).length, 1, 'attached once');
    const r = await client(rec, shopClient, ['--protocol', 'h2c', '--target', 'echo.shop:8081', '--count', '10']);
    t.equal(r.ok, 10, 'capture works again');
    t.match((await exec('ls', [`${pinRootOf(rec, 'node-a')}/links`], { encoding: 'utf8' })).stdout, /connect4/, 'links still pinned');
  });
});
