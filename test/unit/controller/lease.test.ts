// Leader election for the CA's writes over a Lease on the stand-in API server (see
// fake-apiserver.ts: no real API server can run here; reached over TLS with its cluster CA by
// @kubernetes/client-node's CoordinationV1Api and CoreV1Api): one leader at a time, takeover after
// release or expiry, and a root store that only the leader may write (kept in a Secret).
import t from 'tap';
import { LeaseElector } from '../../../src/controller/kube/lease.js';
import { LeaderGatedRootStore, SecretRootStore } from '../../../src/controller/kube/secret-root-store.js';
import { CertificateAuthority } from '../../../src/identity/ca/ca.js';
import { standInClient } from './stand-in-kube.js';

async function setup(t: Tap.Test) {
  const { api, client } = await standInClient(t);
  return { api, client };
}

t.test('one leader; the other takes over on release and on expiry', async (t) => {
  const { api, client } = await setup(t);
  let clock = Date.parse('2026-01-01T00:00:00Z');
  const now = () => new Date(clock);
  const mk = (identity: string) => new LeaseElector({ client, namespace: 'skein-system', identity, leaseDurationSeconds: 10, retryPeriodMs: 60_000, now });
  const r1 = mk('replica-1');
  const r2 = mk('replica-2');
  t.teardown(() => r1.stop());
  t.teardown(() => r2.stop());
  await r1.start();
  await r2.start();
  t.ok(r1.isLeader(), 'first replica leads');
  t.notOk(r2.isLeader(), 'second follows');
  t.equal(r2.holder, 'replica-1');
  clock += 5_000;
  await r1.tick(); // renew
  clock += 8_000;
  await r2.tick();
  t.notOk(r2.isLeader(), 'a renewed lease is not taken');

  // Expiry: replica-1 stops renewing (hung); after the duration replica-2 takes over.
  clock += 11_000;
  await r2.tick();
  t.ok(r2.isLeader(), 'taken over after expiry');
  const lease = api.get('coordination.k8s.io/v1', 'Lease', 'skein-system', 'skein-controller-ca')!;
  t.match(lease.spec, { holderIdentity: 'replica-2', leaseTransitions: 1 });
  // Lease times are MicroTime: kube-apiserver parses exactly six fractional digits.
  t.match((lease.spec as Record<string, unknown>).renewTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/, 'renewTime in MicroTime format');
  t.match((lease.spec as Record<string, unknown>).acquireTime, /\.\d{6}Z$/, 'acquireTime in MicroTime format');
  await r1.tick();
  t.notOk(r1.isLeader(), 'the old leader notices it lost');

  // Release: replica-2 stops; replica-1 takes over without waiting for expiry.
  await r2.stop();
  await r1.tick();
  t.ok(r1.isLeader(), 'taken over after release');
});

t.test('two replicas racing for the lease: exactly one wins', async (t) => {
  const { client } = await setup(t);
  const electors = ['a', 'b', 'c'].map((id) => new LeaseElector({ client, namespace: 'skein-system', identity: id, retryPeriodMs: 60_000 }));
  for (const e of electors) t.teardown(() => e.stop());
  await Promise.all(electors.map((e) => e.start()));
  t.equal(electors.filter((e) => e.isLeader()).length, 1);
});

t.test('the CA root is persisted in a Secret only by the leader', async (t) => {
  const { api, client } = await setup(t);
  let leader = false;
  const store = new LeaderGatedRootStore(new SecretRootStore(client, 'skein-system'), () => leader);
  await t.rejects(CertificateAuthority.create({ trustDomain: 'cluster.local', store }), { code: 'SKEIN_CONTROLLER_NOT_LEADER' }, 'a follower may not create the root');
  leader = true;
  const ca = await CertificateAuthority.create({ trustDomain: 'cluster.local', store });
  t.ok(api.get('v1', 'Secret', 'skein-system', 'skein-ca'), 'root stored in the Secret');
  leader = false;
  const replica = await CertificateAuthority.create({ trustDomain: 'cluster.local', store });
  t.same(replica.trustBundlePem(), ca.trustBundlePem(), 'a follower loads the same root');
});
