/**
 * The lab on the real kernel: a 2-node cluster of netns and cgroups, Services through
 * nftables DNAT, names through /etc/netns hosts files. No mesh here: plain pod-to-Service
 * traffic, which later suites put through skein.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { labDown, labGc, labUp } from '../../../src/lab/lab.js';
import { readRecord } from '../../../src/lab/registry.js';
import { cgroup2Root, listNetns, pidAlive } from '../../../src/lab/sys.js';
import { client, demoScenario, isRoot, repo, scenarioFile, startLab } from '../support/lab.js';

// Without root there is no netns or cgroup to make: every test here is skipped, and counted so.
const opts = () => ({ skip: isRoot() ? false : 'needs root (real netns and cgroups)' });

const skein = [process.execPath, join(repo, 'bin', 'skein.js')];
function skeinJson(args: string[]): unknown {
  return JSON.parse(execFileSync(skein[0]!, [...skein.slice(1), ...args], { encoding: 'utf8' }));
}

async function leftovers(id: string): Promise<string[]> {
  const found: string[] = [];
  for (const n of await listNetns()) if (n.includes(id)) found.push(`netns ${n}`);
  if (existsSync('/etc/netns')) for (const n of readdirSync('/etc/netns')) if (n.includes(id)) found.push(`/etc/netns/${n}`);
  if (existsSync(join(cgroup2Root(), 'skein.lab', id))) found.push(`cgroup skein.lab/${id}`);
  return found;
}

t.test('2-node lab: HTTP/1.1, h2c, gRPC and TCP reach pods on both nodes', opts(), async (t) => {
  const t0 = Date.now();
  const rec = await startLab(t);
  const upMs = Date.now() - t0;
  t.ok(upMs < 10_000, `lab up of 2 nodes and 6 pods took ${upMs} ms (< 10 s)`);
  t.equal(rec.plan.pods.length, 6);

  const target = 'echo.shop.svc.cluster.local';
  const from = 'shop/client-0'; // on node-a
  const runs = {
    http1: await client(rec, from, ['--protocol', 'http1', '--target', `${target}:80`, '--count', '40', '--concurrency', '4', '--new-connection']),
    h2c: await client(rec, from, ['--protocol', 'h2c', '--target', `${target}:8081`, '--count', '40', '--connections', '16']),
    grpc: await client(rec, from, ['--protocol', 'grpc', '--target', `${target}:9090`, '--count', '40', '--connections', '16']),
    grpcBidi: await client(rec, from, ['--protocol', 'grpc', '--grpc-call', 'bidi', '--target', `${target}:9090`, '--count', '32', '--connections', '16', '--size', '4096']),
    tcp: await client(rec, from, ['--protocol', 'tcp', '--target', `${target}:7070`, '--count', '40', '--size', '65536']),
  };
  for (const [name, s] of Object.entries(runs)) {
    t.equal(s.failed, 0, `${name}: no failures ${JSON.stringify(s.errors)}`);
    t.equal(s.ok, s.requests, `${name}: ${s.ok} of ${s.requests} answered`);
    t.same(Object.keys(s.byNode).sort(), ['node-a', 'node-b'], `${name}: replies from both nodes ${JSON.stringify(s.byNode)}`);
  }

  // A non-mesh namespace reaches the other namespace's Service too, by its full name.
  const legacy = await client(rec, 'legacy/client-0', ['--protocol', 'http1', '--target', 'echo.shop:80', '--count', '10', '--new-connection']);
  t.equal(legacy.ok, 10, 'legacy/client-0 -> echo.shop answered');

  const status = skeinJson(['lab', 'status', '--json', '--lab', rec.id]) as {
    nodes: { name: string; netns: string }[];
    namespaces: { name: string; labels: Record<string, string> }[];
    services: { namespace: string; name: string; vip: string; ports: unknown[] }[];
    pods: { namespace: string; name: string; node: string; ip: string; netns: string; cgroup: string; serviceAccount: string; running: boolean }[];
  };
  t.same(
    status.nodes.map((n) => n.name),
    ['node-a', 'node-b'],
  );
  t.equal(status.namespaces.find((n) => n.name === 'shop')?.labels['skein.io/mesh'], 'enabled');
  t.equal(status.services.length, 2);
  t.equal(status.pods.length, 6);
  t.ok(
    status.pods.every((p) => p.running && p.ip && p.netns && p.cgroup && p.serviceAccount),
    'every pod: running, with ip, netns, cgroup, service account',
  );
  // The pod's program runs inside its cgroup.
  const echo0 = rec.processes.find((p) => p.name === 'shop/echo-0')!;
  const procs = (await import('node:fs')).readFileSync(join(echo0.cgroup, 'cgroup.procs'), 'utf8');
  t.match(procs, String(echo0.pid), 'pod process lives in the pod cgroup');
});

t.test('lab exec returns the command exit code and runs inside the pod', opts(), async (t) => {
  const rec = await startLab(t);
  const pod = rec.plan.pods.find((p) => p.name === 'client-0' && p.namespace === 'legacy')!;
  const run = (args: string[]) =>
    new Promise<{ code: number; out: string }>((resolve) => {
      const child = spawn(skein[0]!, [...skein.slice(1), 'lab', 'exec', '--lab', rec.id, 'legacy/client-0', '--', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (c) => {
        out += c;
      });
      child.on('close', (code) => resolve({ code: code ?? -1, out }));
    });
  const ip = await run(['ip', '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
  t.equal(ip.code, 0);
  t.match(ip.out, pod.ip, 'sees the pod IP on eth0');
  t.equal((await run(['sh', '-c', 'exit 7'])).code, 7, 'exit code propagates');
  const hosts = await run(['getent', 'hosts', 'echo.shop.svc.cluster.local']);
  t.match(hosts.out, rec.plan.services.find((s) => s.namespace === 'shop')!.vip, 'Service names resolve in the pod');
});

t.test('lab down leaves nothing; a bad scenario creates nothing', opts(), async (t) => {
  const rec = await labUp({ scenarioFile: demoScenario, ownerPid: process.pid, mesh: false });
  const pids = rec.processes.map((p) => p.pid);
  await labDown(rec);
  t.same(await leftovers(rec.id), [], 'no netns, /etc/netns or cgroups left');
  t.ok(pids.every((p) => !pidAlive(p)), 'every pod process is gone');
  t.notOk(readRecord(join(rec.dir, '..'), rec.id), 'record removed');

  // Down with the record as it was at up, after a scale added a pod: the pod made later goes
  // too (the stray netns the e2e suite's closing gc found).
  const { scaleDeployment } = await import('../../../src/lab/mutate.js');
  const scaled = await labUp({ scenarioFile: demoScenario, ownerPid: process.pid, mesh: false });
  await scaleDeployment(scaled, 'shop/echo', 3);
  await labDown(scaled);
  t.same(await leftovers(scaled.id), [], 'no netns, /etc/netns or cgroups left after a scale-up');

  const before = (await listNetns()).length;
  const bad = scenarioFile('apiVersion: v1\nkind: Node\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: missing}\nspec: {ports: [{port: 80}]}\n');
  await t.rejects(labUp({ scenarioFile: bad, ownerPid: process.pid, mesh: false }), { code: 'SKEIN_LAB_SCENARIO_INVALID' });
  t.equal((await listNetns()).length, before, 'no netns created for a bad scenario');
});

t.test('lab gc removes a lab whose owner died', opts(), async (t) => {
  // The owner outlives the test's steps by far; the test kills it itself.
  const owner = spawn('sleep', ['600']);
  t.teardown(() => owner.kill('SIGKILL'));
  const rec = await labUp({ scenarioFile: demoScenario, ownerPid: owner.pid!, mesh: false });
  t.teardown(() => labDown(rec));
  const t0 = Date.now();
  const r1 = await labGc();
  t.notOk(r1.labs.includes(rec.id), `kept while its owner lives (gc took ${Date.now() - t0} ms)`);
  const exited = new Promise((r) => owner.once('exit', r));
  owner.kill('SIGKILL');
  await exited;
  const r2 = await labGc();
  t.ok(r2.labs.includes(rec.id), 'removed once its owner is gone');
  t.same(await leftovers(rec.id), []);
});

t.test('lab scale and lab label change the cluster while traffic flows', opts(), async (t) => {
  const rec = await startLab(t);
  const { labelNamespace, scaleDeployment } = await import('../../../src/lab/mutate.js');
  const { readFileSync } = await import('node:fs');
  // Open-loop traffic on fresh connections (DNAT picks an endpoint per connection) while the
  // Deployment grows to 4 and shrinks to 1.
  const load = client(rec, 'shop/client-0', ['--protocol', 'http1', '--target', 'echo:80', '--rate', '50', '--count', '300', '--new-connection', '--duration', '20']);
  await new Promise((r) => setTimeout(r, 500));
  const up = await scaleDeployment(rec, 'shop/echo', 4);
  t.same(
    up.added.map((p) => p.name).sort(),
    ['echo-2', 'echo-3'],
  );
  await new Promise((r) => setTimeout(r, 1500));
  const down = await scaleDeployment(rec, 'shop/echo', 1, { graceMs: 500 });
  t.same(
    down.removed.map((p) => p.name).sort(),
    ['echo-1', 'echo-2', 'echo-3'],
  );
  const s = await load;
  t.equal(s.failed, 0, `no failed request while scaling ${JSON.stringify(s.errors)}`);
  t.ok(s.byPod['shop/echo-2'] || s.byPod['shop/echo-3'], `new pods got traffic ${JSON.stringify(s.byPod)}`);
  const after = await client(rec, 'shop/client-0', ['--protocol', 'http1', '--target', 'echo:80', '--count', '20', '--new-connection']);
  t.same(Object.keys(after.byPod), ['shop/echo-0'], 'after scaling to 1 only echo-0 answers');
  const state = readFileSync(join(rec.stateDir, 'endpointslices.yaml'), 'utf8');
  t.equal((state.match(/addresses:/g) ?? []).length, 2 + 1, 'state folder: shop/echo has 1 endpoint, legacy/echo 2');

  await labelNamespace(rec, 'legacy', ['skein.io/mesh=enabled']);
  t.match(readFileSync(join(rec.stateDir, 'namespaces.yaml'), 'utf8'), /name: legacy\n(.*\n)*?\s+skein\.io\/mesh: enabled/);
  const labels = await labelNamespace(rec, 'legacy', ['skein.io/mesh-']);
  t.equal(labels['skein.io/mesh'], undefined, 'key- removes a label');
});
