import { EventEmitter } from 'node:events';
import { Registry } from 'prom-client';
import type { SpiffeId } from '../spiffe.js';
import { messageOf, SkeinError } from '../../errors.js';
import { type Logger, silentLogger } from '../../telemetry/log.js';
import { type AuthorityMaterial, SigningAuthority } from './authority.js';
import { IdentityCode } from '../codes.js';
import { DEFAULT_TTL_POLICY, type TtlPolicy, validateCsr } from './csr-validation.js';
import { type CaMetrics, caMetrics } from '../metrics.js';
import type { PersistedCaState, RootStore, RotationRecord } from './root-store.js';

export interface CertificateAuthorityOptions {
  trustDomain: string;
  /** Where a generated root is kept (first start generates one). Ignored with `authority`. */
  store?: RootStore;
  /** Operator-supplied root or intermediate (with its chain up to the root). Not persisted. */
  authority?: AuthorityMaterial;
  ttl?: Partial<TtlPolicy>;
  /** notBefore of leaves is this far in the past (agents' clock skew). Default 60 s. */
  backdateSeconds?: number;
  /** Lifetime of a generated root. Default 10 years. */
  rootTtlSeconds?: number;
  logger?: Logger;
  registry?: Registry;
  now?: () => Date;
}

/** A signed leaf and what goes with it. */
export interface IssuedCertificate {
  identity: SpiffeId;
  /** Leaf first, then intermediates, the signing root last. */
  certChainPem: string[];
  /** Every root agents must trust now (several during a rotation). */
  trustBundlePem: string[];
  ttlSeconds: number;
  ttlCapped: boolean;
}

export interface IssueOptions {
  /** Called with the requested identity after validation, before signing; throws to refuse. */
  authorize?: (identity: SpiffeId) => void | Promise<void>;
  /** Fields added to the issuance/refusal log lines (node, peer...). */
  context?: Record<string, unknown>;
}

/** Public view of one authority the CA holds (no key). */
export interface AuthorityInfo {
  id: string;
  active: boolean;
  rootPem: string;
  subject: string;
  notAfter: Date;
}

/**
 * The mesh CA as a library: validates CSRs and signs workload leaves with the active
 * authority, holds several authorities for root rotation (add -> activate -> remove), and
 * persists generated roots. Authentication and node authorization are the server's job
 * (ca-server.ts): `issue` trusts that its caller already checked who may ask for what.
 *
 * Events: 'activeChanged' (authority id) — the server re-issues its serving certificate;
 * 'bundleChanged' (roots PEM) — an authority was added or removed (published roots files follow).
 */
export class CertificateAuthority extends EventEmitter {
  readonly trustDomain: string;
  readonly ttlPolicy: TtlPolicy;
  readonly metrics: CaMetrics;
  private authorities: SigningAuthority[];
  private active: SigningAuthority;
  private readonly backdateSeconds: number;
  private readonly log: Logger;
  private readonly now: () => Date;
  private rotation: RotationRecord | undefined;

  private constructor(
    private readonly opts: CertificateAuthorityOptions,
    authorities: SigningAuthority[],
    active: SigningAuthority,
  ) {
    super();
    this.trustDomain = opts.trustDomain;
    this.ttlPolicy = { ...DEFAULT_TTL_POLICY, ...opts.ttl };
    this.backdateSeconds = opts.backdateSeconds ?? 60;
    this.log = (opts.logger ?? silentLogger()).child({ component: 'ca' });
    this.metrics = caMetrics(opts.registry ?? new Registry());
    this.now = opts.now ?? (() => new Date());
    this.authorities = authorities;
    this.active = active;
  }

  /**
   * Starts the CA: an operator-supplied authority, else the stored state, else a new root
   * (stored at once, so a restart keeps the same root).
   */
  static async create(opts: CertificateAuthorityOptions): Promise<CertificateAuthority> {
    const log = (opts.logger ?? silentLogger()).child({ component: 'ca' });
    const now = opts.now?.() ?? new Date();
    if (opts.authority) {
      const a = await SigningAuthority.fromMaterial(opts.authority, now);
      log.info({ authority: a.id, subject: a.signingCert.subject, chainLength: a.chain.length }, 'CA using operator-supplied authority');
      return new CertificateAuthority(opts, [a], a);
    }
    const stored = await opts.store?.load();
    if (stored) {
      const authorities = await Promise.all(stored.authorities.map((m) => SigningAuthority.fromMaterial(m, now)));
      const active = authorities.find((a) => a.id === stored.activeId);
      if (!active) throw new SkeinError(IdentityCode.RootInvalid, 'stored CA state names an active authority it does not contain');
      log.info({ authority: active.id, authorities: authorities.length, rotation: stored.rotation?.phase }, 'CA loaded stored roots');
      const ca = new CertificateAuthority(opts, authorities, active);
      ca.rotation = stored.rotation;
      return ca;
    }
    const root = await SigningAuthority.generateRoot({ trustDomain: opts.trustDomain, ttlSeconds: opts.rootTtlSeconds, now });
    const ca = new CertificateAuthority(opts, [root], root);
    await ca.persist();
    log.info({ authority: root.id, subject: root.root.subject }, 'CA generated a new root');
    return ca;
  }

  /** Roots agents must trust: every authority's root, the active one first. */
  trustBundlePem(): string[] {
    const roots = [this.active, ...this.authorities.filter((a) => a !== this.active)].map((a) => a.rootPem);
    return [...new Set(roots)];
  }

  activeAuthority(): SigningAuthority {
    return this.active;
  }

  listAuthorities(): AuthorityInfo[] {
    return this.authorities.map((a) => ({
      id: a.id,
      active: a === this.active,
      rootPem: a.rootPem,
      subject: a.signingCert.subject,
      notAfter: a.signingCert.validToDate,
    }));
  }

  /**
   * Validates a CSR, asks `opts.authorize`, and signs. Throws SkeinError with an IdentityCode for an invalid
   * request; refusals are counted and logged here so every front end reports them alike.
   */
  async issue(csrPem: string, requestedTtlSeconds: number | undefined, opts: IssueOptions = {}): Promise<IssuedCertificate> {
    const t0 = process.hrtime.bigint();
    const context = opts.context ?? {};
    try {
      const v = await validateCsr(csrPem, this.trustDomain, requestedTtlSeconds, this.ttlPolicy);
      await opts.authorize?.(v.identity.id);
      const signer = this.active;
      const leaf = await signer.signLeaf({
        publicKeySpki: v.publicKeySpki,
        uriSans: [v.identity.id],
        ttlSeconds: v.ttlSeconds,
        backdateSeconds: this.backdateSeconds,
        now: this.now(),
      });
      this.metrics.issued.inc();
      this.metrics.signingSeconds.observe(Number(process.hrtime.bigint() - t0) / 1e9);
      this.log.info({ ...context, identity: v.identity.id, ttlSeconds: v.ttlSeconds, ttlCapped: v.ttlCapped, authority: signer.id }, 'certificate issued');
      return {
        identity: v.identity.id,
        certChainPem: [leaf, ...signer.chainPem],
        trustBundlePem: this.trustBundlePem(),
        ttlSeconds: v.ttlSeconds,
        ttlCapped: v.ttlCapped,
      };
    } catch (err) {
      this.refused(err, context);
      throw err;
    }
  }

  /** Counts and logs a refusal (also used by the server for authn/authz refusals). */
  refused(err: unknown, context: Record<string, unknown> = {}): void {
    const code = err instanceof SkeinError ? err.code : IdentityCode.CaInternal;
    this.metrics.refused.inc({ reason: code });
    this.log.warn({ ...context, code, err: messageOf(err) }, 'certificate request refused');
  }

  // --- root rotation: add -> (agents learn the bundle) -> activate -> re-issue -> remove ---

  /** Adds a new authority (generated root unless material is given); it does not sign yet. */
  async addAuthority(material?: AuthorityMaterial): Promise<AuthorityInfo> {
    const a = await this.newAuthority(material);
    await this.persist();
    this.log.info({ authority: a.id, subject: a.signingCert.subject }, 'CA added an authority (trusted, not signing yet)');
    this.emit('bundleChanged', this.trustBundlePem());
    return this.info(a);
  }

  /** Whether this CA keeps its roots itself (false: operator-supplied files, nothing to rotate here). */
  get rotatable(): boolean {
    return !!this.opts.store && !this.opts.authority;
  }

  /** The rotation in progress or last finished (persisted with the roots). */
  rotationState(): RotationRecord | undefined {
    return this.rotation && { ...this.rotation };
  }

  /**
   * Starts a rotation: a new root joins the bundle (not signing) and the rotation record is
   * written with it in ONE save, so a restart never finds a new root without knowing why.
   * A rotation already under way is returned as it is (idempotent).
   */
  async beginRotation(): Promise<RotationRecord> {
    if (this.rotation && this.rotation.phase !== 'done') return { ...this.rotation };
    const before = { authorities: this.authorities, rotation: this.rotation };
    const a = await this.newAuthority();
    const at = this.now().toISOString();
    this.rotation = { phase: 'trusting', from: this.active.id, to: a.id, startedAt: at, updatedAt: at };
    try {
      await this.persist();
    } catch (err) {
      // Not saved = not started: a root only in memory would vanish with a restart.
      this.authorities = before.authorities;
      this.rotation = before.rotation;
      throw err;
    }
    this.log.info({ from: this.rotation.from, to: a.id }, 'CA rotation started: new root trusted, old root still signing');
    this.emit('bundleChanged', this.trustBundlePem());
    return { ...this.rotation };
  }

  /** Moves the rotation record to `phase` (persisted). */
  async setRotationPhase(phase: RotationRecord['phase']): Promise<RotationRecord> {
    if (!this.rotation) throw new SkeinError(IdentityCode.RootUnknown, 'no root rotation is recorded');
    const before = this.rotation;
    this.stampRotation(phase);
    try {
      await this.persist();
    } catch (err) {
      this.rotation = before;
      throw err;
    }
    return { ...this.rotation };
  }

  private stampRotation(phase: RotationRecord['phase']): void {
    if (!this.rotation) return;
    const at = this.now().toISOString();
    this.rotation = { ...this.rotation, phase, updatedAt: at, ...(phase === 'done' ? { completedAt: at } : {}) };
  }

  private async newAuthority(material?: AuthorityMaterial): Promise<SigningAuthority> {
    const a = material
      ? await SigningAuthority.fromMaterial(material, this.now())
      : await SigningAuthority.generateRoot({ trustDomain: this.trustDomain, ttlSeconds: this.opts.rootTtlSeconds, now: this.now() });
    if (!this.authorities.some((x) => x.id === a.id)) this.authorities = [...this.authorities, a];
    return a;
  }

  /** Makes an authority the signer of new leaves (and moves the rotation to `rotationPhase` in the same save). */
  async activateAuthority(id: string, rotationPhase?: RotationRecord['phase']): Promise<void> {
    const a = this.byId(id);
    this.active = a;
    if (rotationPhase) this.stampRotation(rotationPhase);
    await this.persist();
    this.log.info({ authority: id }, 'CA switched signing authority');
    this.emit('activeChanged', id);
  }

  /** Drops an authority from the bundle; refused for the active one. Moves the rotation to `rotationPhase` in the same save. */
  async removeAuthority(id: string, rotationPhase?: RotationRecord['phase']): Promise<void> {
    const a = this.byId(id);
    if (a === this.active) throw new SkeinError(IdentityCode.RootActive, 'cannot remove the signing authority; activate another first', { id });
    this.authorities = this.authorities.filter((x) => x !== a);
    if (rotationPhase) this.stampRotation(rotationPhase);
    await this.persist();
    this.log.info({ authority: id }, 'CA removed an authority from the trust bundle');
    this.emit('bundleChanged', this.trustBundlePem());
  }

  private byId(id: string): SigningAuthority {
    const a = this.authorities.find((x) => x.id === id);
    if (!a) throw new SkeinError(IdentityCode.RootUnknown, `no authority with id ${id}`, { id });
    return a;
  }

  private info(a: SigningAuthority): AuthorityInfo {
    return this.listAuthorities().find((i) => i.id === a.id) as AuthorityInfo;
  }

  private async persist(): Promise<void> {
    // Operator-supplied material lives in the operator's files; never copied elsewhere.
    if (!this.opts.store || this.opts.authority) return;
    const state: PersistedCaState = {
      version: 1,
      activeId: this.active.id,
      authorities: this.authorities.map((a) => a.material()),
      ...(this.rotation ? { rotation: this.rotation } : {}),
    };
    await this.opts.store.save(state);
  }
}
