import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { hasCode } from '../../../src/errors.js';
import { parseScenario } from '../../../src/lab/scenario.js';

const demoPath = join(import.meta.dirname, '../../../deploy/local/demo.yaml');
const demo = readFileSync(demoPath, 'utf8');

const base = `apiVersion: v1
kind: Node
metadata: {name: a}
---
apiVersion: v1
kind: Namespace
metadata: {name: ns}
`;

function refused(t: Tap.Test, text: string, field: RegExp, reason: RegExp) {
  try {
    parseScenario(text, 'bad.yaml');
  } catch (err) {
    t.ok(hasCode(err, 'SKEIN_LAB_SCENARIO_INVALID'), `code: ${(err as Error).message}`);
    const d = (err as { details: { file: string; field: string; reason: string } }).details;
    t.equal(d.file, 'bad.yaml', 'names the file');
    t.match(d.field, field, 'names the field');
    t.match(d.reason, reason, 'gives the reason');
    t.match((err as Error).message, /^bad\.yaml: document \d+: /, 'message starts with file and document');
    return;
  }
  t.fail('accepted a bad scenario');
}

declare global {
  namespace Tap {
    type Test = import('tap').Test;
  }
}

t.test('the demo scenario parses', async (t) => {
  const sc = parseScenario(demo, demoPath);
  t.same(
    sc.nodes.map((n) => n.name),
    ['node-a', 'node-b'],
  );
  t.equal(sc.namespaces.find((n) => n.name === 'shop')?.labels['skein.io/mesh'], 'enabled');
  t.equal(sc.namespaces.find((n) => n.name === 'legacy')?.labels['skein.io/mesh'], undefined);
  const svc = sc.services.find((s) => s.namespace === 'shop')!;
  t.same(
    svc.ports.map((p) => [p.name, p.port, p.targetPort, p.appProtocol]),
    [
      ['http', 80, 8080, 'http'],
      ['h2c', 8081, 8080, 'kubernetes.io/h2c'],
      ['grpc', 9090, 9090, 'grpc'],
      ['tcp', 7070, 7070, 'tcp'],
    ],
  );
  const client = sc.deployments.find((d) => d.namespace === 'shop' && d.name === 'client')!;
  t.same(client.nodeSelector, { 'kubernetes.io/hostname': 'node-a' });
  t.equal(client.serviceAccountName, 'client');
  t.equal(sc.cluster.trustDomain, 'cluster.local');
});

t.test('bad scenarios are refused naming file, field and reason', async (t) => {
  t.test('invalid YAML', async (t) => refused(t, 'kind: [unclosed', /line|yaml/, /not valid YAML/));
  t.test('unknown kind', async (t) => refused(t, `${base}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n`, /^kind$/, /not something the lab knows/));
  t.test('unknown field', async (t) => refused(t, `${base}---\napiVersion: v1\nkind: Node\nmetadata: {name: b}\nspec: {podCidr: 10.0.0.0/24}\n`, /spec\.podCidr/, /unknown field/));
  t.test('bad node name', async (t) => refused(t, 'apiVersion: v1\nkind: Node\nmetadata: {name: Node_A}\n', /metadata\.name/, /DNS-1123/));
  t.test('bad pod CIDR', async (t) => refused(t, 'apiVersion: v1\nkind: Node\nmetadata: {name: a}\nspec: {podCIDR: 10.0.0.300/24}\n', /spec\.podCIDR/, /not an IPv4 CIDR/));
  t.test('no nodes', async (t) => refused(t, 'apiVersion: v1\nkind: Namespace\nmetadata: {name: ns}\n', /Node/, /at least one/));
  t.test('service port out of range', async (t) =>
    refused(t, `${base}---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns}\nspec: {ports: [{port: 70000}]}\n`, /spec\.ports\[0\]\.port/, /between 1 and 65535/));
  t.test('unnamed port among several', async (t) =>
    refused(t, `${base}---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns}\nspec: {ports: [{port: 80}, {port: 81, name: b}]}\n`, /spec\.ports\[0\]\.name/, /required/));
  t.test('service in an undefined namespace', async (t) =>
    refused(t, `${base}---\napiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: nope}\nspec: {ports: [{port: 80}]}\n`, /metadata\.namespace/, /not defined/));
  const dep = (extra: string, tplSpec = 'containers: [{name: c, image: skein/echo}]') =>
    `${base}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: ns}\nspec:\n  selector: {matchLabels: {app: d}}\n  template:\n    metadata: {labels: {app: d}}\n    spec: {${tplSpec}${extra}}\n`;
  t.test('selector not matching the template', async (t) =>
    refused(t, dep('').replace('matchLabels: {app: d}', 'matchLabels: {app: x}'), /spec\.selector\.matchLabels/, /does not match/));
  t.test('image not built in without command', async (t) => refused(t, dep('', 'containers: [{name: c, image: nginx}]'), /containers\[0\]\.command/, /not built in/));
  t.test('two containers', async (t) => refused(t, dep('', 'containers: [{name: c, image: skein/echo}, {name: d, image: skein/echo}]'), /containers/, /exactly one container/));
  t.test('node selector matching nothing', async (t) => refused(t, dep(', nodeSelector: {kubernetes.io/hostname: zz}'), /nodeSelector/, /no node matches/));
  t.test('missing service account', async (t) => refused(t, dep(', serviceAccountName: ghost'), /serviceAccountName/, /not defined/));
  t.test('label value not a string', async (t) => refused(t, 'apiVersion: v1\nkind: Node\nmetadata: {name: a, labels: {zone: 1}}\n', /metadata\.labels\.zone/, /must be a string/));
  t.test('duplicate names', async (t) => refused(t, `${base}---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns}\n`, /Namespace ns/, /defined twice/));
  t.test('replicas negative', async (t) => refused(t, dep('').replace('spec:\n  selector', 'spec:\n  replicas: -1\n  selector'), /spec\.replicas/, /between 0 and 64/));
});

t.test('routes and skein policies pass through to the state', async (t) => {
  const sc = parseScenario(
    `${base}---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r, namespace: ns}\nspec: {}\n`,
    'x.yaml',
  );
  t.equal(sc.passthrough.length, 1);
  t.equal((sc.passthrough[0] as { kind: string }).kind, 'HTTPRoute');
});
