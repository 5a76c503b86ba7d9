import { once } from 'node:events';
import { X509Certificate } from 'node:crypto';
import { Registry } from 'prom-client';
import t from 'tap';
import { SkeinError } from '../../../../src/errors.js';
import { CertificateStore, type CertificateStoreOptions } from '../../../../src/identity/workload/certificate-store.js';
import { IdentityCode } from '../../../../src/identity/codes.js';
import { DEFAULT_RENEWAL_POLICY, renewalDelayMs, retryDelayMs, systemTimers } from '../../../../src/identity/workload/renewal.js';
import { FakeTime, id, LocalIssuer, makeCa, TD, type Teardown } from '../helpers.js';

const WEB = id('shop', 'web');
const DB = id('shop', 'db');
const P = DEFAULT_RENEWAL_POLICY;

t.test('renewal and retry delays', async (t) => {
  const now = 1_000_000;
  t.equal(renewalDelayMs(now, now + 3600_000, P, () => 0.5), 1800_000, 'half-life');
  t.equal(renewalDelayMs(now, now + 3600_000, P, () => 0), 1620_000, 'jitter low end: 45%');
  t.equal(renewalDelayMs(now, now + 3600_000, P, () => 1), 1980_000, 'jitter high end: 55%');
  t.equal(renewalDelayMs(now, now - 1, P, () => 0.5), P.minDelayMs, 'already expired: soon');
  t.equal(renewalDelayMs(now, now + 10, P, () => 0.5), P.minDelayMs, 'floor');
  t.same(
    [1, 2, 3, 4, 5, 6, 7, 10].map((a) => retryDelayMs(a, P, () => 1, now)),
    [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000],
    'doubling, capped',
  );
  t.equal(retryDelayMs(1, P, () => 0, now), 500, 'equal jitter: at least half');
  t.equal(retryDelayMs(6, P, () => 1, now, now + 40_000), 10_000, 'never more than a quarter of the remaining life');
  t.equal(retryDelayMs(6, P, () => 1, now, now + 100), P.minDelayMs);
  t.equal(retryDelayMs(6, P, () => 1, now, now - 5), 30_000, 'expired: plain backoff');
  let fired = false;
  const h = systemTimers.setTimeout(() => {
    fired = true;
  }, 1);
  systemTimers.clearTimeout(h);
  await new Promise((r) => setTimeout(r, 5));
  t.equal(fired, false);
});

async function fixture(t: Teardown, extra: Partial<CertificateStoreOptions> = {}) {
  const time = new FakeTime();
  const ca = await makeCa({ now: () => new Date(time.now()), ttl: { defaultTtlSeconds: 3600, maxTtlSeconds: 3600 } });
  const issuer = new LocalIssuer(ca);
  const registry = new Registry();
  const store = new CertificateStore({
    trustDomain: TD,
    issuer,
    clock: time,
    timers: time,
    random: () => 0.5,
    registry,
    bundleRefreshIntervalMs: 0,
    waitTimeoutMs: 10_000,
    ...extra,
  });
  t.teardown(() => store.close());
  return { time, ca, issuer, store, registry };
}


t.test('issues on acquire, waits, renews at half-life with jitter', async (t) => {
  const { time, ca, issuer, store, registry } = await fixture(t);
  t.rejects(store.certificateFor(WEB), { code: IdentityCode.NotHeld });
  t.throws(() => store.acquire('spiffe://other.td/ns/a/sa/b'), { code: IdentityCode.TrustDomain });
  t.throws(() => store.acquire('nope'), { code: IdentityCode.SpiffeIdInvalid });
  store.acquire(WEB, 'pod-1');
  t.equal(store.status()[0]?.state, 'pending');
  const first = await store.certificateFor(WEB);
  t.equal(first.identity, WEB);
  t.equal(first.notAfter.getTime(), Math.ceil((time.now() + 3600_000) / 1000) * 1000);
  t.match(first.privateKeyPem, /^-----BEGIN PRIVATE KEY-----/);
  t.notMatch(first.certChainPem, ca.trustBundlePem()[0] as string, 'roots are not presented');
  t.same(store.trustBundlePem(), ca.trustBundlePem(), 'bundle learned from the issuance answer');
  t.equal(store.trustDomain(), TD);
  t.same(store.identities(), [WEB]);
  t.equal(issuer.calls, 1);
  t.equal(await store.certificateFor(WEB), first, 'held certificate returned at once');

  // The renewal timer: half of the remaining life (random 0.5 = no jitter offset).
  const remaining = first.notAfter.getTime() - time.now();
  t.same(time.delays(), [Math.floor(remaining / 2)], 'one pending timer: the renewal');
  t.equal(store.status()[0]?.nextAttemptAt?.getTime(), time.now() + Math.floor(remaining / 2));
  time.advance(Math.floor(remaining / 2) - 1);
  t.equal(issuer.calls, 1, 'not before half-life');
  const renewed = once(store, 'issued');
  time.advance(1);
  await renewed;
  t.equal(issuer.calls, 2);
  const second = await store.certificateFor(WEB);
  t.not(second.privateKeyPem, first.privateKeyPem, 'a new key per issuance');
  t.not(new X509Certificate(second.certChainPem).serialNumber, new X509Certificate(first.certChainPem).serialNumber);
  t.match(await registry.metrics(), /skein_identity_certificates_issued_total 2/);
  t.match(await registry.metrics(), /skein_identity_certificate_expiry_timestamp_seconds\{identity="spiffe:\/\/cluster.local\/ns\/shop\/sa\/web"\}/);

  // Jitter spreads renewals between 45% and 55% of the remaining life.
  const { store: s2, time: t2 } = await fixture(t, { random: () => 0 });
  s2.acquire(WEB);
  const c2 = await s2.certificateFor(WEB);
  t.equal(t2.delays()[0], Math.floor((c2.notAfter.getTime() - t2.now()) * 0.45));
});

t.test('failures: backoff grows and caps, retries tighten near expiry, never lapses while the CA is back', async (t) => {
  const { time, issuer, store, registry } = await fixture(t, { renewal: { backoffInitialMs: 1000, backoffMaxMs: 8000 } });
  store.acquire(WEB);
  const cert = await store.certificateFor(WEB);
  const notAfter = cert.notAfter.getTime();
  issuer.failWith = new SkeinError(IdentityCode.CaUnavailable, 'CA away', { permanent: false });
  const retries: number[] = [];
  store.on('failed', (f: { retryInMs: number }) => retries.push(f.retryInMs));
  time.advance(time.delays()[0] as number); // the renewal comes due, and fails
  await once(store, 'failed');
  for (let i = 0; i < 5; i++) {
    const next = once(store, 'failed');
    time.advance(time.delays()[0] as number);
    await next;
  }
  t.same(retries, [750, 1500, 3000, 6000, 6000, 6000], 'doubling (equal jitter at 0.5), capped at 8 s');
  t.equal(store.status()[0]?.consecutiveFailures, 6);
  t.equal(store.status()[0]?.lastError, IdentityCode.CaUnavailable);
  t.equal(store.status()[0]?.state, 'valid', 'the held certificate keeps serving');
  t.equal(await store.certificateFor(WEB), cert, 'connections still get the valid certificate');
  // Go close to expiry: retries are at most a quarter of the remaining life.
  const pendingFailure = once(store, 'failed');
  time.advance(notAfter - time.now() - 10_000); // fires the pending retry on the way
  await pendingFailure;
  for (let i = 0; i < 3; i++) {
    const next = once(store, 'failed');
    time.advance(time.delays()[0] as number);
    await next;
  }
  const last = retries[retries.length - 1] as number;
  t.ok(last <= 2500, `retry ${last} ms within a quarter of the remaining life`);
  t.ok(time.now() + (time.delays()[0] as number) < notAfter, 'next attempt before expiry');
  issuer.failWith = undefined; // the CA is back
  const ok = once(store, 'issued');
  time.advance(time.delays()[0] as number);
  await ok;
  t.ok(time.now() < notAfter, 'renewed before the old certificate lapsed');
  t.ok((await store.certificateFor(WEB)).notAfter.getTime() > notAfter);
  t.equal(store.status()[0]?.consecutiveFailures, 0);
  t.match(await registry.metrics(), /skein_identity_certificate_failures_total\{reason="SKEIN_IDENTITY_CA_UNAVAILABLE"\} 10/);
});

t.test('waiting: timeout, abort, permanent refusal, release, close', async (t) => {
  const { time, issuer, store } = await fixture(t, { waitTimeoutMs: 5000 });
  issuer.failWith = new SkeinError(IdentityCode.CaUnavailable, 'away', { permanent: false });
  store.acquire(WEB);
  const waiting = store.certificateFor(WEB);
  await once(store, 'failed');
  time.advance(5000);
  await t.rejects(waiting, { code: IdentityCode.IssuanceTimeout });

  const ac = new AbortController();
  const aborted = store.certificateFor(WEB, ac.signal);
  ac.abort();
  await t.rejects(aborted, { code: IdentityCode.IssuanceAborted });
  await t.rejects(store.certificateFor(WEB, ac.signal), { code: IdentityCode.IssuanceAborted }, 'already aborted');

  // A permanent refusal (no pod of this SA on our node) fails waiters at once.
  issuer.failWith = new SkeinError(IdentityCode.NodeNotAuthorized, 'no pod', { permanent: true });
  const refused = store.certificateFor(WEB);
  const failed = once(store, 'failed');
  time.advance((store.status()[0]?.nextAttemptAt?.getTime() as number) - time.now()); // the retry, before the wait times out
  await failed;
  await t.rejects(refused, { code: IdentityCode.NodeNotAuthorized });

  // Refcount by pod uid: the last release drops it; waiters are told.
  store.acquire(DB, 'p1');
  store.acquire(DB, 'p2');
  store.acquire(DB, 'p1');
  const pending = store.certificateFor(DB);
  store.release(DB, 'p1');
  t.equal(store.status().find((s) => s.identity === DB)?.holders, 1);
  const released = once(store, 'released');
  store.release(DB, 'p2');
  await released;
  await t.rejects(pending, { code: IdentityCode.Released });
  await t.rejects(store.certificateFor(DB), { code: IdentityCode.NotHeld });
  store.release(DB, 'p3'); // unknown: no-op
  store.acquire(DB);
  store.acquire(DB);
  store.release(DB);
  t.ok(store.identities().includes(DB), 'anonymous holders counted');
  store.release(DB);
  t.notOk(store.identities().includes(DB));

  const beforeClose = store.certificateFor(WEB);
  store.close();
  await t.rejects(beforeClose, { code: IdentityCode.StoreClosed });
  await t.rejects(store.certificateFor(WEB), { code: IdentityCode.StoreClosed });
  t.throws(() => store.acquire(WEB), { code: IdentityCode.StoreClosed });
  t.same(time.delays(), [], 'no timer left');
  store.close();
});

t.test('trust bundle: follows the CA, re-issues what no longer chains, periodic refresh', async (t) => {
  const { time, ca, issuer, store, registry } = await fixture(t, { bundleRefreshIntervalMs: 60_000 });
  store.acquire(WEB);
  const c1 = await store.certificateFor(WEB);
  const oldId = ca.activeAuthority().id;
  const changes: string[][] = [];
  store.on('bundleChanged', (r: string[]) => changes.push(r));

  const added = await ca.addAuthority();
  const fetched = once(store, 'bundleChanged');
  time.advance(60_000); // periodic refresh
  await fetched;
  t.equal(store.bundle.size, 2, 'new root learned by the periodic refresh');
  t.same(issuer.trusted.at(-1), store.trustBundlePem(), 'CA client told to trust the new bundle');
  t.match(await registry.metrics(), /skein_identity_trust_bundle_roots 2/);

  await ca.activateAuthority(added.id);
  await store.renewNow();
  const c2 = await store.certificateFor(WEB);
  t.not(c2, c1);
  t.equal(new X509Certificate(c2.certChainPem).issuer, new X509Certificate(added.rootPem).subject, 'signed by the new root');

  await ca.removeAuthority(oldId);
  t.equal(await store.refreshTrustBundle(), true);
  t.equal(await store.refreshTrustBundle(), false, 'unchanged');
  t.same(store.bundle.fingerprints(), [added.id]);
  t.equal(changes.length, 2);

  // A certificate that no longer chains to the bundle is re-issued by itself.
  await ca.addAuthority();
  const third = ca.listAuthorities().find((a) => !a.active)?.id as string;
  await store.refreshTrustBundle();
  await ca.activateAuthority(third);
  await ca.removeAuthority(added.id); // the held certificate chains to the removed root
  const reissued = once(store, 'issued');
  await store.refreshTrustBundle();
  await reissued;
  t.equal(new X509Certificate((await store.certificateFor(WEB)).certChainPem).issuer, new X509Certificate(ca.trustBundlePem()[0] as string).subject);

  // Junk from the CA never replaces a good bundle.
  const orig = issuer.fetchTrustBundle.bind(issuer);
  issuer.fetchTrustBundle = async () => ['junk'];
  t.equal(await store.refreshTrustBundle(), false);
  issuer.fetchTrustBundle = async () => [];
  t.equal(await store.refreshTrustBundle(), false);
  t.equal(store.bundle.size, 1);
  // A failed periodic refresh is logged and rescheduled.
  issuer.fetchTrustBundle = async () => {
    throw new SkeinError(IdentityCode.CaUnavailable, 'away');
  };
  time.advance(60_000);
  await new Promise((r) => setImmediate(r));
  t.ok(time.delays().includes(60_000), 'refresh rescheduled after a failure');
  issuer.fetchTrustBundle = orig;
});

t.test('an answer that is not ours is refused', async (t) => {
  const { issuer, store, ca } = await fixture(t);
  const other = await makeCa();
  // The CA answers with a certificate for another key (e.g. a confused or hostile CA).
  const realIssue = issuer.issue.bind(issuer);
  let swap = true;
  issuer.issue = async (req) => {
    const r = await realIssue(req);
    if (!swap) return r;
    const { createWorkloadCsr, generateP256KeyPair } = await import('../../../../src/identity/x509/keys.js');
    const foreign = await ca.issue(await createWorkloadCsr(WEB, await generateP256KeyPair()), 0);
    return { ...r, certChainPem: foreign.certChainPem };
  };
  store.acquire(WEB);
  await t.rejects(store.certificateFor(WEB), { code: IdentityCode.IssuedCertInvalid });
  // Or one that does not chain to the bundle it sends.
  issuer.issue = async (req) => {
    const r = await realIssue(req);
    return { ...r, trustBundlePem: other.trustBundlePem() };
  };
  const s2 = new CertificateStore({ trustDomain: TD, issuer, bundleRefreshIntervalMs: 0, waitTimeoutMs: 2000 });
  t.teardown(() => s2.close());
  s2.acquire(WEB);
  await t.rejects(s2.certificateFor(WEB), { code: IdentityCode.IssuedCertInvalid });
  swap = false;
  issuer.issue = async () => ({ certChainPem: ['garbage'], trustBundlePem: [], ttlSeconds: 1 });
  const s3 = new CertificateStore({ trustDomain: TD, issuer, bundleRefreshIntervalMs: 0, waitTimeoutMs: 2000 });
  t.teardown(() => s3.close());
  s3.acquire(WEB);
  await t.rejects(s3.certificateFor(WEB), { code: IdentityCode.IssuedCertInvalid });
  issuer.issue = async () => ({ certChainPem: [], trustBundlePem: [], ttlSeconds: 1 });
  const s4 = new CertificateStore({ trustDomain: TD, issuer, bundleRefreshIntervalMs: 0, waitTimeoutMs: 2000 });
  t.teardown(() => s4.close());
  s4.acquire(WEB);
  await t.rejects(s4.certificateFor(WEB), { code: IdentityCode.IssuedCertInvalid });
  issuer.issue = async () => {
    throw new Error('plain error');
  };
  const s5 = new CertificateStore({ trustDomain: TD, issuer, bundleRefreshIntervalMs: 0, waitTimeoutMs: 300 });
  t.teardown(() => s5.close());
  s5.acquire(WEB);
  await t.rejects(s5.certificateFor(WEB), { code: IdentityCode.IssuanceTimeout }, 'unknown errors are retried, waiters time out');
  t.equal(s5.status()[0]?.lastError, IdentityCode.IssuanceFailed);
});
