/**
 * `skein check` against a cluster: the controller answers (GetStatus with an operator's
 * credential), agents are connected and none rejects its config, the controller's serving
 * certificate and the trust bundle are valid and not near expiry, and — with API access —
 * skein's CRDs are installed.
 */
import { X509Certificate } from 'node:crypto';
import * as tls from 'node:tls';
import { KINDS, groupOf } from '../../controller/kinds.js';
import { KubeApiError, KubeClient } from '../../controller/kube/client.js';
import { type KubeConfigSource, loadKubeConfig } from '../../controller/kube/kube-config.js';
import { fetchControllerStatus, type StatusClientOptions } from '../../controller/status-client.js';
import type { StatusResponse } from '../../api/config-wire.js';
import { type CheckResult, fail, guarded, pass } from './result.js';

export interface ClusterCheckOptions {
  controller?: StatusClientOptions;
  /** Agents expected connected (default: at least one). */
  expectAgents?: number;
  /** The controller's serving certificate must stay valid at least this long. */
  minCertValidityMs?: number;
  /** Each root of the trust bundle must stay valid at least this long. */
  minRootValidityMs?: number;
  /** Where the API server and its credentials are (kubeconfig, in-cluster, or --kube-server). */
  kube?: KubeConfigSource;
  now?: () => Date;
}

export const DEFAULT_MIN_CERT_VALIDITY_MS = 60 * 60 * 1000;
export const DEFAULT_MIN_ROOT_VALIDITY_MS = 30 * 24 * 60 * 60 * 1000;

const hours = (ms: number) => `${(ms / 3_600_000).toFixed(1)} h`;

/** The certificate the controller's config port serves, verified against `roots`. */
function servingCertificate(o: StatusClientOptions, timeoutMs = 5000): Promise<X509Certificate> {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(o.address);
  if (!m) throw new Error(`not host:port: ${o.address}`);
  const roots = Array.isArray(o.rootsPem) ? o.rootsPem.join('\n') : (o.rootsPem ?? '');
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: m[1], port: Number(m[2]), ca: roots, servername: o.serverName ?? m[1], ALPNProtocols: ['h2'], timeout: timeoutMs }, () => {
      const raw = socket.getPeerCertificate().raw;
      socket.destroy();
      resolve(new X509Certificate(raw));
    });
    socket.on('timeout', () => socket.destroy(new Error(`no TLS handshake within ${timeoutMs} ms`)));
    socket.on('error', reject);
  });
}

function agentsCheck(st: StatusResponse, expect: number | undefined): CheckResult {
  const want = expect ?? 1;
  const nacking = st.agents.filter((a) => a.last_nack);
  const names = st.agents.map((a) => a.node).sort();
  const hint = 'kubectl -n skein-system get ds skein-agent -o wide; an agent that cannot reach the controller logs SKEIN_CONFIG_CONTROLLER_UNAVAILABLE, one that rejects its config SKEIN_CONFIG_CONTROLLER_REJECTED';
  if (st.agents.length < want) return fail('agents', `${st.agents.length} agent(s) connected to this replica, expected ${want}${names.length ? ` (${names.join(', ')})` : ''}`, hint);
  if (nacking.length) return fail('agents', `${nacking.length} agent(s) rejected their config: ${nacking.map((a) => `${a.node}: ${a.last_nack}`).join('; ')}`, `${hint}; skein status shows the refused resources`);
  return pass('agents', `${st.agents.length} agent(s) connected, none rejecting: ${names.join(', ')}`);
}

function rootsCheck(roots: string[], minMs: number, now: Date): CheckResult {
  if (!roots.length) return fail('trust-bundle', 'the roots file holds no certificate', 'give the mesh CA trust bundle (--roots; in a cluster: kubectl -n skein-system get cm skein-trust-bundle -o jsonpath={.data.ca\\.crt})');
  const bad: string[] = [];
  let earliest = Number.POSITIVE_INFINITY;
  for (const pem of roots) {
    const c = new X509Certificate(pem);
    const left = Date.parse(c.validTo) - now.getTime();
    earliest = Math.min(earliest, left);
    if (left < minMs) bad.push(`${c.subject.replace(/\n/g, ', ')} ${left < 0 ? 'expired' : `expires in ${hours(left)}`} (${c.validTo})`);
  }
  if (bad.length) return fail('trust-bundle', bad.join('; '), 'rotate the mesh CA root (add a new root, let agents trust it, switch signing, retire the old one) before it expires');
  return pass('trust-bundle', `${roots.length} root(s), the earliest expires in ${Math.floor(earliest / 86_400_000)} days`);
}

async function crdsCheck(kube: KubeConfigSource): Promise<CheckResult> {
  const client = new KubeClient(loadKubeConfig(kube).kc);
  try {
    const missing: string[] = [];
    const names = KINDS.filter((k) => k.crd).map((k) => `${k.plural}.${groupOf(k.apiVersion)}`);
    for (const name of names) {
      try {
        await client.request('GET', `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`);
      } catch (err) {
        if (err instanceof KubeApiError && err.status === 404) missing.push(name);
        else throw err;
      }
    }
    if (missing.length) return fail('crds', `missing: ${missing.join(', ')}`, 'skein install | kubectl apply -f - (installs the CRDs with the rest)');
    return pass('crds', `${names.length} CRDs installed: ${names.join(', ')}`);
  } finally {
    client.close();
  }
}

export async function clusterChecks(o: ClusterCheckOptions): Promise<CheckResult[]> {
  const now = (o.now ?? (() => new Date()))();
  const out: CheckResult[] = [];
  if (o.kube) out.push(await guarded('crds', 'cannot ask the API server: check the kubeconfig (--kubeconfig, --kube-context) or --kube-server, --kube-token-file and --kube-ca-file', () => crdsCheck(o.kube as KubeConfigSource)));
  const c = o.controller;
  if (!c) return out;
  let status: StatusResponse | undefined;
  out.push(
    await guarded('controller', `is the controller reachable at ${c.address}? kubectl -n skein-system get pods,svc -l app.kubernetes.io/name=skein-controller; the token and roots must be ones it accepts`, async () => {
      status = await fetchControllerStatus(c);
      return pass('controller', `controller ${status.controller_id} at ${c.address}: config version ${status.version}, ${status.objects} objects, ${status.refusals.length} refused${status.leader ? ', CA leader' : ''}`);
    }),
  );
  if (status) out.push(agentsCheck(status, o.expectAgents));
  if (c.rootsPem) {
    const minCert = o.minCertValidityMs ?? DEFAULT_MIN_CERT_VALIDITY_MS;
    out.push(
      await guarded('controller-certificate', 'the controller\'s serving certificate does not chain to the given roots, or the port does not speak TLS: are --roots the mesh\'s current trust bundle?', async () => {
        const cert = await servingCertificate(c);
        const left = Date.parse(cert.validTo) - now.getTime();
        if (left < minCert) return fail('controller-certificate', `serving certificate ${left < 0 ? 'expired' : `expires in ${hours(left)}`} (${cert.validTo})`, 'the controller renews it from its CA at half-life: look for CA errors in its log, restart it if renewal stopped');
        return pass('controller-certificate', `serving certificate verified against the roots, valid for ${hours(left)} more (SAN ${cert.subjectAltName ?? 'none'})`);
      }),
    );
    out.push(rootsCheck(Array.isArray(c.rootsPem) ? c.rootsPem : [c.rootsPem], o.minRootValidityMs ?? DEFAULT_MIN_ROOT_VALIDITY_MS, now));
  }
  return out;
}
