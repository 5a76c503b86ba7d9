/**
 * Routes and policies as the controller streams them to agents, next to the MeshSnapshot's
 * workloads and services. Plain data, like model.ts; the policy engine and the router read
 * these. They ride on ControlledMeshSnapshot until the data path adopts them as
 * MeshSnapshot fields.
 */
import type { MeshSnapshot } from './model.js';

export type PolicyAction = 'ALLOW' | 'DENY' | 'AUDIT';

/** Which workloads a policy applies to: its namespace's pods whose labels include these. */
export interface WorkloadSelector {
  matchLabels: Record<string, string>;
}

export interface AuthorizationSource {
  principals?: string[];
  notPrincipals?: string[];
  namespaces?: string[];
  notNamespaces?: string[];
  ipBlocks?: string[];
  notIpBlocks?: string[];
}

/** Istio's `to[].operation`; ports as numbers (the YAML has them as strings). */
export interface AuthorizationOperation {
  ports?: number[];
  notPorts?: number[];
  methods?: string[];
  notMethods?: string[];
  paths?: string[];
  notPaths?: string[];
  hosts?: string[];
  notHosts?: string[];
}

/** Istio's `when[]`: a key (`request.headers[x-id]`, `source.namespace`...) and values. */
export interface AuthorizationCondition {
  key: string;
  values?: string[];
  notValues?: string[];
}

export interface AuthorizationRule {
  /** The rule's `from[].source` entries (any may match). */
  from: AuthorizationSource[];
  /** The rule's `to[].operation` entries (any may match). */
  to: AuthorizationOperation[];
  /** Every condition must hold. */
  when: AuthorizationCondition[];
}

export interface AuthorizationPolicy {
  namespace: string;
  name: string;
  /** Absent: every workload of the namespace (mesh-wide in the root namespace). */
  selector?: WorkloadSelector;
  action: PolicyAction;
  rules: AuthorizationRule[];
  /** In the controller's root namespace: applies to workloads of every namespace. */
  meshWide?: boolean;
  /** `skein.io/dry-run: "true"`: evaluated and reported, never enforced. */
  dryRun?: boolean;
}

export interface PeerAuthenticationPolicy {
  namespace: string;
  name: string;
  selector?: WorkloadSelector;
  mode: 'STRICT' | 'PERMISSIVE';
  /** Per-port overrides (port -> mode). */
  portLevelMtls: Record<string, 'STRICT' | 'PERMISSIVE'>;
  /** In the controller's root namespace: the mesh-wide default. */
  meshWide?: boolean;
}

export interface BackendTrafficPolicy {
  namespace: string;
  name: string;
  /** Services (`namespace/name`) it applies to. */
  targets: string[];
  loadBalancer?: 'ROUND_ROBIN' | 'LEAST_REQUEST';
  retry?: {
    attempts: number;
    perTryTimeoutMs?: number;
    retryOn: string[];
    budget?: { percent: number; minRetriesPerSecond: number };
  };
  timeout?: { requestMs?: number; idleMs?: number };
  circuitBreaker?: { maxConnections?: number; maxPendingRequests?: number; maxRequests?: number };
  outlierDetection?: { consecutive5xx: number; intervalMs: number; baseEjectionTimeMs: number; maxEjectionPercent: number };
  rateLimit?: { requestsPerSecond: number; burst: number };
}

export interface RouteMatch {
  path?: { type: 'Exact' | 'PathPrefix' | 'RegularExpression'; value: string };
  method?: string;
  headers?: { name: string; value: string; type: 'Exact' | 'RegularExpression' }[];
  /** GRPCRoute: service and/or method. */
  grpc?: { service?: string; method?: string };
}

export interface RouteBackend {
  namespace: string;
  name: string;
  port?: number;
  weight: number;
}

export interface RouteRule {
  matches: RouteMatch[];
  backends: RouteBackend[];
  timeoutMs?: number;
}

/** A Gateway API HTTPRoute/GRPCRoute attached to Services (the GAMMA mesh profile). */
export interface MeshRoute {
  kind: 'HTTPRoute' | 'GRPCRoute';
  namespace: string;
  name: string;
  /** Services (`namespace/name`, optional port) the route attaches to. */
  parents: { namespace: string; name: string; port?: number }[];
  hostnames: string[];
  rules: RouteRule[];
  /** creationTimestamp, for "oldest wins" between conflicting routes. */
  createdAt?: string;
}

/** What an agent receives from the controller: the mesh model plus routes and policies. */
export interface ControlledMeshSnapshot extends MeshSnapshot {
  routes: MeshRoute[];
  authorizationPolicies: AuthorizationPolicy[];
  peerAuthentications: PeerAuthenticationPolicy[];
  backendTrafficPolicies: BackendTrafficPolicy[];
}

/** True when `labels` carries every label of the selector (an absent selector matches all). */
export function selectorMatches(selector: WorkloadSelector | undefined, labels: Record<string, string>): boolean {
  if (!selector) return true;
  for (const [k, v] of Object.entries(selector.matchLabels)) if (labels[k] !== v) return false;
  return true;
}
