import type { SpiffeId } from '../spiffe.js';

/**
 * Decides whether the agent of `node` may obtain `spiffeId`: only while a pod with that
 * service account runs on that node. The controller backs it by its pod index.
 */
export interface NodeAuthorizer {
  mayIssue(node: string, spiffeId: SpiffeId): boolean | Promise<boolean>;
}

/** What the authorizer needs of a pod (config/model.ts's Workload has these fields). */
export interface ScheduledWorkload {
  node: string;
  identity: SpiffeId;
  meshEnabled: boolean;
}

/**
 * A NodeAuthorizer over the mesh model's workloads (the controller passes its current
 * snapshot's workloads; the lab passes its pods). Counts only meshed pods.
 */
export class WorkloadNodeAuthorizer implements NodeAuthorizer {
  constructor(private readonly workloads: () => Iterable<ScheduledWorkload>) {}

  mayIssue(node: string, spiffeId: SpiffeId): boolean {
    for (const w of this.workloads()) {
      if (w.node === node && w.identity === spiffeId && w.meshEnabled) return true;
    }
    return false;
  }
}

/** A fixed node -> identities map (tests, a static lab). */
export class StaticNodeAuthorizer implements NodeAuthorizer {
  private readonly byNode = new Map<string, Set<SpiffeId>>();

  constructor(grants: Record<string, SpiffeId[]> = {}) {
    for (const [node, ids] of Object.entries(grants)) this.byNode.set(node, new Set(ids));
  }

  grant(node: string, spiffeId: SpiffeId): void {
    let s = this.byNode.get(node);
    if (!s) {
      s = new Set();
      this.byNode.set(node, s);
    }
    s.add(spiffeId);
  }

  revoke(node: string, spiffeId: SpiffeId): void {
    this.byNode.get(node)?.delete(spiffeId);
  }

  mayIssue(node: string, spiffeId: SpiffeId): boolean {
    return this.byNode.get(node)?.has(spiffeId) ?? false;
  }
}
