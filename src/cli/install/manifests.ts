/**
 * The Kubernetes objects of a skein installation, rendered from values (values.ts): what
 * `skein install` prints and `skein uninstall` prints for deletion, and what the files in
 * deploy/kubernetes/ are (a unit test compares them with the default values).
 *
 * The CRDs come from the controller's own schemas (controller/crds.ts); ports, flag names
 * and defaults come from the rooms that serve them, so the manifests cannot drift from the
 * binaries.
 */
import { Document } from 'yaml';
import { crdObject } from '../../controller/crds.js';
import { LIVE_PATH as CONTROLLER_LIVE, READY_PATH as CONTROLLER_READY } from '../../controller/health.js';
import { KINDS } from '../../controller/kinds.js';
import { DEFAULT_TRUST_BUNDLE_CONFIGMAP, TRUST_BUNDLE_KEY } from '../../controller/kube/trust-bundle-configmap.js';
import { DEFAULT_VALUES, type InstallValues, type Resources } from './values.js';

export type K8sObject = Record<string, unknown> & { apiVersion: string; kind: string; metadata: { name: string; namespace?: string } & Record<string, unknown> };

/** An object and the comment printed above it. */
export interface Manifest {
  object: K8sObject;
  comment?: string;
  /** The file of deploy/kubernetes/ it lives in. */
  file: 'rbac.yaml' | 'controller.yaml' | 'agent.yaml' | `crds/${string}`;
}

export const CONTROLLER = 'skein-controller';
export const AGENT = 'skein-agent';
/** Where the agent reads the trust bundle ConfigMap (its --ca-root-file). */
export const TRUST_MOUNT = '/etc/skein/trust';
/** Where the agent's and the CNI installer's containers see the host's CNI folders. */
export const HOST_CNI_BIN = '/host/opt/cni/bin';
export const HOST_CNI_CONF = '/host/etc/cni/net.d';
/** The agent's unix sockets (admin, CNI) inside its container: the agent's defaults. */
const TOKEN_DIR = '/var/run/secrets/skein';
const PART_OF = { 'app.kubernetes.io/part-of': 'skein' };

const labels = (name: string, extra: Record<string, string> = {}) => ({ 'app.kubernetes.io/name': name, ...PART_OF, ...extra });

function resources(r: Resources): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (r.requests && Object.keys(r.requests).length) out.requests = r.requests;
  if (r.limits && Object.keys(r.limits).length) out.limits = r.limits;
  return out;
}

function scrape(port: number): Record<string, string> {
  return { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(port), 'prometheus.io/path': '/metrics' };
}

function rbac(v: InstallValues): Manifest[] {
  const ns = v.namespace;
  return [
    {
      file: 'rbac.yaml',
      comment: 'skein control plane identity and permissions.\nThe controller lists/watches what it translates, writes status/events for refusals,\nreviews agent tokens (TokenReview), and in its own namespace holds the CA Lease, the CA\nSecret and the trust-bundle ConfigMap. Agents need no API access: they talk only to the controller.',
      object: { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns, labels: { ...PART_OF } } },
    },
    { file: 'rbac.yaml', object: { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: CONTROLLER, namespace: ns, labels: labels(CONTROLLER) } } },
    {
      file: 'rbac.yaml',
      object: { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: AGENT, namespace: ns, labels: labels(AGENT) }, automountServiceAccountToken: false },
    },
    {
      file: 'rbac.yaml',
      object: {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'ClusterRole',
        metadata: { name: CONTROLLER, labels: labels(CONTROLLER) },
        rules: [
          { apiGroups: [''], resources: ['namespaces', 'pods', 'services', 'serviceaccounts', 'nodes'], verbs: ['get', 'list', 'watch'] },
          { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] },
          { apiGroups: ['gateway.networking.k8s.io'], resources: ['httproutes', 'grpcroutes', 'referencegrants'], verbs: ['get', 'list', 'watch'] },
          { apiGroups: ['gateway.networking.k8s.io'], resources: ['httproutes/status', 'grpcroutes/status'], verbs: ['patch', 'update'] },
          { apiGroups: ['security.skein.io'], resources: ['authorizationpolicies', 'peerauthentications'], verbs: ['get', 'list', 'watch'] },
          { apiGroups: ['security.skein.io'], resources: ['authorizationpolicies/status', 'peerauthentications/status'], verbs: ['patch', 'update'] },
          { apiGroups: ['networking.skein.io'], resources: ['backendtrafficpolicies'], verbs: ['get', 'list', 'watch'] },
          { apiGroups: ['networking.skein.io'], resources: ['backendtrafficpolicies/status'], verbs: ['patch', 'update'] },
          { apiGroups: [''], resources: ['events'], verbs: ['create', 'patch'] },
          { apiGroups: ['authentication.k8s.io'], resources: ['tokenreviews'], verbs: ['create'] },
        ],
      },
    },
    {
      file: 'rbac.yaml',
      object: {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'ClusterRoleBinding',
        metadata: { name: CONTROLLER, labels: labels(CONTROLLER) },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: CONTROLLER },
        subjects: [{ kind: 'ServiceAccount', name: CONTROLLER, namespace: ns }],
      },
    },
    {
      file: 'rbac.yaml',
      object: {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'Role',
        metadata: { name: CONTROLLER, namespace: ns, labels: labels(CONTROLLER) },
        rules: [
          { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['get', 'create', 'update'] },
          { apiGroups: [''], resources: ['secrets'], resourceNames: ['skein-ca'], verbs: ['get', 'update'] },
          { apiGroups: [''], resources: ['configmaps'], resourceNames: [DEFAULT_TRUST_BUNDLE_CONFIGMAP], verbs: ['get', 'update'] },
          // create cannot be limited by name (the object does not exist yet).
          { apiGroups: [''], resources: ['secrets', 'configmaps'], verbs: ['create'] },
        ],
      },
    },
    {
      file: 'rbac.yaml',
      object: {
        apiVersion: 'rbac.authorization.k8s.io/v1',
        kind: 'RoleBinding',
        metadata: { name: CONTROLLER, namespace: ns, labels: labels(CONTROLLER) },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: CONTROLLER },
        subjects: [{ kind: 'ServiceAccount', name: CONTROLLER, namespace: ns }],
      },
    },
  ];
}

function controller(v: InstallValues): Manifest[] {
  const ns = v.namespace;
  const p = v.controller.ports;
  const d = DEFAULT_VALUES.controller.ports;
  const sel = { 'app.kubernetes.io/name': CONTROLLER };
  const args = [
    'controller',
    '--kube',
    `--config-listen=0.0.0.0:${p.config}`,
    `--ca-listen=0.0.0.0:${p.ca}`,
    `--ca-san=${CONTROLLER}.${ns}.svc`,
    `--trust-domain=${v.trustDomain}`,
    `--trust-bundle-configmap=${DEFAULT_TRUST_BUNDLE_CONFIGMAP}`,
    // The default metrics port is the binary's; only a changed one is passed.
    ...(p.metrics !== d.metrics ? [`--metrics=0.0.0.0:${p.metrics}`] : []),
    `--log-level=${v.logLevel}`,
  ];
  return [
    {
      file: 'controller.yaml',
      comment: `The CA trust bundle (PEM roots, key ${TRUST_BUNDLE_KEY}) that agents mount as --ca-root-file.\nThe controller holding the CA Lease writes it (on start, on every root change, and every\n30 s); it is created here without data so that re-applying these manifests never\nreplaces the roots. Agents wait (ContainerCreating) until the key exists.`,
      object: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: DEFAULT_TRUST_BUNDLE_CONFIGMAP, namespace: ns, labels: { ...PART_OF } } },
    },
    {
      file: 'controller.yaml',
      comment: `skein controller: config stream (${p.config}, TLS), mesh CA (${p.ca}), Prometheus metrics and\nprobes (${p.metrics}). Any replica serves agents; the holder of the skein-controller-ca Lease\nwrites the CA root (Secret skein-ca) and the trust bundle (ConfigMap ${DEFAULT_TRUST_BUNDLE_CONFIGMAP}).`,
      object: {
        apiVersion: 'apps/v1',
        kind: 'Deployment',
        metadata: { name: CONTROLLER, namespace: ns, labels: labels(CONTROLLER) },
        spec: {
          replicas: v.controller.replicas,
          selector: { matchLabels: sel },
          template: {
            metadata: {
              labels: labels(CONTROLLER),
              // For Prometheus' conventional kubernetes-pods scrape job. With the Prometheus
              // Operator, apply monitoring/controller-servicemonitor.yaml instead (not both).
              annotations: scrape(p.metrics),
            },
            spec: {
              serviceAccountName: CONTROLLER,
              securityContext: { runAsNonRoot: true, runAsUser: 65532, seccompProfile: { type: 'RuntimeDefault' } },
              // Replicas on different nodes, so a node drain (and the PDB) keeps one serving.
              affinity: {
                podAntiAffinity: {
                  preferredDuringSchedulingIgnoredDuringExecution: [
                    { weight: 100, podAffinityTerm: { topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: sel } } },
                  ],
                },
              },
              containers: [
                {
                  name: 'controller',
                  image: v.image,
                  imagePullPolicy: v.imagePullPolicy,
                  args,
                  env: [{ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
                  ports: [
                    { name: 'grpc-config', containerPort: p.config },
                    { name: 'grpc-ca', containerPort: p.ca },
                    { name: 'http-metrics', containerPort: p.metrics },
                  ],
                  livenessProbe: { httpGet: { path: CONTROLLER_LIVE, port: 'http-metrics' }, periodSeconds: 10, failureThreshold: 3 },
                  readinessProbe: { httpGet: { path: CONTROLLER_READY, port: 'http-metrics' }, periodSeconds: 5 },
                  resources: resources(v.controller.resources),
                  securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
                },
              ],
            },
          },
        },
      },
    },
    {
      file: 'controller.yaml',
      comment: 'A voluntary disruption (drain, upgrade) leaves one controller serving the agents.',
      object: {
        apiVersion: 'policy/v1',
        kind: 'PodDisruptionBudget',
        metadata: { name: CONTROLLER, namespace: ns, labels: labels(CONTROLLER) },
        // One replica: minAvailable 1 would block every drain of its node; allow it to move.
        spec: { ...(v.controller.replicas > 1 ? { minAvailable: 1 } : { maxUnavailable: 1 }), selector: { matchLabels: sel } },
      },
    },
    {
      file: 'controller.yaml',
      object: {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: CONTROLLER, namespace: ns, labels: labels(CONTROLLER) },
        spec: {
          selector: sel,
          ports: [
            { name: 'grpc-config', port: p.config, targetPort: p.config, appProtocol: 'grpc' },
            { name: 'grpc-ca', port: p.ca, targetPort: p.ca, appProtocol: 'grpc' },
          ],
        },
      },
    },
    {
      file: 'controller.yaml',
      comment:
        "The controller's metrics only, for a ServiceMonitor (monitoring/controller-servicemonitor.yaml)\nor any scrape config that discovers Service endpoints. Every replica is an endpoint: each\nreports the agents it holds, so sum skein_controller_agents_connected over them.",
      object: {
        apiVersion: 'v1',
        kind: 'Service',
        metadata: { name: `${CONTROLLER}-metrics`, namespace: ns, labels: labels(CONTROLLER, { 'app.kubernetes.io/component': 'metrics' }) },
        spec: { selector: sel, ports: [{ name: 'http-metrics', port: p.metrics, targetPort: 'http-metrics', appProtocol: 'http' }] },
      },
    },
  ];
}

function agent(v: InstallValues): Manifest[] {
  const ns = v.namespace;
  const p = v.agent.ports;
  const d = DEFAULT_VALUES.agent.ports;
  const args = [
    'agent',
    '--node=$(NODE_NAME)',
    `--controller=${CONTROLLER}.${ns}.svc:${v.controller.ports.config}`,
    `--ca-address=${CONTROLLER}.${ns}.svc:${v.controller.ports.ca}`,
    `--ca-root-file=${TRUST_MOUNT}/${TRUST_BUNDLE_KEY}`,
    `--token-file=${TOKEN_DIR}/token`,
    `--trust-domain=${v.trustDomain}`,
    `--pin-root=${v.agent.pinRoot}`,
    '--cgroup-root=/sys/fs/cgroup',
    // skein-cni (on the host) asks the agent to capture a new pod here before it starts.
    // Mounted at the host's own path, so what the agent and the host's processes name agree.
    `--cni-socket=${v.agent.runDir}/cni.sock`,
    `--admin-socket=${v.agent.runDir}/agent.sock`,
    // An agent still on the node (a surge update) hands its pods' listening sockets over here;
    // on the host's folder, which both agents' pods mount. With no agent there: an ordinary start.
    `--handover-socket=${v.agent.runDir}/handover.sock`,
    '--upgrade',
    // The default ports are the binary's; only changed ones are passed.
    ...(p.metrics !== d.metrics ? [`--metrics=0.0.0.0:${p.metrics}`] : []),
    ...(p.ready !== d.ready ? [`--ready=0.0.0.0:${p.ready}`] : []),
    `--log-level=${v.logLevel}`,
  ];
  const hostDir = (name: string, path: string, type = 'Directory') => ({ name, hostPath: { path, type } });
  return [
    {
      file: 'agent.yaml',
      comment: [
        'skein agent: one per node. Host network and PID namespace (the pods\' /proc/PID/ns/net),',
        'privileged: loading BPF programs, setns into pod network namespaces, and the Bidirectional',
        'mount propagation of the bpffs pins (Kubernetes allows it only to privileged containers).',
        'It authenticates to the controller (config + CA) with a projected service-account token',
        'bound to its pod and node, audience skein-controller, and trusts the roots of the',
        `${DEFAULT_TRUST_BUNDLE_CONFIGMAP} ConfigMap. The install-cni init container writes the skein-cni`,
        'plugin and its chained config into the node\'s CNI folders.',
        'Updates: maxUnavailable 1 stops the old agent (its pods\' mesh traffic fails closed) and',
        'starts the new one. A hand-over without a refused connection (--upgrade) needs both on the',
        'node at once (maxSurge: 1, maxUnavailable: 0), which the scheduler allows only without the',
        'host ports declared below on a hostNetwork pod: see the README, "Restarts and upgrades".',
      ].join('\n'),
      object: {
        apiVersion: 'apps/v1',
        kind: 'DaemonSet',
        metadata: { name: AGENT, namespace: ns, labels: labels(AGENT) },
        spec: {
          selector: { matchLabels: { 'app.kubernetes.io/name': AGENT } },
          updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } },
          template: {
            metadata: {
              labels: labels(AGENT),
              // For Prometheus' conventional kubernetes-pods scrape job. With the Prometheus Operator,
              // apply monitoring/agent-podmonitor.yaml instead (not both: each agent would be scraped twice).
              annotations: scrape(p.metrics),
            },
            spec: {
              serviceAccountName: AGENT,
              hostNetwork: true,
              hostPID: true,
              dnsPolicy: 'ClusterFirstWithHostNet',
              priorityClassName: 'system-node-critical',
              tolerations: [{ operator: 'Exists' }],
              // The agent stops within 5 s (connections that will not drain are cut).
              terminationGracePeriodSeconds: 10,
              initContainers: [
                {
                  name: 'install-cni',
                  image: v.image,
                  imagePullPolicy: v.imagePullPolicy,
                  // The plugin runs on the host: it names the agent's socket by its host path.
                  // kube-system and skein's own pods start without asking the agent (the controller
                  // must start while agents wait for it); `skein cni uninstall` is the operator's, never a rollout's.
                  args: [
                    'cni',
                    'install',
                    `--bin-dir=${HOST_CNI_BIN}`,
                    `--conf-dir=${HOST_CNI_CONF}`,
                    `--agent-socket=${v.agent.runDir}/cni.sock`,
                    '--exclude-namespace=kube-system',
                    `--exclude-namespace=${ns}`,
                  ],
                  // Root to write the node's root-owned CNI folders; nothing else.
                  securityContext: { runAsUser: 0, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
                  volumeMounts: [
                    { name: 'cni-bin', mountPath: HOST_CNI_BIN },
                    { name: 'cni-conf', mountPath: HOST_CNI_CONF },
                  ],
                },
              ],
              containers: [
                {
                  name: 'agent',
                  image: v.image,
                  imagePullPolicy: v.imagePullPolicy,
                  args,
                  env: [{ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } }],
                  // Host network: these are the node's ports. Named as Prometheus Operator examples do;
                  // the http- prefix also tells protocol sniffers (Istio's included) it is HTTP.
                  ports: [
                    { name: 'http-metrics', containerPort: p.metrics },
                    { name: 'http-ready', containerPort: p.ready },
                  ],
                  livenessProbe: { httpGet: { path: '/healthz/live', port: 'http-ready' }, periodSeconds: 10, failureThreshold: 3 },
                  readinessProbe: { httpGet: { path: '/healthz/ready', port: 'http-ready' }, periodSeconds: 5 },
                  resources: resources(v.agent.resources),
                  securityContext: { privileged: true },
                  volumeMounts: [
                    { name: 'token', mountPath: TOKEN_DIR, readOnly: true },
                    { name: 'trust-bundle', mountPath: TRUST_MOUNT, readOnly: true },
                    { name: 'bpffs', mountPath: '/sys/fs/bpf', mountPropagation: 'Bidirectional' },
                    { name: 'cgroup', mountPath: '/sys/fs/cgroup' },
                    { name: 'run', mountPath: v.agent.runDir },
                    { name: 'netns', mountPath: '/var/run/netns', mountPropagation: 'HostToContainer' },
                    { name: 'cni-bin', mountPath: HOST_CNI_BIN },
                    { name: 'cni-conf', mountPath: HOST_CNI_CONF },
                    { name: 'audit', mountPath: '/var/log/skein' },
                  ],
                },
              ],
              volumes: [
                {
                  name: 'token',
                  projected: { sources: [{ serviceAccountToken: { path: 'token', audience: 'skein-controller', expirationSeconds: 3600 } }] },
                },
                // The key is required: until the controller has written it the pod waits, it
                // never starts without roots.
                { name: 'trust-bundle', configMap: { name: DEFAULT_TRUST_BUNDLE_CONFIGMAP, items: [{ key: TRUST_BUNDLE_KEY, path: TRUST_BUNDLE_KEY }] } },
                hostDir('bpffs', '/sys/fs/bpf', 'DirectoryOrCreate'),
                hostDir('cgroup', '/sys/fs/cgroup'),
                // Unix sockets: the admin API (root only) and the one skein-cni asks for capture on.
                hostDir('run', v.agent.runDir, 'DirectoryOrCreate'),
                hostDir('netns', '/var/run/netns', 'DirectoryOrCreate'),
                hostDir('cni-bin', v.cni.binDir, 'DirectoryOrCreate'),
                hostDir('cni-conf', v.cni.confDir, 'DirectoryOrCreate'),
                // The hash-chained authorization audit trail survives agent restarts.
                hostDir('audit', '/var/log/skein', 'DirectoryOrCreate'),
              ],
            },
          },
        },
      },
    },
  ];
}

function crds(): Manifest[] {
  return KINDS.filter((k) => k.crd).map((k) => {
    const object = crdObject(k) as K8sObject;
    return { file: `crds/${object.metadata.name}.yaml` as const, object };
  });
}

/** Every object, in the order `kubectl apply` needs (namespace and CRDs first). */
export function renderManifests(v: InstallValues): Manifest[] {
  const [namespace, ...restRbac] = rbac(v);
  return [namespace!, ...crds(), ...restRbac, ...controller(v), ...agent(v)];
}

function docText(m: Manifest): string {
  const doc = new Document(m.object, { aliasDuplicateObjects: false });
  if (m.comment) doc.commentBefore = m.comment.split('\n').map((l) => ` ${l}`).join('\n');
  return doc.toString({ lineWidth: 0 });
}

/** Multi-document YAML of `manifests` (as printed by skein install). */
export function toYaml(manifests: Manifest[]): string {
  return manifests.map(docText).join('---\n');
}

/** The same objects for `kubectl delete -f -`: dependents first, the namespace last. */
export function uninstallManifests(v: InstallValues): Manifest[] {
  return renderManifests(v).reverse();
}

/** deploy/kubernetes/<file> -> text, for the default values (CRDs are crds.ts' files). */
export function deployFiles(v: InstallValues = DEFAULT_VALUES): Record<string, string> {
  const byFile = new Map<string, Manifest[]>();
  for (const m of renderManifests(v)) {
    if (m.file.startsWith('crds/')) continue;
    byFile.set(m.file, [...(byFile.get(m.file) ?? []), m]);
  }
  const out: Record<string, string> = {};
  for (const [file, ms] of byFile) out[file] = `# Generated by skein install (src/cli/install/manifests.ts) with the default values; edit there.\n${toYaml(ms)}`;
  return out;
}
