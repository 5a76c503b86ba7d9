/**
 * The agent's authorization: the destination side of AuthorizationPolicy and PeerAuthentication. For each local pod,
 * the policies that apply to it (its namespace's and the mesh-wide ones whose selector matches
 * its labels) are compiled once per applied config (policy/authorization.ts) and evaluated by
 * the inbound hook: per connection for L4, per request for L7. Decisions are counted by policy
 * for /stats; AUDIT matches and dry-run policies are logged and never change a decision.
 */
import type { ConfigStore } from '../config/store.js';
import type { ControlledMeshSnapshot, PeerAuthenticationPolicy } from '../config/policy-model.js';
import type { Workload } from '../config/model.js';
import type { AuditLog, AuditRecord } from '../policy/audit-log.js';
import { type AuthzDecision, policiesFor, WorkloadAuthorizer } from '../policy/authorization.js';
import { type MtlsMode, modeOf, peerAuthenticationFor } from '../policy/peer-authentication.js';
import { messageOf } from '../errors.js';
import type { InboundDecision, InboundRequest } from '../proxy/inbound/inbound-proxy.js';
import type { Logger } from '../telemetry/log.js';

export interface AuthorizationStats {
  /** Decisions by `allow|deny` and the deciding policy (`-` when none decided). */
  decisions: Record<string, number>;
  /** AUDIT and dry-run matches by policy. */
  audits: Record<string, number>;
}

export class AgentAuthorizer {
  /** Per local pod, under one config: its compiled policies and the PeerAuthentication that decides for it. */
  private readonly compiled = new Map<string, { snapshot: unknown; authz: WorkloadAuthorizer; peer: PeerAuthenticationPolicy | undefined }>();
  readonly stats: AuthorizationStats = { decisions: {}, audits: {} };

  constructor(
    private readonly store: ConfigStore,
    private readonly log: Logger,
    private readonly audit?: AuditLog,
  ) {
    // A new config: every pod's policies are compiled afresh on first use.
    store.subscribe(() => this.compiled.clear());
  }

  /**
   * What applies to local pod `w` under the current config, worked out once per pod and
   * config: the pod's labels only change with a new config (its record may be copied by
   * whoever hands it in, so the object itself is not the key).
   */
  private compiledFor(w: Workload): { authz: WorkloadAuthorizer; peer: PeerAuthenticationPolicy | undefined } {
    const snapshot = this.store.snapshot();
    const hit = this.compiled.get(w.uid);
    if (hit && hit.snapshot === snapshot) return hit;
    const s = snapshot as ControlledMeshSnapshot | undefined;
    const entry = {
      snapshot,
      authz: new WorkloadAuthorizer(policiesFor(w, s?.authorizationPolicies ?? [])),
      peer: peerAuthenticationFor(w, s?.peerAuthentications ?? [])?.policy,
    };
    this.compiled.set(w.uid, entry);
    return entry;
  }

  /** The compiled policies of local pod `w` under the current config. */
  authorizerFor(w: Workload): WorkloadAuthorizer {
    return this.compiledFor(w).authz;
  }

  /** PeerAuthentication: STRICT or PERMISSIVE for plaintext to `port` of local pod `w` (per connection). */
  mtlsMode(w: Workload, port: number): MtlsMode {
    return modeOf(this.compiledFor(w).peer, w, port);
  }

  /** The inbound hook: one decision per connection (L4) or request (L7). */
  authorize(req: InboundRequest): InboundDecision {
    const authz = this.authorizerFor(req.workload);
    if (authz.empty) return { allow: true };
    // An inbound request is what the engine reads (source, sourceIp, port, http): no copy.
    const d = authz.evaluate(req);
    const key = `${d.allow ? 'allow' : 'deny'}|${d.decidedBy?.policy ?? '-'}`;
    this.stats.decisions[key] = (this.stats.decisions[key] ?? 0) + 1;
    if (this.audit && (!d.allow || d.audits.length > 0)) this.writeAudit(req, d);
    for (const a of d.audits) {
      this.stats.audits[a.policy] = (this.stats.audits[a.policy] ?? 0) + 1;
      this.log.info(
        {
          authz: a.dryRun ? 'dry-run' : 'audit',
          policy: a.policy,
          rule: a.rule,
          action: a.action,
          source: req.source,
          sourceIp: req.sourceIp,
          workload: `${req.workload.namespace}/${req.workload.name}`,
          port: req.port,
          ...(req.http ? { method: req.http.method, host: req.http.authority, path: req.http.path } : {}),
        },
        a.dryRun ? 'authorization policy in dry run matched' : 'authorization AUDIT policy matched',
      );
    }
    return { allow: d.allow, reason: d.reason };
  }

  /** One audit line per DENY, AUDIT match and dry-run match (the hash-chained trail). */
  private writeAudit(req: InboundRequest, d: AuthzDecision): void {
    const base: Omit<AuditRecord, 'decision'> = {
      time: new Date().toISOString(),
      workload: `${req.workload.namespace}/${req.workload.name}`,
      port: req.port,
    };
    if (req.source) base.source = req.source;
    if (req.sourceIp) base.sourceIp = req.sourceIp;
    const h = req.http;
    if (h) {
      base.method = h.method;
      base.host = h.authority;
      base.path = h.path;
      const rid = h.headers['x-request-id'];
      if (typeof rid === 'string') base.requestId = rid;
      const tp = h.headers.traceparent;
      if (typeof tp === 'string') {
        const trace = tp.split('-')[1];
        if (trace) base.traceId = trace;
      }
    }
    try {
      if (!d.allow) {
        this.audit?.write({ ...base, decision: 'deny', reason: d.reason, ...(d.decidedBy ? { policy: d.decidedBy.policy, rule: d.decidedBy.rule } : {}) });
      }
      for (const a of d.audits) this.audit?.write({ ...base, decision: a.dryRun ? 'dry-run' : 'audit', policy: a.policy, rule: a.rule });
    } catch (err) {
      // The decision stands (enforcement never waits on the trail); the gap is logged loudly.
      this.log.error({ err: messageOf(err) }, 'audit log write failed');
    }
  }
}
