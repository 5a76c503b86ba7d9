/**
 * The agent's and the controller's registries, built from the same parts their main.ts wire
 * (prom-client's default metrics, the certificate store / CA, Istio's families, the agent's
 * health metrics / the Controller's own), and what a scrape of them shows: every family with
 * its type and label names. The deploy/ tests check manifests and dashboards against this, so
 * a renamed metric or label fails them.
 */
import http from 'node:http';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { registerAgentMetrics } from '../../../src/agent/metrics.js';
import { Controller } from '../../../src/controller/controller.js';
import { BootstrapTokenAuthenticator } from '../../../src/identity/ca/bootstrap-tokens.js';
import { CertificateAuthority } from '../../../src/identity/ca/ca.js';
import { CertificateStore } from '../../../src/identity/workload/certificate-store.js';
import { silentLogger } from '../../../src/telemetry/log.js';
import { IstioMetrics, REQUEST_LABELS, type RequestLabels, TCP_LABELS, type TcpLabels } from '../../../src/telemetry/istio-metrics.js';

export interface Family {
  type: string;
  /** Label names seen in the scrape, and those the metric declares (prom-client's labelNames). */
  labels: Set<string>;
}

/** Families by name, from Prometheus text, plus the declared label names from `registry`. */
export function families(text: string, registry: Registry): Map<string, Family> {
  const out = new Map<string, Family>();
  const seriesOwner = new Map<string, string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      const [, name, kind] = type as unknown as [string, string, string];
      const declared = (registry.getSingleMetric(name) as { labelNames?: string[] } | undefined)?.labelNames ?? [];
      out.set(name, { type: kind, labels: new Set(declared) });
      seriesOwner.set(name, name);
      if (kind === 'histogram' || kind === 'summary') for (const s of ['_bucket', '_sum', '_count']) seriesOwner.set(name + s, name);
      if (kind === 'histogram') out.get(name)!.labels.add('le');
      if (kind === 'summary') out.get(name)!.labels.add('quantile');
      continue;
    }
    if (line === '' || line.startsWith('#')) continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? /.exec(line);
    if (!sample) continue;
    const fam = out.get(seriesOwner.get(sample[1]!) ?? '');
    for (const m of (sample[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) fam?.labels.add(m[1]!);
  }
  return out;
}

/** The series names PromQL can select: a histogram's _bucket/_sum/_count, everything else as is. */
export function seriesNames(fams: Map<string, Family>): Map<string, string> {
  const out = new Map<string, string>();
  for (const [name, f] of fams) {
    if (f.type === 'histogram' || f.type === 'summary') for (const s of ['_bucket', '_sum', '_count']) out.set(name + s, name);
    if (f.type !== 'histogram') out.set(name, name);
  }
  return out;
}

const label = (names: readonly string[], v: string) => Object.fromEntries(names.map((n) => [n, v]));

/** The agent's registry as src/agent/main.ts builds it, every source present and non-empty. */
export function agentRegistry(): { registry: Registry; close: () => void } {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const issuer = {
    issue: async () => Promise.reject(new Error('not in this test')),
    fetchTrustBundle: async () => [],
  };
  const certificates = new CertificateStore({ trustDomain: 'cluster.local', issuer, registry, logger: silentLogger() });
  const istio = new IstioMetrics({ registry });
  // One request and one connection, so the scrape shows every Istio label.
  istio.request(istio.bindRequest('r', label(REQUEST_LABELS, 'x') as RequestLabels), 12, 100, 200);
  istio.connection(istio.bindTcp('c', label(TCP_LABELS, 'x') as TcpLabels), 10, 20);
  registerAgentMetrics(registry, {
    capture: {
      counters: () => ({ skLookupAssignFailed: 1, skLookupNoSocket: 2 }) as never,
      connectStats: () => ({ inProgress: 1, queued: 0, refusals: { SKEIN_CAPTURE_CONNECT_TIMEOUT: 1 } }),
    },
    tunnelRefusals: new Map([['SKEIN_TUNNEL_TLS_UNKNOWN_CA', 1]]),
    listenerRefusals: new Map([['SKEIN_OUTBOUND_CONNECTION_LIMIT', 1]]),
    podStates: () => [{ state: 'serving' }],
    config: { version: () => 'v1', updates: { ack: 1, nack: 0 } },
    certificates: () => [{ identity: 'spiffe://cluster.local/ns/shop/sa/echo', notAfter: new Date(Date.now() + 3600_000) }],
    authorizationDecisions: { 'allow|shop/allow-all': 1 },
    outboundRefusals: () => ({ SKEIN_OUTBOUND_NO_HEALTHY_UPSTREAM: 1 }),
    tunnels: { client: () => [{ sessions: [{ active: 1 }] }], server: () => ({ sessions: 1, streams: 1 }) },
    log: silentLogger(),
  });
  return { registry, close: () => certificates.close() };
}

/** The controller's registry as src/controller/main.ts builds it: default metrics, the CA's, the Controller's. */
export async function controllerRegistry(): Promise<{ registry: Registry; close: () => void }> {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const ca = await CertificateAuthority.create({ trustDomain: 'cluster.local', registry, logger: silentLogger() });
  new Controller({
    authenticator: BootstrapTokenAuthenticator.fromTokens({ 'node-a': 'token-a-0123456789' }),
    configAddress: '127.0.0.1:0',
    ca: { ca },
    registry,
    logger: silentLogger(),
  });
  return { registry, close: () => {} };
}

/** GET http://127.0.0.1:port/path: status and body. */
export function get(port: number, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          body += c;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });
}
