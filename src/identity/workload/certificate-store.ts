import { X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Registry } from 'prom-client';
import type { SpiffeId } from '../spiffe.js';
import { messageOf, SkeinError } from '../../errors.js';
import { type Logger, silentLogger } from '../../telemetry/log.js';
import type { CertificateIssuer } from './ca-client.js';
import { IdentityCode } from '../codes.js';
import { createWorkloadCsr, generateP256KeyPair, privateKeyToPem } from '../x509/keys.js';
import { type CertificateStoreMetrics, certificateStoreMetrics } from '../metrics.js';
import { isSelfSigned } from '../x509/pem.js';
import { verifyPeer } from './peer-verification.js';
import { type Clock, DEFAULT_RENEWAL_POLICY, type RenewalPolicy, renewalDelayMs, retryDelayMs, systemClock, systemTimers, type Timers } from './renewal.js';
import { parseWorkloadSpiffeId } from '../spiffe.js';
import { TrustBundle } from './trust-bundle.js';
import type { IdentitySource, WorkloadCertificate } from './types.js';
import { subtle } from '../x509/provider.js';

export interface CertificateStoreOptions {
  trustDomain: string;
  /** The CA (CaClient) or a stand-in. */
  issuer: CertificateIssuer;
  /** Roots trusted before the first answer of the CA (the bootstrap root file). */
  initialTrustBundlePem?: string[];
  /** TTL to request; 0 = the CA's default (24 h). */
  ttlSeconds?: number;
  renewal?: Partial<RenewalPolicy>;
  /** Longest `certificateFor` waits for a first issuance (default 15 s). */
  waitTimeoutMs?: number;
  /** Period of trust bundle refresh from the CA (default 5 min; 0 = only with issuances). */
  bundleRefreshIntervalMs?: number;
  clock?: Clock;
  timers?: Timers;
  random?: () => number;
  logger?: Logger;
  registry?: Registry;
}

/** What the admin API may show about a held certificate (never the key). */
export interface CertificateStatus {
  identity: SpiffeId;
  holders: number;
  state: 'pending' | 'valid' | 'expired';
  serialNumber?: string;
  notBefore?: Date;
  notAfter?: Date;
  /** When the next renewal (or retry) is due. */
  nextAttemptAt?: Date;
  consecutiveFailures: number;
  lastError?: string;
  certChainPem?: string;
}

interface Waiter {
  resolve: (c: WorkloadCertificate) => void;
  reject: (e: Error) => void;
}

interface Entry {
  identity: SpiffeId;
  holders: Set<string>;
  anonymous: number;
  current?: WorkloadCertificate;
  serial?: string;
  waiters: Set<Waiter>;
  timer?: unknown;
  nextAttemptAt?: number;
  inFlight?: Promise<void>;
  abort?: AbortController;
  failures: number;
  lastError?: SkeinError;
}

function isPermanent(err: SkeinError): boolean {
  return (err.details as { permanent?: boolean } | undefined)?.permanent === true || err.code === IdentityCode.IssuedCertInvalid;
}

/**
 * The agent's workload certificates: one per identity with a local pod. `acquire` when a pod
 * of that service account appears (refcounted by pod uid), `release` when it leaves. Keys are
 * generated in memory for every issuance (never written anywhere, never logged). Renewal at
 * half-life with jitter, retries with capped exponential backoff that tighten as expiry
 * nears. The trust bundle follows the CA (every issuance answer, and a periodic refresh).
 *
 * Events: 'issued' ({identity, notAfter, serialNumber}), 'failed' ({identity, code, attempt,
 * retryInMs}), 'released' (identity), 'bundleChanged' (rootsPem: string[]).
 */
export class CertificateStore extends EventEmitter implements IdentitySource {
  readonly bundle: TrustBundle;
  readonly metrics: CertificateStoreMetrics;
  private readonly entries = new Map<SpiffeId, Entry>();
  private readonly policy: RenewalPolicy;
  private readonly clock: Clock;
  private readonly timers: Timers;
  private readonly random: () => number;
  private readonly log: Logger;
  private bundleTimer: unknown;
  private closed = false;

  constructor(private readonly opts: CertificateStoreOptions) {
    super();
    this.bundle = new TrustBundle(opts.initialTrustBundlePem ?? []);
    this.policy = { ...DEFAULT_RENEWAL_POLICY, ...opts.renewal };
    this.clock = opts.clock ?? systemClock;
    this.timers = opts.timers ?? systemTimers;
    this.random = opts.random ?? Math.random;
    this.log = (opts.logger ?? silentLogger()).child({ component: 'certificate-store' });
    this.metrics = certificateStoreMetrics(opts.registry ?? new Registry());
    this.metrics.trustedRoots.set(this.bundle.size);
    this.scheduleBundleRefresh();
  }

  trustDomain(): string {
    return this.opts.trustDomain;
  }

  trustBundlePem(): string[] {
    return this.bundle.rootsPem();
  }

  /** Identities currently held (with at least one holder). */
  identities(): SpiffeId[] {
    return [...this.entries.keys()];
  }

  /**
   * A local pod (`holder`, its uid) needs `identity`. The first holder starts issuance.
   * Acquiring twice with the same holder counts once; without a holder, every call counts.
   */
  acquire(identity: SpiffeId, holder?: string): void {
    if (this.closed) throw new SkeinError(IdentityCode.StoreClosed, 'certificate store is closed');
    const id = parseWorkloadSpiffeId(identity);
    if (id.trustDomain !== this.opts.trustDomain) {
      throw new SkeinError(IdentityCode.TrustDomain, `identity ${identity} is not in trust domain ${this.opts.trustDomain}`);
    }
    let e = this.entries.get(identity);
    if (!e) {
      e = { identity, holders: new Set(), anonymous: 0, waiters: new Set(), failures: 0 };
      this.entries.set(identity, e);
      this.metrics.heldIdentities.set(this.entries.size);
      this.log.info({ identity }, 'identity acquired: requesting certificate');
      void this.issueNow(e);
    }
    if (holder === undefined) e.anonymous++;
    else e.holders.add(holder);
  }

  /** The pod `holder` no longer needs `identity`; the last release drops the certificate and key. */
  release(identity: SpiffeId, holder?: string): void {
    const e = this.entries.get(identity);
    if (!e) return;
    if (holder === undefined) e.anonymous = Math.max(0, e.anonymous - 1);
    else e.holders.delete(holder);
    if (e.holders.size + e.anonymous > 0) return;
    this.drop(e, new SkeinError(IdentityCode.Released, `identity ${identity} was released (no local pod left)`));
    this.log.info({ identity }, 'identity released: certificate dropped');
    this.emit('released', identity);
  }

  /**
   * The current certificate of a held identity, waiting for the first issuance when needed
   * (bounded by `waitTimeoutMs` and `signal`). Rejects with SKEIN_IDENTITY_NOT_HELD when no
   * local pod has this identity, and at once on a permanent CA refusal.
   */
  currentCertificate(identity: SpiffeId): WorkloadCertificate | undefined {
    const c = this.closed ? undefined : this.entries.get(identity)?.current;
    return c && c.notAfter.getTime() > this.clock.now() ? c : undefined;
  }

  certificateFor(identity: SpiffeId, signal?: AbortSignal): Promise<WorkloadCertificate> {
    if (this.closed) return Promise.reject(new SkeinError(IdentityCode.StoreClosed, 'certificate store is closed'));
    const e = this.entries.get(identity);
    if (!e) return Promise.reject(new SkeinError(IdentityCode.NotHeld, `no local pod holds identity ${identity}`, { identity }));
    if (e.current && e.current.notAfter.getTime() > this.clock.now()) return Promise.resolve(e.current);
    if (signal?.aborted) return Promise.reject(new SkeinError(IdentityCode.IssuanceAborted, 'wait for certificate aborted', { identity }));
    return new Promise<WorkloadCertificate>((resolve, reject) => {
      const timeoutMs = this.opts.waitTimeoutMs ?? 15_000;
      const finish = () => {
        this.timers.clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        e.waiters.delete(waiter);
      };
      const waiter: Waiter = {
        resolve: (c) => {
          finish();
          resolve(c);
        },
        reject: (err) => {
          finish();
          reject(err);
        },
      };
      const timer = this.timers.setTimeout(() => {
        const cause = e.lastError ? ` (last error: ${e.lastError.code})` : '';
        waiter.reject(new SkeinError(IdentityCode.IssuanceTimeout, `no certificate for ${identity} within ${timeoutMs} ms${cause}`, { identity }));
      }, timeoutMs, true);
      const onAbort = () => waiter.reject(new SkeinError(IdentityCode.IssuanceAborted, 'wait for certificate aborted', { identity }));
      signal?.addEventListener('abort', onAbort, { once: true });
      e.waiters.add(waiter);
    });
  }

  /**
   * Re-issues now (all held identities, or one): used in a root rotation once the CA signs
   * with the new root. Resolves when every re-issue settled; rejects with the first failure.
   */
  async renewNow(identity?: SpiffeId): Promise<void> {
    const targets = identity ? [this.entries.get(identity)].filter((e): e is Entry => !!e) : [...this.entries.values()];
    const results = await Promise.allSettled(targets.map((e) => this.renewEntry(e)));
    for (const r of results) if (r.status === 'rejected') throw r.reason;
    const failed = targets.find((e) => e.lastError && e.failures > 0);
    if (failed?.lastError) throw failed.lastError;
  }

  /** Fetches the trust bundle from the CA and applies it. */
  async refreshTrustBundle(signal?: AbortSignal): Promise<boolean> {
    const roots = await this.opts.issuer.fetchTrustBundle(signal);
    return this.applyBundle(roots);
  }

  /** Status of every held identity, for the admin API (certificates, never keys). */
  status(): CertificateStatus[] {
    const now = this.clock.now();
    return [...this.entries.values()].map((e) => ({
      identity: e.identity,
      holders: e.holders.size + e.anonymous,
      state: !e.current ? 'pending' : e.current.notAfter.getTime() > now ? 'valid' : 'expired',
      serialNumber: e.serial,
      notBefore: e.current?.notBefore,
      notAfter: e.current?.notAfter,
      nextAttemptAt: e.nextAttemptAt === undefined ? undefined : new Date(e.nextAttemptAt),
      consecutiveFailures: e.failures,
      lastError: e.lastError?.code,
      certChainPem: e.current?.certChainPem,
    }));
  }

  /** Stops every timer and drops every key; pending waits reject. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.bundleTimer !== undefined) this.timers.clearTimeout(this.bundleTimer);
    for (const e of [...this.entries.values()]) this.drop(e, new SkeinError(IdentityCode.StoreClosed, 'certificate store closed'));
  }

  // --- internals ---

  private drop(e: Entry, reason: SkeinError): void {
    if (e.timer !== undefined) this.timers.clearTimeout(e.timer);
    e.abort?.abort();
    for (const w of [...e.waiters]) w.reject(reason);
    e.current = undefined;
    this.entries.delete(e.identity);
    this.metrics.expiry.remove({ identity: e.identity });
    this.metrics.heldIdentities.set(this.entries.size);
  }

  private live(e: Entry): boolean {
    return !this.closed && this.entries.get(e.identity) === e;
  }

  /**
   * A fresh issuance that starts after this call: an issuance already in flight may have
   * been signed before a root switch, so it is awaited and then followed by a new one.
   */
  private async renewEntry(e: Entry): Promise<void> {
    if (e.inFlight) await e.inFlight;
    if (this.live(e)) await this.issueNow(e);
  }

  /** Starts an issuance unless one is running (then joins it). */
  private issueNow(e: Entry): Promise<void> {
    if (e.inFlight) return e.inFlight;
    if (!this.live(e)) return Promise.resolve();
    if (e.timer !== undefined) {
      this.timers.clearTimeout(e.timer);
      e.timer = undefined;
    }
    const p = this.issueOnce(e);
    e.inFlight = p;
    return p;
  }

  private async issueOnce(e: Entry): Promise<void> {
    const started = this.clock.now();
    const t0 = process.hrtime.bigint();
    const abort = new AbortController();
    e.abort = abort;
    try {
      const keys = await generateP256KeyPair();
      const csrPem = await createWorkloadCsr(e.identity, keys);
      const res = await this.opts.issuer.issue({ csrPem, ttlSeconds: this.opts.ttlSeconds ?? 0 }, abort.signal);
      if (!this.live(e)) return;
      const cert = await this.checkIssued(e.identity, res.certChainPem, res.trustBundlePem, keys.publicKey);
      cert.wc.privateKeyPem = await privateKeyToPem(keys.privateKey);
      if (!this.live(e)) return;
      // Done with the CA: from here on a new renewal may start (install schedules one).
      e.inFlight = undefined;
      this.applyBundle(res.trustBundlePem);
      this.install(e, cert.wc, cert.serial, started);
      this.metrics.issueSeconds.observe(Number(process.hrtime.bigint() - t0) / 1e9);
    } catch (err) {
      if (!this.live(e)) return;
      e.inFlight = undefined;
      this.failed(e, err);
    } finally {
      if (e.abort === abort) e.abort = undefined;
    }
  }

  /** Checks an answer before trusting it: chain, identity, and that the leaf carries our key. */
  private async checkIssued(identity: SpiffeId, chainPem: string[], bundlePem: string[], publicKey: CryptoKeyLike) {
    const bad = (msg: string, cause?: unknown) => new SkeinError(IdentityCode.IssuedCertInvalid, msg, { identity }, { cause });
    let certs: X509Certificate[];
    try {
      certs = chainPem.map((p) => new X509Certificate(p));
    } catch (err) {
      throw bad('CA answered an unparseable certificate', err);
    }
    const leaf = certs[0];
    if (!leaf) throw bad('CA answered an empty chain');
    const ourSpki = Buffer.from(await subtle.exportKey('spki', publicKey));
    if (!leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(ourSpki)) throw bad('issued certificate does not carry our key');
    const roots = bundlePem.length > 0 ? bundlePem : this.bundle.rootsPem();
    try {
      verifyPeer(certs, roots, { trustDomain: this.opts.trustDomain, expected: identity, now: new Date(this.clock.now()) });
    } catch (err) {
      throw bad(`issued certificate fails verification: ${messageOf(err)}`, err);
    }
    // What we present: the leaf and intermediates; roots are the peers' business.
    const presented = certs.filter((c, i) => i === 0 || !isSelfSigned(c));
    const wc: WorkloadCertificate = {
      identity,
      certChainPem: presented.map((c) => c.toString()).join(''),
      privateKeyPem: '',
      notBefore: leaf.validFromDate,
      notAfter: leaf.validToDate,
    };
    return { wc, serial: leaf.serialNumber };
  }

  private install(e: Entry, wc: WorkloadCertificate, serial: string, started: number): void {
    e.current = wc;
    e.serial = serial;
    e.failures = 0;
    e.lastError = undefined;
    const now = this.clock.now();
    const delay = renewalDelayMs(now, wc.notAfter.getTime(), this.policy, this.random);
    this.schedule(e, delay);
    this.metrics.issued.inc();
    this.metrics.expiry.set({ identity: e.identity }, wc.notAfter.getTime() / 1000);
    this.log.info(
      { identity: e.identity, serialNumber: serial, notAfter: wc.notAfter.toISOString(), renewInMs: delay, tookMs: now - started },
      'certificate issued',
    );
    for (const w of [...e.waiters]) w.resolve(wc);
    this.emit('issued', { identity: e.identity, notAfter: wc.notAfter, serialNumber: serial });
  }

  private failed(e: Entry, err: unknown): void {
    const se = err instanceof SkeinError ? err : new SkeinError(IdentityCode.IssuanceFailed, messageOf(err), undefined, { cause: err });
    e.failures++;
    e.lastError = se;
    const now = this.clock.now();
    const notAfter = e.current?.notAfter.getTime();
    const delay = retryDelayMs(e.failures, this.policy, this.random, now, notAfter);
    this.schedule(e, delay);
    this.metrics.failures.inc({ reason: se.code });
    const stillValid = notAfter !== undefined && notAfter > now;
    this.log.warn(
      { identity: e.identity, code: se.code, err: se.message, attempt: e.failures, retryInMs: delay, certificateValidForMs: stillValid ? notAfter - now : 0 },
      'certificate request failed',
    );
    if (!stillValid && isPermanent(se)) {
      const reason = new SkeinError(se.code, `certificate for ${e.identity} refused: ${se.message}`, { identity: e.identity }, { cause: se });
      for (const w of [...e.waiters]) w.reject(reason);
    }
    this.emit('failed', { identity: e.identity, code: se.code, attempt: e.failures, retryInMs: delay });
  }

  private schedule(e: Entry, delayMs: number): void {
    if (e.timer !== undefined) this.timers.clearTimeout(e.timer);
    e.nextAttemptAt = this.clock.now() + delayMs;
    e.timer = this.timers.setTimeout(() => {
      e.timer = undefined;
      void this.issueNow(e);
    }, delayMs);
  }

  /** Applies a bundle from the CA; re-issues certificates that no longer chain to it. */
  private applyBundle(rootsPem: string[]): boolean {
    if (rootsPem.length === 0) return false;
    let changed: boolean;
    try {
      changed = this.bundle.replace(rootsPem);
    } catch (err) {
      this.log.error({ code: (err as SkeinError).code, err: messageOf(err) }, 'CA sent an invalid trust bundle; keeping the current one');
      return false;
    }
    if (!changed) return false;
    this.metrics.trustedRoots.set(this.bundle.size);
    this.opts.issuer.updateTrust?.(this.bundle.rootsPem());
    this.log.info({ roots: this.bundle.fingerprints() }, 'trust bundle changed');
    this.emit('bundleChanged', this.bundle.rootsPem());
    for (const e of this.entries.values()) {
      if (!e.current) continue;
      try {
        verifyPeer(e.current.certChainPem, this.bundle, { trustDomain: this.opts.trustDomain, now: new Date(this.clock.now()) });
      } catch {
        this.log.info({ identity: e.identity }, 'certificate no longer chains to the trust bundle: re-issuing');
        void this.issueNow(e);
      }
    }
    return true;
  }

  private scheduleBundleRefresh(): void {
    const every = this.opts.bundleRefreshIntervalMs ?? 5 * 60_000;
    if (every <= 0 || this.closed) return;
    this.bundleTimer = this.timers.setTimeout(() => {
      this.refreshTrustBundle()
        .catch((err) => this.log.warn({ code: (err as SkeinError).code, err: messageOf(err) }, 'trust bundle refresh failed'))
        .finally(() => this.scheduleBundleRefresh());
    }, every);
  }
}

type CryptoKeyLike = Parameters<typeof subtle.exportKey>[1];
