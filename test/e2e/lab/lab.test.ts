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

if (!isRoot()) {
  t.skip('lab e2e needs root');
  process.exit(0);
}

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

t.test('2-node lab: HTTP/1.1, h2c, gRPC and TCP reach pods on both nodes', async (t) => {
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

t.test('lab exec returns the command exit code and runs inside the pod', async (t) => {
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

t.test('lab down leaves nothing; a bad scenario creates nothing', async (t) => {
  const rec = await labUp({ scenarioFile: demoScenario, ownerPid: process.pid });
  const pids = rec.processes.map((p) => p.pid);
  await labDown(rec);
  t.same(await leftovers(rec.id), [], 'no netns, /etc/netns or cgroups left');
  t.ok(pids.every((p) => !pidAlive(p)), 'every pod process is gone');
  t.notOk(readRecord(join(rec.dir, '..'), rec.id), 'record removed');

  const before = (await listNetns()).length;
  const bad = scenarioFile('apiVersion: v1\nkind: Node\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: missing}\nspec: {ports: [{port: 80}]}\n');
  await t.rejects(labUp({ scenarioFile: bad, ownerPid: process.pid }), { code: 'SKEIN_LAB_SCENARIO_INVALID' });
  t.equal((await listNetns()).length, before, 'no netns created for a bad scenario');
});

t.test('lab gc removes a lab whose owner died', async (t) => {
  const owner = spawn('sleep', ['30']);
  const rec = await labUp({ scenarioFile: demoScenario, ownerPid: owner.pid! });
  t.teardown(() => labDown(rec));
  const r1 = await labGc();
  t.notOk(r1.labs.includes(rec.id), 'kept while its owner lives');
  owner.kill('SIGKILL');
  await new Promise((r) => owner.once('exit', r));
  const r2 = await labGc();
  t.ok(r2.labs.includes(rec.id), 'removed once its owner is gone');
  t.same(await leftovers(rec.id), []);
});
