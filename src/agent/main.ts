/** `skein agent`: the node agent process. */
import { DEFAULT_LOAD_SHARE_BUSY } from '../proxy/load-share.js';
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { CaptureManager } from '../capture/capture-manager.js';
import { CaptureCode } from '../capture/codes.js';
import { CAPTURE_DEFAULTS } from '../capture/options.js';
import { findCgroup2Root, readHostFacts } from '../capture/host.js';
import { DEFAULT_KUBELET_ROOTS, PodNetnsDiscovery } from '../capture/pod-netns-discovery.js';
import { DEFAULT_CLUSTER_DOMAIN, DEFAULT_TRUST_DOMAIN } from '../config/model.js';
import { ComponentPort } from '../config/ports.js';
import { ControllerConfigSource } from '../config/controller-source.js';
import { KubeFolderSource } from '../config/kube/folder-source.js';
import type { ConfigSource } from '../config/source.js';
import { SkeinError } from '../errors.js';
import { CaClient } from '../identity/workload/ca-client.js';
import { CertificateStore } from '../identity/workload/certificate-store.js';
import { readBootstrapToken } from '../identity/ca/bootstrap-tokens.js';
import { pemBlocks } from '../identity/x509/pem.js';
import { createLogger, type Logger } from '../telemetry/log.js';
import { AuditLog } from '../policy/audit-log.js';
import { parseHostPort, startAdmin } from './admin.js';
import { DEFAULT_ADMIN_SOCKET } from '../api/agent-admin.js';
import { DEFAULT_MAX_CONNECTIONS_PER_LISTENER } from '../proxy/connection-cap.js';
import { DEFAULT_MAX_TUNNEL_STREAMS, DEFAULT_MAX_TUNNEL_STREAMS_PER_PEER, DEFAULT_TUNNEL_RESET_BUDGET } from '../proxy/tunnel/tunnel-server.js';
import { DEFAULT_MAX_STREAMS_PER_LISTENER } from '../proxy/stream-cap.js';
import { DEFAULT_H2_RESET_BUDGET } from '../proxy/http/http2-forwarder.js';
import { DEFAULT_MAX_CONNECTS_PER_NETNS, DEFAULT_MAX_QUEUED_PER_NETNS } from '../capture/netns-connect.js';
import { NodeAgent } from './agent.js';
import { connectPredecessor, DEFAULT_HANDOVER_SOCKET, HandoverServer } from './handover.js';
import { cleanupNode, describeCleanup } from './cleanup.js';
import { DEFAULT_CNI_BIN_DIR, DEFAULT_CNI_CONF_DIR } from '../capture/cni-files.js';
import { DEFAULT_CNI_SOCKET, startCniServer, unmeshedFileOf, unmeshedNamespaces, writeUnmeshedNamespaces } from './cni-server.js';
import { identityReportOf, wireIdentityReports } from './identity-report.js';
import { AgentCode } from './codes.js';
import { KubeletPodNetnsLocator } from './pod-netns.js';
import { registerAgentMetrics } from './metrics.js';
import { DEFAULT_MAX_SERIES, IstioMetrics } from '../telemetry/istio-metrics.js';
import { type OtlpProtocol, otlpExporter, Tracing } from '../telemetry/tracing.js';
import { DEFAULT_MAX_EDGES, MeshTraffic } from '../telemetry/mesh-traffic.js';

/** How long a handed-over agent lets open connections finish (Envoy's --drain-time-s plays this part). */
export const DEFAULT_DRAIN_TIMEOUT_S = 30;

export const AGENT_USAGE = `usage: skein agent --node NAME (--controller H:P | --config-folder DIR) --ca-root-file FILE --token-file FILE [options]
       skein agent --cleanup [--pin-root DIR] [--cni-bin-dir DIR] [--cni-conf-dir DIR]

  --node NAME            this node (default $NODE_NAME)
  --controller H:P       stream the mesh config from the controller (port 15010)
  --config-folder DIR    or read it from a folder of Kubernetes YAML (one machine, no controller)
  --trust-domain TD      SPIFFE trust domain (default ${DEFAULT_TRUST_DOMAIN})
  --ca-address H:P       the mesh CA (default skein-controller.skein-system.svc:15012)
  --ca-root-file FILE    PEM root(s) the CA's serving certificate chains to; also the first trust bundle
  --token-file FILE      this node's bootstrap credential for the CA
  --pin-root DIR         bpffs folder for skein's pins (default /sys/fs/bpf/skein)
  --bpf-dir DIR          compiled BPF objects (default build/bpf of this checkout)
  --cgroup-root DIR      the host's cgroup v2 mount, where the kubelet's pod cgroups are (default: found in mountinfo)
  --kubelet-cgroup-root REL  the kubelet's pod root under it, repeatable (default ${DEFAULT_KUBELET_ROOTS.join(' and ')})
  --admin-socket PATH    admin API on a unix socket only root can open (default ${DEFAULT_ADMIN_SOCKET})
  --admin H:P            also serve the admin API on TCP, e.g. 127.0.0.1:15000 (default: off; any
                         hostNetwork pod can reach the host's loopback)
  --metrics H:P          Prometheus metrics at /metrics (default 0.0.0.0:${ComponentPort.AgentMetrics})
  --ready H:P            readiness at /healthz/ready (default 0.0.0.0:${ComponentPort.AgentReady})
  --metrics-max-series N label sets per Istio metric family; records beyond are counted in
                         skein_metrics_series_dropped_total (default ${DEFAULT_MAX_SERIES})
  --request-metrics on|off  Istio's request and TCP metrics (default on; off: only skein_* health)
  --traffic-report S     per-edge summaries (requests, errors, latency, bytes, mTLS, denials) to
                         the controller every S seconds, for skein top and the graph page; tap is
                         served with them (default 5; 0: neither; needs --controller and
                         --request-metrics on, whose labels they use)
  --traffic-max-edges N  edges summarised per report; records of more are counted as dropped
                         (default ${DEFAULT_MAX_EDGES})
  --cert-ttl SECONDS     requested workload certificate TTL (default 86400)
  --tunnel-keepalive S   HTTP/2 PING on every tunnel session every S seconds, so a peer node that
                         vanished (link down, no RST) is noticed and its sessions closed (default 30; 0: off)
  --tunnel-keepalive-timeout S  a PING unanswered this long closes the session (default 10)
  --tunnel-connect-timeout S  opening a tunnel session to a peer node (TCP + TLS) fails after S
                         seconds, counted as a connect failure of that endpoint (default 10)
  --max-connections N    connections each pod's listener (15001, 15006, 15008) holds at once;
                         beyond it new ones are closed and counted (default ${DEFAULT_MAX_CONNECTIONS_PER_LISTENER})
  --max-tunnel-streams N streams (requests, tunnels) each pod's tunnel port (15008) has open at
                         once; beyond it a new one is refused (REFUSED_STREAM) and counted
                         (default ${DEFAULT_MAX_TUNNEL_STREAMS})
  --max-tunnel-streams-per-peer N  of those, what one source identity may hold, so no client
                         workload takes them all (default ${DEFAULT_MAX_TUNNEL_STREAMS_PER_PEER})
  --max-outbound-streams N  HTTP requests and HTTP/2 streams each pod's outbound listener (15001)
                         has in flight at once, all its connections together; beyond it a new
                         one is refused unprocessed (HTTP/2 REFUSED_STREAM, HTTP/1 503) and
                         counted as SKEIN_OUTBOUND_STREAM_LIMIT (default ${DEFAULT_MAX_STREAMS_PER_LISTENER})
  --h2-reset-budget N    streams an app's HTTP/2 session (15001) may reset before their answer per
                         second; beyond it the session is refused (rapid reset, CVE-2023-44487)
                         (default ${DEFAULT_H2_RESET_BUDGET})
  --tunnel-reset-budget N  the same for each tunnel session at the pods' 15008 (default ${DEFAULT_TUNNEL_RESET_BUDGET})
  --max-pod-captured-connections N  outbound connections one pod may have captured at once
                         (connecting or open): its share of the node's original-destination
                         records, so it cannot evict other pods'; more are refused (EPERM) and
                         counted (default ${CAPTURE_DEFAULTS.podShare}; 0: no cap; below 65536)
  --load-share-busy F    event loop utilization (0..1) above which a pod sending more than the
                         other active pods' mean is slowed: its connections are not read for
                         the rest of a 25 ms interval, so its queue waits in its own sockets,
                         not in front of other pods' requests (default ${DEFAULT_LOAD_SHARE_BUSY};
                         1: never)
  --max-pod-connects N   connects the agent has in progress from inside one pod's netns at once
                         (delivering to the app, traffic leaving the mesh); more wait their turn
                         (default ${DEFAULT_MAX_CONNECTS_PER_NETNS})
  --max-pod-connects-queued N  connects waiting per pod beyond those; more fail at once with
                         SKEIN_CAPTURE_TOO_MANY_CONNECTS (default ${DEFAULT_MAX_QUEUED_PER_NETNS})
  --upgrade-protocols L  HTTP/1 Upgrade protocols piped after a 101, comma list (default websocket;
                         others, h2c included, are served as plain HTTP/1.1 requests)
  --log-file FILE        JSON log lines go here (default stderr)
  --access-log on|off    one JSON line per request and connection (default on)
  --access-log-sampling P  write this fraction (0..1) of successful requests' lines; failures
                         always (default 1)
  --request-id generate|passthrough  add x-request-id to requests whose app sent none, as
                         Envoy does (default generate)
  --otlp-endpoint URL    trace: export spans over OTLP to URL (default $SKEIN_OTLP_ENDPOINT; none:
                         no tracing), e.g. http://collector:4317 (grpc) or
                         http://collector:4318/v1/traces (http/protobuf)
  --otlp-protocol P      grpc or http/protobuf (default grpc)
  --trace-sampling P     probability (0..1) that a request without a sampled trace context starts
                         a trace (default 0: only requests whose app sent a sampled context)
  --upgrade              take over from the agent running on this node, if one answers on the
                         handover socket: receive its pods' listening sockets, serve them, and
                         once every pod is served (certificates in hand) tell it to drain and
                         exit; no connection is refused. With no agent there: a fresh start
  --handover-socket PATH where this agent hands over to its successor, and where --upgrade looks
                         for its predecessor (root only; default ${DEFAULT_HANDOVER_SOCKET})
  --drain-timeout S      after handing over: how long HTTP/1, HTTP/2 and tunnel streams may take
                         to finish and L4 connections may run before they are ended with a FIN
                         (default ${DEFAULT_DRAIN_TIMEOUT_S})
  --upgrade-timeout S    with --upgrade: how long to get ready (config, every pod's certificate)
                         before giving up and leaving the old agent serving (default 60)
  --cleanup              remove what an agent leaves on the node and exit 0 (idempotent): the BPF
                         links and pins under --pin-root, skein-cni's binary in --cni-bin-dir and
                         its entries in --cni-conf-dir; run with no agent serving on the node
  --cni-bin-dir DIR      (--cleanup) CNI plugin binaries (default ${DEFAULT_CNI_BIN_DIR})
  --cni-conf-dir DIR     (--cleanup) CNI configuration (default ${DEFAULT_CNI_CONF_DIR})
  --cni-socket PATH      where skein-cni (the chained CNI plugin) asks the agent to capture a new
                         pod before it starts; root only (default ${DEFAULT_CNI_SOCKET}; "off": none)
  --cni-pod-wait S       CNI ADD waits this long for the pod to reach the agent's config before
                         failing (the runtime retries) (default 10)
  --audit-log FILE       hash-chained audit trail of authorization: every DENY, AUDIT and dry-run
                         match (default /var/log/skein/audit.log; "off" for none); check it with
                         skein audit verify FILE...`;

const STOP_GRACE_MS = 5000;

/** A number of seconds (fractions allowed, so tests can use short ones). */
function seconds(v: string, flag: string): number {
  const n = Number(v);
  if (v.trim() === '' || !(n >= 0) || !Number.isFinite(n)) throw new SkeinError(AgentCode.Usage, `${flag} must be a number of seconds, got "${v}"`);
  return n;
}

/** Upgrade: ready, and every local pod served (none waiting for its certificate). */
async function waitServing(agent: NodeAgent, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pending = agent.status().pods.filter((p) => p.state === 'pending');
    if (agent.ready && pending.length === 0) return;
    if (Date.now() > deadline) {
      throw new SkeinError(AgentCode.UpgradeNotReady, `not ready to take over after ${timeoutMs} ms (${agent.ready ? `${pending.length} pod(s) without a certificate` : 'no config applied yet'}); the old agent serves on`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A 0..1 flag value. */
function fraction(v: string, flag: string): number {
  const n = Number(v);
  if (v.trim() === '' || !(n >= 0 && n <= 1)) throw new SkeinError(AgentCode.Usage, `${flag} must be a number within 0..1, got "${v}"`);
  return n;
}

/** A whole-number flag value of at least `min`. */
function wholeNumber(v: string, flag: string, min: number): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isInteger(n) || n < min) throw new SkeinError(AgentCode.Usage, `${flag} must be a whole number of at least ${min}, got "${v}"`);
  return n;
}

/** What the command line wires in from rooms the agent does not import. */
export interface AgentMainDeps {
  /**
   * The source for `--config-folder`: the CLI passes the controller's translation run in this
   * process (controller/local-source.ts), so a folder gives what a controller would stream,
   * policies included. Without it, the agent's own reader (which refuses policies).
   */
  folderSource?: (o: { dir: string; node: string; trustDomain: string; clusterDomain: string; logger: Logger }) => ConfigSource;
}

export async function runAgent(argv: string[], deps: AgentMainDeps = {}): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      node: { type: 'string', default: process.env.NODE_NAME },
      'config-folder': { type: 'string' },
      controller: { type: 'string' },
      'trust-domain': { type: 'string', default: DEFAULT_TRUST_DOMAIN },
      'cluster-domain': { type: 'string', default: DEFAULT_CLUSTER_DOMAIN },
      'ca-address': { type: 'string', default: 'skein-controller.skein-system.svc:15012' },
      'ca-root-file': { type: 'string' },
      'token-file': { type: 'string' },
      'pin-root': { type: 'string', default: '/sys/fs/bpf/skein' },
      'bpf-dir': { type: 'string' },
      'cgroup-root': { type: 'string' },
      'kubelet-cgroup-root': { type: 'string', multiple: true },
      'admin-socket': { type: 'string', default: DEFAULT_ADMIN_SOCKET },
      admin: { type: 'string' },
      metrics: { type: 'string', default: `0.0.0.0:${ComponentPort.AgentMetrics}` },
      ready: { type: 'string', default: `0.0.0.0:${ComponentPort.AgentReady}` },
      'metrics-max-series': { type: 'string', default: String(DEFAULT_MAX_SERIES) },
      'request-metrics': { type: 'string', default: 'on' },
      'cert-ttl': { type: 'string', default: '86400' },
      'tunnel-keepalive': { type: 'string', default: '30' },
      'tunnel-keepalive-timeout': { type: 'string', default: '10' },
      'tunnel-connect-timeout': { type: 'string', default: '10' },
      'traffic-report': { type: 'string', default: '5' },
      'traffic-max-edges': { type: 'string', default: String(DEFAULT_MAX_EDGES) },
      'max-connections': { type: 'string', default: String(DEFAULT_MAX_CONNECTIONS_PER_LISTENER) },
      'max-tunnel-streams': { type: 'string', default: String(DEFAULT_MAX_TUNNEL_STREAMS) },
      'max-tunnel-streams-per-peer': { type: 'string', default: String(DEFAULT_MAX_TUNNEL_STREAMS_PER_PEER) },
      'max-outbound-streams': { type: 'string', default: String(DEFAULT_MAX_STREAMS_PER_LISTENER) },
      'h2-reset-budget': { type: 'string', default: String(DEFAULT_H2_RESET_BUDGET) },
      'tunnel-reset-budget': { type: 'string', default: String(DEFAULT_TUNNEL_RESET_BUDGET) },
      'max-pod-captured-connections': { type: 'string', default: String(CAPTURE_DEFAULTS.podShare) },
      'load-share-busy': { type: 'string', default: String(DEFAULT_LOAD_SHARE_BUSY) },
      'max-pod-connects': { type: 'string', default: String(DEFAULT_MAX_CONNECTS_PER_NETNS) },
      'max-pod-connects-queued': { type: 'string', default: String(DEFAULT_MAX_QUEUED_PER_NETNS) },
      'upgrade-protocols': { type: 'string', default: 'websocket' },
      'log-file': { type: 'string' },
      'log-level': { type: 'string' },
      'access-log': { type: 'string', default: 'on' },
      'access-log-sampling': { type: 'string', default: '1' },
      'request-id': { type: 'string', default: 'generate' },
      'otlp-endpoint': { type: 'string', default: process.env.SKEIN_OTLP_ENDPOINT },
      'otlp-protocol': { type: 'string', default: 'grpc' },
      'trace-sampling': { type: 'string', default: '0' },
      'audit-log': { type: 'string', default: '/var/log/skein/audit.log' },
      upgrade: { type: 'boolean', default: false },
      'handover-socket': { type: 'string', default: DEFAULT_HANDOVER_SOCKET },
      'drain-timeout': { type: 'string', default: String(DEFAULT_DRAIN_TIMEOUT_S) },
      'upgrade-timeout': { type: 'string', default: '60' },
      cleanup: { type: 'boolean', default: false },
      'cni-bin-dir': { type: 'string', default: DEFAULT_CNI_BIN_DIR },
      'cni-conf-dir': { type: 'string', default: DEFAULT_CNI_CONF_DIR },
      'cni-socket': { type: 'string', default: DEFAULT_CNI_SOCKET },
      'cni-pod-wait': { type: 'string', default: '10' },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(`${AGENT_USAGE}\n`);
    return 0;
  }
  if (values.cleanup) {
    const log = createLogger({ base: { component: 'agent' }, ...(values['log-file'] ? { file: values['log-file'] } : {}), ...(values['log-level'] ? { level: values['log-level'] } : {}) });
    const report = await cleanupNode({ pinRoot: values['pin-root']!, cniBinDir: values['cni-bin-dir']!, cniConfDir: values['cni-conf-dir']!, log });
    process.stdout.write(describeCleanup(report));
    return 0;
  }
  const need = (v: string | undefined, flag: string): string => {
    if (!v) throw new SkeinError(AgentCode.Usage, `${flag} is required\n${AGENT_USAGE}`);
    return v;
  };
  const node = need(values.node, '--node');
  if (!values['config-folder'] === !values.controller) throw new SkeinError(AgentCode.Usage, `give exactly one of --controller and --config-folder\n${AGENT_USAGE}`);
  const maxConnections = wholeNumber(values['max-connections']!, '--max-connections', 1);
  const maxTunnelStreams = wholeNumber(values['max-tunnel-streams']!, '--max-tunnel-streams', 1);
  const maxTunnelStreamsPerPeer = wholeNumber(values['max-tunnel-streams-per-peer']!, '--max-tunnel-streams-per-peer', 1);
  const maxOutboundStreams = wholeNumber(values['max-outbound-streams']!, '--max-outbound-streams', 1);
  const h2ResetBudget = wholeNumber(values['h2-reset-budget']!, '--h2-reset-budget', 1);
  const tunnelResetBudget = wholeNumber(values['tunnel-reset-budget']!, '--tunnel-reset-budget', 1);
  const podShare = wholeNumber(values['max-pod-captured-connections']!, '--max-pod-captured-connections', 0);
  const loadShareBusy = fraction(values['load-share-busy']!, '--load-share-busy');
  if (loadShareBusy === 0) throw new SkeinError(AgentCode.Usage, '--load-share-busy must be above 0 (1 turns the share off), got "0"');
  const maxPodConnects = wholeNumber(values['max-pod-connects']!, '--max-pod-connects', 1);
  const maxPodConnectsQueued = wholeNumber(values['max-pod-connects-queued']!, '--max-pod-connects-queued', 0);
  const maxSeries = Number(values['metrics-max-series']);
  if (!Number.isInteger(maxSeries) || maxSeries < 1) throw new SkeinError(AgentCode.Usage, `--metrics-max-series must be a whole number above 0, got "${values['metrics-max-series']}"`);
  const requestMetrics = values['request-metrics'];
  if (requestMetrics !== 'on' && requestMetrics !== 'off') throw new SkeinError(AgentCode.Usage, `--request-metrics must be on or off, got "${requestMetrics}"`);
  const accessLog = values['access-log'];
  if (accessLog !== 'on' && accessLog !== 'off') throw new SkeinError(AgentCode.Usage, `--access-log must be on or off, got "${accessLog}"`);
  const accessLogSampling = fraction(values['access-log-sampling']!, '--access-log-sampling');
  const requestId = values['request-id'];
  if (requestId !== 'generate' && requestId !== 'passthrough') throw new SkeinError(AgentCode.Usage, `--request-id must be generate or passthrough, got "${requestId}"`);
  const traceSampling = fraction(values['trace-sampling']!, '--trace-sampling');
  const trafficReport = Number(values['traffic-report']);
  if (!Number.isFinite(trafficReport) || trafficReport < 0) throw new SkeinError(AgentCode.Usage, `--traffic-report must be seconds (0: off), got "${values['traffic-report']}"`);
  const maxEdges = Number(values['traffic-max-edges']);
  if (!Number.isInteger(maxEdges) || maxEdges < 1) throw new SkeinError(AgentCode.Usage, `--traffic-max-edges must be a whole number above 0, got "${values['traffic-max-edges']}"`);
  const drainMs = seconds(values['drain-timeout']!, '--drain-timeout') * 1000;
  const upgradeTimeoutMs = seconds(values['upgrade-timeout']!, '--upgrade-timeout') * 1000;
  const cniPodWait = Number(values['cni-pod-wait']);
  if (!Number.isFinite(cniPodWait) || cniPodWait < 0) throw new SkeinError(AgentCode.Usage, `--cni-pod-wait must be seconds, got "${values['cni-pod-wait']}"`);
  const keepaliveS = Number(values['tunnel-keepalive']);
  if (!Number.isFinite(keepaliveS) || keepaliveS < 0) throw new SkeinError(AgentCode.Usage, `--tunnel-keepalive must be seconds (0: off), got "${values['tunnel-keepalive']}"`);
  const keepaliveTimeoutS = Number(values['tunnel-keepalive-timeout']);
  if (!Number.isFinite(keepaliveTimeoutS) || keepaliveTimeoutS <= 0) throw new SkeinError(AgentCode.Usage, `--tunnel-keepalive-timeout must be seconds above 0, got "${values['tunnel-keepalive-timeout']}"`);
  const tunnelConnectS = Number(values['tunnel-connect-timeout']);
  if (!Number.isFinite(tunnelConnectS) || tunnelConnectS <= 0) throw new SkeinError(AgentCode.Usage, `--tunnel-connect-timeout must be seconds above 0, got "${values['tunnel-connect-timeout']}"`);
  const log = createLogger({ base: { component: 'agent', node }, ...(values['log-file'] ? { file: values['log-file'] } : {}), ...(values['log-level'] ? { level: values['log-level'] } : {}) });
  const rootsPem = pemBlocks(await readFile(need(values['ca-root-file'], '--ca-root-file'), 'utf8'));
  const tokenFile = need(values['token-file'], '--token-file');
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });

  const issuer = new CaClient({ address: values['ca-address']!, rootsPem, token: () => readBootstrapToken(tokenFile) });
  const certificates = new CertificateStore({
    trustDomain: values['trust-domain']!,
    issuer,
    initialTrustBundlePem: rootsPem,
    ttlSeconds: Number(values['cert-ttl']),
    logger: log,
    registry,
  });
  const capture = new CaptureManager(
    { pinRoot: values['pin-root'], podShare, ...(values['bpf-dir'] ? { bpfObjectDir: values['bpf-dir'] } : {}) },
    { logger: log, connector: { maxConnectsPerNetns: maxPodConnects, maxQueuedPerNetns: maxPodConnectsQueued } },
  );
  // The controller's stream in a cluster; a folder of Kubernetes YAML on one machine.
  // What this agent sees per edge, for the controller (on the config stream: a controller only).
  const traffic = values.controller && trafficReport > 0 && requestMetrics === 'on' ? new MeshTraffic({ node, maxEdges }) : undefined;
  // Root rotation: the agent reports its bundle and certificates' roots on the stream and
  // follows the controller's signals; it verifies the controller with its current bundle.
  let controllerSource: ControllerConfigSource | undefined;
  const identityReports = values.controller ? wireIdentityReports(certificates, () => controllerSource?.reportIdentity(), log) : undefined;
  if (values.controller) {
    controllerSource = new ControllerConfigSource({
      address: values.controller,
      node,
      tokenFile,
      rootsPem,
      roots: () => certificates.trustBundlePem(),
      logger: log,
      ...(identityReports ? { identity: { report: () => identityReportOf(certificates), onControl: identityReports.onControl } } : {}),
      ...(traffic ? { traffic, trafficReportMs: trafficReport * 1000 } : {}),
    });
  }
  const source: ConfigSource = controllerSource
    ? controllerSource
    : deps.folderSource
      ? deps.folderSource({ dir: values['config-folder']!, node, trustDomain: values['trust-domain']!, clusterDomain: values['cluster-domain']!, logger: log })
      : new KubeFolderSource({ dir: values['config-folder']!, trustDomain: values['trust-domain']!, clusterDomain: values['cluster-domain']!, logger: log });
  // Pods' network namespaces come from the kubelet's cgroups on this node, never from pod objects.
  const cgroupRoot = values['cgroup-root'] ?? findCgroup2Root(readHostFacts().mounts);
  if (!cgroupRoot) throw new SkeinError(CaptureCode.Cgroup2Missing, 'no cgroup v2 mount found: give --cgroup-root');
  const kubeletRoots = values['kubelet-cgroup-root']?.length ? values['kubelet-cgroup-root'] : DEFAULT_KUBELET_ROOTS;
  const netns = new KubeletPodNetnsLocator(new PodNetnsDiscovery({ cgroupRoot, kubeletRoots }), log);
  const upgradeProtocols = values['upgrade-protocols']!
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '');
  // Tracing: only with an OTLP endpoint; nothing about requests changes without one.
  const tracing = values['otlp-endpoint']
    ? new Tracing({
        sampling: traceSampling,
        exporter: otlpExporter(values['otlp-endpoint'], values['otlp-protocol'] as OtlpProtocol, log),
        resource: { 'k8s.node.name': node },
      })
    : undefined;
  if (tracing) log.info({ endpoint: values['otlp-endpoint'], protocol: values['otlp-protocol'], sampling: traceSampling }, 'tracing on');
  const auditLog = values['audit-log'] === 'off' ? undefined : new AuditLog(values['audit-log']!);
  const agent = new NodeAgent({
    node,
    source,
    capture,
    certificates,
    netns,
    log,
    upgradeProtocols,
    maxConnectionsPerListener: maxConnections,
    loadShareBusy,
    tunnelStreams: { max: maxTunnelStreams, perPeer: maxTunnelStreamsPerPeer },
    maxOutboundStreams,
    h2ResetBudget,
    tunnelResetBudget,
    tunnelKeepalive: { intervalMs: keepaliveS * 1000, timeoutMs: keepaliveTimeoutS * 1000 },
    tunnelConnectTimeoutMs: tunnelConnectS * 1000,
    ...(auditLog ? { auditLog } : {}),
    ...(requestMetrics === 'on' ? { istioMetrics: new IstioMetrics({ registry, maxSeries }) } : {}),
    ...(tracing ? { tracing } : {}),
    requestIds: requestId === 'generate',
    ...(accessLog === 'off' || accessLogSampling < 1 ? { accessLog: { enabled: accessLog === 'on', sampling: accessLogSampling } } : {}),
    ...(traffic ? { traffic } : {}),
    cniPodWaitMs: cniPodWait * 1000,
  });
  registerAgentMetrics(registry, {
    capture,
    tunnelRefusals: agent.tunnelRefusals,
    listenerRefusals: agent.listenerRefusals,
    loadShare: () => agent.loadShare.stats(),
    podStates: () => agent.status().pods,
    config: { version: () => agent.store.snapshot()?.version, updates: agent.configUpdates },
    certificates: () => certificates.status(),
    authorizationDecisions: agent.authorizer.stats.decisions,
    traffic: () => agent.outbound.trafficStats(),
    rateLimited: agent.rateLimits.stats.limited,
    outboundRefusals: () => agent.outbound.stats().refusals,
    tunnels: { client: () => agent.tunnels.stats(), server: () => agent.tunnelServerStats() },
    log,
  });

  const adminDeps = { agent, capture, certificates, registry, log };
  const adminAt = {
    adminSocket: values['admin-socket']!,
    ...(values.admin ? { adminTcp: parseHostPort(values.admin, '--admin') } : {}),
    metrics: parseHostPort(values.metrics!, '--metrics'),
    ready: parseHostPort(values.ready!, '--ready'),
  };
  // Upgrade: the pods' listening sockets of the agent serving now, if one answers. Its admin
  // socket and probe ports stay its own until it hands over; this agent binds them after.
  const predecessor = values.upgrade ? connectPredecessor(values['handover-socket']!, capture.fdPassing(), log) : undefined;
  if (predecessor) capture.adoptHandedListeners(predecessor.pods);
  let stopAdmin = predecessor ? undefined : await startAdmin(adminDeps, adminAt);
  try {
    await agent.start();
    if (predecessor) {
      // Both agents accept on the same sockets from here on; the old one stops only once
      // this one serves every pod (config applied, certificates in hand).
      await waitServing(agent, upgradeTimeoutMs);
      const t0 = Date.now();
      const { drainMs: oldDrainMs } = predecessor.takeOver();
      capture.dropUnusedHandedListeners();
      stopAdmin = await startAdmin(adminDeps, adminAt);
      log.info({ pods: predecessor.pods.length, takeoverMs: Date.now() - t0, predecessorDrainMs: oldDrainMs }, 'upgrade: took over from the old agent');
    }
  } catch (err) {
    // Nothing may keep a failed agent alive (its admin servers would): stop and report. An
    // upgrade that fails leaves the old agent serving (it resumes when we hang up).
    predecessor?.abort();
    if (predecessor) {
      log.error({ err, code: (err as { code?: string }).code ?? AgentCode.HandoverFailed }, 'upgrade failed; the old agent serves on');
      await agent.stop().catch(() => {});
    }
    await stopAdmin?.();
    throw err;
  }
  // Only once capture runs and a config is applied: until then skein-cni cannot reach the
  // agent and new meshed pods wait (the runtime retries their ADD).
  const cniServer =
    values['cni-socket'] === 'off'
      ? undefined
      : await startCniServer({ path: values['cni-socket']!, handle: (call) => agent.cni(call), log, answerTimeoutMs: cniPodWait * 1000 + 15_000 }).catch(async (err) => {
          await agent.stop();
          await stopAdmin?.();
          throw err;
        });
  if (cniServer) {
    // What skein-cni may start without the agent, kept current while the agent runs.
    const file = unmeshedFileOf(values['cni-socket']!);
    const refresh = () => {
      if (!agent.store.snapshot()) return; // an empty store says nothing about namespaces
      try {
        if (writeUnmeshedNamespaces(file, unmeshedNamespaces(agent.store.localWorkloads(node)))) log.debug({ file }, 'unmeshed namespaces written for skein-cni');
      } catch (err) {
        log.warn({ err, file }, 'cannot write the unmeshed namespaces for skein-cni');
      }
    };
    refresh();
    agent.store.subscribe(refresh);
  }
  log.info({ node, pinRoot: capture.options.pinRoot, programs: capture.programIds() }, 'agent started');
  process.stderr.write(`skein agent: node ${node} serving (admin ${values['admin-socket']}${values.admin ? ` and ${values.admin}` : ''}, metrics ${values.metrics})\n`);

  // Never die on a stray error in one connection: log it and keep serving everyone else.
  process.on('uncaughtException', (err) => log.error({ err, code: AgentCode.UncaughtException }, 'uncaught exception'));
  process.on('unhandledRejection', (err) => log.error({ err, code: AgentCode.UnhandledRejection }, 'unhandled rejection'));

  // Where the next agent (skein agent --upgrade) asks for this one's sockets.
  let handedOver: () => void = () => {};
  const handoverDone = new Promise<'handover'>((resolve) => {
    handedOver = () => resolve('handover');
  });
  const handover = new HandoverServer({
    path: values['handover-socket']!,
    fdPassing: capture.fdPassing(),
    log,
    drainMs,
    listeners: () => agent.freezeForHandover(),
    resume: () => agent.resumeAfterHandover(),
    takeover: async () => {
      // Stop listening on everything the successor binds next (it binds after our answer);
      // open admin connections finish on their own.
      handover.stopListening();
      void stopAdmin?.();
      // The CNI socket too (closing it removes its file at once, before the successor binds
      // the same path). A CNI call in flight is cut: skein-cni fails it with code 11 and the
      // runtime retries it against the successor.
      void cniServer?.close();
    },
    onHandedOver: () => handedOver(),
  });
  await handover.listen();

  const why = await Promise.race([
    handoverDone,
    new Promise<'signal'>((resolve) => {
      process.once('SIGTERM', () => resolve('signal'));
      process.once('SIGINT', () => resolve('signal'));
    }),
  ]);
  if (why === 'handover') {
    // The next agent accepts on our pods' sockets now: finish what is open here, then go.
    const hard = setTimeout(() => {
      log.warn({ code: AgentCode.StopTimeout, graceMs: drainMs + STOP_GRACE_MS }, 'drain and stop took too long; exiting');
      process.exit(0);
    }, drainMs + STOP_GRACE_MS);
    const r = await agent.drainForHandover(drainMs);
    log.info(r, 'handed over and drained; exiting');
    await agent.stop();
    await tracing?.shutdown().catch(() => {});
    issuer.close();
    clearTimeout(hard);
    return 0;
  }
  log.info('agent stopping; capture stays pinned for the next agent');
  handover.stopListening();
  // A connection that will not drain must not keep a stopping agent (and its pod's traffic,
  // which fails closed meanwhile) hanging: stop gracefully, but within a deadline.
  const deadline = setTimeout(() => {
    log.warn({ code: AgentCode.StopTimeout, graceMs: STOP_GRACE_MS }, 'graceful stop took too long; exiting');
    process.exit(0);
  }, STOP_GRACE_MS);
  await cniServer?.close();
  identityReports?.stop();
  await agent.stop();
  await tracing?.shutdown().catch(() => {});
  await stopAdmin?.();
  issuer.close();
  clearTimeout(deadline);
  return 0;
}
