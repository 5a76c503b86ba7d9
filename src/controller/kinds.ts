/**
 * The Kubernetes kinds the controller consumes: where they live in the API (for list/watch),
 * whether they are namespaced, and their schema (for validation and, for skein's own kinds,
 * the CRD manifests).
 */
import type { Schema } from './schema.js';

export interface KindInfo {
  /** `v1`, `discovery.k8s.io/v1`, ... */
  apiVersion: string;
  kind: string;
  /** Lower-case plural resource name in API paths. */
  plural: string;
  namespaced: boolean;
  schema: Schema;
  /** A skein CRD (manifest generated from the schema). */
  crd?: { shortNames: string[]; description: string };
}

const str: Schema = { type: 'string' };
const strList: Schema = { type: 'array', items: str };
const strMap: Schema = { type: 'map', values: str };
const port: Schema = { type: 'integer', minimum: 1, maximum: 65535 };
const duration: Schema = { type: 'string', format: 'duration' };

/** metadata: what skein reads is typed; the server-managed rest is let through. */
const metadata: Schema = {
  type: 'object',
  open: true,
  required: ['name'],
  fields: { name: str, namespace: str, labels: strMap, annotations: strMap, uid: str, creationTimestamp: str, resourceVersion: str },
};

function topLevel(extra: Record<string, Schema>): Schema {
  return { type: 'object', required: ['apiVersion', 'kind', 'metadata'], fields: { apiVersion: str, kind: str, metadata, ...extra } };
}

const selector: Schema = {
  type: 'object',
  description: 'Pods of the policy namespace whose labels include all of matchLabels; absent = every pod of the namespace.',
  fields: { matchLabels: strMap },
  required: ['matchLabels'],
};

const cidrList: Schema = { type: 'array', items: { type: 'string', format: 'cidr' } };

/** Istio's security.istio.io/v1 AuthorizationPolicy spec (CUSTOM, targetRefs and JWT fields are not supported: refused as unknown). */
const authorizationSpec: Schema = {
  type: 'object',
  fields: {
    selector,
    action: { type: 'string', enum: ['ALLOW', 'DENY', 'AUDIT'], description: 'Default ALLOW.' },
    rules: {
      type: 'array',
      items: {
        type: 'object',
        fields: {
          from: {
            type: 'array',
            items: {
              type: 'object',
              required: ['source'],
              fields: {
                source: {
                  type: 'object',
                  fields: {
                    principals: strList,
                    notPrincipals: strList,
                    namespaces: strList,
                    notNamespaces: strList,
                    ipBlocks: cidrList,
                    notIpBlocks: cidrList,
                  },
                },
              },
            },
          },
          to: {
            type: 'array',
            items: {
              type: 'object',
              required: ['operation'],
              fields: {
                operation: {
                  type: 'object',
                  fields: {
                    ports: { ...strList, description: 'Ports as strings, as Istio writes them.' },
                    notPorts: strList,
                    methods: strList,
                    notMethods: strList,
                    paths: strList,
                    notPaths: strList,
                    hosts: strList,
                    notHosts: strList,
                  },
                },
              },
            },
          },
          when: {
            type: 'array',
            items: { type: 'object', required: ['key'], fields: { key: str, values: strList, notValues: strList } },
          },
        },
      },
    },
  },
};

const mtlsMode: Schema = { type: 'string', enum: ['STRICT', 'PERMISSIVE'] };
const mtls: Schema = { type: 'object', required: ['mode'], fields: { mode: mtlsMode } };
/** Istio's security.istio.io/v1 PeerAuthentication spec (mode UNSET/DISABLE are not supported: refused). */
const peerAuthenticationSpec: Schema = {
  type: 'object',
  required: ['mtls'],
  fields: { selector, mtls, portLevelMtls: { type: 'map', values: mtls, description: 'Port (as a string) -> {mode}.' } },
};

const backendTrafficSpec: Schema = {
  type: 'object',
  required: ['targetRefs'],
  fields: {
    targetRefs: {
      type: 'array',
      minItems: 1,
      items: { type: 'object', required: ['kind', 'name'], fields: { group: str, kind: { type: 'string', enum: ['Service'] }, name: str } },
    },
    loadBalancer: { type: 'object', fields: { algorithm: { type: 'string', enum: ['ROUND_ROBIN', 'LEAST_REQUEST'] } } },
    retry: {
      type: 'object',
      required: ['attempts'],
      fields: {
        attempts: { type: 'integer', minimum: 0, maximum: 10 },
        perTryTimeout: duration,
        retryOn: strList,
        budget: {
          type: 'object',
          fields: { percent: { type: 'integer', minimum: 0, maximum: 100 }, minRetriesPerSecond: { type: 'integer', minimum: 0 } },
        },
      },
    },
    timeout: { type: 'object', fields: { request: duration, idle: duration } },
    circuitBreaker: {
      type: 'object',
      fields: {
        maxConnections: { type: 'integer', minimum: 1 },
        maxPendingRequests: { type: 'integer', minimum: 1 },
        maxRequests: { type: 'integer', minimum: 1 },
      },
    },
    outlierDetection: {
      type: 'object',
      fields: {
        consecutive5xx: { type: 'integer', minimum: 1 },
        interval: duration,
        baseEjectionTime: duration,
        maxEjectionPercent: { type: 'integer', minimum: 0, maximum: 100 },
      },
    },
    rateLimit: {
      type: 'object',
      required: ['requestsPerSecond'],
      fields: { requestsPerSecond: { type: 'integer', minimum: 1 }, burst: { type: 'integer', minimum: 0 } },
    },
  },
};

const parentRef: Schema = {
  type: 'object',
  required: ['name'],
  fields: { group: str, kind: str, namespace: str, name: str, port, sectionName: str },
};
const backendRef: Schema = {
  type: 'object',
  required: ['name'],
  fields: { group: str, kind: str, namespace: str, name: str, port, weight: { type: 'integer', minimum: 0, maximum: 1_000_000 } },
};
const headerMatch: Schema = {
  type: 'object',
  required: ['name', 'value'],
  fields: { type: { type: 'string', enum: ['Exact', 'RegularExpression'] }, name: str, value: str },
};
const httpRouteSpec: Schema = {
  type: 'object',
  fields: {
    parentRefs: { type: 'array', minItems: 1, items: parentRef },
    hostnames: strList,
    rules: {
      type: 'array',
      items: {
        type: 'object',
        fields: {
          name: str,
          matches: {
            type: 'array',
            items: {
              type: 'object',
              fields: {
                path: {
                  type: 'object',
                  fields: { type: { type: 'string', enum: ['Exact', 'PathPrefix', 'RegularExpression'] }, value: str },
                },
                method: { type: 'string', enum: ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'] },
                headers: { type: 'array', items: headerMatch },
              },
            },
          },
          backendRefs: { type: 'array', items: backendRef },
          timeouts: { type: 'object', fields: { request: duration, backendRequest: duration } },
        },
      },
    },
  },
};
const grpcRouteSpec: Schema = {
  type: 'object',
  fields: {
    parentRefs: { type: 'array', minItems: 1, items: parentRef },
    hostnames: strList,
    rules: {
      type: 'array',
      items: {
        type: 'object',
        fields: {
          name: str,
          matches: {
            type: 'array',
            items: {
              type: 'object',
              fields: {
                method: {
                  type: 'object',
                  fields: { type: { type: 'string', enum: ['Exact', 'RegularExpression'] }, service: str, method: str },
                },
                headers: { type: 'array', items: headerMatch },
              },
            },
          },
          backendRefs: { type: 'array', items: backendRef },
        },
      },
    },
  },
};

const anySpec: Schema = { type: 'any' };

export const KINDS: KindInfo[] = [
  { apiVersion: 'v1', kind: 'Namespace', plural: 'namespaces', namespaced: false, schema: topLevel({ spec: anySpec, status: anySpec }) },
  { apiVersion: 'v1', kind: 'Node', plural: 'nodes', namespaced: false, schema: topLevel({ spec: anySpec, status: anySpec }) },
  { apiVersion: 'v1', kind: 'Pod', plural: 'pods', namespaced: true, schema: topLevel({ spec: anySpec, status: anySpec }) },
  { apiVersion: 'v1', kind: 'Service', plural: 'services', namespaced: true, schema: topLevel({ spec: anySpec, status: anySpec }) },
  {
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    plural: 'serviceaccounts',
    namespaced: true,
    schema: topLevel({ secrets: anySpec, imagePullSecrets: anySpec, automountServiceAccountToken: { type: 'boolean' } }),
  },
  {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    plural: 'endpointslices',
    namespaced: true,
    schema: topLevel({ addressType: str, endpoints: anySpec, ports: anySpec }),
  },
  {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    plural: 'httproutes',
    namespaced: true,
    schema: topLevel({ spec: httpRouteSpec, status: anySpec }),
  },
  {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'GRPCRoute',
    plural: 'grpcroutes',
    namespaced: true,
    schema: topLevel({ spec: grpcRouteSpec, status: anySpec }),
  },
  {
    apiVersion: 'security.skein.io/v1alpha1',
    kind: 'AuthorizationPolicy',
    plural: 'authorizationpolicies',
    namespaced: true,
    schema: topLevel({ spec: authorizationSpec, status: anySpec }),
    crd: {
      shortNames: ['skap'],
      description: "Allows, denies or audits requests to the selected workloads by source identity, namespace, IP block, port and HTTP attributes; Istio's security.istio.io/v1 AuthorizationPolicy shape.",
    },
  },
  {
    apiVersion: 'security.skein.io/v1alpha1',
    kind: 'PeerAuthentication',
    plural: 'peerauthentications',
    namespaced: true,
    schema: topLevel({ spec: peerAuthenticationSpec, status: anySpec }),
    crd: { shortNames: ['skpa'], description: 'Whether the selected workloads accept plaintext from outside the mesh (PERMISSIVE) or only mTLS (STRICT).' },
  },
  {
    apiVersion: 'networking.skein.io/v1alpha1',
    kind: 'BackendTrafficPolicy',
    plural: 'backendtrafficpolicies',
    namespaced: true,
    schema: topLevel({ spec: backendTrafficSpec, status: anySpec }),
    crd: {
      shortNames: ['skbtp'],
      description: 'Retries (with budgets), timeouts, circuit breaking, outlier detection, load balancing and rate limits toward Services.',
    },
  },
];

const byGvk = new Map(KINDS.map((k) => [`${k.apiVersion}/${k.kind}`, k]));

/** The kind of `apiVersion` + `kind`, or undefined for kinds skein does not consume. */
export function kindInfo(apiVersion: string, kind: string): KindInfo | undefined {
  const k = byGvk.get(`${apiVersion}/${kind}`);
  if (k) return k;
  // Gateway API routes also come as v1beta1/v1alpha2; same fields for what skein reads.
  if (apiVersion.startsWith('gateway.networking.k8s.io/')) return byGvk.get(`gateway.networking.k8s.io/v1/${kind}`);
  return undefined;
}

/** Groups the lab/operator may use for skein kinds; objects of these groups with an unknown kind are refused. */
export const SKEIN_GROUPS = ['security.skein.io', 'networking.skein.io', 'skein.io'];

export function groupOf(apiVersion: string): string {
  const i = apiVersion.indexOf('/');
  return i < 0 ? '' : apiVersion.slice(0, i);
}
