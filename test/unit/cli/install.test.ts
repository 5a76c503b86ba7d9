/**
 * `skein install` / `skein uninstall`: every object printed validates against the Kubernetes
 * OpenAPI schemas (kubernetes-models; CRDs as apiextensions.k8s.io/v1), with the default
 * values and with a values file overriding everything; the validation itself catches a broken
 * object; deploy/kubernetes/*.yaml are this output (SKEIN_WRITE_DEPLOY=1 rewrites them);
 * malformed values are refused with file, field and reason.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parseAllDocuments } from 'yaml';
import { installCommand } from '../../../src/cli/install/command.js';
import { deployFiles, renderManifests } from '../../../src/cli/install/manifests.js';
import { DEFAULT_VALUES, valuesFrom } from '../../../src/cli/install/values.js';
import { renderCrds } from '../../../src/controller/crds.js';
import { repoPath } from '../../../src/paths.js';
import { tempDir } from '../controller/helpers.js';
import { captureOutput } from './capture-output.js';
import { k8sProblem } from './k8s-validate.js';

interface Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  [k: string]: unknown;
}

async function run(args: string[], mode: 'install' | 'uninstall' = 'install'): Promise<{ code: number; out: string; err: string }> {
  const { result, out, err } = await captureOutput(() => installCommand(args, mode));
  return { code: result, out, err };
}

function docs(text: string): Obj[] {
  return parseAllDocuments(text).map((d) => {
    if (d.errors.length) throw new Error(String(d.errors[0]));
    return d.toJS() as Obj;
  });
}

const podSpec = (o: Obj) => (o.spec as { template: { spec: Record<string, unknown> } }).template.spec as {
  containers: { name: string; image: string; args: string[]; ports: { name: string; containerPort: number }[]; resources: unknown; livenessProbe?: unknown; readinessProbe?: unknown; volumeMounts: { name: string; mountPath: string }[] }[];
  initContainers?: { name: string; args: string[]; volumeMounts: { name: string; mountPath: string }[] }[];
  volumes: { name: string; hostPath?: { path: string }; configMap?: { name: string; items: { key: string }[] } }[];
};
const find = (objs: Obj[], kind: string, name?: string) => {
  const o = objs.find((x) => x.kind === kind && (name === undefined || x.metadata.name === name));
  if (!o) throw new Error(`no ${kind} ${name ?? ''}`);
  return o;
};

t.test('the validator catches broken objects (it cannot silently pass)', async (t) => {
  const objs = docs((await run([])).out);
  const dep = structuredClone(find(objs, 'Deployment'));
  t.equal(await k8sProblem(dep), undefined, 'the rendered Deployment is valid');
  (dep.spec as Record<string, unknown>).replicas = '2';
  t.match(await k8sProblem(dep), /replicas must be integer/, 'a string replica count is refused');
  const ds = structuredClone(find(objs, 'DaemonSet'));
  delete (podSpec(ds) as Record<string, unknown>).containers;
  t.match(await k8sProblem(ds), /containers/, 'a pod without containers is refused');
  const crd = structuredClone(find(objs, 'CustomResourceDefinition'));
  (crd.spec as Record<string, unknown>).scope = 42;
  t.match(await k8sProblem(crd), /scope must be string/, 'a CRD is checked as apiextensions.k8s.io/v1');
  const svc = structuredClone(find(objs, 'Service', 'skein-controller'));
  (svc.spec as { ports: { port: unknown }[] }).ports[0]!.port = 'fifteen';
  t.match(await k8sProblem(svc), /port must be integer/);
  await t.rejects(k8sProblem({ apiVersion: 'apps/v1', kind: 'NoSuchKind' }), 'a kind without a model is an error, not a pass');
  // Gateway API kinds go through @kubernetes-models/gateway-api.
  const route = { apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'r', namespace: 'shop' }, spec: { parentRefs: [{ group: '', kind: 'Service', name: 'api' }], rules: [{ backendRefs: [{ name: 'api', port: 80 }] }] } };
  t.equal(await k8sProblem(route), undefined, 'a GAMMA HTTPRoute validates');
  t.match(await k8sProblem({ ...route, spec: { ...route.spec, rules: [{ backendRefs: [{ name: 'api', port: 'eighty' }] }] } }), /port must be integer/);
});

t.test('skein install with the defaults: every object validates', async (t) => {
  const { code, out, err } = await run([]);
  t.equal(code, 0, err);
  const objs = docs(out);
  const kinds = objs.map((o) => o.kind);
  t.same([...new Set(kinds)].sort(), ['ClusterRole', 'ClusterRoleBinding', 'ConfigMap', 'CustomResourceDefinition', 'DaemonSet', 'Deployment', 'Namespace', 'PodDisruptionBudget', 'Role', 'RoleBinding', 'Service', 'ServiceAccount']);
  t.equal(kinds[0], 'Namespace', 'the namespace first');
  t.equal(kinds.filter((k) => k === 'CustomResourceDefinition').length, Object.keys(renderCrds()).length, 'every CRD');
  t.ok(kinds.lastIndexOf('CustomResourceDefinition') < kinds.indexOf('Deployment'), 'CRDs before the controller');
  for (const o of objs) t.equal(await k8sProblem(o), undefined, `${o.kind}/${o.metadata.name} validates`);
  for (const o of objs) if (!['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition'].includes(o.kind)) t.equal(o.metadata.namespace, 'skein-system', `${o.kind}/${o.metadata.name} in skein-system`);

  // The CRDs are the controller's (renderCrds), with the schemas' patterns.
  const crdFiles = Object.values(renderCrds()).flatMap(docs);
  t.same(objs.filter((o) => o.kind === 'CustomResourceDefinition'), crdFiles, 'CRDs equal deploy/kubernetes/crds');
  t.match(JSON.stringify(crdFiles), /"pattern":/, 'with pattern validation');

  // The agent: what it needs to start and what the node must give it.
  const ds = find(objs, 'DaemonSet', 'skein-agent');
  const spec = podSpec(ds);
  const agent = spec.containers[0]!;
  t.ok(agent.args.includes('--ca-root-file=/etc/skein/trust/ca.crt'), '--ca-root-file points at the mounted trust bundle');
  t.ok(agent.volumeMounts.some((m) => m.name === 'trust-bundle' && m.mountPath === '/etc/skein/trust'));
  const bundle = spec.volumes.find((v) => v.name === 'trust-bundle');
  t.same(bundle?.configMap, { name: 'skein-trust-bundle', items: [{ key: 'ca.crt', path: 'ca.crt' }] }, 'the ConfigMap the controller writes');
  t.notOk(find(objs, 'ConfigMap', 'skein-trust-bundle').data, 'installed without data: re-applying never replaces the roots');
  const hostPaths = spec.volumes.flatMap((v) => (v.hostPath ? [v.hostPath.path] : []));
  for (const p of ['/sys/fs/bpf', '/sys/fs/cgroup', '/var/run/skein', '/opt/cni/bin', '/etc/cni/net.d']) t.ok(hostPaths.includes(p), `hostPath ${p}`);
  t.same(
    spec.initContainers?.[0]?.args,
    [
      'cni',
      'install',
      '--bin-dir=/host/opt/cni/bin',
      '--conf-dir=/host/etc/cni/net.d',
      '--agent-socket=/var/run/skein/cni.sock',
      '--exclude-namespace=kube-system',
      '--exclude-namespace=skein-system',
    ],
    'the CNI installer: the host path of the socket the agent serves (its --cni-socket, mounted from there)',
  );
  t.ok(agent.args?.includes('--cni-socket=/var/run/skein/cni.sock'), 'the agent serves skein-cni');
  t.ok(agent.livenessProbe && agent.readinessProbe, 'agent probes');
  const ctl = podSpec(find(objs, 'Deployment', 'skein-controller')).containers[0]!;
  t.ok(ctl.livenessProbe && ctl.readinessProbe, 'controller probes');
  t.ok(ctl.args.includes('--trust-bundle-configmap=skein-trust-bundle'));
  const role = find(objs, 'Role', 'skein-controller') as Obj & { rules: { resources: string[]; verbs: string[]; resourceNames?: string[] }[] };
  t.ok(role.rules.some((r) => r.resources.includes('configmaps') && r.resourceNames?.includes('skein-trust-bundle') && r.verbs.includes('update')), 'the controller may update the trust bundle');
  t.ok(role.rules.some((r) => r.resources.includes('configmaps') && r.verbs.includes('create')), 'and create it');
  t.same((find(objs, 'PodDisruptionBudget').spec as Record<string, unknown>).minAvailable, 1);
});

t.test('deploy/kubernetes/*.yaml are skein install with the default values', async (t) => {
  const want = deployFiles();
  const dir = repoPath('deploy', 'kubernetes');
  if (process.env.SKEIN_WRITE_DEPLOY === '1') for (const [f, text] of Object.entries(want)) writeFileSync(join(dir, f), text);
  t.same(Object.keys(want).sort(), ['agent.yaml', 'controller.yaml', 'rbac.yaml']);
  for (const [f, text] of Object.entries(want)) t.equal(readFileSync(join(dir, f), 'utf8'), text, `${f} up to date (SKEIN_WRITE_DEPLOY=1 regenerates)`);
  const fromFiles = [...Object.values(want), ...Object.values(renderCrds())].flatMap(docs);
  const fromInstall = docs((await run([])).out);
  const key = (o: Obj) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
  t.same(fromFiles.map(key).sort(), fromInstall.map(key).sort(), 'the files hold exactly the objects skein install prints');
});

t.test('a values file overrides image, namespace, ports, resources, trust domain, log level', async (t) => {
  const dir = tempDir(t, 'values');
  const file = join(dir, 'values.yaml');
  writeFileSync(
    file,
    [
      'namespace: mesh-ops',
      'image: registry.example/skein:1.2.3',
      'trustDomain: prod.example',
      'logLevel: debug',
      'controller:',
      '  replicas: 1',
      '  ports: { config: 16010, ca: 16012, metrics: 16014 }',
      '  resources: { requests: { cpu: 250m, memory: 512Mi }, limits: { memory: 2Gi } }',
      'agent:',
      '  ports: { metrics: 16020, ready: 16021 }',
      '  resources: { requests: null, limits: { cpu: "2", memory: 3Gi } }',
      'cni: { binDir: /usr/libexec/cni, confDir: /etc/cni/conf.d }',
    ].join('\n'),
  );
  const { code, out, err } = await run(['--values', file]);
  t.equal(code, 0, err);
  const objs = docs(out);
  for (const o of objs) t.equal(await k8sProblem(o), undefined, `${o.kind}/${o.metadata.name} validates`);
  t.equal(find(objs, 'Namespace').metadata.name, 'mesh-ops');
  for (const o of objs) if (o.metadata.namespace !== undefined) t.equal(o.metadata.namespace, 'mesh-ops', `${o.kind}/${o.metadata.name}`);
  t.same((find(objs, 'ClusterRoleBinding') as Obj & { subjects: { namespace: string }[] }).subjects[0]?.namespace, 'mesh-ops');
  const ctl = podSpec(find(objs, 'Deployment')).containers[0]!;
  const agent = podSpec(find(objs, 'DaemonSet')).containers[0]!;
  t.equal(ctl.image, 'registry.example/skein:1.2.3');
  t.equal(agent.image, 'registry.example/skein:1.2.3');
  t.same(ctl.resources, { requests: { cpu: '250m', memory: '512Mi' }, limits: { memory: '2Gi' } });
  t.same(agent.resources, { limits: { cpu: '2', memory: '3Gi' } }, 'merged over the defaults as Helm does; null removes a default');
  t.ok(ctl.args.includes('--config-listen=0.0.0.0:16010') && ctl.args.includes('--ca-listen=0.0.0.0:16012') && ctl.args.includes('--metrics=0.0.0.0:16014'));
  t.ok(ctl.args.includes('--trust-domain=prod.example') && ctl.args.includes('--log-level=debug') && ctl.args.includes('--ca-san=skein-controller.mesh-ops.svc'));
  t.ok(agent.args.includes('--controller=skein-controller.mesh-ops.svc:16010') && agent.args.includes('--ca-address=skein-controller.mesh-ops.svc:16012'));
  t.ok(agent.args.includes('--metrics=0.0.0.0:16020') && agent.args.includes('--ready=0.0.0.0:16021') && agent.args.includes('--trust-domain=prod.example'));
  t.same(agent.ports.map((p) => p.containerPort), [16020, 16021]);
  const svc = find(objs, 'Service', 'skein-controller').spec as { ports: { port: number }[] };
  t.same(svc.ports.map((p) => p.port), [16010, 16012]);
  const hostPaths = podSpec(find(objs, 'DaemonSet')).volumes.flatMap((v) => (v.hostPath ? [v.hostPath.path] : []));
  t.ok(hostPaths.includes('/usr/libexec/cni') && hostPaths.includes('/etc/cni/conf.d'), 'CNI folders');
  t.same((find(objs, 'PodDisruptionBudget').spec as Record<string, unknown>).maxUnavailable, 1, 'one replica: the PDB does not block drains');
  const annotations = (find(objs, 'DaemonSet').spec as { template: { metadata: { annotations: Record<string, string> } } }).template.metadata.annotations;
  t.equal(annotations['prometheus.io/port'], '16020', 'scrape annotation follows the port');

  // Flags win over the file.
  const flagged = docs((await run(['--values', file, '--namespace', 'other', '--image', 'img:9'])).out);
  t.equal(find(flagged, 'Namespace').metadata.name, 'other');
  t.equal(podSpec(find(flagged, 'DaemonSet')).containers[0]!.image, 'img:9');
});

t.test('malformed values are refused with file, field and reason', async (t) => {
  const dir = tempDir(t, 'badvalues');
  const cases: [string, RegExp][] = [
    ['controller:\n  replicas: "two"\n', /controller\.replicas: expected an integer/],
    ['controller:\n  ports: { config: 70000 }\n', /controller\.ports\.config: must be <= 65535/],
    ['agent:\n  resources: { limits: { memory: lots } }\n', /agent\.resources\.limits\.memory: not a Kubernetes quantity/],
    ['namespace: Skein_System\n', /namespace: not a DNS-1123 label/],
    ['imagePullPolicy: Sometimes\n', /imagePullPolicy: expected one of Always, IfNotPresent, Never/],
    ['logLevel: loud\n', /logLevel: expected one of/],
    ['contoller: { replicas: 3 }\n', /contoller: unknown field/],
    ['controller: { ports: { config: 15010, ca: 15010 } }\n', /controller\.ports: config, ca and metrics must differ/],
    ['agent: { pinRoot: /tmp/pins }\n', /agent\.pinRoot: must be under \/sys\/fs\/bpf/],
    ['cni: { confDir: etc/cni }\n', /cni\.confDir: must be an absolute path/],
    ['namespace: [unclosed\n', /\(file\): not YAML/],
    ['- a\n- list\n', /\(object\): expected a mapping/],
  ];
  for (const [i, [text, want]] of cases.entries()) {
    const file = join(dir, `v${i}.yaml`);
    writeFileSync(file, text);
    const { code, out, err } = await run(['--values', file]);
    t.equal(code, 2, `${JSON.stringify(text)}: exit 2`);
    t.equal(out, '', 'nothing printed to apply');
    t.match(err, `${file}: `, 'names the file');
    t.match(err, want, 'names the field and the reason');
    t.match(err, /SKEIN_INSTALL_VALUES_INVALID/);
  }
  t.throws(() => valuesFrom('trustDomain: "Bad Domain"\n', 'f.yaml'), { code: 'SKEIN_INSTALL_VALUES_INVALID', details: { field: 'trustDomain', file: 'f.yaml' } });
  const missing = await run(['--values', join(dir, 'absent.yaml')]);
  t.equal(missing.code, 2);
  t.match(missing.err, /absent\.yaml: \(file\): cannot read: ENOENT/);
  const badFlag = await run(['--namespace', 'UPPER']);
  t.match(badFlag.err, /--namespace: namespace: not a DNS-1123 label/, 'a bad flag is named as the flag');
  t.equal((await run(['--nonsense'])).code, 2, 'unknown flag');
  t.same(valuesFrom('', 'empty.yaml'), DEFAULT_VALUES, 'an empty file is the defaults');
});

t.test('skein uninstall prints the same objects, the namespace last', async (t) => {
  const install = docs((await run([])).out);
  const { code, out } = await run([], 'uninstall');
  t.equal(code, 0);
  const uninstall = docs(out);
  t.same(uninstall, [...install].reverse(), 'the same objects in reverse order');
  t.equal(uninstall.at(-1)?.kind, 'Namespace');
  t.match(out, /^# Then, on each node: skein agent --cleanup/, 'and says what is left to do on the nodes');
  t.same(renderManifests(DEFAULT_VALUES).length, install.length);
});
