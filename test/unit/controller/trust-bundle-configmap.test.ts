// The controller keeps the CA trust bundle in the ConfigMap agents mount as --ca-root-file,
// against the stand-in API server over TLS (fake-apiserver.ts, stand-in-kube.ts: no real API
// server can run here):
// created by the leader only, rewritten when roots are added or activated, repaired when
// someone overwrites it (a re-applied manifest), other keys kept.
import t from 'tap';
import { KubeClient } from '../../../src/controller/kube/client.js';
import { TRUST_BUNDLE_KEY, TrustBundlePublisher } from '../../../src/controller/kube/trust-bundle-configmap.js';
import { CertificateAuthority } from '../../../src/identity/ca/ca.js';
import { MemoryRootStore } from '../../../src/identity/ca/root-store.js';
import { silentLogger } from '../../../src/telemetry/log.js';
import type { FakeApiServer } from './fake-apiserver.js';
import { standInClient, tokenKubeConfig } from './stand-in-kube.js';

async function setup(t: Tap.Test) {
  const { api, server, caPem, client } = await standInClient(t);
  const ca = await CertificateAuthority.create({ trustDomain: 'cluster.local', store: new MemoryRootStore() });
  return { api, server, caPem, client, ca };
}

const bundleIn = (api: FakeApiServer) => (api.get('v1', 'ConfigMap', 'skein-system', 'skein-trust-bundle')?.data as Record<string, string> | undefined)?.[TRUST_BUNDLE_KEY];
const pemOf = (ca: CertificateAuthority) => `${ca.trustBundlePem().map((b) => b.trim()).join('\n')}\n`;

t.test('the leader writes the bundle; a follower does not', async (t) => {
  const { api, client, ca } = await setup(t);
  let leader = false;
  const pub = new TrustBundlePublisher({ client, namespace: 'skein-system', bundle: () => ca.trustBundlePem(), isLeader: () => leader, resyncMs: 60_000, logger: silentLogger() });
  t.teardown(() => pub.stop());
  await pub.start();
  t.equal(bundleIn(api), undefined, 'a follower writes nothing');
  leader = true;
  await pub.publish();
  t.equal(bundleIn(api), pemOf(ca), 'created with the CA roots');
  t.match(bundleIn(api), /^-----BEGIN CERTIFICATE-----/);
  await pub.publish();
  t.equal(pub.writes, 1, 'an unchanged bundle is not rewritten');
});

t.test('roots added and activated reach the ConfigMap; an overwrite is repaired; other keys stay', async (t) => {
  const { api, client, ca } = await setup(t);
  const pub = new TrustBundlePublisher({ client, namespace: 'skein-system', bundle: () => ca.trustBundlePem(), isLeader: () => true, resyncMs: 60_000, logger: silentLogger() });
  t.teardown(() => pub.stop());
  await pub.start();
  const before = bundleIn(api);
  const added = await ca.addAuthority();
  await pub.publish();
  t.equal(ca.trustBundlePem().length, 2);
  t.equal(bundleIn(api), pemOf(ca), 'both roots published');
  t.not(bundleIn(api), before);
  await ca.activateAuthority(added.id);
  await pub.publish();
  t.equal(bundleIn(api), pemOf(ca));

  // kubectl apply of the install manifest (no data) or a hand edit: the next publish repairs it.
  const cm = api.get('v1', 'ConfigMap', 'skein-system', 'skein-trust-bundle')!;
  api.apply({ ...cm, data: { [TRUST_BUNDLE_KEY]: 'garbage', 'extra.txt': 'kept' } });
  await pub.publish();
  t.equal(bundleIn(api), pemOf(ca), 'repaired');
  t.equal((api.get('v1', 'ConfigMap', 'skein-system', 'skein-trust-bundle')!.data as Record<string, string>)['extra.txt'], 'kept');
});

t.test('an API error is logged with its code, not thrown', async (t) => {
  const { api, server, caPem, ca } = await setup(t);
  const bad = new KubeClient(tokenKubeConfig(server, caPem, 'wrong'), { namespace: 'skein-system' });
  t.teardown(() => bad.close());
  const warnings: unknown[] = [];
  const logger = { ...silentLogger(), warn: (o: unknown) => warnings.push(o), info: () => {} } as unknown as ReturnType<typeof silentLogger>;
  const pub = new TrustBundlePublisher({ client: bad, namespace: 'skein-system', bundle: () => ca.trustBundlePem(), isLeader: () => true, logger });
  await pub.publish();
  t.equal(warnings.length, 1, 'one warning');
  t.match(warnings[0], { code: 'SKEIN_KUBE_API_REFUSED' });
  t.equal(bundleIn(api), undefined);
});
