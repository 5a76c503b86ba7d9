// Shared fixtures of the controller tests: a small two-node cluster as Kubernetes objects,
// atomic file writes (as the lab does), fake agents (real gRPC clients through
// ControllerConfigSource) and a bounded wait.
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { ConfigStore } from '../../../src/config/store.js';
import { ControllerConfigSource, type ObservedResponse } from '../../../src/config/controller-source.js';
import type { ControlledMeshSnapshot } from '../../../src/config/policy-model.js';
import type { SkeinError } from '../../../src/errors.js';

export type Obj = Record<string, unknown>;
export interface Teardown {
  teardown(fn: () => unknown): void;
}

export const TOKENS = { 'node-a': 'token-a-0123456789', 'node-b': 'token-b-0123456789' };

export function tempDir(t: Teardown, tag: string): string {
  const dir = mkdtempSync(join(tmpdir(), `skein-ctl-${tag}-${process.pid}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Writes a multi-document YAML file atomically (temp + rename), like the lab. */
export function writeYaml(dir: string, file: string, objects: Obj[]): void {
  const tmp = join(dir, `.${file}.${process.pid}.tmp`);
  writeFileSync(tmp, objects.map((o) => `---\n${stringify(o)}`).join(''));
  renameSync(tmp, join(dir, file));
}

export function writeText(dir: string, file: string, text: string): void {
  const tmp = join(dir, `.${file}.${process.pid}.tmp`);
  writeFileSync(tmp, text);
  renameSync(tmp, join(dir, file));
}

export const T0 = '2026-01-01T00:00:00Z';

export function namespace(name: string, labels: Record<string, string> = {}): Obj {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels, creationTimestamp: T0 } };
}

export function node(name: string, address: string, cidr: string): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, creationTimestamp: T0 },
    spec: { podCIDR: cidr, podCIDRs: [cidr] },
    status: { addresses: [{ type: 'InternalIP', address }] },
  };
}

export function pod(ns: string, name: string, nodeName: string, ip: string, labels: Record<string, string>, sa = 'default'): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, uid: `uid-${ns}-${name}`, labels, creationTimestamp: T0 },
    spec: { nodeName, serviceAccountName: sa, containers: [{ name: 'app', image: 'x', ports: [{ name: 'http', containerPort: 8080 }] }] },
    status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: 'True' }] },
  };
}

export function service(ns: string, name: string, vip: string, selector: Record<string, string>, created = T0): Obj {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: ns, creationTimestamp: created },
    spec: { clusterIP: vip, clusterIPs: [vip], selector, ports: [{ name: 'http', port: 80, targetPort: 8080, appProtocol: 'http' }] },
  };
}

export function slice(ns: string, svc: string, eps: { ip: string; node: string; pod: string }[]): Obj {
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: { name: `${svc}-1`, namespace: ns, labels: { 'kubernetes.io/service-name': svc }, creationTimestamp: T0 },
    addressType: 'IPv4',
    endpoints: eps.map((e) => ({
      addresses: [e.ip],
      conditions: { ready: true },
      nodeName: e.node,
      targetRef: { kind: 'Pod', namespace: ns, name: e.pod, uid: `uid-${ns}-${e.pod}` },
    })),
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  };
}

/** The base cluster: shop (meshed) with web on both nodes, legacy (not meshed) with api on both. */
export function baseCluster(): Record<string, Obj[]> {
  return {
    'nodes.yaml': [node('node-a', '172.20.0.1', '10.244.1.0/24'), node('node-b', '172.20.0.2', '10.244.2.0/24')],
    'namespaces.yaml': [namespace('shop', { 'skein.io/mesh': 'enabled' }), namespace('legacy')],
    'pods.yaml': [
      pod('shop', 'web-1', 'node-a', '10.244.1.10', { app: 'web' }, 'web'),
      pod('shop', 'web-2', 'node-b', '10.244.2.10', { app: 'web' }, 'web'),
      pod('legacy', 'api-1', 'node-a', '10.244.1.20', { app: 'api' }),
      pod('legacy', 'api-2', 'node-b', '10.244.2.20', { app: 'api' }),
    ],
    'services.yaml': [service('shop', 'web', '10.96.0.10', { app: 'web' }), service('legacy', 'api', '10.96.0.20', { app: 'api' })],
    'endpointslices.yaml': [
      slice('shop', 'web', [
        { ip: '10.244.1.10', node: 'node-a', pod: 'web-1' },
        { ip: '10.244.2.10', node: 'node-b', pod: 'web-2' },
      ]),
      slice('legacy', 'api', [
        { ip: '10.244.1.20', node: 'node-a', pod: 'api-1' },
        { ip: '10.244.2.20', node: 'node-b', pod: 'api-2' },
      ]),
    ],
  };
}

export function writeCluster(dir: string, files: Record<string, Obj[]>): void {
  for (const [f, objs] of Object.entries(files)) writeYaml(dir, f, objs);
}

export async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** An agent as the data path wires it: a ControllerConfigSource feeding a ConfigStore. */
export class FakeAgent {
  readonly store = new ConfigStore();
  readonly responses: ObservedResponse[] = [];
  readonly errors: SkeinError[] = [];
  applied = 0;
  readonly source: ControllerConfigSource;

  constructor(
    readonly node: 'node-a' | 'node-b' | string,
    address: string,
    extra: { validate?: (s: ControlledMeshSnapshot) => string | undefined; token?: string; backoffMs?: number } = {},
  ) {
    this.source = new ControllerConfigSource({
      address,
      node,
      token: extra.token ?? (TOKENS as Record<string, string>)[node],
      backoff: { initialMs: extra.backoffMs ?? 50, maxMs: 400, jitter: 0.1 },
      validate: extra.validate,
      observe: (r) => this.responses.push(r),
    });
  }

  async start(): Promise<void> {
    await this.source.start(
      (s) => {
        const r = this.store.apply(s);
        if (r.ok) this.applied++;
      },
      (e) => this.errors.push(e),
    );
  }

  snapshot(): ControlledMeshSnapshot {
    return this.store.snapshot() as ControlledMeshSnapshot;
  }

  workloadNames(): string[] {
    return (this.store.snapshot()?.workloads ?? []).map((w) => `${w.namespace}/${w.name}`).sort();
  }

  last(): ObservedResponse | undefined {
    return this.responses[this.responses.length - 1];
  }
}
