/**
 * Kubernetes objects -> MeshSnapshot. Pure: the same objects always give the same snapshot
 * (apart from `version`), which is what lets a folder, and later the controller, feed the store.
 *
 * Enrolment: a namespace labelled skein.io/mesh=enabled puts its pods in the mesh; a pod
 * labelled skein.io/mesh=disabled opts out. Peer authentication is STRICT for meshed pods
 * unless the pod or its namespace says skein.io/peer-authentication: PERMISSIVE.
 */
import { isIP } from 'node:net';
import {
  type AppProtocol,
  DEFAULT_CLUSTER_DOMAIN,
  DEFAULT_TRUST_DOMAIN,
  type Endpoint,
  type LoadBalancerAlgorithm,
  MESH_LABEL,
  type MeshSnapshot,
  type NodeInfo,
  type PeerAuthenticationMode,
  type Service,
  type ServicePort,
  spiffeIdOf,
  type PeerMetadata,
  type Workload,
} from '../model.js';
import { get, type Obj, ObjectReader, type SourcedObject } from './objects.js';

export const PEER_AUTHN_ANNOTATION = 'skein.io/peer-authentication';
export const EXCLUDE_OUTBOUND_ANNOTATION = 'skein.io/exclude-outbound-ports';
export const EXCLUDE_INBOUND_ANNOTATION = 'skein.io/exclude-inbound-ports';
export const LOAD_BALANCER_ANNOTATION = 'skein.io/load-balancer';
export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
/** The well-known label of a Node's zone (NodeInfo.zone). */
export const ZONE_LABEL = 'topology.kubernetes.io/zone';

export interface TranslateOptions {
  trustDomain?: string;
  clusterDomain?: string;
  /** Load balancer for services without the skein.io/load-balancer annotation. */
  defaultLoadBalancer?: LoadBalancerAlgorithm;
}

/** appProtocol values Kubernetes users write, normalised to what the proxy speaks. */
export function normaliseAppProtocol(value: string | undefined): AppProtocol | undefined {
  if (value === undefined) return undefined;
  switch (value.toLowerCase()) {
    case 'http':
    case 'http/1.1':
    case 'kubernetes.io/http':
      return 'http';
    case 'http2':
    case 'h2c':
    case 'kubernetes.io/h2c':
      return 'http2';
    case 'grpc':
      return 'grpc';
    case 'tcp':
      return 'tcp';
    default:
      // Unknown protocols (kubernetes.io/ws, mysql, ...) fall back to detection.
      return undefined;
  }
}

function kindOf(o: SourcedObject): string {
  const api = typeof o.obj.apiVersion === 'string' ? o.obj.apiVersion : '';
  const kind = typeof o.obj.kind === 'string' ? o.obj.kind : '';
  return `${api}/${kind}`;
}

function readerFor(o: SourcedObject): ObjectReader {
  const name = (o.obj.metadata as Obj | undefined)?.name;
  const ns = (o.obj.metadata as Obj | undefined)?.namespace;
  const label = `${String(o.obj.kind)}/${ns ? `${String(ns)}/` : ''}${String(name)}`;
  const r = new ObjectReader(o, label);
  if (typeof o.obj.apiVersion !== 'string') r.fail('apiVersion', 'missing');
  if (typeof o.obj.kind !== 'string') r.fail('kind', 'missing');
  r.str(o.obj, 'metadata.name', true);
  return r;
}

function parsePortList(r: ObjectReader, field: string, value: string | undefined): number[] {
  if (value === undefined || value.trim() === '') return [];
  return value.split(',').map((s) => {
    const n = Number(s.trim());
    if (!Number.isInteger(n) || n < 1 || n > 65535) r.fail(field, `not a port in comma list: ${JSON.stringify(s)}`);
    return n;
  });
}

function peerAuthn(r: ObjectReader, field: string, value: string | undefined): PeerAuthenticationMode | undefined {
  if (value === undefined) return undefined;
  const v = value.toUpperCase();
  if (v !== 'STRICT' && v !== 'PERMISSIVE') r.fail(field, `expected STRICT or PERMISSIVE, got ${value}`);
  return v;
}

interface Ns {
  meshEnabled: boolean;
  peerAuthentication: PeerAuthenticationMode | undefined;
}

interface PodInfo {
  workload: Workload;
  /** containerPort by port name, for named targetPorts. */
  namedPorts: Map<string, number>;
  running: boolean;
}

interface SliceInfo {
  r: ObjectReader;
  obj: Obj;
  namespace: string;
}

export function translate(objects: SourcedObject[], version: string, opts: TranslateOptions = {}): MeshSnapshot {
  const trustDomain = opts.trustDomain ?? DEFAULT_TRUST_DOMAIN;
  const clusterDomain = opts.clusterDomain ?? DEFAULT_CLUSTER_DOMAIN;
  const namespaces = new Map<string, Ns>();
  const nodes: NodeInfo[] = [];
  const pods: { r: ObjectReader; obj: Obj }[] = [];
  const services: { r: ObjectReader; obj: Obj }[] = [];
  const slices: SliceInfo[] = [];

  for (const o of objects) {
    const kind = kindOf(o);
    switch (kind) {
      case 'v1/Namespace': {
        const r = readerFor(o);
        const labels = r.strMap(o.obj, 'metadata.labels');
        const ann = r.strMap(o.obj, 'metadata.annotations');
        namespaces.set(r.str(o.obj, 'metadata.name', true) as string, {
          meshEnabled: labels[MESH_LABEL] === 'enabled',
          peerAuthentication: peerAuthn(r, `metadata.annotations.${PEER_AUTHN_ANNOTATION}`, ann[PEER_AUTHN_ANNOTATION]),
        });
        break;
      }
      case 'v1/Node': {
        const r = readerFor(o);
        const cidrs = r.arr(o.obj, 'spec.podCIDRs').map((_, i) => r.str(o.obj, `spec.podCIDRs[${i}]`, true) as string);
        const single = r.str(o.obj, 'spec.podCIDR');
        if (single && !cidrs.includes(single)) cidrs.unshift(single);
        let address: string | undefined;
        for (const [i] of r.arr(o.obj, 'status.addresses').entries()) {
          if (r.str(o.obj, `status.addresses[${i}].type`) === 'InternalIP') {
            address = r.str(o.obj, `status.addresses[${i}].address`, true);
            if (isIP(address as string) === 0) r.fail(`status.addresses[${i}].address`, `not an IP: ${address}`);
            break;
          }
        }
        // Locality-aware balancing reads the well-known zone label (the lab's scenario sets it as any label).
        const zone = r.strMap(o.obj, 'metadata.labels')[ZONE_LABEL];
        nodes.push({ name: r.str(o.obj, 'metadata.name', true) as string, podCIDRs: cidrs, ...(address ? { address } : {}), ...(zone ? { zone } : {}) });
        break;
      }
      case 'v1/Pod':
        pods.push({ r: readerFor(o), obj: o.obj });
        break;
      case 'v1/Service':
        services.push({ r: readerFor(o), obj: o.obj });
        break;
      case 'discovery.k8s.io/v1/EndpointSlice': {
        const r = readerFor(o);
        slices.push({ r, obj: o.obj, namespace: r.str(o.obj, 'metadata.namespace') ?? 'default' });
        break;
      }
      case 'v1/ServiceAccount':
        readerFor(o); // validated; identity comes from the pod's serviceAccountName
        break;
      default:
        // Policies and routes are translated and validated by the controller only: read here
        // they would be ignored, and a policy that is ignored must not look applied.
        if (/^(security\.skein\.io|networking\.skein\.io|gateway\.networking\.k8s\.io)\//.test(kind)) {
          readerFor(o).fail('kind', `${kind.split('/').pop()} is enforced only with a controller (--controller); the agent's folder mode does not read policies or routes`);
        }
        // Other kinds (Deployments, ConfigMaps...) are not the data path's.
        break;
    }
  }

  // Pods -> workloads.
  const podInfos: PodInfo[] = [];
  for (const { r, obj } of pods) {
    const namespace = r.str(obj, 'metadata.namespace') ?? 'default';
    const name = r.str(obj, 'metadata.name', true) as string;
    const labels = r.strMap(obj, 'metadata.labels');
    const annotations = r.strMap(obj, 'metadata.annotations');
    const ips: string[] = [];
    for (const [i] of r.arr(obj, 'status.podIPs').entries()) {
      const ip = r.str(obj, `status.podIPs[${i}].ip`, true) as string;
      if (isIP(ip) === 0) r.fail(`status.podIPs[${i}].ip`, `not an IP: ${ip}`);
      if (!ips.includes(ip)) ips.push(ip);
    }
    const podIP = r.str(obj, 'status.podIP');
    if (podIP !== undefined) {
      if (isIP(podIP) === 0) r.fail('status.podIP', `not an IP: ${podIP}`);
      if (!ips.includes(podIP)) ips.unshift(podIP);
    }
    // A pod without an IP is routed nowhere; one scheduled on a node is still its node's to
    // know: its sandbox is being made, and the node's CNI plugin (skein-cni) asks the agent
    // whether to capture it before the pod's IP is published.
    if (ips.length === 0 && !r.str(obj, 'spec.nodeName')) continue;
    if (get(obj, 'spec.hostNetwork') === true) continue; // shares the node's IP: never a mesh workload
    const phase = r.str(obj, 'status.phase') ?? 'Running';
    if (phase === 'Succeeded' || phase === 'Failed') continue; // its IP may already belong to another pod
    const ns = namespaces.get(namespace);
    const meshEnabled = (ns?.meshEnabled ?? false) && labels[MESH_LABEL] !== 'disabled';
    const sa = r.str(obj, 'spec.serviceAccountName') ?? r.str(obj, 'spec.serviceAccount') ?? 'default';
    let ready = phase === 'Running';
    for (const [i] of r.arr(obj, 'status.conditions').entries()) {
      if (r.str(obj, `status.conditions[${i}].type`) === 'Ready') {
        ready = ready && r.str(obj, `status.conditions[${i}].status`) === 'True';
      }
    }
    const podMode = peerAuthn(r, `metadata.annotations.${PEER_AUTHN_ANNOTATION}`, annotations[PEER_AUTHN_ANNOTATION]);
    const namedPorts = new Map<string, number>();
    for (const [ci] of r.arr(obj, 'spec.containers').entries()) {
      for (const [pi] of r.arr(obj, `spec.containers[${ci}].ports`).entries()) {
        const pname = r.str(obj, `spec.containers[${ci}].ports[${pi}].name`);
        const cport = r.port(obj, `spec.containers[${ci}].ports[${pi}].containerPort`, true) as number;
        if (pname) namedPorts.set(pname, cport);
      }
    }
    const workload: Workload = {
      uid: r.str(obj, 'metadata.uid') ?? `${namespace}/${name}`,
      namespace,
      name,
      workloadName: workloadNameOf(name, labels, get(obj, 'metadata.ownerReferences')),
      serviceAccount: sa,
      node: r.str(obj, 'spec.nodeName') ?? '',
      ips,
      labels,
      annotations,
      identity: spiffeIdOf(trustDomain, namespace, sa),
      meshEnabled,
      peerAuthentication: podMode ?? ns?.peerAuthentication ?? 'STRICT',
      excludeOutboundPorts: parsePortList(
        r,
        `metadata.annotations.${EXCLUDE_OUTBOUND_ANNOTATION}`,
        annotations[EXCLUDE_OUTBOUND_ANNOTATION],
      ),
      excludeInboundPorts: parsePortList(
        r,
        `metadata.annotations.${EXCLUDE_INBOUND_ANNOTATION}`,
        annotations[EXCLUDE_INBOUND_ANNOTATION],
      ),
      ready,
    };
    // No netns or cgroup from the pod's own annotations: the pod's author writes those, and
    // the privileged agent finds the pod on its node by UID instead (capture's discovery).
    podInfos.push({ workload, namedPorts, running: phase === 'Running' });
  }
  const podByIp = new Map<string, PodInfo>();
  const podByUid = new Map<string, PodInfo>();
  for (const p of podInfos) {
    podByUid.set(p.workload.uid, p);
    for (const ip of p.workload.ips) podByIp.set(ip, p);
  }

  // Services (+ endpoints from EndpointSlices, else from the selector).
  const out: Service[] = [];
  for (const { r, obj } of services) {
    const namespace = r.str(obj, 'metadata.namespace') ?? 'default';
    const name = r.str(obj, 'metadata.name', true) as string;
    const annotations = r.strMap(obj, 'metadata.annotations');
    const type = r.str(obj, 'spec.type') ?? 'ClusterIP';
    if (type === 'ExternalName') continue; // DNS-only: no VIP to capture
    const vips: string[] = [];
    for (const [i] of r.arr(obj, 'spec.clusterIPs').entries()) {
      const ip = r.str(obj, `spec.clusterIPs[${i}]`, true) as string;
      if (ip === 'None') continue;
      if (isIP(ip) === 0) r.fail(`spec.clusterIPs[${i}]`, `not an IP: ${ip}`);
      if (!vips.includes(ip)) vips.push(ip);
    }
    const clusterIP = r.str(obj, 'spec.clusterIP');
    if (clusterIP !== undefined && clusterIP !== 'None' && clusterIP !== '') {
      if (isIP(clusterIP) === 0) r.fail('spec.clusterIP', `not an IP: ${clusterIP}`);
      if (!vips.includes(clusterIP)) vips.unshift(clusterIP);
    }
    const ports: ServicePort[] = [];
    const namedTargets = new Map<string, string>(); // service port name -> target port name
    for (const [i] of r.arr(obj, 'spec.ports').entries()) {
      const at = `spec.ports[${i}]`;
      const protocol = r.str(obj, `${at}.protocol`) ?? 'TCP';
      if (protocol !== 'TCP') continue; // UDP/SCTP are not proxied
      const port = r.port(obj, `${at}.port`, true) as number;
      const pname = r.str(obj, `${at}.name`) ?? '';
      const tp = get(obj, `${at}.targetPort`);
      let targetPort = port;
      if (typeof tp === 'number') targetPort = r.port(obj, `${at}.targetPort`) as number;
      else if (typeof tp === 'string') {
        if (/^\d+$/.test(tp)) {
          targetPort = Number(tp);
          if (targetPort < 1 || targetPort > 65535) r.fail(`${at}.targetPort`, `not a port: ${tp}`);
        } else {
          targetPort = 0; // named: resolved per endpoint
          namedTargets.set(pname, tp);
        }
      } else if (tp !== undefined && tp !== null) r.fail(`${at}.targetPort`, 'expected a number or a port name');
      const sp: ServicePort = { name: pname, port, targetPort };
      const appProtocol = normaliseAppProtocol(r.str(obj, `${at}.appProtocol`));
      if (appProtocol) sp.appProtocol = appProtocol;
      ports.push(sp);
    }
    const lbRaw = annotations[LOAD_BALANCER_ANNOTATION];
    let loadBalancer: LoadBalancerAlgorithm = opts.defaultLoadBalancer ?? 'ROUND_ROBIN';
    if (lbRaw !== undefined) {
      const v = lbRaw.toUpperCase().replace(/-/g, '_');
      if (v !== 'ROUND_ROBIN' && v !== 'LEAST_REQUEST') {
        r.fail(`metadata.annotations.${LOAD_BALANCER_ANNOTATION}`, `expected ROUND_ROBIN or LEAST_REQUEST, got ${lbRaw}`);
      }
      loadBalancer = v as LoadBalancerAlgorithm;
    }

    const endpoints: Endpoint[] = [];
    const mySlices = slices.filter(
      (s) => s.namespace === namespace && (get(s.obj, 'metadata.labels') as Obj | undefined)?.[SERVICE_NAME_LABEL] === name,
    );
    const toEndpoint = (ip: string, ready: boolean, node: string | undefined, uid: string | undefined): Endpoint => {
      const pod = (uid ? podByUid.get(uid) : undefined) ?? podByIp.get(ip);
      const e: Endpoint = { ip, ready, ports: {}, meshEnabled: pod?.workload.meshEnabled ?? false };
      const n = node ?? pod?.workload.node;
      if (n) e.node = n;
      if (pod) {
        e.workloadUid = pod.workload.uid;
        e.identity = pod.workload.identity;
        e.peer = peerMetadataOf(pod.workload);
        // A pod's readiness is the endpoint's readiness when the slice does not say.
        e.ready = ready && pod.workload.ready;
      }
      for (const sp of ports) {
        const tname = namedTargets.get(sp.name);
        if (tname !== undefined) {
          const resolved = pod?.namedPorts.get(tname);
          if (resolved !== undefined) e.ports[sp.name] = resolved;
        }
      }
      return e;
    };
    if (mySlices.length > 0) {
      const seen = new Set<string>();
      for (const s of mySlices) {
        const sr = s.r;
        const slicePorts: Record<string, number> = {};
        for (const [i] of sr.arr(s.obj, 'ports').entries()) {
          const p = sr.port(s.obj, `ports[${i}].port`);
          if (p !== undefined) slicePorts[sr.str(s.obj, `ports[${i}].name`) ?? ''] = p;
        }
        for (const [i] of sr.arr(s.obj, 'endpoints').entries()) {
          const at = `endpoints[${i}]`;
          const addrs = sr.arr(s.obj, `${at}.addresses`);
          if (addrs.length === 0) sr.fail(`${at}.addresses`, 'empty');
          const ip = sr.str(s.obj, `${at}.addresses[0]`, true) as string;
          if (isIP(ip) === 0) sr.fail(`${at}.addresses[0]`, `not an IP: ${ip}`);
          if (seen.has(ip)) continue;
          seen.add(ip);
          const readyV = get(s.obj, `${at}.conditions.ready`);
          if (readyV !== undefined && readyV !== null && typeof readyV !== 'boolean') {
            sr.fail(`${at}.conditions.ready`, 'expected a boolean');
          }
          const kindRef = sr.str(s.obj, `${at}.targetRef.kind`);
          const uid = kindRef === undefined || kindRef === 'Pod' ? sr.str(s.obj, `${at}.targetRef.uid`) : undefined;
          const e = toEndpoint(ip, readyV !== false, sr.str(s.obj, `${at}.nodeName`), uid);
          // The slice's port numbers are authoritative (they are what kube-proxy would use).
          for (const [pn, pv] of Object.entries(slicePorts)) e.ports[pn] = pv;
          endpoints.push(e);
        }
      }
    } else {
      const selector = r.strMap(obj, 'spec.selector');
      if (Object.keys(selector).length > 0) {
        for (const p of podInfos) {
          if (p.workload.namespace !== namespace) continue;
          if (!Object.entries(selector).every(([k, v]) => p.workload.labels[k] === v)) continue;
          const ip = p.workload.ips[0];
          if (ip) endpoints.push(toEndpoint(ip, p.running, undefined, p.workload.uid));
        }
      }
    }
    // Ports still unresolved stay 0 in ServicePort and absent from the endpoint: not routable there.
    for (const sp of ports) {
      if (sp.targetPort === 0 && namedTargets.has(sp.name)) {
        const anyResolved = endpoints.find((e) => e.ports[sp.name] !== undefined);
        if (anyResolved) sp.targetPort = anyResolved.ports[sp.name] as number;
      }
    }
    endpoints.sort((a, b) => (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0));
    out.push({
      namespace,
      name,
      hostname: `${name}.${namespace}.svc.${clusterDomain}`,
      vips,
      ports,
      endpoints,
      loadBalancer,
    });
  }

  const workloads = podInfos.map((p) => p.workload).sort((a, b) => (a.uid < b.uid ? -1 : a.uid > b.uid ? 1 : 0));
  out.sort((a, b) => (`${a.namespace}/${a.name}` < `${b.namespace}/${b.name}` ? -1 : 1));
  nodes.sort((a, b) => (a.name < b.name ? -1 : 1));
  return { version, trustDomain, clusterDomain, nodes, workloads, services: out };
}

/** A CronJob's Jobs are named `<cronjob>-<scheduled time in minutes>`. */
const CRONJOB_JOB = /^(.+)-\d{8,10}$/;

/**
 * The workload a pod belongs to, named as Istio names it: its controlling owner's name, with a
 * Deployment's ReplicaSet (`<deployment>-<pod-template-hash>`, the pod labelled with that hash) taken back to the Deployment and
 * a CronJob's Job to the CronJob; a pod without an owner is its own workload.
 */
export function workloadNameOf(pod: string, labels: Record<string, string>, ownerReferences: unknown): string {
  if (!Array.isArray(ownerReferences)) return pod;
  const refs = ownerReferences.filter((o): o is { kind?: unknown; name?: unknown; controller?: unknown } => typeof o === 'object' && o !== null);
  const owner = refs.find((o) => o.controller === true) ?? refs[0];
  if (!owner || typeof owner.name !== 'string' || owner.name === '') return pod;
  const { name } = owner;
  if (owner.kind === 'ReplicaSet') {
    const hash = labels['pod-template-hash'];
    // Without the hash label it is a ReplicaSet of its own (as Istio reads it).
    return hash && name.endsWith(`-${hash}`) ? name.slice(0, -hash.length - 1) : name;
  }
  if (owner.kind === 'Job') return CRONJOB_JOB.exec(name)?.[1] ?? name;
  return name;
}

/** What telemetry names an endpoint's pod by (agents hold only their own node's workloads). */
export function peerMetadataOf(w: Workload): PeerMetadata {
  const l = w.labels;
  const app = l.app ?? l['app.kubernetes.io/name'];
  const version = l.version ?? l['app.kubernetes.io/version'];
  return { namespace: w.namespace, workloadName: w.workloadName ?? w.name, ...(app ? { app } : {}), ...(version ? { version } : {}) };
}
