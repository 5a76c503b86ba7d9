/**
 * deploy/: every YAML parses; the agent's and the controller's scrape annotations, named ports,
 * PodMonitor and ServiceMonitor point at the ports and paths the binaries serve (proved by
 * serving the real registries there), and the monitors' selectors match the pods/Service.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, sep } from 'node:path';
import t, { type Test } from 'tap';
import { parseAllDocuments } from 'yaml';
import { startAdmin, type AdminDeps } from '../../../src/agent/admin.js';
import { AGENT_USAGE } from '../../../src/agent/main.js';
import { ComponentPort } from '../../../src/config/ports.js';
import { DEFAULT_CONTROLLER_METRICS_PORT, serveMetrics } from '../../../src/controller/metrics.js';
import { repoPath } from '../../../src/paths.js';
import { silentLogger } from '../../../src/telemetry/log.js';
import { agentRegistry, controllerRegistry, get } from './scrape.js';

type Labels = Record<string, string>;
interface Port {
  name?: string;
  containerPort?: number;
  port?: number;
  targetPort?: number | string;
}
interface Container {
  name: string;
  args?: string[];
  ports?: Port[];
  readinessProbe?: { httpGet?: { path: string; port: number | string } };
  livenessProbe?: { httpGet?: { path: string; port: number | string } };
}
interface PodTemplate {
  metadata: { labels?: Labels; annotations?: Labels };
  spec: { containers: Container[] };
}
interface Doc {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Labels };
  spec?: {
    template?: PodTemplate;
    selector?: { matchLabels?: Labels } & Labels;
    ports?: Port[];
    namespaceSelector?: { matchNames?: string[] };
    podMetricsEndpoints?: { port?: string; path?: string }[];
    endpoints?: { port?: string; path?: string }[];
  };
}

const deployDir = repoPath('deploy');
const yamlFiles = readdirSync(deployDir, { recursive: true })
  .map(String)
  .filter((f) => /\.ya?ml$/.test(f))
  .sort();

/** Every document of every YAML file under deploy/, with the file it came from. */
const all: { file: string; doc: Doc }[] = [];
t.test('every YAML under deploy/ parses', async (t) => {
  t.ok(yamlFiles.length >= 10, `files: ${yamlFiles.join(', ')}`);
  for (const f of yamlFiles) {
    const docs = parseAllDocuments(readFileSync(join(deployDir, f), 'utf8'));
    for (const d of docs) {
      t.same(d.errors, [], `${f} parses`);
      const doc = d.toJS() as Doc | null;
      if (!doc) continue;
      t.ok(doc.apiVersion && doc.kind && doc.metadata?.name, `${f}: ${doc.kind}/${doc.metadata?.name} has apiVersion, kind and a name`);
      all.push({ file: f, doc });
    }
  }
});

const find = (kind: string, name: string): Doc => {
  const d = all.find((x) => x.doc.kind === kind && x.doc.metadata.name === name)?.doc;
  if (!d) throw new Error(`no ${kind}/${name} under deploy/`);
  return d;
};
const subset = (want: Labels | undefined, have: Labels | undefined): boolean =>
  !!want && Object.keys(want).length > 0 && Object.entries(want).every(([k, v]) => have?.[k] === v);
const portNamed = (c: Container, name: string | number | undefined) => c.ports?.find((p) => p.name === name);

/** A free loopback port (listen on 0, close). */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** The prometheus.io/* annotations of a pod template, checked against the container's ports. */
function scrapeTarget(t: Test, what: string, tpl: PodTemplate, container: Container, port: number): string {
  const a = tpl.metadata.annotations ?? {};
  t.equal(a['prometheus.io/scrape'], 'true', `${what}: prometheus.io/scrape "true" (a string, as annotations must be)`);
  t.equal(a['prometheus.io/port'], String(port), `${what}: prometheus.io/port is ${port}`);
  t.equal(a['prometheus.io/path'], '/metrics', `${what}: prometheus.io/path`);
  const named = container.ports?.find((p) => p.containerPort === port);
  t.equal(named?.name, 'http-metrics', `${what}: container port ${port} is named http-metrics`);
  return a['prometheus.io/path'] ?? '';
}

t.test('agent DaemonSet: annotations and ports are where the agent serves metrics and readiness', async (t) => {
  const ds = find('DaemonSet', 'skein-agent');
  const tpl = ds.spec!.template!;
  const c = tpl.spec.containers.find((x) => x.name === 'agent')!;
  t.notOk(
    c.args?.some((a) => a.startsWith('--metrics') || a.startsWith('--ready')),
    'the manifest keeps the agent\'s default ports (no --metrics / --ready)',
  );
  t.match(AGENT_USAGE, `--metrics H:P          Prometheus metrics at /metrics (default 0.0.0.0:${ComponentPort.AgentMetrics})`);
  t.match(AGENT_USAGE, `readiness at /healthz/ready (default 0.0.0.0:${ComponentPort.AgentReady})`);
  const path = scrapeTarget(t, 'agent', tpl, c, ComponentPort.AgentMetrics);
  const probe = c.readinessProbe?.httpGet;
  t.equal(portNamed(c, probe?.port)?.containerPort, ComponentPort.AgentReady, 'readiness probe: the named port is the agent\'s readiness port');

  // Serve the agent's registry the way the agent does and scrape it at the annotated path.
  const { registry, close } = agentRegistry();
  t.teardown(close);
  const metricsPort = await freePort();
  const readyPort = await freePort();
  const deps = { agent: { ready: true }, capture: {}, certificates: {}, registry, log: silentLogger() } as unknown as AdminDeps;
  const dir = mkdtempSync(join(tmpdir(), 'skein-deploy-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const stop = await startAdmin(deps, {
    adminSocket: join(dir, 'admin.sock'),
    metrics: { host: '127.0.0.1', port: metricsPort },
    ready: { host: '127.0.0.1', port: readyPort },
  });
  t.teardown(stop);
  const m = await get(metricsPort, path);
  t.equal(m.status, 200, `GET ${path} answers`);
  t.match(m.body, /^skein_pods\{state="serving"\} 1$/m, 'with the agent\'s metrics');
  t.match(m.body, /^istio_requests_total\{reporter=/m, 'and Istio\'s');
  t.equal((await get(readyPort, probe?.path ?? '')).status, 200, `GET ${probe?.path} answers on the readiness port`);
  const live = c.livenessProbe?.httpGet;
  t.equal(portNamed(c, live?.port)?.containerPort, ComponentPort.AgentReady, 'liveness probe on the readiness port');
  t.equal((await get(readyPort, live?.path ?? '')).status, 200, `GET ${live?.path} answers`);
});

t.test('controller: annotations, named port and metrics Service are where the controller serves metrics', async (t) => {
  const dep = find('Deployment', 'skein-controller');
  const tpl = dep.spec!.template!;
  const c = tpl.spec.containers.find((x) => x.name === 'controller')!;
  t.equal(DEFAULT_CONTROLLER_METRICS_PORT, ComponentPort.ControllerMetrics);
  t.notOk(c.args?.some((a) => a.startsWith('--metrics')), 'the manifest keeps the controller\'s default metrics port');
  const path = scrapeTarget(t, 'controller', tpl, c, ComponentPort.ControllerMetrics);

  const svc = find('Service', 'skein-controller-metrics');
  t.ok(subset(svc.spec?.selector as Labels, tpl.metadata.labels), 'the metrics Service selects the controller pods');
  const sp = svc.spec?.ports?.find((p) => p.name === 'http-metrics');
  t.equal(sp?.port, ComponentPort.ControllerMetrics, 'Service port http-metrics is 15014');
  t.equal(portNamed(c, sp?.targetPort)?.containerPort, ComponentPort.ControllerMetrics, 'its targetPort names the container\'s metrics port');

  const { registry } = await controllerRegistry();
  const served = await serveMetrics(registry, '127.0.0.1', 0, silentLogger());
  t.teardown(served.stop);
  const m = await get(served.port, path);
  t.equal(m.status, 200, `GET ${path} answers`);
  t.match(m.body, /^skein_controller_agents_connected 0$/m, 'with the controller\'s metrics');
  t.match(m.body, /^# TYPE skein_ca_certificates_issued_total counter$/m, 'and the CA\'s');
});

t.test('PodMonitor selects the agent pods at their metrics port', async (t) => {
  const pm = find('PodMonitor', 'skein-agent');
  t.equal(pm.apiVersion, 'monitoring.coreos.com/v1');
  const ds = find('DaemonSet', 'skein-agent');
  const tpl = ds.spec!.template!;
  t.ok(subset(pm.spec?.selector?.matchLabels, tpl.metadata.labels), 'selector.matchLabels match the pod template\'s labels');
  t.same(pm.spec?.namespaceSelector?.matchNames, [ds.metadata.namespace], 'in the agents\' namespace');
  const eps = pm.spec?.podMetricsEndpoints ?? [];
  t.equal(eps.length, 1);
  const c = tpl.spec.containers.find((x) => x.name === 'agent')!;
  t.equal(portNamed(c, eps[0]?.port)?.containerPort, ComponentPort.AgentMetrics, 'port names the agent\'s metrics port');
  t.equal(eps[0]?.path, tpl.metadata.annotations?.['prometheus.io/path'], 'same path as the annotation');
});

t.test('ServiceMonitor selects the controller\'s metrics Service (only) at its metrics port', async (t) => {
  const sm = find('ServiceMonitor', 'skein-controller');
  t.equal(sm.apiVersion, 'monitoring.coreos.com/v1');
  const svc = find('Service', 'skein-controller-metrics');
  const services = all.filter((x) => x.doc.kind === 'Service').map((x) => x.doc);
  const selected = services.filter((s) => subset(sm.spec?.selector?.matchLabels, s.metadata.labels)).map((s) => s.metadata.name);
  t.same(selected, ['skein-controller-metrics'], 'selector.matchLabels match the metrics Service and no other');
  t.same(sm.spec?.namespaceSelector?.matchNames, [svc.metadata.namespace], 'in the controller\'s namespace');
  const eps = sm.spec?.endpoints ?? [];
  t.equal(eps.length, 1);
  t.ok(
    svc.spec?.ports?.some((p) => p.name === eps[0]?.port),
    'endpoint port names a port of the Service',
  );
  const tpl = find('Deployment', 'skein-controller').spec!.template!;
  t.equal(eps[0]?.path, tpl.metadata.annotations?.['prometheus.io/path'], 'same path as the annotation');
});

t.test('the Prometheus Operator\'s kinds are only in deploy/kubernetes/monitoring/ (skipped by kubectl apply -f deploy/kubernetes)', async (t) => {
  const operator = all.filter((x) => x.doc.apiVersion.startsWith('monitoring.coreos.com/'));
  t.same(operator.map((x) => x.doc.kind).sort(), ['PodMonitor', 'ServiceMonitor']);
  for (const x of operator) t.ok(x.file.startsWith(`kubernetes${sep}monitoring${sep}`), `${x.file} is in kubernetes/monitoring/`);
});

t.test('agent DaemonSet: skein-cni installed by an init container, its socket shared with the host', async (t) => {
  interface Mounted {
    volumeMounts?: { name: string; mountPath: string }[];
  }
  const spec = find('DaemonSet', 'skein-agent').spec!.template!.spec as PodTemplate['spec'] & {
    initContainers?: (Container & Mounted)[];
    volumes?: { name: string; hostPath?: { path: string } }[];
  };
  const init = spec.initContainers?.find((c) => c.name === 'install-cni');
  t.ok(init, 'an install-cni init container');
  t.same(init?.args?.slice(0, 2), ['cni', 'install'], 'runs skein cni install');
  const flag = (c: Container | undefined, name: string) => c?.args?.find((a) => a.startsWith(`--${name}=`))?.split('=')[1];
  const agent = spec.containers.find((c) => c.name === 'agent') as (Container & Mounted) | undefined;
  t.ok(flag(init, 'agent-socket'), 'the plugin is told the agent socket');
  t.equal(flag(agent, 'cni-socket'), flag(init, 'agent-socket'), "the agent listens where the plugin's config says");
  const hostOf = (name: string | undefined) => spec.volumes?.find((v) => v.name === name)?.hostPath?.path;
  const socketDir = flag(agent, 'cni-socket')!.replace(/\/[^/]+$/, '');
  const mount = agent?.volumeMounts?.find((m) => m.mountPath === socketDir);
  t.equal(hostOf(mount?.name), socketDir, "the socket's folder is the host's (the runtime runs skein-cni on the host)");
  for (const [flagName, host] of [
    ['bin-dir', '/opt/cni/bin'],
    ['conf-dir', '/etc/cni/net.d'],
  ] as const) {
    const m = init?.volumeMounts?.find((v) => v.mountPath === flag(init, flagName));
    t.equal(hostOf(m?.name), host, `--${flagName} is the host's ${host}`);
  }
});
