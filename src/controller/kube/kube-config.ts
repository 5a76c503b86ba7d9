/**
 * Where the controller's Kubernetes credentials come from, the way controller-runtime looks:
 * `--kubeconfig FILE`, else $KUBECONFIG, else the pod's service account (in-cluster: the
 * token file, which @kubernetes/client-node re-reads as the kubelet rotates it, and ca.crt),
 * else ~/.kube/config. Never the library's last resort (plaintext http://localhost:8080):
 * with nothing found we refuse to start (fail closed). Exec auth plugins, client
 * certificates, token files and the cluster CA are all @kubernetes/client-node's KubeConfig.
 * `--kube-server` (with `--kube-token-file` / `--kube-ca-file`) names the API server without a
 * kubeconfig, e.g. for a stand-in.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import * as https from 'node:https';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { messageOf, SkeinError } from '../../errors.js';
import { KubeCode } from '../codes.js';

export const IN_CLUSTER_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface KubeConfigSource {
  /** A kubeconfig file (`--kubeconfig`). */
  kubeconfig?: string;
  /** A context of the kubeconfig other than its current one (`--kube-context`). */
  context?: string;
  /** An API server URL without a kubeconfig (`--kube-server`). */
  server?: string;
  tokenFile?: string;
  caFile?: string;
  env?: NodeJS.ProcessEnv;
  /** Root for the in-cluster files (tests): `<root>/var/run/secrets/kubernetes.io/serviceaccount`. */
  inClusterRoot?: string;
  home?: string;
}

export interface LoadedKubeConfig {
  kc: KubeConfig;
  /** What was used, for the log: a file path, `in-cluster` or `--kube-server`. */
  from: string;
  /** The namespace of the context (in-cluster: the pod's), if any. */
  namespace?: string;
}

/**
 * A KubeConfig whose HTTPS agents are kept and reused while the TLS material is the same:
 * the library makes a new agent (so a new TLS handshake) for every request otherwise. A
 * changed CA or client certificate (rotation) gets a new agent; close() ends them all.
 */
export class PooledKubeConfig extends KubeConfig {
  private readonly agents = new Map<string, https.Agent>();

  constructor() {
    super();
    // createAgent is private in the library's typings; replacing it on the instance is the
    // one place we reach inside (pinned to @kubernetes/client-node 1.x, see kube-client test).
    const self = this as unknown as { createAgent: (cluster: unknown, options: https.AgentOptions) => unknown };
    const original = self.createAgent.bind(this);
    self.createAgent = (cluster, options) => {
      const c = cluster as { proxyUrl?: string; server?: string } | undefined;
      if (c?.proxyUrl || !c?.server?.startsWith('https:')) return original(cluster, options);
      const key = createHash('sha256')
        .update(JSON.stringify([options.ca, options.cert, options.key, options.rejectUnauthorized, options.servername]))
        .digest('hex');
      let agent = this.agents.get(key);
      if (!agent) {
        agent = new https.Agent({ ...options, keepAlive: true });
        this.agents.set(key, agent);
        // Old material is not coming back: keep a few agents (a watch may still use one).
        while (this.agents.size > 4) {
          const [oldest] = this.agents.keys();
          if (oldest === undefined) break;
          this.agents.get(oldest)?.destroy();
          this.agents.delete(oldest);
        }
      }
      return agent;
    };
  }

  close(): void {
    for (const a of this.agents.values()) a.destroy();
    this.agents.clear();
  }
}

function fail(message: string, cause?: unknown): never {
  throw new SkeinError(KubeCode.ConfigInvalid, cause === undefined ? message : `${message}: ${messageOf(cause)}`, undefined, cause === undefined ? undefined : { cause });
}

/** Loads the KubeConfig the controller talks to the API server with (see the file comment for the order). */
export function loadKubeConfig(src: KubeConfigSource = {}): LoadedKubeConfig {
  const env = src.env ?? process.env;
  const kc = new PooledKubeConfig();
  let from: string;
  if (src.server) {
    kc.loadFromOptions({
      clusters: [{ name: 'skein', server: src.server, skipTLSVerify: false, ...(src.caFile ? { caFile: src.caFile } : {}) }],
      users: [{ name: 'skein', ...(src.tokenFile ? { authProvider: { name: 'tokenFile', config: { tokenFile: src.tokenFile } } } : {}) }],
      contexts: [{ name: 'skein', cluster: 'skein', user: 'skein' }],
      currentContext: 'skein',
    });
    from = '--kube-server';
  } else {
    const file = src.kubeconfig ?? (env.KUBECONFIG ? env.KUBECONFIG.split(':').find((f) => f !== '') : undefined);
    const home = join(src.home ?? homedir(), '.kube', 'config');
    if (file) {
      try {
        kc.loadFromFile(file);
      } catch (err) {
        fail(`cannot load kubeconfig ${file}`, err);
      }
      from = file;
    } else if (env.KUBERNETES_SERVICE_HOST) {
      const root = src.inClusterRoot ?? '';
      if (!existsSync(`${root}${IN_CLUSTER_DIR}/token`)) fail(`in a cluster but no service account token at ${root}${IN_CLUSTER_DIR}/token`);
      // The library reads KUBERNETES_SERVICE_HOST/PORT from process.env only.
      const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
      process.env.KUBERNETES_SERVICE_HOST = env.KUBERNETES_SERVICE_HOST;
      process.env.KUBERNETES_SERVICE_PORT = env.KUBERNETES_SERVICE_PORT ?? '443';
      try {
        kc.loadFromCluster(root || undefined);
      } finally {
        restoreEnv('KUBERNETES_SERVICE_HOST', saved.host);
        restoreEnv('KUBERNETES_SERVICE_PORT', saved.port);
      }
      from = 'in-cluster';
    } else if (existsSync(home)) {
      try {
        kc.loadFromFile(home);
      } catch (err) {
        fail(`cannot load kubeconfig ${home}`, err);
      }
      from = home;
    } else {
      throw new SkeinError(
        KubeCode.NotInCluster,
        'no Kubernetes API to talk to: not in a cluster (KUBERNETES_SERVICE_HOST unset), no --kubeconfig, no KUBECONFIG, no ~/.kube/config',
      );
    }
  }
  // `server: https://host/` is common in kubeconfigs; the library would request `//api/...`.
  kc.loadFromOptions({
    clusters: kc.getClusters().map((c) => ({ ...c, server: c.server.replace(/\/+$/, '') })),
    users: kc.getUsers(),
    contexts: kc.getContexts(),
    currentContext: kc.getCurrentContext(),
  });
  if (src.context) {
    if (!kc.getContextObject(src.context)) fail(`kubeconfig ${from} has no context "${src.context}"`);
    kc.setCurrentContext(src.context);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) fail(`kubeconfig ${from} has no current context with a cluster`);
  if (!/^https?:\/\//.test(cluster.server)) fail(`kubeconfig ${from}: cluster server "${cluster.server}" is not an http(s) URL`);
  const namespace = kc.getContextObject(kc.getCurrentContext())?.namespace?.trim() || undefined;
  return { kc, from, ...(namespace ? { namespace } : {}) };
}

function restoreEnv(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}
