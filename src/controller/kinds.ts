/**
 * The Kubernetes kinds the controller consumes: where they live in the API (for list/watch),
 * whether they are namespaced, and their schema (for validation and, for skein's own kinds,
 * the CRD manifests).
 */
import { RETRY_ON } from '../config/policy-model.js';
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

const percentage: Schema = { type: 'number', minimum: 0, maximum: 100, description: 'Percent of requests (0-100, fractions allowed). Default 100.' };
const positiveDuration: Schema = { ...duration, description: 'Go-style duration (250ms, 1.5s, 1m); must be > 0.' };

/** A target: a Service, or an HTTPRoute/GRPCRoute (optionally one rule, by name) for fault injection. */
const policyTargetRef: Schema = {
  type: 'object',
  required: ['kind', 'name'],
  fields: {
    group: { ...str, description: "'' (core) for a Service; gateway.networking.k8s.io for a route." },
    kind: { type: 'string', enum: ['Service', 'HTTPRoute', 'GRPCRoute'] },
    name: str,
    sectionName: { ...str, description: 'Routes only: the name of one rule (rules[].name).' },
  },
};

/**
 * skein's networking.skein.io/v1alpha1 BackendTrafficPolicy spec: Envoy Gateway's field
 * names where it has them (loadBalancer, consistentHash, faultInjection), skein's own for the
 * rest (retry budgets, rate-limit overrides by principal).
 */
const backendTrafficSpec: Schema = {
  type: 'object',
  required: ['targetRefs'],
  fields: {
    targetRefs: { type: 'array', minItems: 1, items: policyTargetRef },
    loadBalancer: {
      type: 'object',
      fields: {
        type: { type: 'string', enum: ['RoundRobin', 'LeastRequest', 'PeakEWMA', 'ConsistentHash'] },
        algorithm: { type: 'string', enum: ['ROUND_ROBIN', 'LEAST_REQUEST'], description: 'Older spelling of type (RoundRobin, LeastRequest).' },
        consistentHash: {
          type: 'object',
          required: ['type'],
          fields: {
            type: { type: 'string', enum: ['Header', 'Cookie', 'SourceIdentity'] },
            header: { type: 'object', required: ['name'], fields: { name: str } },
            cookie: { type: 'object', required: ['name'], fields: { name: str, ttl: positiveDuration } },
          },
        },
        locality: { type: 'string', enum: ['PreferClose'], description: 'Same node first, then same zone, then the rest.' },
      },
    },
    retry: {
      type: 'object',
      required: ['attempts'],
      fields: {
        attempts: { type: 'integer', minimum: 0, maximum: 10, description: 'Retries after the first try.' },
        perTryTimeout: positiveDuration,
        retryOn: {
          type: 'array',
          items: { type: 'string', enum: [...RETRY_ON] },
          description: 'Default connect-failure, refused-stream, unavailable.',
        },
        codes: { type: 'array', items: { type: 'integer', minimum: 400, maximum: 599 }, description: 'Extra retriable HTTP status codes.' },
        backoff: { type: 'object', fields: { baseInterval: positiveDuration, maxInterval: positiveDuration }, description: 'Default 25ms doubling up to 250ms.' },
        budget: {
          type: 'object',
          fields: { percent: { type: 'number', minimum: 0, maximum: 100 }, minRetriesPerSecond: { type: 'integer', minimum: 0 } },
          description: 'Default 20 percent of requests, at least 10 retries per second.',
        },
        maxReplayBytes: { type: 'integer', minimum: 0, description: 'Larger request bodies are not retried.' },
        retryNonIdempotent: { type: 'boolean', description: 'Retry POST/PATCH too. Default false.' },
      },
    },
    timeout: {
      type: 'object',
      fields: { request: positiveDuration },
      unsupported: {
        idle: 'not enforced by the agents yet (requests share pooled, multiplexed sessions; idle time is per agent: --tcp-idle-timeout)',
        connect: 'not enforced by the agents yet (connects share the tunnel pool; its connect timeout is per agent)',
      },
    },
    circuitBreaker: {
      type: 'object',
      unsupported: {
        maxConnections: 'not enforced by the agents yet (requests to a Service are multiplexed on shared sessions: limit maxRequests or maxPendingRequests)',
      },
      fields: {
        maxPendingRequests: { type: 'integer', minimum: 0 },
        maxRequests: { type: 'integer', minimum: 1 },
        maxRetries: { type: 'integer', minimum: 0 },
      },
    },
    outlierDetection: {
      type: 'object',
      fields: {
        consecutive5xx: { type: 'integer', minimum: 1, description: 'Default 5.' },
        consecutiveGatewayErrors: { type: 'integer', minimum: 1 },
        consecutiveConnectFailures: { type: 'integer', minimum: 1 },
        interval: { ...positiveDuration, description: 'Default 10s.' },
        baseEjectionTime: { ...positiveDuration, description: 'Default 30s.' },
        maxEjectionTime: { ...positiveDuration, description: 'Default 300s.' },
        maxEjectionPercent: { type: 'integer', minimum: 0, maximum: 100, description: 'Default 10.' },
      },
    },
    rateLimit: {
      type: 'object',
      required: ['requestsPerSecond'],
      fields: {
        requestsPerSecond: { type: 'integer', minimum: 1 },
        burst: { type: 'integer', minimum: 0, description: 'Default requestsPerSecond.' },
        overrides: {
          type: 'array',
          items: {
            type: 'object',
            required: ['principals', 'requestsPerSecond'],
            fields: {
              principals: { type: 'array', minItems: 1, items: str, description: 'spiffe:// identities with their own bucket.' },
              requestsPerSecond: { type: 'integer', minimum: 1 },
              burst: { type: 'integer', minimum: 0 },
            },
          },
        },
      },
    },
    faultInjection: {
      type: 'object',
      fields: {
        delay: { type: 'object', required: ['fixedDelay'], fields: { fixedDelay: positiveDuration, percentage } },
        abort: {
          type: 'object',
          fields: { httpStatus: { type: 'integer', minimum: 200, maximum: 599 }, grpcStatus: { type: 'integer', minimum: 0, maximum: 16 }, percentage },
        },
      },
    },
  },
};

// Gateway API v1 HTTPRoute/GRPCRoute, the fields of the GAMMA mesh profile skein serves.
const gwDuration: Schema = { type: 'string', format: 'gateway-duration' };
const parentRef: Schema = {
  type: 'object',
  required: ['name'],
  fields: { group: str, kind: str, namespace: str, name: str, port, sectionName: str },
};
const backendObjectRef: Schema = {
  type: 'object',
  required: ['name'],
  fields: { group: str, kind: str, namespace: str, name: str, port },
};
const headerName: Schema = { type: 'string', description: 'An HTTP header name (case-insensitive).' };
const matchType: Schema = { type: 'string', enum: ['Exact', 'RegularExpression'] };
const headerMatch: Schema = {
  type: 'object',
  required: ['name', 'value'],
  fields: { type: matchType, name: headerName, value: str },
};
const headerValues: Schema = { type: 'array', maxItems: 16, items: { type: 'object', required: ['name', 'value'], fields: { name: headerName, value: str } } };
const headerModifier: Schema = {
  type: 'object',
  fields: { set: headerValues, add: headerValues, remove: { type: 'array', maxItems: 16, items: headerName } },
};
const pathModifier: Schema = {
  type: 'object',
  required: ['type'],
  fields: { type: { type: 'string', enum: ['ReplaceFullPath', 'ReplacePrefixMatch'] }, replaceFullPath: str, replacePrefixMatch: str },
};
const requestMirror: Schema = {
  type: 'object',
  required: ['backendRef'],
  fields: {
    backendRef: backendObjectRef,
    percent: { type: 'integer', minimum: 0, maximum: 100 },
    fraction: {
      type: 'object',
      required: ['numerator'],
      fields: { numerator: { type: 'integer', minimum: 0 }, denominator: { type: 'integer', minimum: 1, description: 'Default 100.' } },
    },
  },
};
const UNSUPPORTED_FILTERS: Record<string, string> = {
  ExtensionRef: 'skein has no filter extensions',
  CORS: 'skein does not implement CORS',
  ExternalAuth: 'skein does not call external authorization services',
};
const UNSUPPORTED_FILTER_FIELDS: Record<string, string> = {
  extensionRef: 'skein has no filter extensions (ExtensionRef)',
  cors: 'skein does not implement CORS',
  externalAuth: 'skein does not call external authorization services (ExternalAuth)',
};
const httpFilter: Schema = {
  type: 'object',
  required: ['type'],
  fields: {
    type: { type: 'string', enum: ['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestRedirect', 'URLRewrite', 'RequestMirror'], unsupportedValues: UNSUPPORTED_FILTERS },
    requestHeaderModifier: headerModifier,
    responseHeaderModifier: headerModifier,
    requestRedirect: {
      type: 'object',
      fields: {
        scheme: { type: 'string', enum: ['http', 'https'] },
        hostname: str,
        path: pathModifier,
        port,
        statusCode: { type: 'integer', enum: [301, 302, 303, 307, 308], description: 'Default 302.' },
      },
    },
    urlRewrite: { type: 'object', fields: { hostname: str, path: pathModifier } },
    requestMirror,
  },
  unsupported: UNSUPPORTED_FILTER_FIELDS,
};
const grpcFilter: Schema = {
  type: 'object',
  required: ['type'],
  fields: {
    type: {
      type: 'string',
      enum: ['RequestHeaderModifier', 'ResponseHeaderModifier', 'RequestMirror'],
      unsupportedValues: { ExtensionRef: UNSUPPORTED_FILTERS.ExtensionRef! },
    },
    requestHeaderModifier: headerModifier,
    responseHeaderModifier: headerModifier,
    requestMirror,
  },
  unsupported: { extensionRef: UNSUPPORTED_FILTER_FIELDS.extensionRef! },
};
function backendRef(filter: Schema): Schema {
  return {
    type: 'object',
    required: ['name'],
    fields: {
      group: str,
      kind: str,
      namespace: str,
      name: str,
      port,
      weight: { type: 'integer', minimum: 0, maximum: 1_000_000 },
      filters: { type: 'array', maxItems: 16, items: filter },
    },
  };
}
const UNSUPPORTED_RULE_FIELDS: Record<string, string> = { sessionPersistence: 'skein does not pin sessions to endpoints (sessionPersistence)' };
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
            maxItems: 64,
            items: {
              type: 'object',
              fields: {
                path: {
                  type: 'object',
                  fields: { type: { type: 'string', enum: ['Exact', 'PathPrefix', 'RegularExpression'] }, value: str },
                },
                method: { type: 'string', enum: ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH'] },
                headers: { type: 'array', maxItems: 16, items: headerMatch },
                queryParams: { type: 'array', maxItems: 16, items: { type: 'object', required: ['name', 'value'], fields: { type: matchType, name: str, value: str } } },
              },
            },
          },
          filters: { type: 'array', maxItems: 16, items: httpFilter },
          backendRefs: { type: 'array', items: backendRef(httpFilter) },
          timeouts: { type: 'object', fields: { request: gwDuration, backendRequest: gwDuration } },
          retry: {
            type: 'object',
            fields: {
              codes: { type: 'array', items: { type: 'integer' } },
              attempts: { type: 'integer', minimum: 0 },
              backoff: gwDuration,
            },
          },
        },
        unsupported: UNSUPPORTED_RULE_FIELDS,
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
            maxItems: 64,
            items: {
              type: 'object',
              fields: {
                method: {
                  type: 'object',
                  fields: { type: matchType, service: str, method: str },
                },
                headers: { type: 'array', maxItems: 16, items: headerMatch },
              },
            },
          },
          filters: { type: 'array', maxItems: 16, items: grpcFilter },
          backendRefs: { type: 'array', items: backendRef(grpcFilter) },
        },
        unsupported: UNSUPPORTED_RULE_FIELDS,
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
    // Lets routes of other namespaces name this namespace's Services as backends (and mirrors).
    apiVersion: 'gateway.networking.k8s.io/v1beta1',
    kind: 'ReferenceGrant',
    plural: 'referencegrants',
    namespaced: true,
    schema: topLevel({
      spec: {
        type: 'object',
        required: ['from', 'to'],
        fields: {
          from: { type: 'array', minItems: 1, items: { type: 'object', required: ['group', 'kind', 'namespace'], fields: { group: str, kind: str, namespace: str } } },
          to: { type: 'array', minItems: 1, items: { type: 'object', required: ['group', 'kind'], fields: { group: str, kind: str, name: str } } },
        },
      },
    }),
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
      description: 'Load balancing, retries (with budgets), timeouts, circuit breaking, outlier detection and rate limits toward Services; fault injection on Services or routes.',
    },
  },
];

const byGvk = new Map(KINDS.map((k) => [`${k.apiVersion}/${k.kind}`, k]));

/** The kind of `apiVersion` + `kind`, or undefined for kinds skein does not consume. */
export function kindInfo(apiVersion: string, kind: string): KindInfo | undefined {
  const k = byGvk.get(`${apiVersion}/${kind}`);
  if (k) return k;
  // Gateway API kinds also come in other versions (routes as v1beta1/v1alpha2, ReferenceGrant
  // as v1alpha2); same fields for what skein reads.
  if (apiVersion.startsWith('gateway.networking.k8s.io/')) {
    return byGvk.get(`gateway.networking.k8s.io/v1/${kind}`) ?? byGvk.get(`gateway.networking.k8s.io/v1beta1/${kind}`);
  }
  return undefined;
}

/** Groups the lab/operator may use for skein kinds; objects of these groups with an unknown kind are refused. */
export const SKEIN_GROUPS = ['security.skein.io', 'networking.skein.io', 'skein.io'];

export function groupOf(apiVersion: string): string {
  const i = apiVersion.indexOf('/');
  return i < 0 ? '' : apiVersion.slice(0, i);
}
