/**
 * The address and name plan of one lab: which netns, interface, IP, cgroup and VIP every
 * node, pod and Service gets. Pure: computed from the scenario and the lab id, so it can be
 * unit-tested and recomputed by `lab down` from the record alone.
 */
import { createHash, randomUUID } from 'node:crypto';
import { SkeinError } from '../errors.js';
import { addressAt, cidrContains, type Cidr, formatCidr, parseCidr } from './ipam.js';
import { matchesNode, type Scenario, type ScenarioContainer, type ScenarioDeployment, type ScenarioServicePort } from './scenario.js';
import { LabCode } from './codes.js';

/** Every lab resource name starts with this, so `lab gc` can find leftovers. */
export const LAB_PREFIX = 'skein-';

export interface PlannedNode {
  name: string;
  index: number;
  /** The node's network namespace: where its agent runs, where Service DNAT happens. */
  netns: string;
  /** Address on the underlay bridge. */
  address: string;
  podCIDR: string;
  /** Name of the node's veth end inside the underlay netns. */
  underlayIf: string;
  labels: Record<string, string>;
}

export interface PlannedPod {
  uid: string;
  namespace: string;
  name: string;
  deployment: string;
  node: string;
  ip: string;
  netns: string;
  /** Host-side veth name, inside the node netns. */
  hostIf: string;
  /**
   * cgroup directory of the pod's container, relative to the cgroup v2 root, in the kubelet's
   * layout (see kubeletPodCgroup): the agent finds the pod by it, as on a real node.
   */
  cgroup: string;
  serviceAccount: string;
  labels: Record<string, string>;
  annotations: Record<string, string>;
  container: ScenarioContainer;
  /**
   * false while a new pod waits for its node's agent to serve it (a readiness gate, as the
   * CNI enrols a pod before its containers start in a cluster); absent means ready.
   */
  ready?: boolean;
}

export interface PlannedEndpoint {
  pod: string;
  namespace: string;
  uid: string;
  ip: string;
  node: string;
  /** Service port name -> resolved target port on this pod. */
  ports: Record<string, number>;
  ready: boolean;
}

export interface PlannedService {
  namespace: string;
  name: string;
  vip: string;
  selector: Record<string, string>;
  ports: ScenarioServicePort[];
  labels: Record<string, string>;
  annotations: Record<string, string>;
  endpoints: PlannedEndpoint[];
}

export interface LabPlan {
  id: string;
  prefix: string;
  /** Netns holding the underlay bridge that joins the nodes (the "physical network"). */
  underlayNetns: string;
  underlayBridge: string;
  /** Bridge address in the underlay netns: where a controller can listen for agents. */
  underlayGateway: string;
  underlayCIDR: string;
  serviceCIDR: string;
  clusterDomain: string;
  trustDomain: string;
  /** cgroup directory of the lab, relative to the cgroup v2 root. */
  cgroup: string;
  nodes: PlannedNode[];
  pods: PlannedPod[];
  services: PlannedService[];
}

/** Link-local next hop every pod routes through; the node answers for it (Calico's scheme). */
export const POD_GATEWAY = '169.254.1.1';
/** MAC of every host-side pod veth, so pods can hold a static neighbour entry for the gateway. */
export const HOST_VETH_MAC = 'ee:ee:ee:ee:ee:ee';

function planError(field: string, reason: string): SkeinError {
  return new SkeinError(LabCode.PlanInvalid, `${field}: ${reason}`, { field, reason });
}

export function planLab(sc: Scenario, id: string): LabPlan {
  const prefix = `${LAB_PREFIX}${id}`;
  const underlay = parseCidr(sc.cluster.underlayCIDR)!;
  const serviceNet = parseCidr(sc.cluster.serviceCIDR)!;
  const nodes: PlannedNode[] = sc.nodes.map((n, i) => {
    const podCIDR = n.podCIDR ?? `10.244.${i + 1}.0/24`;
    return {
      name: n.name,
      index: i,
      netns: `${prefix}-node-${n.name}`,
      address: addressAt(underlay, 11 + i),
      podCIDR: formatCidr(parseCidr(podCIDR)!),
      underlayIf: `n${i}`,
      labels: { ...n.labels, 'kubernetes.io/hostname': n.name },
    };
  });
  checkDisjoint(nodes, serviceNet, underlay);

  const pods: PlannedPod[] = [];
  for (const d of sc.deployments) {
    for (let r = 0; r < d.replicas; r++) pods.push(planPod(sc, { id, prefix, nodes, pods }, d, r));
  }

  let nextVip = 10;
  const taken = new Set(sc.services.map((s) => s.clusterIP).filter(Boolean));
  const services: PlannedService[] = sc.services.map((s) => {
    let vip = s.clusterIP;
    if (vip && !cidrContains(serviceNet, vip)) throw planError(`Service ${s.namespace}/${s.name} spec.clusterIP`, `${vip} is outside the service CIDR ${sc.cluster.serviceCIDR}`);
    while (!vip) {
      const candidate = addressAt(serviceNet, nextVip++);
      if (!taken.has(candidate)) vip = candidate;
    }
    return {
      namespace: s.namespace,
      name: s.name,
      vip,
      selector: s.selector,
      ports: s.ports,
      labels: s.labels,
      annotations: s.annotations,
      endpoints: [],
    };
  });
  for (const s of services) s.endpoints = endpointsOf(s, pods);

  return {
    id,
    prefix,
    underlayNetns: `${prefix}-underlay`,
    underlayBridge: 'br0',
    underlayGateway: addressAt(underlay, 1),
    underlayCIDR: sc.cluster.underlayCIDR,
    serviceCIDR: sc.cluster.serviceCIDR,
    clusterDomain: sc.cluster.clusterDomain,
    trustDomain: sc.cluster.trustDomain,
    cgroup: `skein.lab/${id}`,
    nodes,
    pods,
    services,
  };
}

/**
 * Plans replica `r` of a Deployment next to the pods that exist: round-robin over the nodes
 * its selector allows, the next free IP of that node's CIDR, unused interface names.
 */
export function planPod(
  sc: Scenario,
  lab: { id: string; prefix: string; nodes: PlannedNode[]; pods: PlannedPod[] },
  d: ScenarioDeployment,
  r: number,
): PlannedPod {
  const candidates = sc.nodes.filter((n) => matchesNode(n, d.nodeSelector)).map((n) => n.name);
  const node = lab.nodes.find((n) => n.name === candidates[r % candidates.length])!;
  const cidr = parseCidr(node.podCIDR)!;
  const used = new Set(lab.pods.map((p) => p.ip));
  let offset = 10;
  while (used.has(addressAt(cidr, Math.min(offset, cidr.size - 1)))) offset += 1;
  if (offset >= cidr.size - 1) throw planError(`Node ${node.name} spec.podCIDR`, `${node.podCIDR} has no room for more pods`);
  const ifs = new Set(lab.pods.map((p) => p.hostIf));
  let k = 0;
  while (ifs.has(`vp${k}`)) k += 1;
  const name = `${d.name}-${r}`;
  const uid = randomUUID();
  return {
    uid,
    namespace: d.namespace,
    name,
    deployment: d.name,
    node: node.name,
    ip: addressAt(cidr, offset),
    netns: `${lab.prefix}-pod-${d.namespace}-${name}`,
    hostIf: `vp${k}`,
    cgroup: kubeletPodCgroup(lab.id, node.name, uid),
    serviceAccount: d.serviceAccountName,
    labels: d.podLabels,
    annotations: d.podAnnotations,
    container: d.container,
  };
}

/** A lab node's kubelet pod root (systemd driver), relative to the cgroup v2 root. */
export function kubeletRootOf(labId: string, node: string): string {
  return `skein.lab/${labId}/${node}/kubepods.slice`;
}

/**
 * Where a kubelet (systemd driver) with containerd puts a BestEffort pod's container:
 * kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice/
 * cri-containerd-<id>.scope, under the lab node's root. The container id is made from the UID.
 */
export function kubeletPodCgroup(labId: string, node: string, uid: string): string {
  const id = createHash('sha256').update(uid).digest('hex');
  return `${kubeletRootOf(labId, node)}/kubepods-besteffort.slice/kubepods-besteffort-pod${uid.replaceAll('-', '_')}.slice/cri-containerd-${id}.scope`;
}

/** The pods a Service selects, as endpoints (a Service without selector has none). */
export function endpointsOf(s: Pick<PlannedService, 'namespace' | 'selector' | 'ports'>, pods: PlannedPod[]): PlannedEndpoint[] {
  if (Object.keys(s.selector).length === 0) return [];
  return pods
    .filter((p) => p.namespace === s.namespace && Object.entries(s.selector).every(([k, v]) => p.labels[k] === v))
    .map((p) => ({ pod: p.name, namespace: p.namespace, uid: p.uid, ip: p.ip, node: p.node, ports: resolvePorts(s.ports, p), ready: p.ready !== false }));
}

/** Named target ports resolve against the pod's container ports, as kube-proxy does. */
function resolvePorts(ports: ScenarioServicePort[], pod: PlannedPod): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of ports) {
    if (typeof p.targetPort === 'number') out[p.name] = p.targetPort;
    else {
      const cp = pod.container.ports.find((c) => c.name === p.targetPort);
      if (cp) out[p.name] = cp.containerPort;
    }
  }
  return out;
}

function checkDisjoint(nodes: PlannedNode[], serviceNet: Cidr, underlay: Cidr): void {
  const blocks: [string, Cidr][] = [
    ['service CIDR', serviceNet],
    ['underlay CIDR', underlay],
    ...nodes.map((n): [string, Cidr] => [`pod CIDR of node ${n.name}`, parseCidr(n.podCIDR)!]),
  ];
  for (let i = 0; i < blocks.length; i++) {
    for (let j = i + 1; j < blocks.length; j++) {
      const [an, a] = blocks[i]!;
      const [bn, b] = blocks[j]!;
      if (a.base < b.base + b.size && b.base < a.base + a.size) throw planError(an, `${formatCidr(a)} overlaps the ${bn} ${formatCidr(b)}`);
    }
  }
}

/** DNS names of a Service, most specific first. */
export function serviceHostnames(s: { name: string; namespace: string }, clusterDomain: string): string[] {
  return [`${s.name}.${s.namespace}.svc.${clusterDomain}`, `${s.name}.${s.namespace}.svc`, `${s.name}.${s.namespace}`];
}
