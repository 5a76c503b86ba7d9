/**
 * The values `skein install` renders manifests from: defaults, overridden by a YAML values
 * file, overridden by flags. A values file is checked field by field (unknown fields too:
 * a typo must not silently fall back to a default) and refused with file, field and reason.
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { DEFAULT_CONFIG_PORT } from '../../controller/config-server.js';
import { checkSchema, type Schema } from '../../controller/schema.js';
import { ComponentPort } from '../../config/ports.js';
import { DEFAULT_TRUST_DOMAIN } from '../../config/model.js';
import { DEFAULT_CA_PORT } from '../../identity/ca/ca-server.js';
import { SkeinError } from '../../errors.js';
import { InstallCode } from '../codes.js';

export interface ResourceList {
  cpu?: string;
  memory?: string;
}
export interface Resources {
  requests?: ResourceList;
  limits?: ResourceList;
}

export interface InstallValues {
  namespace: string;
  image: string;
  imagePullPolicy: 'Always' | 'IfNotPresent' | 'Never';
  trustDomain: string;
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';
  controller: {
    replicas: number;
    ports: { config: number; ca: number; metrics: number };
    resources: Resources;
  };
  agent: {
    ports: { metrics: number; ready: number };
    resources: Resources;
    /** Host folders the agent pins BPF objects and serves its unix sockets in. */
    pinRoot: string;
    runDir: string;
  };
  cni: { binDir: string; confDir: string };
}

export const DEFAULT_VALUES: InstallValues = {
  namespace: 'skein-system',
  image: 'ghcr.io/skein-mesh/skein:0.1.0',
  imagePullPolicy: 'IfNotPresent',
  trustDomain: DEFAULT_TRUST_DOMAIN,
  logLevel: 'info',
  controller: {
    replicas: 2,
    ports: { config: DEFAULT_CONFIG_PORT, ca: DEFAULT_CA_PORT, metrics: ComponentPort.ControllerMetrics },
    resources: { requests: { cpu: '100m', memory: '256Mi' }, limits: { memory: '1Gi' } },
  },
  agent: {
    ports: { metrics: ComponentPort.AgentMetrics, ready: ComponentPort.AgentReady },
    resources: { requests: { cpu: '100m', memory: '256Mi' }, limits: { memory: '1Gi' } },
    pinRoot: '/sys/fs/bpf/skein',
    runDir: '/var/run/skein',
  },
  cni: { binDir: '/opt/cni/bin', confDir: '/etc/cni/net.d' },
};

const port: Schema = { type: 'integer', minimum: 1, maximum: 65535 };
const str: Schema = { type: 'string' };
const resourceList: Schema = { type: 'object', fields: { cpu: str, memory: str } };
const resources: Schema = { type: 'object', fields: { requests: resourceList, limits: resourceList } };

/** The shape of a values file (every field optional). */
export const VALUES_SCHEMA: Schema = {
  type: 'object',
  fields: {
    namespace: str,
    image: str,
    imagePullPolicy: { type: 'string', enum: ['Always', 'IfNotPresent', 'Never'] },
    trustDomain: str,
    logLevel: { type: 'string', enum: ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] },
    controller: {
      type: 'object',
      fields: {
        replicas: { type: 'integer', minimum: 1, maximum: 100 },
        ports: { type: 'object', fields: { config: port, ca: port, metrics: port } },
        resources,
      },
    },
    agent: {
      type: 'object',
      fields: {
        ports: { type: 'object', fields: { metrics: port, ready: port } },
        resources,
        pinRoot: str,
        runDir: str,
      },
    },
    cni: { type: 'object', fields: { binDir: str, confDir: str } },
  },
};

// Kubernetes' own shapes: a DNS-1123 label (namespace), a resource quantity, a SPIFFE trust domain.
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const QUANTITY = /^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$/;
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
const IMAGE = /^[^\s]+$/;

export interface ValuesProblem {
  field: string;
  reason: string;
}

/** Problems of a merged values object that the structural schema cannot say. */
function semanticProblems(v: InstallValues): ValuesProblem[] {
  const out: ValuesProblem[] = [];
  if (!DNS_LABEL.test(v.namespace) || v.namespace.length > 63) out.push({ field: 'namespace', reason: `not a DNS-1123 label: ${JSON.stringify(v.namespace)}` });
  if (!IMAGE.test(v.image)) out.push({ field: 'image', reason: `not an image reference: ${JSON.stringify(v.image)}` });
  if (!TRUST_DOMAIN.test(v.trustDomain)) out.push({ field: 'trustDomain', reason: `not a SPIFFE trust domain (lower-case letters, digits, . - _): ${JSON.stringify(v.trustDomain)}` });
  for (const [who, r] of [['controller', v.controller.resources], ['agent', v.agent.resources]] as const) {
    for (const kind of ['requests', 'limits'] as const) {
      for (const [name, q] of Object.entries(r[kind] ?? {})) {
        if (!QUANTITY.test(String(q))) out.push({ field: `${who}.resources.${kind}.${name}`, reason: `not a Kubernetes quantity (e.g. 100m, 256Mi): ${JSON.stringify(q)}` });
      }
    }
  }
  const c = v.controller.ports;
  if (new Set([c.config, c.ca, c.metrics]).size !== 3) out.push({ field: 'controller.ports', reason: `config, ca and metrics must differ (${c.config}, ${c.ca}, ${c.metrics})` });
  if (v.agent.ports.metrics === v.agent.ports.ready) out.push({ field: 'agent.ports', reason: `metrics and ready must differ (${v.agent.ports.metrics})` });
  for (const [field, p] of [['agent.pinRoot', v.agent.pinRoot], ['agent.runDir', v.agent.runDir], ['cni.binDir', v.cni.binDir], ['cni.confDir', v.cni.confDir]] as const) {
    if (!p.startsWith('/')) out.push({ field, reason: `must be an absolute path: ${JSON.stringify(p)}` });
  }
  if (!/^\/sys\/fs\/bpf(\/|$)/.test(v.agent.pinRoot)) out.push({ field: 'agent.pinRoot', reason: `must be under /sys/fs/bpf (the host's bpffs): ${JSON.stringify(v.agent.pinRoot)}` });
  return out;
}

/** Deep merge as Helm merges values: mappings key by key; null removes a default. */
function merge<T>(base: T, over: unknown): T {
  if (over === undefined) return base;
  if (over === null) return undefined as T;
  if (typeof base !== 'object' || base === null || Array.isArray(base) || typeof over !== 'object' || Array.isArray(over)) return over as T;
  const out: Record<string, unknown> = { ...(base as Record<string, unknown>) };
  for (const [k, v] of Object.entries(over as Record<string, unknown>)) {
    const merged = merge(out[k], v);
    if (merged === undefined) delete out[k];
    else out[k] = merged;
  }
  return out as T;
}

function refuse(file: string, p: ValuesProblem): SkeinError {
  return new SkeinError(InstallCode.ValuesInvalid, `${file}: ${p.field}: ${p.reason}`, { file, field: p.field, reason: p.reason });
}

/**
 * Values from defaults, then `text` (YAML of `file`), then `flags`; throws
 * SKEIN_INSTALL_VALUES_INVALID naming the file, the first bad field and why.
 */
export function valuesFrom(text: string | undefined, file: string, flags: Partial<Pick<InstallValues, 'namespace' | 'image'>> = {}): InstallValues {
  let given: unknown = {};
  if (text !== undefined) {
    try {
      given = parseYaml(text) ?? {};
    } catch (err) {
      throw refuse(file, { field: '(file)', reason: `not YAML: ${(err as Error).message.split('\n')[0]}` });
    }
    const problems = checkSchema(given, VALUES_SCHEMA);
    if (problems[0]) throw refuse(file, problems[0]);
  }
  const merged = merge(merge(DEFAULT_VALUES, given), flags);
  const problem = semanticProblems(merged)[0];
  if (problem) {
    // A bad value given as a flag is the flag's fault, not the file's.
    const byFlag = (problem.field === 'namespace' && flags.namespace !== undefined) || (problem.field === 'image' && flags.image !== undefined);
    throw refuse(byFlag ? `--${problem.field}` : text === undefined ? '(defaults)' : file, problem);
  }
  return merged;
}

/** Values of `--values FILE` (or the defaults) with flag overrides. */
export function loadValues(file: string | undefined, flags: Partial<Pick<InstallValues, 'namespace' | 'image'>> = {}): InstallValues {
  if (!file) return valuesFrom(undefined, '(defaults)', flags);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw refuse(file, { field: '(file)', reason: `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` });
  }
  return valuesFrom(text, file, flags);
}
