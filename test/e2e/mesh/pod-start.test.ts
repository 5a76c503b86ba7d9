/**
 * No plaintext window at pod start (issue 14): the lab makes pods as a node's runtime does —
 * a netns, then the node's CNI conflist run by the CNI protocol (ptp + static IPAM from
 * Debian's containernetworking-plugins, then skein-cni, chained by the lab the way `skein cni
 * install` chains it). skein-cni's ADD for a pod of a meshed namespace returns only once the
 * node's agent captured the new netns, so a program that connects the moment the pod starts
 * is already captured.
 *
 * The starter pods run curl as their only process: it connects to the meshed echo Service
 * the instant the pod starts. echo is STRICT (the default): a connection that reached it
 * uncaptured would be refused by its sk_lookup/15006 path, so every 200 is a captured
 * connection; the destination agents' Istio metrics must count every one of them from the
 * starter workload over mutual TLS (an identity only the mesh can give).
 *
 * The stand-ins: no kubelet or container runtime runs here; the lab's cni-runtime.ts is the
 * runtime's CNI side (libcni's protocol, run in the node's netns), and a refused ADD is not
 * retried by a kubelet: the test retries the pod start itself.
 */
import { existsSync, readFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { agentPidOf, startAgent, waitAgentReady, cniSocketOf } from '../../../src/lab/mesh.js';
import { scaleDeployment } from '../../../src/lab/mutate.js';
import { deletePod, nodeCniOf } from '../../../src/lab/network.js';
import { readRecord } from '../../../src/lab/registry.js';
import type { LabRecord } from '../../../src/lab/registry.js';
import { isRoot, scenarioFile, startLab } from '../support/lab.js';
import { agentGet, waitUntil } from '../support/mesh.js';
import { dirname, join } from 'node:path';

const exec = promisify(execFile);
const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });

const ROUNDS = 5;
const PER_ROUND = 10; // 5 rounds x 10 pods = 50 pod starts, spread over both nodes

const SCENARIO = `
apiVersion: lab.skein.io/v1alpha1
kind: LabCluster
metadata: { name: pod-start }
spec: { serviceCIDR: 10.96.0.0/16, underlayCIDR: 172.20.0.0/16, trustDomain: cluster.local }
---
apiVersion: v1
kind: Node
metadata: { name: node-a }
spec: { podCIDR: 10.244.1.0/24 }
---
apiVersion: v1
kind: Node
metadata: { name: node-b }
spec: { podCIDR: 10.244.2.0/24 }
---
apiVersion: v1
kind: Namespace
metadata: { name: shop, labels: { skein.io/mesh: enabled } }
---
apiVersion: v1
kind: Namespace
metadata: { name: legacy }
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: echo, namespace: shop }
---
apiVersion: v1
kind: ServiceAccount
metadata: { name: starter, namespace: shop }
---
apiVersion: v1
kind: Service
metadata: { name: echo, namespace: shop }
spec:
  selector: { app: echo }
  ports: [{ name: http, port: 80, targetPort: 8080, appProtocol: http }]
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: echo, namespace: shop }
spec:
  replicas: 2
  selector: { matchLabels: { app: echo } }
  template:
    metadata: { labels: { app: echo } }
    spec:
      serviceAccountName: echo
      containers: [{ name: echo, image: skein/echo, args: ["--http", "8080", "--grpc", "0", "--tcp", "0"] }]
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: starter, namespace: shop }
spec:
  replicas: 0
  selector: { matchLabels: { app: starter } }
  template:
    metadata: { labels: { app: starter } }
    spec:
      serviceAccountName: starter
      containers:
        - name: starter
          image: curl
          command: ["curl", "-sS", "-o", "/dev/null", "-w", "status=%{http_code}\\\\n", "--max-time", "10", "http://echo.shop.svc.cluster.local/headers"]
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: plain, namespace: legacy }
spec:
  replicas: 2
  selector: { matchLabels: { app: plain } }
  template:
    metadata: { labels: { app: plain } }
    spec:
      containers: [{ name: plain, image: skein/echo, args: ["--http", "8080", "--grpc", "0", "--tcp", "0"] }]
`;

interface Workloads {
  pods: { uid: string; pod: string; state: string }[];
}

function podLog(rec: LabRecord, ns: string, name: string): string {
  const f = join(rec.logDir, `${ns}.${name}.log`);
  return existsSync(f) ? readFileSync(f, 'utf8') : '';
}

/** Sum of istio_requests_total samples whose labels include every one of `want`. */
function sumRequests(metrics: string, want: Record<string, string>): number {
  let sum = 0;
  for (const line of metrics.split('\n')) {
    if (!line.startsWith('istio_requests_total{')) continue;
    if (!Object.entries(want).every(([k, v]) => line.includes(`${k}="${v}"`))) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

async function metricsOf(rec: LabRecord, node: string): Promise<string> {
  const n = rec.plan.nodes.find((x) => x.name === node)!;
  return (await exec('ip', ['netns', 'exec', n.netns, 'curl', '-s', '--max-time', '5', 'http://127.0.0.1:15020/metrics'])).stdout;
}

const fresh = (rec: LabRecord) => readRecord(dirname(rec.dir), rec.id) ?? rec;

t.test('pods start captured: 50 immediate connects all through the mesh; DEL releases; agent down holds meshed pods only', opts(), async (t) => {
  const rec = await startLab(t, scenarioFile(SCENARIO), { mesh: true });
  const conflist = JSON.parse(readFileSync(join(rec.dir, 'cni', 'node-a', 'net.d', '10-skein-lab.conflist'), 'utf8')) as { plugins: { type: string; agent_socket?: string }[] };
  t.same(
    conflist.plugins.map((p) => p.type),
    ['ptp', 'skein-cni'],
    'the node conflist: the pod network plugin, then skein-cni chained last',
  );
  t.equal(conflist.plugins[1]?.agent_socket, cniSocketOf(rec, 'node-a'), "skein-cni asks node-a's agent");

  // (a) 50 pod starts, each pod's only program connecting at once.
  let starts = 0;
  const statuses: string[] = [];
  const served = new Set<string>();
  for (let round = 0; round < ROUNDS; round++) {
    const { added } = await scaleDeployment(fresh(rec), 'shop/starter', PER_ROUND, { readyTimeoutMs: 30_000 });
    starts += added.length;
    for (const p of added) served.add(p.uid);
    // curl exits after its one request; its line is in the pod's log.
    await waitUntil(async () => added.every((p) => /status=\d+/.test(podLog(rec, p.namespace, p.name))), 20_000, 100);
    for (const p of added) statuses.push(/status=(\d+)/.exec(podLog(rec, p.namespace, p.name))?.[1] ?? `none: ${podLog(rec, p.namespace, p.name).trim()}`);
    if (round === 0) {
      // (c) CNI DEL alone releases: the pod is still in the API (and the agent's config), its
      // sandbox is torn down (curl has exited, as a container stopped by the kubelet).
      const p = added[0]!;
      const before = await agentGet<{ enrolled: { uid: string }[] }>(rec, p.node, '/capture');
      t.ok(before.enrolled.some((e) => e.uid === p.uid), `${p.name} is in ${p.node}'s capture before DEL`);
      await deletePod(fresh(rec).plan, p, nodeCniOf(rec.dir, p.node));
      const after = await agentGet<{ enrolled: { uid: string }[] }>(rec, p.node, '/capture');
      t.notOk(after.enrolled.some((e) => e.uid === p.uid), `CNI DEL released ${p.name}'s capture while the pod object still exists`);
      const w = await agentGet<Workloads>(rec, p.node, '/workloads');
      t.notOk(w.pods.some((x) => x.uid === p.uid && x.state === 'serving'), 'and the agent no longer serves it');
    }
    await scaleDeployment(fresh(rec), 'shop/starter', 0, { graceMs: 0 });
  }
  t.equal(starts, ROUNDS * PER_ROUND, `${starts} starter pods started`);
  const ok = statuses.filter((s) => s === '200').length;
  t.equal(ok, ROUNDS * PER_ROUND, `every first connection answered 200 by the STRICT echo (${ok}/${statuses.length}; others: ${JSON.stringify(statuses.filter((s) => s !== '200'))})`);
  const [ma, mb] = await Promise.all([metricsOf(rec, 'node-a'), metricsOf(rec, 'node-b')]);
  const viaMesh =
    sumRequests(ma, { reporter: 'destination', source_workload: 'starter', connection_security_policy: 'mutual_tls', response_code: '200' }) +
    sumRequests(mb, { reporter: 'destination', source_workload: 'starter', connection_security_policy: 'mutual_tls', response_code: '200' });
  t.equal(viaMesh, ROUNDS * PER_ROUND, `the destination agents counted ${viaMesh} requests from the starter workload over mutual TLS`);

  // (c) DEL released: no starter pod is left in either agent's capture or workloads.
  for (const node of ['node-a', 'node-b']) {
    const capture = await agentGet<{ enrolled: { uid: string }[] }>(rec, node, '/capture');
    const left = capture.enrolled.filter((e) => served.has(e.uid));
    t.same(left, [], `${node}: no capture slot left for the ${served.size} deleted starter pods`);
    const w = await agentGet<Workloads>(rec, node, '/workloads');
    t.same(
      w.pods.filter((p) => p.pod.startsWith('shop/starter-')),
      [],
      `${node}: no starter pod served or failing`,
    );
  }

  // (b) node-a's agent stops: a meshed pod cannot start there; a pod of legacy (outside the
  // mesh, as the agent last said) still does.
  // The lab supervises each agent as the kubelet would (a dead one is restarted): stop its
  // supervisor, which stops the agent and does not restart it, as a node without its agent.
  const agentA = fresh(rec).processes.find((p) => p.kind === 'agent' && p.name === 'node-a')!;
  const supervisorA = fresh(rec).processes.find((p) => p.kind === 'supervisor' && p.name === 'node-a')!;
  const agentPidA = agentPidOf(rec, 'node-a') ?? agentA.pid;
  process.kill(supervisorA.pid, 'SIGTERM');
  const gone = (pid: number) => {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  };
  await waitUntil(async () => gone(agentPidA) && gone(supervisorA.pid), 15_000);
  t.ok(existsSync(`${cniSocketOf(rec, 'node-a')}.unmeshed-namespaces`), 'the agent left its list of namespaces outside the mesh');
  // starter-0 lands on node-a (pods go round-robin over the nodes, from node-a).
  const refused = await scaleDeployment(fresh(rec), 'shop/starter', 1, { readyTimeoutMs: 30_000 }).then(
    () => undefined,
    (err: unknown) => err as { code?: string; message?: string; details?: { cniCode?: number; details?: string } },
  );
  t.ok(refused, 'the meshed pod did not start while its agent is down');
  t.equal(refused?.code, 'SKEIN_LAB_CNI_FAILED', `the CNI chain refused it: ${refused?.message}`);
  t.equal(refused?.details?.cniCode, 11, 'skein-cni answered CNI error 11 (try again later)');
  t.match(refused?.details?.details ?? '', /SKEIN_AGENT_CNI_UNREACHABLE/, 'naming the unreachable agent');
  t.notOk(fresh(rec).plan.pods.some((p) => p.namespace === 'shop' && p.name.startsWith('starter-')), 'no starter pod left in the lab');
  const legacy = await scaleDeployment(fresh(rec), 'legacy/plain', 3, { readyTimeoutMs: 30_000 });
  t.equal(legacy.added[0]?.node, 'node-a', 'the new legacy pod is on node-a');
  t.equal(legacy.added.length, 1, 'a pod of legacy (outside the mesh) starts while the agent is down');

  // The agent back: the same pod start succeeds (the kubelet's retry) and is captured.
  const r = fresh(rec);
  const node = r.plan.nodes.find((n) => n.name === 'node-a')!;
  const started = await startAgent(r, node);
  const proc = started.agent;
  r.processes = r.processes.filter((p) => p.pid !== agentA.pid && p.pid !== supervisorA.pid).concat(started.supervisor, proc);
  const { writeRecord } = await import('../../../src/lab/registry.js');
  writeRecord(r);
  await waitAgentReady(r, node, proc);
  const again = await scaleDeployment(fresh(rec), 'shop/starter', 1, { readyTimeoutMs: 30_000 });
  t.equal(again.added.length, 1, 'with the agent back the meshed pod starts');
  const p = again.added[0]!;
  await waitUntil(async () => /status=\d+/.test(podLog(rec, p.namespace, p.name)), 20_000, 100);
  t.match(podLog(rec, p.namespace, p.name), /status=200/, 'and its first connection goes through the mesh');
  const w = await agentGet<Workloads>(rec, 'node-a', '/workloads');
  t.ok(
    w.pods.some((x) => x.uid === p.uid && x.state === 'serving'),
    'node-a serves it',
  );
});
