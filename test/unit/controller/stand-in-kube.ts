// The stand-in API server (fake-apiserver.ts; no real Kubernetes API server can run here)
// served over TLS with a certificate from a throw-away cluster CA, and the
// @kubernetes/client-node KubeConfig a controller would have for it: the cluster CA and a
// bearer token. Every kube test talks to the stand-in this way, as a controller talks to a
// real API server.
import { CertificateAuthority } from '../../../src/identity/ca/ca.js';
import { MemoryRootStore } from '../../../src/identity/ca/root-store.js';
import { KubeClient } from '../../../src/controller/kube/client.js';
import { PooledKubeConfig } from '../../../src/controller/kube/kube-config.js';
import { FakeApiServer } from './fake-apiserver.js';

export interface Teardown {
  teardown(fn: () => unknown): void;
}

/** A cluster CA and a serving certificate for 127.0.0.1 from it. */
export async function clusterCa(): Promise<{ caPem: string; cert: string; key: string }> {
  const ca = await CertificateAuthority.create({ trustDomain: 'cluster.local', store: new MemoryRootStore() });
  const serving = await ca.activeAuthority().issueServingCertificate({ sans: ['127.0.0.1'], ttlSeconds: 3600 });
  return { caPem: ca.trustBundlePem().join(''), cert: serving.certChainPem, key: serving.privateKeyPem };
}

export async function tlsStandIn(t: Teardown, opts: { bookmarkMs?: number; token?: string } = {}) {
  const { caPem, cert, key } = await clusterCa();
  const api = new FakeApiServer({ tls: { cert, key }, ...opts });
  const server = await api.start();
  t.teardown(() => api.stop());
  return { api, server, caPem };
}

/** A KubeConfig with the cluster CA (inline, as certificate-authority-data) and a bearer token. */
export function tokenKubeConfig(server: string, caPem: string, token: string, namespace?: string): PooledKubeConfig {
  const kc = new PooledKubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'stand-in', server, caData: Buffer.from(caPem).toString('base64'), skipTLSVerify: false }],
    users: [{ name: 'controller', token }],
    contexts: [{ name: 'stand-in', cluster: 'stand-in', user: 'controller', ...(namespace ? { namespace } : {}) }],
    currentContext: 'stand-in',
  });
  return kc;
}

/** The stand-in over TLS and a KubeClient for it. */
export async function standInClient(t: Teardown, opts: { bookmarkMs?: number } = {}) {
  const { api, server, caPem } = await tlsStandIn(t, opts);
  const client = new KubeClient(tokenKubeConfig(server, caPem, api.token), { namespace: 'skein-system' });
  t.teardown(() => client.close());
  return { api, server, caPem, client };
}
