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

/** Which requests a BackendTrafficPolicy's fault injection applies to: a route (optionally one named rule). */
export interface RouteTargetRef {
  kind: 'HTTPRoute' | 'GRPCRoute';
  namespace: string;
  name: string;
  /** The rule's `name` (Gateway API sectionName); absent = every rule of the route. */
  sectionName?: string;
}

/** Retry-on conditions (Envoy/Istio names) a BackendTrafficPolicy may list. */
export const RETRY_ON = ['5xx', 'gateway-error', 'reset', 'connect-failure', 'retriable-4xx', 'refused-stream', 'unavailable', 'cancelled', 'deadline-exceeded', 'resource-exhausted', 'internal'] as const;
export type RetryOn = (typeof RETRY_ON)[number];

export interface RetryPolicy {
  /** Retries after the first try (0 = none). */
  attempts: number;
  perTryTimeoutMs?: number;
  /** Conditions that make an attempt retriable (HTTP and gRPC names as Envoy's retry_on). */
  retryOn: RetryOn[];
  /** Extra HTTP status codes that are retriable (Gateway API GEP-1731 `codes`). */
  codes?: number[];
  /** Exponential backoff with full jitter: base doubles per retry up to max. */
  backoff: { baseMs: number; maxMs: number };
  /** Retries in flight/recent ≤ percent% of requests, but always at least minRetriesPerSecond. */
  budget: { percent: number; minRetriesPerSecond: number };
  /** Requests with larger bodies are never retried (the replay buffer is bounded). Default 65536. */
  maxReplayBytes?: number;
  /** Retry non-idempotent methods (POST, PATCH) too. Default false. */
  nonIdempotent?: boolean;
}

export type LoadBalancingAlgorithm = 'ROUND_ROBIN' | 'LEAST_REQUEST' | 'PEAK_EWMA' | 'CONSISTENT_HASH';

export interface LoadBalancingPolicy {
  algorithm: LoadBalancingAlgorithm;
  /** CONSISTENT_HASH: what the key is (exactly one). */
  hash?: { header?: string; cookie?: { name: string; ttlMs?: number }; sourceIdentity?: boolean };
  /** PreferClose: same node first, then same zone, then the rest (when the close ones are ejected or missing). */
  locality?: 'PreferClose';
}

/** Per destination Service, per source agent. Pending: sent, no response head yet. */
export interface CircuitBreakerPolicy {
  maxPendingRequests?: number;
  maxRequests?: number;
  maxRetries?: number;
}

export interface OutlierDetectionPolicy {
  consecutive5xx?: number;
  consecutiveGatewayErrors?: number;
  consecutiveConnectFailures?: number;
  intervalMs: number;
  baseEjectionTimeMs: number;
  maxEjectionTimeMs: number;
  maxEjectionPercent: number;
}

export interface RateLimitPolicy {
  requestsPerSecond: number;
  burst: number;
  /** Per source identity (SPIFFE principals): their own bucket with their own rate. */
  overrides: { principals: string[]; requestsPerSecond: number; burst: number }[];
}

export interface FaultInjectionPolicy {
  delay?: { delayMs: number; percent: number };
  abort?: { httpStatus?: number; grpcStatus?: number; percent: number };
}

/** skein's networking.skein.io BackendTrafficPolicy (Envoy Gateway's shape where it has one). */
export interface BackendTrafficPolicy {
  namespace: string;
  name: string;
  /** Services (`namespace/name`) it applies to. */
  targets: string[];
  /** Routes it applies to (fault injection only). */
  routeTargets?: RouteTargetRef[];
  loadBalancer?: LoadBalancingPolicy;
  retry?: RetryPolicy;
  /** The whole exchange, retries included, where a route sets none. */
  timeout?: { requestMs?: number };
  circuitBreaker?: CircuitBreakerPolicy;
  outlierDetection?: OutlierDetectionPolicy;
  /** Enforced by the destination agent, per destination workload and port. */
  rateLimit?: RateLimitPolicy;
  faultInjection?: FaultInjectionPolicy;
  /** creationTimestamp, for "oldest wins" between policies on one target. */
  createdAt?: string;
}

export type StringMatchType = 'Exact' | 'RegularExpression';

export interface RouteMatch {
  path?: { type: 'Exact' | 'PathPrefix' | 'RegularExpression'; value: string };
  method?: string;
  /** Names lower-case. */
  headers?: { name: string; value: string; type: StringMatchType }[];
  queryParams?: { name: string; value: string; type: StringMatchType }[];
  /** GRPCRoute: service and/or method. */
  grpc?: { type: StringMatchType; service?: string; method?: string };
}

export interface HeaderModifier {
  set?: { name: string; value: string }[];
  add?: { name: string; value: string }[];
  /** Names lower-case. */
  remove?: string[];
}

export type PathModifier = { type: 'ReplaceFullPath'; value: string } | { type: 'ReplacePrefixMatch'; value: string };

/**
 * A rule's (or a backend's) filters, one field per Gateway API filter type (the spec allows
 * each type at most once, RequestMirror excepted; RequestRedirect and URLRewrite exclude each other).
 */
export interface RouteFilters {
  requestHeaders?: HeaderModifier;
  responseHeaders?: HeaderModifier;
  redirect?: { scheme?: 'http' | 'https'; hostname?: string; path?: PathModifier; port?: number; statusCode: 301 | 302 | 303 | 307 | 308 };
  rewrite?: { hostname?: string; path?: PathModifier };
  /** Each mirror gets `percent` (0-100, fractions allowed) of the requests; answers are dropped. */
  mirrors?: { namespace: string; name: string; port?: number; percent: number }[];
}

export interface RouteBackend {
  namespace: string;
  name: string;
  port?: number;
  weight: number;
  filters?: RouteFilters;
}

export interface RouteRule {
  /** The rule's `name` (Gateway API v1.2+): what a policy's sectionName refers to. */
  name?: string;
  matches: RouteMatch[];
  backends: RouteBackend[];
  filters?: RouteFilters;
  /** timeouts.request: the whole exchange, retries included. */
  timeoutMs?: number;
  /** timeouts.backendRequest: each try. */
  backendTimeoutMs?: number;
  /** GEP-1731 retry: codes, attempts, backoff. */
  retry?: { codes: number[]; attempts: number; backoffMs?: number };
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
