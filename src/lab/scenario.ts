/**
 * A lab scenario: nodes, namespaces, service accounts, Services and Deployments, written in
 * Kubernetes' own shapes (multi-document YAML) so the same files can feed the controller.
 * Parsing is strict: a bad file is refused before anything is created, naming the file, the
 * document, the field and the reason.
 */
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';
import { SkeinError } from '../errors.js';
import { isIPv4, parseCidr } from './ipam.js';
import { LabCode } from './codes.js';

export interface ScenarioNode {
  name: string;
  /** Pod CIDR (IPv4, /16../28); allocated from 10.244.<i>.0/24 when absent. */
  podCIDR?: string;
  labels: Record<string, string>;
}

export interface ScenarioNamespace {
  name: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface ScenarioServicePort {
  name: string;
  port: number;
  /** A number, or the name of a container port. */
  targetPort: number | string;
  protocol: 'TCP' | 'UDP';
  appProtocol?: string;
}

export interface ScenarioService {
  namespace: string;
  name: string;
  selector: Record<string, string>;
  clusterIP?: string;
  ports: ScenarioServicePort[];
  labels: Record<string, string>;
  annotations: Record<string, string>;
}

export interface ScenarioContainer {
  name: string;
  /** `skein/echo` and `skein/client` are built in; anything else needs `command`. */
  image: string;
  command?: string[];
  args: string[];
  env: Record<string, string>;
  ports: { name?: string; containerPort: number }[];
}

export interface ScenarioDeployment {
  namespace: string;
  name: string;
  replicas: number;
  /** Labels of the pods (spec.template.metadata.labels). */
  podLabels: Record<string, string>;
  podAnnotations: Record<string, string>;
  serviceAccountName: string;
  /** `kubernetes.io/hostname: <node>` (or any node label) restricts placement. */
  nodeSelector: Record<string, string>;
  container: ScenarioContainer;
}

export interface Scenario {
  file: string;
  /** Lab-wide settings (kind LabCluster, optional). */
  cluster: { serviceCIDR: string; underlayCIDR: string; clusterDomain: string; trustDomain: string };
  nodes: ScenarioNode[];
  namespaces: ScenarioNamespace[];
  serviceAccounts: { namespace: string; name: string }[];
  services: ScenarioService[];
  deployments: ScenarioDeployment[];
  /**
   * Objects the lab does not act on but passes through to the state folder (routes and
   * policies for the controller): Gateway API routes and skein.io kinds.
   */
  passthrough: Record<string, unknown>[];
}

export const BUILTIN_IMAGES = ['skein/echo', 'skein/client'] as const;

const NAME_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const PASSTHROUGH_GROUPS = ['gateway.networking.k8s.io/', 'skein.io/', 'security.skein.io/', 'networking.skein.io/'];

/** Error in a scenario file: names the file, the document (1-based), the field and the reason. */
export function scenarioError(file: string, doc: number, field: string, reason: string): SkeinError {
  return new SkeinError(LabCode.ScenarioInvalid, `${file}: document ${doc}: ${field}: ${reason}`, {
    file,
    document: doc,
    field,
    reason,
  });
}

type Obj = Record<string, unknown>;

/** Reads fields of one document and reports errors with their full path. */
class Fields {
  constructor(
    readonly file: string,
    readonly doc: number,
  ) {}

  fail(field: string, reason: string): never {
    throw scenarioError(this.file, this.doc, field, reason);
  }

  obj(v: unknown, field: string, optional = false): Obj {
    if (v === undefined || v === null) {
      if (optional) return {};
      this.fail(field, 'is required');
    }
    if (typeof v !== 'object' || Array.isArray(v)) this.fail(field, 'must be a mapping');
    return v as Obj;
  }

  str(v: unknown, field: string, optional?: false): string;
  str(v: unknown, field: string, optional: true): string | undefined;
  str(v: unknown, field: string, optional = false): string | undefined {
    if (v === undefined || v === null) {
      if (optional) return undefined;
      this.fail(field, 'is required');
    }
    if (typeof v !== 'string' || v === '') this.fail(field, 'must be a non-empty string');
    return v;
  }

  name(v: unknown, field: string): string {
    const s = this.str(v, field);
    if (s.length > 63 || !NAME_RE.test(s)) this.fail(field, `"${s}" is not a DNS-1123 label (lowercase a-z, 0-9, '-', at most 63)`);
    return s;
  }

  int(v: unknown, field: string, min: number, max: number, dflt?: number): number {
    if ((v === undefined || v === null) && dflt !== undefined) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v)) this.fail(field, 'must be an integer');
    if (v < min || v > max) this.fail(field, `must be between ${min} and ${max}, got ${v}`);
    return v;
  }

  strMap(v: unknown, field: string): Record<string, string> {
    const o = this.obj(v, field, true);
    const out: Record<string, string> = {};
    for (const [k, val] of Object.entries(o)) {
      if (typeof val !== 'string') this.fail(`${field}.${k}`, 'must be a string (quote numbers and booleans)');
      out[k] = val;
    }
    return out;
  }

  strList(v: unknown, field: string): string[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) this.fail(field, 'must be a list');
    return v.map((x, i) => {
      if (typeof x !== 'string') this.fail(`${field}[${i}]`, 'must be a string');
      return x;
    });
  }

  list(v: unknown, field: string): unknown[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) this.fail(field, 'must be a list');
    return v;
  }

  known(o: Obj, field: string, allowed: string[]): void {
    for (const k of Object.keys(o)) {
      if (!allowed.includes(k)) this.fail(field ? `${field}.${k}` : k, `unknown field (known: ${allowed.join(', ')})`);
    }
  }
}

/** Parses and validates a scenario file. Throws SKEIN_LAB_SCENARIO_INVALID on the first problem. */
export function loadScenario(file: string): Scenario {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new SkeinError(LabCode.ScenarioUnreadable, `${file}: cannot read: ${(err as Error).message}`, { file }, { cause: err });
  }
  return parseScenario(text, file);
}

export function parseScenario(text: string, file: string): Scenario {
  const sc: Scenario = {
    file,
    cluster: { serviceCIDR: '10.96.0.0/16', underlayCIDR: '172.20.0.0/16', clusterDomain: 'cluster.local', trustDomain: 'cluster.local' },
    nodes: [],
    namespaces: [],
    serviceAccounts: [],
    services: [],
    deployments: [],
    passthrough: [],
  };
  const docs = parseAllDocuments(text, { prettyErrors: false });
  let index = 0;
  for (const d of docs) {
    index += 1;
    if (d.errors.length > 0) {
      const e = d.errors[0]!;
      const line = e.linePos?.[0]?.line;
      throw scenarioError(file, index, line ? `line ${line}` : 'yaml', `not valid YAML: ${e.message.split('\n')[0]}`);
    }
    const raw = d.toJS();
    if (raw === null || raw === undefined) continue; // empty document (e.g. trailing ---)
    const f = new Fields(file, index);
    const o = f.obj(raw, '(document)');
    const apiVersion = f.str(o.apiVersion, 'apiVersion');
    const kind = f.str(o.kind, 'kind');
    const key = `${apiVersion}/${kind}`;
    switch (key) {
      case 'lab.skein.io/v1alpha1/LabCluster':
        readCluster(f, o, sc);
        break;
      case 'v1/Node':
        sc.nodes.push(readNode(f, o));
        break;
      case 'v1/Namespace':
        sc.namespaces.push(readNamespace(f, o));
        break;
      case 'v1/ServiceAccount': {
        f.known(o, '', ['apiVersion', 'kind', 'metadata']);
        const m = f.obj(o.metadata, 'metadata');
        sc.serviceAccounts.push({ name: f.name(m.name, 'metadata.name'), namespace: f.name(m.namespace, 'metadata.namespace') });
        break;
      }
      case 'v1/Service':
        sc.services.push(readService(f, o));
        break;
      case 'apps/v1/Deployment':
        sc.deployments.push(readDeployment(f, o));
        break;
      default:
        if (PASSTHROUGH_GROUPS.some((g) => apiVersion.startsWith(g))) {
          f.obj(o.metadata, 'metadata');
          sc.passthrough.push(o);
          break;
        }
        f.fail('kind', `${apiVersion} ${kind} is not something the lab knows (Node, Namespace, ServiceAccount, Service, apps/v1 Deployment, lab.skein.io/v1alpha1 LabCluster, Gateway API routes, skein.io policies)`);
    }
  }
  crossCheck(sc);
  return sc;
}

function readCluster(f: Fields, o: Obj, sc: Scenario): void {
  f.known(o, '', ['apiVersion', 'kind', 'metadata', 'spec']);
  const s = f.obj(o.spec, 'spec', true);
  f.known(s, 'spec', ['serviceCIDR', 'underlayCIDR', 'clusterDomain', 'trustDomain']);
  for (const k of ['serviceCIDR', 'underlayCIDR'] as const) {
    const v = f.str(s[k], `spec.${k}`, true);
    if (v !== undefined) {
      if (!parseCidr(v)) f.fail(`spec.${k}`, `"${v}" is not an IPv4 CIDR`);
      sc.cluster[k] = v;
    }
  }
  for (const k of ['clusterDomain', 'trustDomain'] as const) {
    const v = f.str(s[k], `spec.${k}`, true);
    if (v !== undefined) sc.cluster[k] = v;
  }
}

function readNode(f: Fields, o: Obj): ScenarioNode {
  f.known(o, '', ['apiVersion', 'kind', 'metadata', 'spec']);
  const m = f.obj(o.metadata, 'metadata');
  f.known(m, 'metadata', ['name', 'labels']);
  const s = f.obj(o.spec, 'spec', true);
  f.known(s, 'spec', ['podCIDR']);
  const podCIDR = f.str(s.podCIDR, 'spec.podCIDR', true);
  if (podCIDR !== undefined) {
    const c = parseCidr(podCIDR);
    if (!c) f.fail('spec.podCIDR', `"${podCIDR}" is not an IPv4 CIDR`);
    if (c.bits < 16 || c.bits > 28) f.fail('spec.podCIDR', `prefix /${c.bits} must be between /16 and /28`);
  }
  return { name: f.name(m.name, 'metadata.name'), podCIDR, labels: f.strMap(m.labels, 'metadata.labels') };
}

function readNamespace(f: Fields, o: Obj): ScenarioNamespace {
  f.known(o, '', ['apiVersion', 'kind', 'metadata']);
  const m = f.obj(o.metadata, 'metadata');
  f.known(m, 'metadata', ['name', 'labels', 'annotations']);
  return { name: f.name(m.name, 'metadata.name'), labels: f.strMap(m.labels, 'metadata.labels'), annotations: f.strMap(m.annotations, 'metadata.annotations') };
}

function readService(f: Fields, o: Obj): ScenarioService {
  f.known(o, '', ['apiVersion', 'kind', 'metadata', 'spec']);
  const m = f.obj(o.metadata, 'metadata');
  f.known(m, 'metadata', ['name', 'namespace', 'labels', 'annotations']);
  const s = f.obj(o.spec, 'spec');
  f.known(s, 'spec', ['selector', 'clusterIP', 'ports', 'type']);
  if (s.type !== undefined && s.type !== 'ClusterIP') f.fail('spec.type', 'only ClusterIP Services exist in the lab');
  const clusterIP = f.str(s.clusterIP, 'spec.clusterIP', true);
  if (clusterIP !== undefined && !isIPv4(clusterIP)) f.fail('spec.clusterIP', `"${clusterIP}" is not an IPv4 address`);
  const portsRaw = f.list(s.ports, 'spec.ports');
  if (portsRaw.length === 0) f.fail('spec.ports', 'a Service needs at least one port');
  const ports = portsRaw.map((p, i) => {
    const at = `spec.ports[${i}]`;
    const po = f.obj(p, at);
    f.known(po, at, ['name', 'port', 'targetPort', 'protocol', 'appProtocol']);
    const port = f.int(po.port, `${at}.port`, 1, 65535);
    const protocol = po.protocol === undefined ? 'TCP' : f.str(po.protocol, `${at}.protocol`);
    if (protocol !== 'TCP' && protocol !== 'UDP') f.fail(`${at}.protocol`, `must be TCP or UDP, got ${protocol}`);
    let targetPort: number | string = port;
    if (typeof po.targetPort === 'number') targetPort = f.int(po.targetPort, `${at}.targetPort`, 1, 65535);
    else if (po.targetPort !== undefined) targetPort = f.name(po.targetPort, `${at}.targetPort`);
    const name = po.name === undefined ? (portsRaw.length === 1 ? '' : f.fail(`${at}.name`, 'is required when a Service has several ports')) : f.name(po.name, `${at}.name`);
    return { name, port, targetPort, protocol: protocol as 'TCP' | 'UDP', appProtocol: f.str(po.appProtocol, `${at}.appProtocol`, true) };
  });
  const seen = new Set<string>();
  ports.forEach((p, i) => {
    const k = `${p.port}/${p.protocol}`;
    if (seen.has(k)) f.fail(`spec.ports[${i}].port`, `duplicate port ${k}`);
    seen.add(k);
  });
  return {
    name: f.name(m.name, 'metadata.name'),
    namespace: f.name(m.namespace, 'metadata.namespace'),
    selector: f.strMap(s.selector, 'spec.selector'),
    clusterIP,
    ports,
    labels: f.strMap(m.labels, 'metadata.labels'),
    annotations: f.strMap(m.annotations, 'metadata.annotations'),
  };
}

function readDeployment(f: Fields, o: Obj): ScenarioDeployment {
  f.known(o, '', ['apiVersion', 'kind', 'metadata', 'spec']);
  const m = f.obj(o.metadata, 'metadata');
  f.known(m, 'metadata', ['name', 'namespace', 'labels', 'annotations']);
  const s = f.obj(o.spec, 'spec');
  f.known(s, 'spec', ['replicas', 'selector', 'template']);
  const replicas = f.int(s.replicas, 'spec.replicas', 0, 64, 1);
  const sel = f.obj(s.selector, 'spec.selector');
  f.known(sel, 'spec.selector', ['matchLabels']);
  const matchLabels = f.strMap(sel.matchLabels, 'spec.selector.matchLabels');
  const tpl = f.obj(s.template, 'spec.template');
  f.known(tpl, 'spec.template', ['metadata', 'spec']);
  const tm = f.obj(tpl.metadata, 'spec.template.metadata', true);
  f.known(tm, 'spec.template.metadata', ['labels', 'annotations']);
  const podLabels = f.strMap(tm.labels, 'spec.template.metadata.labels');
  for (const [k, v] of Object.entries(matchLabels)) {
    if (podLabels[k] !== v) f.fail('spec.selector.matchLabels', `${k}=${v} does not match spec.template.metadata.labels (Kubernetes would refuse this Deployment)`);
  }
  const ts = f.obj(tpl.spec, 'spec.template.spec');
  f.known(ts, 'spec.template.spec', ['serviceAccountName', 'nodeSelector', 'containers', 'nodeName']);
  const containers = f.list(ts.containers, 'spec.template.spec.containers');
  if (containers.length !== 1) f.fail('spec.template.spec.containers', `the lab runs exactly one container per pod, got ${containers.length}`);
  const at = 'spec.template.spec.containers[0]';
  const c = f.obj(containers[0], at);
  f.known(c, at, ['name', 'image', 'command', 'args', 'env', 'ports']);
  const image = f.str(c.image, `${at}.image`);
  const command = c.command === undefined ? undefined : f.strList(c.command, `${at}.command`);
  if (!(BUILTIN_IMAGES as readonly string[]).includes(image) && (!command || command.length === 0)) {
    f.fail(`${at}.command`, `image "${image}" is not built in (${BUILTIN_IMAGES.join(', ')}); give the program to run in command`);
  }
  const env: Record<string, string> = {};
  f.list(c.env, `${at}.env`).forEach((e, i) => {
    const eo = f.obj(e, `${at}.env[${i}]`);
    f.known(eo, `${at}.env[${i}]`, ['name', 'value']);
    env[f.str(eo.name, `${at}.env[${i}].name`)] = eo.value === undefined ? '' : f.str(eo.value, `${at}.env[${i}].value`);
  });
  const ports = f.list(c.ports, `${at}.ports`).map((p, i) => {
    const po = f.obj(p, `${at}.ports[${i}]`);
    f.known(po, `${at}.ports[${i}]`, ['name', 'containerPort', 'protocol']);
    return {
      name: po.name === undefined ? undefined : f.name(po.name, `${at}.ports[${i}].name`),
      containerPort: f.int(po.containerPort, `${at}.ports[${i}].containerPort`, 1, 65535),
    };
  });
  const nodeSelector = f.strMap(ts.nodeSelector, 'spec.template.spec.nodeSelector');
  const nodeName = f.str(ts.nodeName, 'spec.template.spec.nodeName', true);
  if (nodeName) nodeSelector['kubernetes.io/hostname'] = nodeName;
  return {
    name: f.name(m.name, 'metadata.name'),
    namespace: f.name(m.namespace, 'metadata.namespace'),
    replicas,
    podLabels,
    podAnnotations: f.strMap(tm.annotations, 'spec.template.metadata.annotations'),
    serviceAccountName: ts.serviceAccountName === undefined ? 'default' : f.name(ts.serviceAccountName, 'spec.template.spec.serviceAccountName'),
    nodeSelector,
    container: {
      name: f.name(c.name ?? 'app', `${at}.name`),
      image,
      command,
      args: f.strList(c.args, `${at}.args`),
      env,
      ports,
    },
  };
}

/** Checks across documents: unique names, references that resolve. */
function crossCheck(sc: Scenario): void {
  const file = sc.file;
  const dup = (kind: string, keys: string[]) => {
    const seen = new Set<string>();
    for (const k of keys) {
      if (seen.has(k)) throw scenarioError(file, 0, `${kind} ${k}`, 'defined twice');
      seen.add(k);
    }
  };
  if (sc.nodes.length === 0) throw scenarioError(file, 0, 'Node', 'a scenario needs at least one v1 Node');
  if (sc.nodes.length > 32) throw scenarioError(file, 0, 'Node', 'at most 32 nodes');
  dup('Node', sc.nodes.map((n) => n.name));
  dup('Namespace', sc.namespaces.map((n) => n.name));
  dup('ServiceAccount', sc.serviceAccounts.map((s) => `${s.namespace}/${s.name}`));
  dup('Service', sc.services.map((s) => `${s.namespace}/${s.name}`));
  dup('Deployment', sc.deployments.map((d) => `${d.namespace}/${d.name}`));
  const nsNames = new Set(sc.namespaces.map((n) => n.name));
  const needNs = (what: string, ns: string) => {
    if (!nsNames.has(ns)) throw scenarioError(file, 0, `${what} metadata.namespace`, `namespace "${ns}" is not defined (add a v1 Namespace)`);
  };
  const sas = new Set(sc.serviceAccounts.map((s) => `${s.namespace}/${s.name}`));
  for (const s of sc.services) needNs(`Service ${s.namespace}/${s.name}`, s.namespace);
  for (const d of sc.deployments) {
    const what = `Deployment ${d.namespace}/${d.name}`;
    needNs(what, d.namespace);
    if (d.serviceAccountName !== 'default' && !sas.has(`${d.namespace}/${d.serviceAccountName}`)) {
      throw scenarioError(file, 0, `${what} spec.template.spec.serviceAccountName`, `service account "${d.serviceAccountName}" is not defined in namespace ${d.namespace}`);
    }
    const candidates = sc.nodes.filter((n) => matchesNode(n, d.nodeSelector));
    if (d.replicas > 0 && candidates.length === 0) {
      throw scenarioError(file, 0, `${what} spec.template.spec.nodeSelector`, `no node matches ${JSON.stringify(d.nodeSelector)}`);
    }
  }
  const vips = new Set<string>();
  for (const s of sc.services) {
    if (!s.clusterIP) continue;
    if (vips.has(s.clusterIP)) throw scenarioError(file, 0, `Service ${s.namespace}/${s.name} spec.clusterIP`, `${s.clusterIP} is used twice`);
    vips.add(s.clusterIP);
  }
}

/** Node labels as the lab sees them: the node's own plus kubernetes.io/hostname. */
export function nodeLabels(n: ScenarioNode): Record<string, string> {
  return { ...n.labels, 'kubernetes.io/hostname': n.name };
}

export function matchesNode(n: ScenarioNode, selector: Record<string, string>): boolean {
  const labels = nodeLabels(n);
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}
