// The Kubernetes client's connection setup: in-cluster options from the service-account
// files, HTTPS with the cluster CA and a token file re-read as it rotates, pagination, and
// API errors with their status (against the stand-in API server, fake-apiserver.ts).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { inClusterOptions, KubeApiError, KubeClient } from '../../../src/controller/kube/client.js';
import { CertificateAuthority } from '../../../src/identity/ca/ca.js';
import { MemoryRootStore } from '../../../src/identity/ca/root-store.js';
import { FakeApiServer } from './fake-apiserver.js';
import { namespace, tempDir } from './helpers.js';

t.test('in-cluster options', async (t) => {
  const dir = tempDir(t, 'sa');
  writeFileSync(join(dir, 'namespace'), 'skein-system\n');
  t.same(inClusterOptions(dir, { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' }), {
    server: 'https://10.96.0.1:443',
    tokenFile: join(dir, 'token'),
    caFile: join(dir, 'ca.crt'),
    namespace: 'skein-system',
  });
  t.equal(inClusterOptions(dir, { KUBERNETES_SERVICE_HOST: 'fd00::1' }).server, 'https://[fd00::1]:443');
  t.throws(() => inClusterOptions(dir, {}), { code: 'SKEIN_KUBE_NOT_IN_CLUSTER' });
});

t.test('HTTPS with the cluster CA, rotating token file, pagination, errors', async (t) => {
  const ca = await CertificateAuthority.create({ trustDomain: 'cluster.local', store: new MemoryRootStore() });
  const serving = await ca.activeAuthority().issueServingCertificate({ sans: ['127.0.0.1'], ttlSeconds: 3600 });
  const api = new FakeApiServer({ tls: { cert: serving.certChainPem, key: serving.privateKeyPem } });
  const server = await api.start();
  t.teardown(() => api.stop());
  t.match(server, /^https:/);
  const dir = tempDir(t, 'kc');
  const tokenFile = join(dir, 'token');
  writeFileSync(tokenFile, 'stale-token\n');
  const caFile = join(dir, 'ca.crt');
  writeFileSync(caFile, ca.trustBundlePem().join(''));
  const client = new KubeClient({ server, tokenFile, caFile, tokenReloadMs: 0 });
  t.teardown(() => client.close());
  const denied = await client.list('/api/v1/namespaces').catch((e: unknown) => e);
  t.ok(denied instanceof KubeApiError && denied.status === 401, 'wrong token: 401 with its status');
  writeFileSync(tokenFile, `${api.token}\n`);
  for (let i = 0; i < 7; i++) api.apply(namespace(`ns-${i}`));
  const listed = await client.list('/api/v1/namespaces', 3);
  t.equal(listed.items.length, 7, 'all pages followed');
  t.ok(Number(listed.resourceVersion) > 0);
  const err = await client.request('GET', '/api/v1/namespaces/nope').catch((e: unknown) => e);
  t.ok(err instanceof KubeApiError && err.status === 404, '404 surfaces as KubeApiError');

  const untrusting = new KubeClient({ server, token: api.token });
  t.teardown(() => untrusting.close());
  await t.rejects(untrusting.list('/api/v1/namespaces'), 'a server the CA does not vouch for is refused');
});
