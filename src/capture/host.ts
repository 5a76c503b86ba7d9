/**
 * What the host must offer before capture can start: bpffs, cgroup v2, capabilities and a
 * kernel recent enough for every hook. Parsers are pure (unit-tested); checkHost reads /proc.
 */
import { readFileSync } from 'node:fs';
import { release } from 'node:os';
import { isAbsolute, relative } from 'node:path';
import { SkeinError } from '../errors.js';
import { CaptureCode } from './codes.js';

export interface Mount {
  mountPoint: string;
  fsType: string;
}

/** Mounts listed in a /proc/<pid>/mountinfo text. */
export function parseMountinfo(text: string): Mount[] {
  const mounts: Mount[] = [];
  for (const line of text.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    const mountPoint = left[4];
    const fsType = right[0];
    if (!mountPoint || !fsType) continue;
    // mountinfo escapes spaces and a few other bytes as octal (\040).
    mounts.push({ mountPoint: mountPoint.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))), fsType });
  }
  return mounts;
}

/** The cgroup v2 mount point (the unified hierarchy), if any. */
export function findCgroup2Root(mounts: Mount[]): string | undefined {
  return mounts.find((m) => m.fsType === 'cgroup2')?.mountPoint;
}

export function isWithin(path: string, dir: string): boolean {
  const rel = relative(dir, path);
  return rel === '' || (!rel.startsWith('..') && !isAbsolute(rel));
}

/** The bpffs mount that holds `path`, if any. */
export function bpffsHolding(mounts: Mount[], path: string): string | undefined {
  return mounts
    .filter((m) => m.fsType === 'bpf' && isWithin(path, m.mountPoint))
    .sort((a, b) => b.mountPoint.length - a.mountPoint.length)[0]?.mountPoint;
}

export const CAP = { NET_ADMIN: 12, SYS_ADMIN: 21, BPF: 39 } as const;

/** Effective capabilities (CapEff) from a /proc/<pid>/status text. */
export function parseCapEff(status: string): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/im.exec(status);
  return m?.[1] ? BigInt(`0x${m[1]}`) : 0n;
}

export function hasCap(capEff: bigint, cap: number): boolean {
  return ((capEff >> BigInt(cap)) & 1n) === 1n;
}

/** Capabilities capture needs that `capEff` lacks (names without CAP_). */
export function missingCapabilities(capEff: bigint): string[] {
  const missing: string[] = [];
  // CAP_SYS_ADMIN covers BPF on any kernel; CAP_BPF alone is enough for loading since 5.8.
  if (!hasCap(capEff, CAP.BPF) && !hasCap(capEff, CAP.SYS_ADMIN)) missing.push('BPF');
  if (!hasCap(capEff, CAP.NET_ADMIN)) missing.push('NET_ADMIN');
  // setns into a pod's netns and mounting bpffs.
  if (!hasCap(capEff, CAP.SYS_ADMIN)) missing.push('SYS_ADMIN');
  return missing;
}

/** The kernel features each hook uses, with the release that brought them. */
export const KERNEL_REQUIREMENTS: ReadonlyArray<{ feature: string; since: [number, number] }> = [
  { feature: 'bpf_link for cgroup programs (connect4/6, sock_ops)', since: [5, 7] },
  { feature: 'sk_lookup programs and netns bpf_link', since: [5, 9] },
  { feature: 'bpf_get_netns_cookie in sock_ops', since: [5, 15] },
  { feature: 'sk_lookup ingress_ifindex (loopback exemption)', since: [5, 17] },
];

export function parseKernelRelease(text: string): [number, number] {
  const m = /^(\d+)\.(\d+)/.exec(text);
  if (!m) throw new SkeinError(CaptureCode.KernelUnknown, `cannot read kernel release "${text}"`);
  return [Number(m[1]), Number(m[2])];
}

/** Features the kernel `version` lacks. */
export function missingKernelFeatures(version: [number, number]): string[] {
  const [maj, min] = version;
  return KERNEL_REQUIREMENTS.filter(({ since: [a, b] }) => maj < a || (maj === a && min < b)).map(
    ({ feature, since }) => `${feature} (since ${since.join('.')})`,
  );
}

export interface HostFacts {
  mounts: Mount[];
  capEff: bigint;
  kernelRelease: string;
}

export function readHostFacts(): HostFacts {
  return {
    mounts: parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')),
    capEff: parseCapEff(readFileSync('/proc/self/status', 'utf8')),
    kernelRelease: release(),
  };
}

export interface HostCheck {
  cgroup2Root: string;
  bpffs: string | undefined;
}

/**
 * Throws the first blocker as a SkeinError (codes SKEIN_CAPTURE_CAPABILITY_MISSING,
 * SKEIN_CAPTURE_KERNEL_TOO_OLD, SKEIN_CAPTURE_CGROUP2_MISSING); bpffs is reported, not
 * required, because the caller may mount it.
 */
export function checkHost(facts: HostFacts, pinRoot: string): HostCheck {
  const caps = missingCapabilities(facts.capEff);
  if (caps.length > 0) {
    throw new SkeinError(
      CaptureCode.CapabilityMissing,
      `capture needs ${caps.map((c) => `CAP_${c}`).join(', ')} (run the agent as root or grant them)`,
      { missing: caps },
    );
  }
  const missing = missingKernelFeatures(parseKernelRelease(facts.kernelRelease));
  if (missing.length > 0) {
    throw new SkeinError(
      CaptureCode.KernelTooOld,
      `kernel ${facts.kernelRelease} lacks: ${missing.join('; ')}`,
      { kernel: facts.kernelRelease, missing },
    );
  }
  const cgroup2Root = findCgroup2Root(facts.mounts);
  if (!cgroup2Root) {
    throw new SkeinError(
      CaptureCode.Cgroup2Missing,
      'no cgroup2 filesystem is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified, or boot with the unified hierarchy)',
    );
  }
  return { cgroup2Root, bpffs: bpffsHolding(facts.mounts, pinRoot) };
}
