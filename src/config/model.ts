/**
 * The mesh model: plain data that every room reads (proxy, capture, agent, controller).
 * It is what Kubernetes objects (or a folder of the same YAML) translate into, and what the
 * controller streams to agents. No behaviour here: types and tiny pure helpers only.
 */

/** SPIFFE ID, `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`. */
export type SpiffeId = string;

/** The application protocol a Service port speaks; absent means "detect from first bytes". */
export type AppProtocol = 'http' | 'http2' | 'grpc' | 'tcp';

/** How a workload treats plaintext arriving from outside the mesh (on 15006). */
export type PeerAuthenticationMode = 'STRICT' | 'PERMISSIVE';

export type LoadBalancerAlgorithm = 'ROUND_ROBIN' | 'LEAST_REQUEST';

export interface Workload {
  /** Stable id: the Pod's metadata.uid, or `<namespace>/<name>` where no uid exists. */
  uid: string;
  namespace: string;
  name: string;
  /**
   * The workload the pod belongs to, as Istio names it (source_workload / destination_workload):
   * its controller's name (a Deployment, not its ReplicaSet; a CronJob, not its Job), else the
   * pod's own name. Absent in configs from before it existed: readers fall back to `name`.
   */
  workloadName?: string;
  serviceAccount: string;
  /** Node the pod runs on (spec.nodeName). */
  node: string;
  /** Pod IPs (status.podIPs); the first is the primary. */
  ips: string[];
  labels: Record<string, string>;
  annotations: Record<string, string>;
  identity: SpiffeId;
  /** The pod is in the mesh (namespace labelled skein.io/mesh=enabled, pod not opted out). */
  meshEnabled: boolean;
  peerAuthentication: PeerAuthenticationMode;
  /** Outbound destination ports never captured (annotation skein.io/exclude-outbound-ports). */
  excludeOutboundPorts: number[];
  /** Inbound ports never captured (annotation skein.io/exclude-inbound-ports). */
  excludeInboundPorts: number[];
  /**
   * Path of the pod's network namespace on its node (/proc/<pid>/ns/net). Never from config:
   * only the pod's node agent sets it, from what it found in the kubelet's cgroups.
   */
  netnsPath?: string;
  ready: boolean;
}

export interface ServicePort {
  name: string;
  port: number;
  /** Resolved target port number on the endpoints. */
  targetPort: number;
  appProtocol?: AppProtocol;
}

export interface Endpoint {
  /** Workload uid when the endpoint is a known pod. */
  workloadUid?: string;
  ip: string;
  node?: string;
  /** Expected identity of the endpoint; required to tunnel to it. */
  identity?: SpiffeId;
  ready: boolean;
  /** Port name -> target port number, from the EndpointSlice. */
  ports: Record<string, number>;
  /** The endpoint is in the mesh (reachable through its node's agent on 15008). */
  meshEnabled: boolean;
  /**
   * Its pod, as telemetry names it (an agent holds only its own node's workloads, so a remote
   * endpoint's workload, app and version come from here).
   */
  peer?: PeerMetadata;
}

/** A pod's names for telemetry: Istio's *_workload, *_workload_namespace, *_app, *_version. */
export interface PeerMetadata {
  namespace: string;
  workloadName: string;
  app?: string;
  version?: string;
}

export interface Service {
  namespace: string;
  name: string;
  /** `<name>.<namespace>.svc.<cluster-domain>` */
  hostname: string;
  /** ClusterIPs. */
  vips: string[];
  ports: ServicePort[];
  endpoints: Endpoint[];
  loadBalancer: LoadBalancerAlgorithm;
}

export interface NodeInfo {
  name: string;
  /** Underlay address of the node (InternalIP). */
  address?: string;
  podCIDRs: string[];
  /** The Node's topology.kubernetes.io/zone label, when it has one (locality-aware balancing). */
  zone?: string;
}

/** Everything an agent needs, at one version. */
export interface MeshSnapshot {
  /** Monotonic per source; opaque to readers. */
  version: string;
  trustDomain: string;
  clusterDomain: string;
  nodes: NodeInfo[];
  workloads: Workload[];
  services: Service[];
}

export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
export const DEFAULT_CLUSTER_DOMAIN = 'cluster.local';
export const MESH_LABEL = 'skein.io/mesh';

export function spiffeIdOf(trustDomain: string, namespace: string, serviceAccount: string): SpiffeId {
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
}
