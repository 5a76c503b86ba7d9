/**
 * Finds a pod's network namespace the way a real node allows, from nothing a pod author can
 * write: pod UID -> the kubelet's cgroup for that pod (cgroup v2; systemd or cgroupfs driver;
 * Guaranteed, Burstable or BestEffort) -> a process in one of its containers
 * (cgroup.procs) -> /proc/PID/ns/net. The namespace is accepted only if it holds every IP
 * the API gives the pod and is not the agent's own (a host-network pod), so a wrong or
 * reused PID cannot steer the privileged agent into another pod's namespace.
 *
 * Layouts (cgroup v2, relative to the mount; <u> is the UID, <u_> the UID with '_' for '-'):
 *   systemd:  kubepods.slice/[kubepods-burstable.slice/]kubepods[-burstable]-pod<u_>.slice/
 *               cri-containerd-<id>.scope | crio-<id>.scope | docker-<id>.scope
 *   cgroupfs: kubepods/[burstable/]pod<u>/<id>
 * A kubelet started with --cgroup-root nests these deeper (kubelet.slice/kubelet-kubepods.slice):
 * `kubeletRoots` names where to look.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { SkeinError } from '../errors.js';
import { CaptureCode } from './codes.js';
import { canonicalIp } from '../config/address.js';
import { bytesToIp } from './ip.js';

export type CgroupDriver = 'systemd' | 'cgroupfs';
export type QosClass = 'guaranteed' | 'burstable' | 'besteffort';
export type ContainerRuntime = 'containerd' | 'crio' | 'docker' | 'unknown';

export interface PodNetnsDiscoveryOptions {
  /** Where cgroup v2 is mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts). */
  cgroupRoot: string;
  /** The kubelet's pod roots under cgroupRoot; the default covers both drivers' defaults. */
  kubeletRoots?: string[];
  /** /proc, or a recorded tree in tests. */
  procRoot?: string;
}

export const DEFAULT_KUBELET_ROOTS = ['kubepods.slice', 'kubepods'];

export interface PodCgroup {
  /** Absolute path of the pod's cgroup directory. */
  path: string;
  driver: CgroupDriver;
  qos: QosClass;
}

export interface PodNetns {
  uid: string;
  cgroup: PodCgroup;
  /** The process whose namespace this is (the pod's sandbox when it can be told apart). */
  pid: number;
  runtime: ContainerRuntime;
  containerId: string | undefined;
  /** /proc/<pid>/ns/net: valid while that process lives; `netnsIno` says which namespace it was. */
  netnsPath: string;
  netnsIno: bigint;
  /**
   * The cgroup that listed `pid`. Checking cgroup.procs again (not /proc/PID/cgroup, whose
   * path is relative to the reader's cgroup namespace) tells a reused PID apart.
   */
  processCgroup: string;
}

const UID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const QOS: QosClass[] = ['guaranteed', 'burstable', 'besteffort'];

/** systemd names a slice's children by prefixing the parent's stem: kubepods-burstable.slice. */
function sliceStem(root: string): string {
  const last = root.split('/').filter(Boolean).pop() ?? '';
  return last.replace(/\.slice$/, '');
}

/** Every place the kubelet may have put this pod's cgroup, with what each would mean. */
export function podCgroupCandidates(uid: string, kubeletRoots: string[] = DEFAULT_KUBELET_ROOTS): { rel: string; driver: CgroupDriver; qos: QosClass }[] {
  const u_ = uid.replaceAll('-', '_');
  const out: { rel: string; driver: CgroupDriver; qos: QosClass }[] = [];
  for (const root of kubeletRoots) {
    if (root.endsWith('.slice')) {
      const stem = sliceStem(root);
      for (const qos of QOS) {
        const rel = qos === 'guaranteed' ? `${root}/${stem}-pod${u_}.slice` : `${root}/${stem}-${qos}.slice/${stem}-${qos}-pod${u_}.slice`;
        out.push({ rel, driver: 'systemd', qos });
      }
    } else {
      for (const qos of QOS) out.push({ rel: qos === 'guaranteed' ? `${root}/pod${uid}` : `${root}/${qos}/pod${uid}`, driver: 'cgroupfs', qos });
    }
  }
  return out;
}

/** The runtime and container id a container cgroup's name tells, or null for one to skip. */
export function containerOf(name: string): { runtime: ContainerRuntime; id: string | undefined } | null {
  // CRI-O's conmon monitors a container from the host network namespace: never the pod's.
  if (/^crio-conmon-/.test(name)) return null;
  const scope = /^(cri-containerd|crio|docker)-([0-9a-f]{12,64})\.scope$/.exec(name);
  if (scope) return { runtime: scope[1] === 'cri-containerd' ? 'containerd' : (scope[1] as ContainerRuntime), id: scope[2] };
  if (/^[0-9a-f]{64}$/.test(name)) return { runtime: 'unknown', id: name }; // cgroupfs driver
  return { runtime: 'unknown', id: undefined };
}

/**
 * The host's local addresses of the namespace PID lives in, read from /proc/PID/net (which
 * shows the namespace of that process): IPv4 from fib_trie's `/32 host LOCAL` entries, IPv6
 * from if_inet6.
 */
export function localAddressesOf(procRoot: string, pid: number): Set<string> {
  const out = new Set<string>();
  const net = join(procRoot, String(pid), 'net');
  let trie = '';
  try {
    trie = readFileSync(join(net, 'fib_trie'), 'utf8');
  } catch {
    // no IPv4 in this namespace (or the process is gone: the caller re-checks)
  }
  let last: string | undefined;
  for (const line of trie.split('\n')) {
    const leaf = /^\s*\|--\s+(\d+\.\d+\.\d+\.\d+)\s*$/.exec(line);
    if (leaf) {
      last = leaf[1];
      continue;
    }
    if (last && /^\s*\/32 host LOCAL\s*$/.test(line)) out.add(last);
  }
  let inet6 = '';
  try {
    inet6 = readFileSync(join(net, 'if_inet6'), 'utf8');
  } catch {
    // IPv6 disabled in this namespace
  }
  for (const line of inet6.split('\n')) {
    const hex = line.trim().split(/\s+/)[0];
    if (hex && /^[0-9a-f]{32}$/i.test(hex)) out.add(canonicalIp(bytesToIp(Buffer.from(hex, 'hex'))) ?? '');
  }
  return out;
}

function dirs(path: string): string[] {
  try {
    return readdirSync(path, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name)
      .sort();
  } catch {
    return [];
  }
}

function pidsOf(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map(Number)
      .filter((n) => Number.isInteger(n) && n > 0);
  } catch {
    return [];
  }
}

interface Candidate {
  pid: number;
  runtime: ContainerRuntime;
  containerId: string | undefined;
  /** The cgroup directory whose cgroup.procs listed it. */
  dir: string;
}

export class PodNetnsDiscovery {
  private readonly cgroupRoot: string;
  private readonly kubeletRoots: string[];
  private readonly procRoot: string;

  constructor(opts: PodNetnsDiscoveryOptions) {
    this.cgroupRoot = opts.cgroupRoot;
    this.kubeletRoots = opts.kubeletRoots ?? DEFAULT_KUBELET_ROOTS;
    this.procRoot = opts.procRoot ?? '/proc';
  }

  /** The pod's cgroup directory, or undefined while the kubelet has made none. */
  findPodCgroup(uid: string): PodCgroup | undefined {
    if (!UID.test(uid)) throw new SkeinError(CaptureCode.InvalidPod, `not a pod UID: ${JSON.stringify(uid)}`, { uid });
    const found = podCgroupCandidates(uid.toLowerCase(), this.kubeletRoots)
      .map((c) => ({ ...c, path: join(this.cgroupRoot, c.rel) }))
      .filter((c) => {
        try {
          return statSync(c.path).isDirectory();
        } catch {
          return false;
        }
      });
    // Two QoS classes at once is a pod being moved (or a forged tree): no guess.
    if (found.length > 1) {
      throw new SkeinError(CaptureCode.PodCgroupAmbiguous, `pod ${uid} has ${found.length} cgroups: ${found.map((f) => f.path).join(', ')}`, { uid });
    }
    const f = found[0];
    return f ? { path: f.path, driver: f.driver, qos: f.qos } : undefined;
  }

  /**
   * The pod's network namespace, checked: it holds every one of `ips` and is not the
   * agent's own. Throws a SkeinError with a stable code when it cannot be found or trusted.
   */
  discover(pod: { uid: string; ips: string[] }): PodNetns {
    if (pod.ips.length === 0) throw new SkeinError(CaptureCode.InvalidPod, `pod ${pod.uid} has no IP yet`, { uid: pod.uid });
    const want = pod.ips.map((ip) => {
      const c = canonicalIp(ip);
      if (!c) throw new SkeinError(CaptureCode.InvalidPod, `pod ${pod.uid} has an IP that is not one: ${JSON.stringify(ip)}`, { uid: pod.uid });
      return c;
    });
    const cgroup = this.findPodCgroup(pod.uid);
    if (!cgroup) throw new SkeinError(CaptureCode.PodCgroupNotFound, `no kubelet cgroup for pod ${pod.uid} under ${this.cgroupRoot}`, { uid: pod.uid });
    const candidates = this.processes(cgroup.path);
    if (candidates.length === 0) throw new SkeinError(CaptureCode.PodNoProcess, `pod ${pod.uid} has no running process in ${cgroup.path}`, { uid: pod.uid, cgroup: cgroup.path });

    const own = this.netnsIno('self');
    const byNetns = new Map<bigint, Candidate[]>();
    for (const c of candidates) {
      const ino = this.netnsIno(c.pid);
      if (ino === undefined) continue; // exited since cgroup.procs was read
      byNetns.set(ino, [...(byNetns.get(ino) ?? []), c]);
    }
    if (byNetns.size === 0) throw new SkeinError(CaptureCode.PodNoProcess, `the processes of pod ${pod.uid} have exited`, { uid: pod.uid, cgroup: cgroup.path });
    const matching: { ino: bigint; members: Candidate[] }[] = [];
    let sawHost = false;
    const seen: Record<string, string[]> = {};
    for (const [ino, members] of byNetns) {
      const first = members[0]!;
      const local = localAddressesOf(this.procRoot, first.pid);
      // /proc/PID/net shows whatever namespace PID is in now: if the PID changed hands while
      // we read, these addresses are someone else's.
      if (this.netnsIno(first.pid) !== ino) continue;
      seen[String(ino)] = [...local];
      if (!want.every((ip) => local.has(ip))) continue;
      if (own !== undefined && ino === own) {
        sawHost = true;
        continue;
      }
      matching.push({ ino, members });
    }
    if (matching.length === 0) {
      if (sawHost) {
        throw new SkeinError(CaptureCode.HostNetworkPod, `pod ${pod.uid} runs in the agent's network namespace; not captured`, { uid: pod.uid });
      }
      throw new SkeinError(CaptureCode.NetnsIpMismatch, `no network namespace of pod ${pod.uid} holds its IPs ${want.join(', ')}`, {
        uid: pod.uid,
        ips: want,
        seen,
      });
    }
    if (matching.length > 1) {
      throw new SkeinError(CaptureCode.NetnsAmbiguous, `pod ${pod.uid} has ${matching.length} network namespaces holding its IPs`, { uid: pod.uid });
    }
    const { ino, members } = matching[0]!;
    const chosen = this.pickLongLived(members);
    // The PID may have exited and been reused while we looked: it must still be the pod's,
    // in the same namespace, or the answer is void.
    if (this.netnsIno(chosen.pid) !== ino || !pidsOf(chosen.dir).includes(chosen.pid)) {
      throw new SkeinError(CaptureCode.PodNoProcess, `pod ${pod.uid}: process ${chosen.pid} went away while its namespace was checked`, { uid: pod.uid });
    }
    return {
      uid: pod.uid,
      cgroup,
      pid: chosen.pid,
      runtime: chosen.runtime,
      containerId: chosen.containerId,
      netnsPath: join(this.procRoot, String(chosen.pid), 'ns', 'net'),
      netnsIno: ino,
      processCgroup: chosen.dir,
    };
  }

  /** True while `found` still names a live process in the same namespace (pod restarts, PID reuse). */
  stillValid(found: PodNetns): boolean {
    return this.netnsIno(found.pid) === found.netnsIno && pidsOf(found.processCgroup).includes(found.pid);
  }

  /** Processes of the pod's containers: cgroup v2 keeps them in the leaves, never in the pod's own directory. */
  private processes(podDir: string): Candidate[] {
    const out: Candidate[] = [];
    for (const name of dirs(podDir)) {
      const container = containerOf(name);
      if (!container) continue;
      const walk = (dir: string, depth: number): void => {
        for (const pid of pidsOf(dir)) out.push({ pid, runtime: container.runtime, containerId: container.id, dir });
        if (depth < 3) for (const sub of dirs(dir)) walk(join(dir, sub), depth + 1);
      };
      walk(join(podDir, name), 0);
    }
    return out;
  }

  /** The sandbox ("pause") outlives the app containers' restarts; else the lowest PID. */
  private pickLongLived(members: Candidate[]): Candidate {
    const comm = (pid: number) => {
      try {
        return readFileSync(join(this.procRoot, String(pid), 'comm'), 'utf8').trim();
      } catch {
        return '';
      }
    };
    return members.find((m) => comm(m.pid) === 'pause') ?? [...members].sort((a, b) => a.pid - b.pid)[0]!;
  }

  private netnsIno(pid: number | 'self'): bigint | undefined {
    try {
      return statSync(join(this.procRoot, String(pid), 'ns', 'net'), { bigint: true }).ino;
    } catch {
      return undefined;
    }
  }
}
