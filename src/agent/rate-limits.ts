/**
 * Local rate limiting at the destination agent, where the source identity is proven (the
 * tunnel's client certificate, or the same-node listener): BackendTrafficPolicy `rateLimit`
 * on a Service applies to each local pod backing it, per pod and target port — one token
 * bucket shared by all sources, and one per `overrides` entry for the identities it names.
 *
 * Buckets survive config updates while a policy's limits stay the same (a new config must
 * not hand every source a fresh burst); they are rebuilt when the limits change.
 */
import type { Workload } from '../config/model.js';
import type { ControlledMeshSnapshot, RateLimitPolicy } from '../config/policy-model.js';
import type { ConfigStore } from '../config/store.js';
import type { InboundHttpContext } from '../proxy/inbound/inbound-http.js';
import { endpointPort } from '../routing/load-balancer.js';
import { RateLimiter } from '../routing/rate-limiter.js';

export interface RateLimitStats {
  /** Requests refused, by `<namespace>/<pod>:<port>`. */
  limited: Record<string, number>;
}

export class AgentRateLimits {
  /** `<pod uid>|<port>` -> the limiter and the limits it was built from (JSON). */
  private limiters = new Map<string, { key: string; limiter: RateLimiter }>();
  readonly stats: RateLimitStats = { limited: {} };
  private readonly unsubscribe: () => void;

  constructor(
    private readonly store: ConfigStore,
    private readonly node: string,
  ) {
    this.rebuild();
    this.unsubscribe = store.subscribe(() => this.rebuild());
  }

  close(): void {
    this.unsubscribe();
  }

  /** The inbound hook: undefined when no limit applies to that pod and port. */
  admit(ctx: InboundHttpContext, port: number): { allowed: boolean; retryAfterS: number } | undefined {
    if (this.limiters.size === 0) return undefined;
    const hit = this.limiters.get(`${ctx.workload.uid}|${port}`);
    if (!hit) return undefined;
    const d = hit.limiter.admit(ctx.source);
    if (!d.allowed) {
      const k = `${ctx.workload.namespace}/${ctx.workload.name}:${port}`;
      this.stats.limited[k] = (this.stats.limited[k] ?? 0) + 1;
    }
    return d;
  }

  /** Which local pods and ports each rate-limited Service reaches, under the current config. */
  private rebuild(): void {
    const s = this.store.snapshot() as ControlledMeshSnapshot | undefined;
    const next = new Map<string, { key: string; limiter: RateLimiter }>();
    const policies = [...(s?.backendTrafficPolicies ?? [])].filter((p) => p.rateLimit).sort((a, b) => ((a.createdAt ?? '') < (b.createdAt ?? '') ? -1 : 1));
    if (s && policies.length > 0) {
      const local = new Map<string, Workload>();
      for (const w of this.store.localWorkloads(this.node)) local.set(w.uid, w);
      for (const p of policies) {
        const limit = p.rateLimit as RateLimitPolicy;
        const key = JSON.stringify(limit);
        for (const target of p.targets) {
          const [ns = '', name = ''] = target.split('/');
          const svc = this.store.service(ns, name);
          if (!svc) continue;
          for (const ep of svc.endpoints) {
            if (!ep.workloadUid || !local.has(ep.workloadUid)) continue;
            for (const sp of svc.ports) {
              const port = endpointPort(ep, sp);
              if (port === undefined) continue;
              const k = `${ep.workloadUid}|${port}`;
              if (next.has(k)) continue; // the oldest policy on that pod and port is the one in effect
              const prev = this.limiters.get(k);
              next.set(k, prev && prev.key === key ? prev : { key, limiter: new RateLimiter(limit) });
            }
          }
        }
      }
    }
    this.limiters = next;
  }
}
