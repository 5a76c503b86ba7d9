/**
 * Root rotation driven by an operator (`skein ca rotate`), one idempotent step at a time:
 *
 *   add       new root in the bundle, old root still signs          -> phase trusting
 *   activate  (every agent trusts the new root) new root signs     -> phase reissuing
 *   reissue   agents re-issue their workload certificates now      (phase reissuing)
 *   retire    (every agent's certificates chain to the new root)
 *             old root leaves the bundle                            -> phase retiring
 *   finish    (every agent dropped the old root)                   -> phase done
 *   nudge     re-signal the agents not there yet (changes nothing)
 *
 * The phase is saved with the roots (one write with the change it describes), so a restarted
 * controller, or a re-run of the command, continues where it stopped. A step whose
 * precondition does not hold is refused (SKEIN_CONTROLLER_CA_ROTATION_NOT_CONVERGED) and
 * changes nothing: the controller never leaves an agent without a root its peers use.
 *
 * Agents report their bundle and their certificates' roots on their config stream; the
 * controller nudges them there (IdentityControl: fetch the bundle now, re-issue now).
 */
import { SkeinError } from '../errors.js';
import type { CaStatus, CertificateRoot } from '../api/config-wire.js';
import type { CertificateAuthority } from '../identity/ca/ca.js';
import type { RotationRecord } from '../identity/ca/root-store.js';
import { type Logger, silentLogger } from '../telemetry/log.js';
import { ControllerCode } from './codes.js';
import type { AgentIdentity, CaOperations, ConfigServer } from './config-server.js';

/** `nudge` changes nothing: it re-signals the agents not yet converged for the current phase. */
export const ROTATION_STEPS = ['add', 'activate', 'reissue', 'retire', 'finish', 'nudge'] as const;
export type RotationStep = (typeof ROTATION_STEPS)[number];

export interface CaRotationOptions {
  ca: CertificateAuthority;
  agents: Pick<ConfigServer, 'agentIdentities' | 'sendIdentityControl'>;
  /** False on a replica that may not write the CA state (kube followers). */
  isLeader?: () => boolean;
  /**
   * Nodes whose agent must take part: those running a meshed pod. One of them without a
   * connected agent is pending too — after a controller restart, "no agent connected yet"
   * must not read as "every agent converged".
   */
  expectedNodes?: () => Iterable<string>;
  logger?: Logger;
}

/** Has this agent reached what `phase` waits for? */
export function agentConverged(phase: RotationRecord['phase'] | undefined, r: RotationRecord | undefined, a: AgentIdentity): boolean {
  if (!r || !phase || phase === 'done') return true;
  const rep = a.report;
  if (!rep) return false;
  const trusts = (id: string) => rep.trusted_roots.includes(id);
  const certsOnNew = (certs: CertificateRoot[]) => certs.every((c) => c.root === r.to);
  switch (phase) {
    case 'trusting':
      return trusts(r.to);
    case 'reissuing':
      return trusts(r.to) && certsOnNew(rep.certificates);
    case 'retiring':
      return trusts(r.to) && !trusts(r.from) && certsOnNew(rep.certificates);
  }
}

export class CaRotation implements CaOperations {
  private readonly log: Logger;
  /** One step at a time: two operators (or a retried call) must not interleave writes. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly opts: CaRotationOptions) {
    this.log = (opts.logger ?? silentLogger()).child({ component: 'ca-rotation' });
  }

  status(): CaStatus {
    const ca = this.opts.ca;
    const r = ca.rotationState();
    const agents = this.opts.agents.agentIdentities();
    const pending = this.pending(r?.phase, r);
    const rotatable = ca.rotatable && (this.opts.isLeader?.() ?? true);
    return {
      authorities: ca.listAuthorities().map((a) => ({ id: a.id, active: a.active, subject: a.subject, not_after: a.notAfter.toISOString() })),
      rotation: r
        ? { phase: r.phase, from: r.from, to: r.to, started_at: r.startedAt, updated_at: r.updatedAt, completed_at: r.completedAt ?? '' }
        : null,
      agents: agents
        .map((a) => ({
          node: a.node,
          trusted_roots: a.report?.trusted_roots ?? [],
          certificates: a.report?.certificates ?? [],
          reported_at: a.reportedAt?.toISOString() ?? '',
        }))
        .sort((x, y) => (x.node < y.node ? -1 : 1)),
      pending,
      rotatable,
      bundle_pem: ca.trustBundlePem(),
      note: !ca.rotatable ? 'the CA uses operator-supplied root files: rotate by replacing them' : rotatable ? '' : 'this replica does not hold the CA lease',
    };
  }

  rotate(step: string): Promise<CaStatus> {
    const run = this.queue.then(() => this.runStep(step));
    this.queue = run.catch(() => {});
    return run;
  }

  private async runStep(step: string): Promise<CaStatus> {
    if (!(ROTATION_STEPS as readonly string[]).includes(step)) {
      throw new SkeinError(ControllerCode.RotationStep, `unknown rotation step "${step}" (one of ${ROTATION_STEPS.join(', ')})`, { step });
    }
    const ca = this.opts.ca;
    if (!ca.rotatable) throw new SkeinError(ControllerCode.RotationNotRotatable, 'the CA uses operator-supplied root files: rotate by replacing them');
    if (!(this.opts.isLeader?.() ?? true)) throw new SkeinError(ControllerCode.RotationNotRotatable, 'this controller replica does not hold the CA lease; ask the leader');
    const r = ca.rotationState();
    const phase = r?.phase;
    const s = step as RotationStep;
    switch (s) {
      case 'add': {
        const rec = await ca.beginRotation();
        if (phase === undefined || phase === 'done') this.log.info({ from: rec.from, to: rec.to }, 'rotation: new root added to the bundle');
        // Everyone fetches the bundle now; agents that already have it answer with the same report.
        if (rec.phase === 'trusting') this.nudge(rec, { refresh_bundle: true, reissue: false });
        break;
      }
      case 'activate': {
        const rec = this.need(r, ['trusting', 'reissuing', 'retiring', 'done'], s);
        if (rec.phase === 'trusting') {
          this.requireConverged(rec, 'trusting', 'trust the new root');
          await ca.activateAuthority(rec.to, 'reissuing');
          this.log.info({ to: rec.to }, 'rotation: new root signs');
          this.opts.agents.sendIdentityControl({ refresh_bundle: true, reissue: true });
        }
        break;
      }
      case 'reissue': {
        const rec = this.need(r, ['reissuing', 'retiring', 'done'], s);
        if (rec.phase === 'reissuing') this.nudge(rec, { refresh_bundle: true, reissue: true });
        break;
      }
      case 'retire': {
        const rec = this.need(r, ['reissuing', 'retiring', 'done'], s);
        if (rec.phase === 'reissuing') {
          this.requireConverged(rec, 'reissuing', 'hold certificates of the new root only');
          // A save lost between removal and phase change leaves the root already gone: carry on.
          if (ca.listAuthorities().some((a) => a.id === rec.from)) await ca.removeAuthority(rec.from, 'retiring');
          else await ca.setRotationPhase('retiring');
          this.log.info({ from: rec.from }, 'rotation: old root removed from the bundle');
          this.opts.agents.sendIdentityControl({ refresh_bundle: true, reissue: false });
        } else if (rec.phase === 'retiring') this.nudge(rec, { refresh_bundle: true, reissue: false });
        break;
      }
      case 'nudge': {
        if (r?.phase === 'trusting' || r?.phase === 'retiring') this.nudge(r, { refresh_bundle: true, reissue: false });
        else if (r?.phase === 'reissuing') this.nudge(r, { refresh_bundle: true, reissue: true });
        break;
      }
      case 'finish': {
        const rec = this.need(r, ['retiring', 'done'], s);
        if (rec.phase === 'retiring') {
          this.requireConverged(rec, 'retiring', 'drop the old root');
          await ca.setRotationPhase('done');
          this.log.info({ from: rec.from, to: rec.to }, 'rotation: done');
        }
        break;
      }
    }
    return this.status();
  }

  private need(r: RotationRecord | undefined, phases: RotationRecord['phase'][], step: string): RotationRecord {
    if (!r || (r.phase === 'done' && !phases.includes('done')) || !phases.includes(r.phase)) {
      throw new SkeinError(ControllerCode.RotationStep, `rotation step "${step}" is not possible in phase ${r?.phase ?? '(no rotation)'}`, { step, phase: r?.phase });
    }
    // 'done' is accepted for steps already behind it (a re-run after the end): nothing to do.
    return r;
  }

  /** Connected agents not yet converged for `phase`, and expected nodes with no agent connected ("NODE (not connected)"). */
  private pending(phase: RotationRecord['phase'] | undefined, r: RotationRecord | undefined): string[] {
    if (!r || !phase || phase === 'done') return [];
    const agents = this.opts.agents.agentIdentities();
    const out = agents.filter((a) => !agentConverged(phase, r, a)).map((a) => a.node);
    const connected = new Set(agents.map((a) => a.node));
    for (const n of new Set(this.opts.expectedNodes?.() ?? [])) if (!connected.has(n)) out.push(`${n} (not connected)`);
    return [...new Set(out)].sort();
  }

  private requireConverged(r: RotationRecord, phase: RotationRecord['phase'], what: string): void {
    const pending = this.pending(phase, r);
    if (pending.length > 0) {
      throw new SkeinError(ControllerCode.RotationNotConverged, `agents that do not yet ${what}: ${pending.join(', ')}`, { pending });
    }
  }

  /** Re-sends a control to the agents that have not converged yet. */
  private nudge(r: RotationRecord, control: { refresh_bundle: boolean; reissue: boolean }): void {
    const pending = this.opts.agents
      .agentIdentities()
      .filter((a) => !agentConverged(r.phase, r, a))
      .map((a) => a.node);
    if (pending.length > 0) this.opts.agents.sendIdentityControl(control, pending);
  }
}
