/**
 * The lab's cluster state as Kubernetes objects: what an API server would hold for this
 * cluster. Written as YAML into the lab's state folder, which the controller (standalone
 * mode) and, until then, the agents read. Nothing here tells an agent where a pod's netns is:
 * the agent finds it from the pod's UID in the kubelet-layout cgroups the lab makes, as on a node.
 */
import { createHash } from 'node:crypto';
import { stringify } from 'yaml';
import type { Scenario } from './scenario.js';
import type { LabPlan } from './plan.js';

type KubeObject = Record<string, unknown>;

export interface KubeStateFiles {
  [file: string]: KubeObject[];
}

/** One list of objects per file name, in a stable order. */
export function renderKubeState(plan: LabPlan, sc: Scenario, createdAt: string): KubeStateFiles {
  const meta = (name: string, namespace?: string, extra: Record<string, unknown> = {}) => ({
    name,
    ...(namespace ? { namespace } : {}),
    creationTimestamp: createdAt,
    ...extra,
  });
  const nodes = plan.nodes.map((n) => ({
    apiVersion: 'v1',
    kind: 'Node',
    metadata: meta(n.name, undefined, { labels: n.labels }),
    spec: { podCIDR: n.podCIDR, podCIDRs: [n.podCIDR] },
    status: { addresses: [{ type: 'InternalIP', address: n.address }, { type: 'Hostname', address: n.name }], conditions: [{ type: 'Ready', status: 'True' }] },
  }));
  const namespaces = sc.namespaces.map((ns) => ({
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: meta(ns.name, undefined, { labels: { ...ns.labels, 'kubernetes.io/metadata.name': ns.name }, annotations: ns.annotations }),
  }));
  const saKeys = new Set<string>();
  const serviceAccounts: KubeObject[] = [];
  const addSa = (namespace: string, name: string) => {
    if (saKeys.has(`${namespace}/${name}`)) return;
    saKeys.add(`${namespace}/${name}`);
    serviceAccounts.push({ apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta(name, namespace) });
  };
  for (const ns of sc.namespaces) addSa(ns.name, 'default');
  for (const sa of sc.serviceAccounts) addSa(sa.namespace, sa.name);
  const pods = plan.pods.map((p) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: meta(p.name, p.namespace, {
      uid: p.uid,
      // As a Deployment's pods are: owned by its ReplicaSet, labelled with the template's hash.
      labels: { ...p.labels, 'pod-template-hash': podTemplateHash(p.namespace, p.deployment) },
      annotations: { ...p.annotations },
      ownerReferences: [{ apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${p.deployment}-${podTemplateHash(p.namespace, p.deployment)}`, controller: true, blockOwnerDeletion: true }],
    }),
    spec: {
      nodeName: p.node,
      serviceAccountName: p.serviceAccount,
      containers: [{ name: p.container.name, image: p.container.image, ports: p.container.ports }],
    },
    status: {
      phase: 'Running',
      podIP: p.ip,
      podIPs: [{ ip: p.ip }],
      hostIP: plan.nodes.find((n) => n.name === p.node)!.address,
      conditions: [{ type: 'Ready', status: p.ready === false ? 'False' : 'True' }],
    },
  }));
  const services = plan.services.map((s) => ({
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(s.name, s.namespace, { labels: s.labels, annotations: s.annotations }),
    spec: {
      type: 'ClusterIP',
      clusterIP: s.vip,
      clusterIPs: [s.vip],
      selector: s.selector,
      ports: s.ports.map((p) => ({ ...(p.name ? { name: p.name } : {}), port: p.port, targetPort: p.targetPort, protocol: p.protocol, ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}) })),
    },
  }));
  // As Kubernetes' EndpointSlice controller: an endpoint carries its node's zone label.
  const zoneOf = new Map(plan.nodes.map((n) => [n.name, n.labels['topology.kubernetes.io/zone']]));
  const endpointSlices = plan.services.map((s) => {
    // An EndpointSlice carries one port list for all its endpoints; the lab's pods of one
    // Service share their container ports, so the first endpoint's resolution holds for all.
    const first = s.endpoints[0];
    return {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: meta(`${s.name}-lab`, s.namespace, { labels: { 'kubernetes.io/service-name': s.name, 'endpointslice.kubernetes.io/managed-by': 'lab.skein.io' } }),
      addressType: 'IPv4',
      endpoints: s.endpoints.map((e) => ({
        addresses: [e.ip],
        conditions: { ready: e.ready, serving: e.ready, terminating: false },
        nodeName: e.node,
        ...(zoneOf.get(e.node) ? { zone: zoneOf.get(e.node) } : {}),
        targetRef: { kind: 'Pod', namespace: e.namespace, name: e.pod, uid: e.uid },
      })),
      ports: s.ports
        .filter((p) => first?.ports[p.name] !== undefined || !first)
        .map((p) => ({ name: p.name, port: first ? first.ports[p.name] : typeof p.targetPort === 'number' ? p.targetPort : p.port, protocol: p.protocol, ...(p.appProtocol ? { appProtocol: p.appProtocol } : {}) })),
    };
  });
  const deployments = sc.deployments.map((d) => ({
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta(d.name, d.namespace),
    spec: {
      replicas: d.replicas,
      selector: { matchLabels: d.podLabels },
      template: {
        metadata: { labels: d.podLabels, annotations: d.podAnnotations },
        spec: { serviceAccountName: d.serviceAccountName, nodeSelector: d.nodeSelector, containers: [{ name: d.container.name, image: d.container.image, args: d.container.args }] },
      },
    },
  }));
  return {
    'nodes.yaml': nodes,
    'namespaces.yaml': namespaces,
    'serviceaccounts.yaml': serviceAccounts,
    'pods.yaml': pods,
    'services.yaml': services,
    'endpointslices.yaml': endpointSlices,
    'deployments.yaml': deployments,
    'policies.yaml': sc.passthrough,
  };
}

/** Kubernetes' alphabet for generated name suffixes (no vowels, no look-alikes). */
const SAFE_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';

/**
 * A stable stand-in for a Deployment's pod-template-hash (10 characters of Kubernetes' safe
 * alphabet): the lab keeps no ReplicaSets, only the names its pods would carry.
 */
export function podTemplateHash(namespace: string, deployment: string): string {
  const digest = createHash('sha256').update(`${namespace}/${deployment}`).digest();
  let out = '';
  for (let i = 0; i < 10; i++) out += SAFE_ALPHABET[digest[i]! % SAFE_ALPHABET.length];
  return out;
}

export function toMultiDocYaml(objects: KubeObject[]): string {
  return objects.map((o) => `---\n${stringify(o)}`).join('');
}
