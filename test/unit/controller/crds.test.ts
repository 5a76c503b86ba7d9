// The CRD manifests in deploy/kubernetes/crds are exactly what the controller's schemas
// generate, and the rest of deploy/kubernetes parses and names what the controller needs.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parseAllDocuments } from 'yaml';
import { renderCrds } from '../../../src/controller/crds.js';
import { CIDR_PATTERN, checkSchema } from '../../../src/controller/schema.js';
import { repoPath } from '../../../src/paths.js';

interface Doc {
  kind: string;
  metadata: { name: string };
  rules?: { resources: string[]; verbs: string[] }[];
}

const dir = repoPath('deploy', 'kubernetes', 'crds');

t.test('CRD files match the schemas', async (t) => {
  const want = renderCrds();
  if (process.env.SKEIN_WRITE_CRDS === '1') for (const [f, text] of Object.entries(want)) writeFileSync(join(dir, f), text);
  t.same(readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort(), Object.keys(want).sort());
  for (const [f, text] of Object.entries(want)) t.equal(readFileSync(join(dir, f), 'utf8'), text, `${f} up to date (SKEIN_WRITE_CRDS=1 regenerates)`);
});

t.test('deployment manifests parse and grant what the controller uses', async (t) => {
  const base = repoPath('deploy', 'kubernetes');
  const docs = readdirSync(base)
    .filter((f) => f.endsWith('.yaml'))
    .flatMap((f) => parseAllDocuments(readFileSync(join(base, f), 'utf8')).map((d) => d.toJS() as Doc))
    .filter(Boolean);
  const kinds = docs.map((d) => d.kind);
  for (const k of ['Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'Deployment', 'DaemonSet', 'Service']) {
    t.ok(kinds.includes(k), `has a ${k}`);
  }
  const role = docs.find((d) => d.kind === 'ClusterRole' && d.metadata.name === 'skein-controller');
  const verbsFor = (res: string) => (role?.rules ?? []).filter((r) => r.resources.includes(res)).flatMap((r) => r.verbs);
  for (const res of ['pods', 'namespaces', 'services', 'nodes', 'serviceaccounts', 'endpointslices', 'httproutes', 'grpcroutes', 'authorizationpolicies', 'peerauthentications', 'backendtrafficpolicies']) {
    t.ok(verbsFor(res).includes('watch') && verbsFor(res).includes('list'), `list/watch ${res}`);
  }
  t.ok(verbsFor('tokenreviews').includes('create'), 'TokenReview for agent tokens');
  t.ok(verbsFor('events').includes('create'), 'events');
});

t.test('the CRDs\' CIDR pattern admits every CIDR the controller accepts (it is the coarse check, the controller the precise one)', async (t) => {
  const re = new RegExp(CIDR_PATTERN);
  for (const v of ['10.0.0.0/8', '192.168.1.7', '0.0.0.0/0', 'fd00::/8', '2001:db8::1', '::ffff:10.1.2.3/128']) {
    t.same(checkSchema(v, { type: 'string', format: 'cidr' }), [], `${v}: the controller accepts it`);
    t.ok(re.test(v), `${v}: so does the pattern`);
  }
  for (const v of ['10.0.0.0/8; rm', 'example.com', '10.0.0.0 /8', '']) t.notOk(re.test(v), `${JSON.stringify(v)}: refused at admission`);
  const text = Object.values(renderCrds()).join('\n');
  t.ok(text.includes('pattern: ^(\\d+(\\.\\d+)?(ms|s|m|h))+$'), 'durations carry the pattern the controller checks them with');
});
