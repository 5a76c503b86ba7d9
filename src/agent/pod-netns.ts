/**
 * Where the agent learns a local pod's network namespace: from the kubelet's cgroups on this
 * node (capture's PodNetnsDiscovery), never from the pod's own object: any annotation there is
 * the pod author's to write, and the agent is privileged. Answers are cached per pod and
 * checked on every use, so a restarted pod (new sandbox, new PID) is found again.
 */
import { SkeinError } from '../errors.js';
import type { PodNetns, PodNetnsDiscovery } from '../capture/pod-netns-discovery.js';
import type { Workload } from '../config/model.js';
import type { Logger } from '../telemetry/log.js';
import { AgentCode } from './codes.js';

export interface PodNetnsLocator {
  /** The netns path to use for this pod now; throws a SkeinError with a stable code when there is none to trust. */
  locate(w: Workload): string;
  /** The pod left this node: drop what was cached. */
  forget(uid: string): void;
}

export class KubeletPodNetnsLocator implements PodNetnsLocator {
  private readonly found = new Map<string, { netns: PodNetns; ips: string }>();

  constructor(
    private readonly discovery: PodNetnsDiscovery,
    private readonly log: Logger,
  ) {}

  locate(w: Workload): string {
    const ips = [...w.ips].sort().join(',');
    const cached = this.found.get(w.uid);
    if (cached && cached.ips === ips && this.discovery.stillValid(cached.netns)) return cached.netns.netnsPath;
    let netns: PodNetns;
    try {
      netns = this.discovery.discover({ uid: w.uid, ips: w.ips });
    } catch (err) {
      this.found.delete(w.uid);
      if (err instanceof SkeinError) throw err;
      throw new SkeinError(AgentCode.NetnsDiscoveryFailed, `cannot find the netns of pod ${w.namespace}/${w.name}`, { uid: w.uid }, { cause: err });
    }
    if (cached?.netns.netnsIno !== netns.netnsIno) {
      this.log.info(
        { pod: `${w.namespace}/${w.name}`, uid: w.uid, pid: netns.pid, netnsIno: netns.netnsIno.toString(), cgroup: netns.cgroup.path, runtime: netns.runtime },
        cached ? 'pod network namespace changed' : 'pod network namespace found',
      );
    }
    this.found.set(w.uid, { netns, ips });
    return netns.netnsPath;
  }

  forget(uid: string): void {
    this.found.delete(uid);
  }
}
