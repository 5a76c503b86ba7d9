import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { hasCode } from '../../../src/errors.js';
import { addressAt, cidrContains, intToIp, ipToInt, isIPv4, parseCidr } from '../../../src/lab/ipam.js';
import { renderKubeState } from '../../../src/lab/kube-state.js';
import { planLab } from '../../../src/lab/plan.js';
import { renderNodeHosts, renderPodHosts, renderServiceRules } from '../../../src/lab/render.js';
import { parseScenario } from '../../../src/lab/scenario.js';

const demoPath = join(import.meta.dirname, '../../../deploy/local/demo.yaml');
const demo = parseScenario(readFileSync(demoPath, 'utf8'), demoPath);

t.test('ipam', async (t) => {
  t.ok(isIPv4('10.0.0.1'));
  t.notOk(isIPv4('10.0.0.256'));
  t.notOk(isIPv4('10.0.0'));
  t.equal(intToIp(ipToInt('172.20.3.4')), '172.20.3.4');
  const c = parseCidr('10.244.1.77/24')!;
  t.equal(addressAt(c, 0), '10.244.1.0', 'base is aligned');
  t.equal(addressAt(c, 10), '10.244.1.10');
  t.throws(() => addressAt(c, 256));
  t.ok(cidrContains(c, '10.244.1.255'));
  t.notOk(cidrContains(c, '10.244.2.0'));
  t.equal(parseCidr('10.0.0.0/33'), null);
  t.equal(parseCidr('nonsense'), null);
});

t.test('demo plan: names, addresses, placement', async (t) => {
  const plan = planLab(demo, 'abc123');
  t.equal(plan.prefix, 'skein-abc123');
  t.equal(plan.underlayNetns, 'skein-abc123-underlay');
  t.same(
    plan.nodes.map((n) => [n.name, n.netns, n.address, n.podCIDR]),
    [
      ['node-a', 'skein-abc123-node-node-a', '172.20.0.11', '10.244.1.0/24'],
      ['node-b', 'skein-abc123-node-node-b', '172.20.0.12', '10.244.2.0/24'],
    ],
  );
  const echo = plan.pods.filter((p) => p.namespace === 'shop' && p.deployment === 'echo');
  t.same(
    echo.map((p) => p.node),
    ['node-a', 'node-b'],
    'replicas spread over nodes',
  );
  for (const p of plan.pods) {
    const node = plan.nodes.find((n) => n.name === p.node)!;
    t.ok(cidrContains(parseCidr(node.podCIDR)!, p.ip), `${p.name} IP inside its node's CIDR`);
    t.match(p.netns, /^skein-abc123-pod-/);
    t.match(p.cgroup, /^skein\.lab\/abc123\//);
  }
  t.equal(new Set(plan.pods.map((p) => p.ip)).size, plan.pods.length, 'pod IPs unique');
  t.equal(new Set(plan.pods.map((p) => p.hostIf)).size, plan.pods.length, 'host veth names unique');
  t.ok(plan.pods.every((p) => p.hostIf.length <= 15), 'interface names fit IFNAMSIZ');
  const client = plan.pods.find((p) => p.namespace === 'shop' && p.deployment === 'client')!;
  t.equal(client.node, 'node-a', 'nodeSelector honoured');
  const svc = plan.services.find((s) => s.namespace === 'shop')!;
  t.equal(svc.vip, '10.96.0.10');
  t.equal(svc.endpoints.length, 2);
  t.same(svc.endpoints[0]!.ports, { http: 8080, h2c: 8080, grpc: 9090, tcp: 7070 });
  t.equal(plan.services.find((s) => s.namespace === 'legacy')!.vip, '10.96.0.11');
});

t.test('overlapping CIDRs are refused', async (t) => {
  const sc = parseScenario(
    'apiVersion: v1\nkind: Node\nmetadata: {name: a}\nspec: {podCIDR: 10.96.1.0/24}\n',
    'overlap.yaml',
  );
  let caught: unknown;
  try {
    planLab(sc, 'aaaaaa');
  } catch (err) {
    caught = err;
  }
  t.ok(hasCode(caught, 'SKEIN_LAB_PLAN_INVALID'), 'SKEIN_LAB_PLAN_INVALID');
  t.match((caught as Error).message, /pod CIDR of node a.*overlaps the service CIDR|service CIDR.*overlaps the pod CIDR of node a/);
});

t.test('service rules: DNAT to every endpoint, reset without endpoints', async (t) => {
  const sc = parseScenario(
    `${readFileSync(demoPath, 'utf8')}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: empty, namespace: shop}\nspec: {selector: {app: none}, ports: [{port: 80}]}\n`,
    'x.yaml',
  );
  const plan = planLab(sc, 'abc123');
  const rules = renderServiceRules(plan);
  const shop = plan.services.find((s) => s.name === 'echo' && s.namespace === 'shop')!;
  const [e0, e1] = shop.endpoints;
  t.match(rules, `dnat ip to numgen random mod 2 map { 0 : ${e0!.ip} . 8080, 1 : ${e1!.ip} . 8080 }`);
  t.match(rules, `${shop.vip} . 9090 : jump`);
  t.match(rules, 'reject with tcp reset', 'a Service without endpoints resets');
  t.match(rules, /^table ip skein_lab_services\ndelete table ip skein_lab_services\n/, 'replaces the table in one transaction');
  const pod = plan.pods.find((p) => p.namespace === 'shop')!;
  const hosts = renderPodHosts(plan, pod);
  t.match(hosts, `${shop.vip}\techo.shop.svc.cluster.local echo.shop.svc echo.shop echo\n`);
  t.match(hosts, /10\.96\.0\.11\techo\.legacy\.svc\.cluster\.local echo\.legacy\.svc echo\.legacy\n/, 'other namespaces without short name');
  t.match(renderNodeHosts(plan), '172.20.0.11\tnode-a');
});

t.test('kube state: Kubernetes-shaped objects', async (t) => {
  const plan = planLab(demo, 'abc123');
  const files = renderKubeState(plan, demo, '2026-01-01T00:00:00Z');
  const pods = files['pods.yaml']!;
  t.equal(pods.length, plan.pods.length);
  const p = pods[0] as { metadata: { uid: string; annotations: Record<string, string> }; spec: { nodeName: string }; status: { podIP: string } };
  t.equal(p.metadata.uid, plan.pods[0]!.uid);
  t.equal(p.spec.nodeName, plan.pods[0]!.node);
  t.equal(p.status.podIP, plan.pods[0]!.ip);
  t.notOk(
    Object.keys(p.metadata.annotations ?? {}).some((k) => k.startsWith('lab.skein.io/')),
    'no lab.skein.io/ annotation tells the agent where a pod is: it finds pods by UID',
  );
  // Pods' cgroups in the kubelet's layout (systemd driver, containerd, BestEffort).
  const u = plan.pods[0]!.uid;
  t.match(
    plan.pods[0]!.cgroup,
    new RegExp(`^skein\\.lab/abc123/${plan.pods[0]!.node}/kubepods\\.slice/kubepods-besteffort\\.slice/kubepods-besteffort-pod${u.replaceAll('-', '_')}\\.slice/cri-containerd-[0-9a-f]{64}\\.scope$`),
  );
  const slices = files['endpointslices.yaml'] as { metadata: { labels: Record<string, string> }; endpoints: { addresses: string[]; nodeName: string }[]; ports: { name: string; port: number }[] }[];
  const shop = slices.find((s) => s.metadata.labels['kubernetes.io/service-name'] === 'echo')!;
  t.equal(shop.endpoints.length, 2);
  t.same(new Set(shop.endpoints.map((e) => e.nodeName)), new Set(['node-a', 'node-b']));
  t.ok(shop.ports.find((x) => x.name === 'grpc' && x.port === 9090));
  const ns = files['namespaces.yaml'] as { metadata: { name: string; labels: Record<string, string> } }[];
  t.equal(ns.find((n) => n.metadata.name === 'shop')!.metadata.labels['skein.io/mesh'], 'enabled');
  const sas = files['serviceaccounts.yaml'] as { metadata: { name: string; namespace: string } }[];
  t.ok(sas.find((s) => s.metadata.namespace === 'legacy' && s.metadata.name === 'default'), 'default SA per namespace');
});
