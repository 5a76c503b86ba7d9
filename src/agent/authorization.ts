/**
 * The agent's authorization: the destination side of AuthorizationPolicy. For each local pod,
 * the policies that apply to it (its namespace's and the mesh-wide ones whose selector matches
 * its labels) are compiled once per applied config (policy/authorization.ts) and evaluated by
 * the inbound hook: per connection for L4, per request for L7. Decisions are counted by policy
 * for /stats; AUDIT matches and dry-run policies are logged and never change a decision.
 */
import type { ConfigStore } from '../config/store.js';
import type { ControlledMeshSnapshot } from '../config/policy-model.js';
import type { Workload } from '../config/model.js';
import { policiesFor, WorkloadAuthorizer } from '../policy/authorization.js';
import type { InboundDecision, InboundRequest } from '../proxy/inbound/inbound-proxy.js';
import type { Logger } from '../telemetry/log.js';

export interface AuthorizationStats {
  /** Decisions by `allow|deny` and the deciding policy (`-` when none decided). */
  decisions: Record<string, number>;
  /** AUDIT and dry-run matches by policy. */
  audits: Record<string, number>;
}

export class AgentAuthorizer {
  private readonly compiled = new Map<string, { snapshot: unknown; workload: Workload; authz: WorkloadAuthorizer }>();
  readonly stats: AuthorizationStats = { decisions: {}, audits: {} };

  constructor(
    private readonly store: ConfigStore,
    private readonly log: Logger,
  ) {
    // A new config: every pod's policies are compiled afresh on first use.
    store.subscribe(() => this.compiled.clear());
  }

  /** The compiled policies of local pod `w` under the current config. */
  authorizerFor(w: Workload): WorkloadAuthorizer {
    const snapshot = this.store.snapshot();
    const hit = this.compiled.get(w.uid);
    if (hit && hit.snapshot === snapshot && hit.workload === w) return hit.authz;
    const all = (snapshot as ControlledMeshSnapshot | undefined)?.authorizationPolicies ?? [];
    const authz = new WorkloadAuthorizer(policiesFor(w, all));
    this.compiled.set(w.uid, { snapshot, workload: w, authz });
    return authz;
  }

  /** The inbound hook: one decision per connection (L4) or request (L7). */
  authorize(req: InboundRequest): InboundDecision {
    const authz = this.authorizerFor(req.workload);
    if (authz.empty) return { allow: true };
    const d = authz.evaluate({
      ...(req.source ? { source: req.source } : {}),
      ...(req.sourceIp ? { sourceIp: req.sourceIp } : {}),
      port: req.port,
      ...(req.http ? { http: { method: req.http.method, path: req.http.path, host: req.http.authority, headers: req.http.headers } } : {}),
    });
    const key = `${d.allow ? 'allow' : 'deny'}|${d.decidedBy?.policy ?? '-'}`;
    this.stats.decisions[key] = (this.stats.decisions[key] ?? 0) + 1;
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
}
