/**
 * `skein controller`: flags -> a running Controller (config stream + mesh CA), until
 * SIGTERM/SIGINT. SIGHUP re-reads the bootstrap tokens and rescans the folder.
 *
 * Modes: `--folder DIR` (standalone, one machine; a single replica is assumed, so the CA
 * writes its root file without leader election) or `--kube` (the Kubernetes API; any number
 * of replicas serve streams, the holder of a Lease writes the CA root into a Secret).
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { DEFAULT_CONTROLLER_METRICS_PORT, serveMetrics } from './metrics.js';
import type * as grpc from '@grpc/grpc-js';
import { messageOf } from '../errors.js';
import type { TrafficResponse } from '../api/config-wire.js';
import type { Authenticator } from '../identity/ca/authn.js';
import { BootstrapTokenAuthenticator } from '../identity/ca/bootstrap-tokens.js';
import { CertificateAuthority } from '../identity/ca/ca.js';
import { DEFAULT_CA_PORT, DEFAULT_SERVING_SANS } from '../identity/ca/ca-server.js';
import { DEFAULT_ROOT_FILE, FileRootStore, type RootStore } from '../identity/ca/root-store.js';
import { TokenReviewAuthenticator } from '../identity/ca/token-review.js';
import { saveTrustBundleFile } from '../identity/workload/trust-bundle.js';
import { createLogger, type Logger } from '../telemetry/log.js';
import { DEFAULT_CONFIG_PORT } from './config-server.js';
import { Controller, type ControllerOptions } from './controller.js';
import { ConfigServingCredentials } from './serving-credentials.js';
import { KubeClient } from './kube/client.js';
import { loadKubeConfig } from './kube/kube-config.js';
import { KubeSource } from './kube/kube-source.js';
import { LeaseElector } from './kube/lease.js';
import { LeaderGatedRootStore, SecretRootStore } from './kube/secret-root-store.js';
import { KubeStatusWriter, StatusReporter } from './kube/status-writer.js';
import { DEFAULT_TRUST_BUNDLE_CONFIGMAP, TrustBundlePublisher } from './kube/trust-bundle-configmap.js';
import { ControllerCode } from './codes.js';
import { DEFAULT_GRAPH_PATH, graphHandler } from './graph-page.js';
import { healthHandler } from './health.js';
import { DEFAULT_TRAFFIC_WINDOW_MS } from './traffic-window.js';

export const CONTROLLER_USAGE = `usage: skein controller (--folder DIR | --kube) [options]

sources (one or both):
  --folder DIR             watch a folder of Kubernetes YAML (recursive); single replica assumed
  --kube                   watch the Kubernetes API; credentials from --kubeconfig, else $KUBECONFIG,
                           else the in-cluster service account, else ~/.kube/config
  --kubeconfig FILE        kubeconfig to use (tokens, client certificates, exec auth plugins)
  --kube-context NAME      a context of the kubeconfig other than its current one
  --kube-server URL        API server URL without a kubeconfig (with --kube-token-file, --kube-ca-file)
  --kube-token-file FILE   bearer token file for --kube-server (re-read as it rotates)
  --kube-ca-file FILE      API server CA for --kube-server
  --namespace NS           the controller's namespace: Lease, CA Secret (default: the context's, else skein-system)

serving:
  --config-listen ADDR     config stream (default 0.0.0.0:${DEFAULT_CONFIG_PORT}); alias --listen
  --config-plaintext       serve the config stream without TLS (loopback/testing only)
  --ca-listen ADDR         mesh CA (default 0.0.0.0:${DEFAULT_CA_PORT})
  --no-ca                  do not host the CA
  --ca-san NAME            DNS name/IP in the CA and config serving certificates (repeatable)
  --root-file FILE         CA state file in folder mode (default ${DEFAULT_ROOT_FILE})
  --ca-secret NAME         CA state Secret in kube mode (default skein-ca)
  --roots-out FILE         write the CA's trust bundle (PEM) here, and again on every root change
  --trust-bundle-configmap NAME  kube mode: the leader keeps the trust bundle (key ca.crt) in this
                           ConfigMap of --namespace, which agents mount as --ca-root-file
                           (default ${DEFAULT_TRUST_BUNDLE_CONFIGMAP}; "off" for none)
  --operator-token-file F  the operator's credential (one line): skein ca rotate needs it; it also
                           reads status (default: none, and CA rotation is refused)
  --metrics ADDR           Prometheus metrics at http://ADDR/metrics: config pushes, agents, push
                           latency, the CA; probes at /healthz/live and /healthz/ready (default 0.0.0.0:${DEFAULT_CONTROLLER_METRICS_PORT}; "off" for none)
  --graph PATH             the live service graph page on the metrics address, at PATH (default
                           ${DEFAULT_GRAPH_PATH}; its data at PATH/traffic.json; "off" for none)
  --traffic-window S       how far back skein top and the graph look (default ${DEFAULT_TRAFFIC_WINDOW_MS / 1000})

agents:
  --tokens-dir DIR         per-node bootstrap token files (lab; alias --bootstrap-tokens)
  --agent-principal P      kube mode: service account allowed (default system:serviceaccount:<ns>:skein-agent)
  --token-audience A       kube mode: audience agent tokens must carry (default skein-controller)

mesh:
  --trust-domain TD        (default cluster.local)
  --cluster-domain CD      (default cluster.local)
  --root-namespace NS      policies here apply mesh-wide (default skein-system)

replicas (kube mode):
  --identity ID            this replica's name in the Lease (default: hostname)
  --lease-name NAME        (default skein-controller-ca)
  --no-status-writes       do not write status conditions/events

  --log-file FILE   --log-level LEVEL   -h, --help
`;

interface Flags {
  folder?: string;
  kube?: boolean;
  'kube-server'?: string;
  kubeconfig?: string;
  'kube-context'?: string;
  'kube-token-file'?: string;
  'kube-ca-file'?: string;
  namespace?: string;
  'config-listen'?: string;
  listen?: string;
  'config-plaintext'?: boolean;
  'ca-listen'?: string;
  'no-ca'?: boolean;
  'ca-san'?: string[];
  'root-file'?: string;
  'ca-secret'?: string;
  'roots-out'?: string;
  'trust-bundle-configmap'?: string;
  'operator-token-file'?: string;
  'tokens-dir'?: string;
  'bootstrap-tokens'?: string;
  'agent-principal'?: string;
  'token-audience'?: string;
  'trust-domain'?: string;
  'cluster-domain'?: string;
  'root-namespace'?: string;
  identity?: string;
  'lease-name'?: string;
  'no-status-writes'?: boolean;
  metrics?: string;
  graph?: string;
  'traffic-window'?: string;
  'log-file'?: string;
  'log-level'?: string;
  help?: boolean;
}

function parse(argv: string[]): Flags {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      folder: { type: 'string' },
      kube: { type: 'boolean' },
      'kube-server': { type: 'string' },
      kubeconfig: { type: 'string' },
      'kube-context': { type: 'string' },
      'kube-token-file': { type: 'string' },
      'kube-ca-file': { type: 'string' },
      namespace: { type: 'string' },
      'config-listen': { type: 'string' },
      listen: { type: 'string' },
      'config-plaintext': { type: 'boolean' },
      'ca-listen': { type: 'string' },
      'no-ca': { type: 'boolean' },
      'ca-san': { type: 'string', multiple: true },
      'root-file': { type: 'string' },
      'ca-secret': { type: 'string' },
      'roots-out': { type: 'string' },
      'trust-bundle-configmap': { type: 'string' },
      'operator-token-file': { type: 'string' },
      'tokens-dir': { type: 'string' },
      'bootstrap-tokens': { type: 'string' },
      'agent-principal': { type: 'string' },
      'token-audience': { type: 'string' },
      'trust-domain': { type: 'string' },
      'cluster-domain': { type: 'string' },
      'root-namespace': { type: 'string' },
      identity: { type: 'string' },
      'lease-name': { type: 'string' },
      'no-status-writes': { type: 'boolean' },
      metrics: { type: 'string' },
      graph: { type: 'string' },
      'traffic-window': { type: 'string' },
      'log-file': { type: 'string' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  return values as Flags;
}

/** A human progress line on stdout (logs are JSON on stderr / --log-file). */
function progress(line: string): void {
  process.stdout.write(`skein controller: ${line}\n`);
}

/** Waits for the CA state: the leader creates it, followers load what the leader wrote. */
async function createCa(trustDomain: string, store: RootStore, log: Logger, signal: { stopped: boolean }, registry: Registry): Promise<CertificateAuthority> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await CertificateAuthority.create({ trustDomain, store, logger: log, registry });
    } catch (err) {
      if ((err as { code?: string }).code !== ControllerCode.NotLeader || signal.stopped) throw err;
      if (attempt === 0) progress('waiting for the CA leader to create the root');
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

/**
 * Runs the controller until SIGTERM/SIGINT. Returns the process exit code: 0 after a clean
 * stop, 2 for bad flags, 1 when it could not start.
 */
export async function runController(argv: string[]): Promise<number> {
  let flags: Flags;
  try {
    flags = parse(argv);
  } catch (err) {
    process.stderr.write(`${messageOf(err)}\n${CONTROLLER_USAGE}`);
    return 2;
  }
  if (flags.help) {
    process.stdout.write(CONTROLLER_USAGE);
    return 0;
  }
  if (!flags.folder && !flags.kube) {
    process.stderr.write(`skein controller: give --folder DIR or --kube\n${CONTROLLER_USAGE}`);
    return 2;
  }
  const graphPath = flags.graph ?? DEFAULT_GRAPH_PATH;
  if (graphPath !== 'off' && !/^\/[A-Za-z0-9._~/-]*[A-Za-z0-9._~-]$/.test(graphPath)) {
    process.stderr.write(`skein controller: --graph must be a path such as /graph, or off, got "${graphPath}"\n`);
    return 2;
  }
  const trafficWindowS = Number(flags['traffic-window'] ?? DEFAULT_TRAFFIC_WINDOW_MS / 1000);
  if (!Number.isFinite(trafficWindowS) || trafficWindowS < 1 || trafficWindowS > 3600) {
    process.stderr.write(`skein controller: --traffic-window must be seconds between 1 and 3600, got "${flags['traffic-window']}"\n`);
    return 2;
  }
  const log = createLogger({ file: flags['log-file'], level: flags['log-level'], base: { component: 'controller' } });
  const trustDomain = flags['trust-domain'] ?? 'cluster.local';
  const stopped = { stopped: false };
  // Readiness (/healthz/ready on the metrics port): true between 'ready' and 'stopping'.
  let serving = false;
  let trafficOf = (): TrafficResponse => ({ window_seconds: 0, edges: [], workloads: [], dropped: 0, nodes: [] });
  const cleanups: (() => Promise<void> | void)[] = [];
  const cleanup = async () => {
    for (const c of cleanups.reverse()) await Promise.resolve(c()).catch(() => {});
  };
  try {
    let client: KubeClient | undefined;
    let kubeFrom = '';
    if (flags.kube) {
      const loaded = loadKubeConfig({
        ...(flags.kubeconfig ? { kubeconfig: flags.kubeconfig } : {}),
        ...(flags['kube-context'] ? { context: flags['kube-context'] } : {}),
        ...(flags['kube-server'] ? { server: flags['kube-server'] } : {}),
        ...(flags['kube-token-file'] ? { tokenFile: flags['kube-token-file'] } : {}),
        ...(flags['kube-ca-file'] ? { caFile: flags['kube-ca-file'] } : {}),
      });
      kubeFrom = loaded.from;
      const ns = flags.namespace ?? loaded.namespace;
      client = new KubeClient(loaded.kc, ns ? { namespace: ns } : {});
      cleanups.push(() => client?.close());
    }
    const namespace = client?.namespace ?? flags.namespace ?? 'skein-system';
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    const metricsAt = flags.metrics ?? `0.0.0.0:${DEFAULT_CONTROLLER_METRICS_PORT}`;
    if (metricsAt !== 'off') {
      const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(metricsAt);
      if (!m || Number(m[2]) > 65535) {
        process.stderr.write(`skein controller: --metrics must be HOST:PORT or off, got "${metricsAt}"\n`);
        return 2;
      }
      // The graph reads the controller built below; until then it shows an empty window.
      const graph = graphPath === 'off' ? undefined : graphHandler(graphPath, () => trafficOf());
      const health = healthHandler(() => serving);
      const served = await serveMetrics(registry, m[1] || '0.0.0.0', Number(m[2]), log, (req, res) => health(req, res) || (graph?.(req, res) ?? false));
      cleanups.push(() => served.stop());
      progress(`metrics on ${metricsAt} (port ${served.port}) at /metrics${graph ? `, the service graph at ${graphPath}` : ''}`);
    }

    // Who may stream config / ask the CA.
    const tokensDir = flags['tokens-dir'] ?? flags['bootstrap-tokens'];
    let authenticator: Authenticator;
    let bootstrap: BootstrapTokenAuthenticator | undefined;
    if (tokensDir) {
      bootstrap = await BootstrapTokenAuthenticator.fromDirectory(tokensDir);
      const { nodes, skipped } = await bootstrap.reload();
      if (skipped.length) log.warn({ skipped }, 'token files readable by group/others were skipped');
      progress(`bootstrap tokens for ${nodes.length} node(s) from ${tokensDir}`);
      authenticator = bootstrap;
    } else if (client) {
      // The same KubeConfig as the watches: the cluster CA and the controller's credential.
      authenticator = new TokenReviewAuthenticator({
        kubeConfig: client.kc,
        allowedPrincipals: [flags['agent-principal'] ?? `system:serviceaccount:${namespace}:skein-agent`],
        audiences: [flags['token-audience'] ?? 'skein-controller'],
      });
    } else {
      process.stderr.write('skein controller: --tokens-dir is required in folder mode (agents authenticate with bootstrap tokens)\n');
      return 2;
    }

    // Leader election (kube mode) for the CA's writes.
    let elector: LeaseElector | undefined;
    if (client) {
      elector = new LeaseElector({
        client,
        namespace,
        name: flags['lease-name'],
        identity: flags.identity ?? process.env.POD_NAME ?? `${hostname()}-${randomBytes(3).toString('hex')}`,
        logger: log,
      });
      elector.on('leading', () => progress('leading: this replica writes the CA state'));
      elector.on('following', (holder: string) => progress(`following ${holder || '(nobody)'}: serving streams, CA state read-only`));
      await elector.start();
      cleanups.push(() => elector?.stop());
    }

    // The CA.
    let ca: CertificateAuthority | undefined;
    if (!flags['no-ca']) {
      const store: RootStore = client
        ? new LeaderGatedRootStore(new SecretRootStore(client, namespace, flags['ca-secret'] ?? 'skein-ca'), () => elector?.isLeader() ?? false)
        : new FileRootStore(flags['root-file'] ?? DEFAULT_ROOT_FILE);
      ca = await createCa(trustDomain, store, log, stopped, registry);
      const rootsOut = flags['roots-out'];
      if (rootsOut) {
        const write = () => saveTrustBundleFile(rootsOut, ca!.trustBundlePem()).catch((err) => log.error({ err: messageOf(err) }, 'cannot write roots'));
        ca.on('activeChanged', () => void write());
        // A root added or retired changes the bundle too: agents (re)reading the file follow it.
        ca.on('bundleChanged', () => void write());
        cleanups.push(() => {
          ca?.removeAllListeners('activeChanged');
          ca?.removeAllListeners('bundleChanged');
        });
        await write();
      }
      const bundleName = flags['trust-bundle-configmap'] ?? DEFAULT_TRUST_BUNDLE_CONFIGMAP;
      if (client && bundleName !== 'off') {
        const caNow = ca;
        const publisher = new TrustBundlePublisher({ client, namespace, name: bundleName, bundle: () => caNow.trustBundlePem(), isLeader: () => elector?.isLeader() ?? false, logger: log });
        const publish = () => void publisher.publish();
        ca.on('activeChanged', publish);
        ca.on('bundleChanged', publish); // a root added or retired by skein ca rotate
        elector?.on('leading', publish);
        await publisher.start();
        cleanups.push(() => {
          publisher.stop();
          caNow.off('activeChanged', publish);
          caNow.off('bundleChanged', publish);
          elector?.off('leading', publish);
        });
        progress(`trust bundle kept in ConfigMap ${namespace}/${bundleName} (while leading)`);
      }
    }
    const sans = flags['ca-san']?.length ? [...flags['ca-san'], ...DEFAULT_SERVING_SANS] : DEFAULT_SERVING_SANS;

    // Config stream credentials: TLS with a CA-issued serving certificate unless told otherwise.
    let configCredentials: grpc.ServerCredentials | undefined;
    if (!flags['config-plaintext']) {
      if (!ca) {
        process.stderr.write('skein controller: the config stream needs TLS from the hosted CA; with --no-ca pass --config-plaintext\n');
        return 2;
      }
      const tls = new ConfigServingCredentials(ca, sans, undefined, log);
      await tls.start();
      cleanups.push(() => tls.stop());
      configCredentials = tls.credentials;
    }

    const opts: ControllerOptions = {
      authenticator,
      trustDomain,
      clusterDomain: flags['cluster-domain'],
      rootNamespace: flags['root-namespace'],
      configAddress: flags['config-listen'] ?? flags.listen ?? `0.0.0.0:${DEFAULT_CONFIG_PORT}`,
      configCredentials,
      ...(ca ? { ca: { ca, address: flags['ca-listen'] ?? `0.0.0.0:${DEFAULT_CA_PORT}`, servingSans: sans } } : {}),
      isLeader: () => elector?.isLeader() ?? true,
      registry,
      trafficWindowMs: trafficWindowS * 1000,
      ...(flags['operator-token-file'] ? { operatorToken: operatorTokenOf(flags['operator-token-file'], log) } : {}),
      logger: log,
      ...(flags.folder ? { folder: flags.folder } : {}),
      ...(client ? { sources: [(store) => new KubeSource(store, { client: client as KubeClient, logger: log })] } : {}),
    };
    if (flags.folder) progress(`watching folder ${flags.folder} (single replica assumed: no leader election)`);
    if (client) progress(`watching the Kubernetes API at ${client.server} (credentials: ${kubeFrom})`);
    const controller = new Controller(opts);
    trafficOf = () => controller.configServer.traffic.snapshot();
    const ports = await controller.start();
    cleanups.push(() => controller.stop());
    const st = controller.status();
    progress(`index built: ${st.objects} objects, ${st.resources} resources, ${st.refusals.length} refused`);
    for (const r of st.refusals.slice(0, 20)) progress(`refused ${r.object} (${r.origin}): ${r.field}: ${r.reason}`);
    progress(`config stream on ${opts.configAddress} (port ${ports.configPort}, ${configCredentials ? 'TLS' : 'plaintext'})`);
    if (ports.caPort !== undefined) progress(`CA on ${opts.ca?.address} (port ${ports.caPort})`);

    let reporter: StatusReporter | undefined;
    if (client && !flags['no-status-writes']) {
      reporter = new StatusReporter(controller.index, controller.store, new KubeStatusWriter(client), log);
      reporter.start();
      // Enforced follows the agents' ACKs, which arrive on their own schedule: look every 2 s.
      const enforcement = setInterval(() => reporter?.reportEnforcement(controller.configServer.policyStatus()), 2000);
      enforcement.unref();
      cleanups.push(() => {
        clearInterval(enforcement);
        return reporter?.stop();
      });
    }
    // Report refusals as they change (progress lines; the log has every field).
    let lastRefused = st.refusals.length;
    controller.index.onUpdate((u) => {
      const n = controller.refusals().length;
      if (n !== lastRefused) progress(`version ${u.version}: ${n} resource(s) refused (see skein status)`);
      lastRefused = n;
    });
    serving = true;
    progress('ready');

    await new Promise<void>((resolve) => {
      const stop = () => {
        process.off('SIGTERM', stop);
        process.off('SIGINT', stop);
        process.off('SIGHUP', hup);
        resolve();
      };
      const hup = () => {
        void bootstrap?.reload().then((r) => progress(`reloaded bootstrap tokens: ${r.nodes.length} node(s)`));
        void controller.rescanFolder();
      };
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
      process.on('SIGHUP', hup);
    });
    stopped.stopped = true;
    serving = false;
    progress('stopping');
    await cleanup();
    return 0;
  } catch (err) {
    log.error({ err: messageOf(err), code: (err as { code?: string }).code }, 'controller failed');
    process.stderr.write(`skein controller: ${messageOf(err)}\n`);
    stopped.stopped = true;
    await cleanup();
    return 1;
  }
}

/** Reads the operator token on each use (it can be rotated in place); unreadable or empty: none. */
function operatorTokenOf(file: string, log: Logger): () => string | undefined {
  return () => {
    try {
      const t = readFileSync(file, 'utf8').trim();
      return t === '' ? undefined : t;
    } catch (err) {
      log.warn({ file, err: messageOf(err) }, 'operator token file unreadable');
      return undefined;
    }
  };
}
