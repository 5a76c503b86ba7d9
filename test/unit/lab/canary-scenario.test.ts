// deploy/local/canary.yaml, the traffic-management scenario: two echo versions behind their
// own Services and a parent one, nodes in two zones whose labels reach the Node objects and
// EndpointSlices, and container args the echo accepts.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { renderKubeState } from '../../../src/lab/kube-state.js';
import { planLab } from '../../../src/lab/plan.js';
import { containerCommand } from '../../../src/lab/processes.js';
import { parseScenario } from '../../../src/lab/scenario.js';
import { echoOptionsFromArgs } from '../../../src/lab/workloads/echo.js';

const path = join(import.meta.dirname, '../../../deploy/local/canary.yaml');
const sc = parseScenario(readFileSync(path, 'utf8'), path);
const ZONE = 'topology.kubernetes.io/zone';

t.test('canary parses: zones, two meshed namespaces, three Services, two versions and a client in each namespace', async (t) => {
  t.same(
    sc.nodes.map((n) => [n.name, n.labels[ZONE]]),
    [
      ['node-a', 'zone-a'],
      ['node-b', 'zone-b'],
    ],
  );
  t.equal(sc.namespaces.find((n) => n.name === 'shop')?.labels['skein.io/mesh'], 'enabled');
  t.equal(sc.namespaces.find((n) => n.name === 'front')?.labels['skein.io/mesh'], 'enabled', 'front: the consumer-route and second-source namespace');
  t.same(
    sc.services.map((s) => [s.name, s.selector]),
    [
      ['echo', { app: 'echo' }],
      ['echo-v1', { app: 'echo', version: 'v1' }],
      ['echo-v2', { app: 'echo', version: 'v2' }],
    ],
  );
  t.same(
    sc.deployments.map((d) => [d.name, d.replicas, d.podLabels]),
    [
      ['echo-v1', 2, { app: 'echo', version: 'v1' }],
      ['echo-v2', 1, { app: 'echo', version: 'v2' }],
      ['client', 1, { app: 'client' }],
      ['client', 1, { app: 'client' }],
    ],
  );
});

t.test('canary plan: placement across zones, endpoints per Service', async (t) => {
  const plan = planLab(sc, 'abc123');
  t.same(
    plan.pods.map((p) => [`${p.namespace}/${p.name}`, p.node]),
    [
      ['shop/echo-v1-0', 'node-a'],
      ['shop/echo-v1-1', 'node-b'],
      ['shop/echo-v2-0', 'node-b'],
      ['shop/client-0', 'node-a'],
      ['front/client-0', 'node-a'],
    ],
  );
  const eps = (name: string) =>
    plan.services
      .find((s) => s.name === name)!
      .endpoints.map((e) => e.pod)
      .sort();
  t.same(eps('echo'), ['echo-v1-0', 'echo-v1-1', 'echo-v2-0']);
  t.same(eps('echo-v1'), ['echo-v1-0', 'echo-v1-1']);
  t.same(eps('echo-v2'), ['echo-v2-0']);
  const echo = plan.pods.find((p) => p.name === 'echo-v2-0')!;
  t.same(containerCommand(echo).slice(-8), ['workload', 'echo', '--http', '8080', '--grpc', '9090', '--tcp', '0'], 'args reach the echo process');
});

t.test('canary kube state: Nodes carry their zone, and so do EndpointSlice endpoints', async (t) => {
  const plan = planLab(sc, 'abc123');
  const files = renderKubeState(plan, sc, '2026-01-01T00:00:00Z');
  const nodes = files['nodes.yaml'] as { metadata: { name: string; labels: Record<string, string> } }[];
  t.same(
    nodes.map((n) => [n.metadata.name, n.metadata.labels[ZONE], n.metadata.labels['kubernetes.io/hostname']]),
    [
      ['node-a', 'zone-a', 'node-a'],
      ['node-b', 'zone-b', 'node-b'],
    ],
  );
  const slices = files['endpointslices.yaml'] as { metadata: { labels: Record<string, string> }; endpoints: { nodeName: string; zone?: string; targetRef: { name: string } }[] }[];
  const parent = slices.find((s) => s.metadata.labels['kubernetes.io/service-name'] === 'echo')!;
  t.same(
    parent.endpoints.map((e) => [e.targetRef.name, e.nodeName, e.zone]).sort(),
    [
      ['echo-v1-0', 'node-a', 'zone-a'],
      ['echo-v1-1', 'node-b', 'zone-b'],
      ['echo-v2-0', 'node-b', 'zone-b'],
    ],
  );
});

t.test('the echo takes its container args: ports and faults', async (t) => {
  for (const d of sc.deployments.filter((x) => x.container.image === 'skein/echo')) {
    t.match(echoOptionsFromArgs(d.container.args), { http: 8080, grpc: 9090, tcp: 0, faults: { failRatio: 0, delayMs: 0 } }, d.name);
  }
  t.same(echoOptionsFromArgs(['--fail-ratio', '0.3', '--delay-ms', '20']).faults, { failStatus: 503, failRatio: 0.3, delayMs: 20 });
  t.same(echoOptionsFromArgs(['--fail-status', '500']).faults, { failStatus: 500, failRatio: 1, delayMs: 0 });
  t.throws(() => echoOptionsFromArgs(['--fail-ratio', '30%']), /--fail-ratio/);
  t.throws(() => echoOptionsFromArgs(['--fail-rate', '0.3']), /Unknown option/);
});
