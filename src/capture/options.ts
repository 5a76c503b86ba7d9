/** CaptureManager settings: every port and path configurable, validated once at construction. */
import { isAbsolute } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Workload } from '../config/model.js';
import { SkeinError } from '../errors.js';
import { familyOf } from './ip.js';
import { POD_UID_MAX_BYTES } from './maps.js';
import { CaptureCode } from './codes.js';
import { MeshPort } from '../config/ports.js';

export interface CaptureOptions {
  /** bpffs folder for every pin (maps/, links/); one per agent. Default /sys/fs/bpf/skein. */
  pinRoot?: string;
  /** Folder of the compiled *.bpf.o; default $SKEIN_BPF_DIR or build/bpf of this checkout. */
  bpfObjectDir?: string;
  /** cgroup v2 directory where connect4/6 and sock_ops attach; default the cgroup2 root. */
  cgroupPath?: string;
  /** SO_MARK of the agent's own sockets in pod netns (never redirected). Non-zero. */
  agentMark?: number;
  outboundPort?: number;
  inboundPlaintextPort?: number;
  tunnelPort?: number;
  /** Address the three listeners bind inside the pod netns; '::' is dual-stack. */
  listenAddress?: string;
  /** Used when the pod netns has no IPv6 (listenAddress '::' fails with EAFNOSUPPORT). */
  fallbackListenAddress?: string;
  backlog?: number;
  /** Mount bpffs at the folder holding pinRoot when none is mounted. Default true. */
  mountBpffs?: boolean;
  /** Pins written by another layout: wipe and start over (true) or refuse to start (false). */
  replaceStalePins?: boolean;
  /**
   * Redirected sockets (connecting or open) one pod may hold at once: its share of the node's
   * original-destination records (bpf/skein.h), so one pod cannot evict another's. Connects
   * beyond are refused (EPERM to the app) and counted. 0: no cap. Default 16384, a quarter
   * of the record map (65536).
   */
  podShare?: number;
}

export type ResolvedCaptureOptions = Required<Omit<CaptureOptions, 'cgroupPath'>> & { cgroupPath: string | undefined };

export const CAPTURE_DEFAULTS = {
  pinRoot: '/sys/fs/bpf/skein',
  agentMark: 0x536b6e, // "Skn"
  outboundPort: MeshPort.Outbound,
  inboundPlaintextPort: MeshPort.InboundPlaintext,
  tunnelPort: MeshPort.Tunnel,
  listenAddress: '::',
  fallbackListenAddress: '0.0.0.0',
  backlog: 511,
  podShare: 16_384,
} as const;

/** Entries of skein_orig_peer (SKEIN_MAX_INFLIGHT in bpf/skein.h): podShare must stay below it. */
export const ORIGINAL_RECORDS_CAPACITY = 65_536;

export function defaultBpfObjectDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.SKEIN_BPF_DIR ?? fileURLToPath(new URL('../../build/bpf/', import.meta.url));
}

function invalid(message: string, details: Record<string, unknown>): never {
  throw new SkeinError(CaptureCode.InvalidOptions, message, details);
}

function port(name: string, value: number): number {
  if (!Number.isInteger(value) || value < 1 || value > 65535) invalid(`${name} must be a port (1-65535)`, { [name]: value });
  return value;
}

export function resolveCaptureOptions(o: CaptureOptions = {}): ResolvedCaptureOptions {
  const r: ResolvedCaptureOptions = {
    pinRoot: o.pinRoot ?? CAPTURE_DEFAULTS.pinRoot,
    bpfObjectDir: o.bpfObjectDir ?? defaultBpfObjectDir(),
    cgroupPath: o.cgroupPath,
    agentMark: o.agentMark ?? CAPTURE_DEFAULTS.agentMark,
    outboundPort: port('outboundPort', o.outboundPort ?? CAPTURE_DEFAULTS.outboundPort),
    inboundPlaintextPort: port('inboundPlaintextPort', o.inboundPlaintextPort ?? CAPTURE_DEFAULTS.inboundPlaintextPort),
    tunnelPort: port('tunnelPort', o.tunnelPort ?? CAPTURE_DEFAULTS.tunnelPort),
    listenAddress: o.listenAddress ?? CAPTURE_DEFAULTS.listenAddress,
    fallbackListenAddress: o.fallbackListenAddress ?? CAPTURE_DEFAULTS.fallbackListenAddress,
    backlog: o.backlog ?? CAPTURE_DEFAULTS.backlog,
    mountBpffs: o.mountBpffs ?? true,
    replaceStalePins: o.replaceStalePins ?? false,
    podShare: o.podShare ?? CAPTURE_DEFAULTS.podShare,
  };
  // A share as large as the map would let one pod fill it and evict everyone else's records.
  if (!Number.isInteger(r.podShare) || r.podShare < 0 || r.podShare >= ORIGINAL_RECORDS_CAPACITY) {
    invalid(`podShare must be a whole number below ${ORIGINAL_RECORDS_CAPACITY} (0: no cap)`, { podShare: r.podShare });
  }
  if (!isAbsolute(r.pinRoot)) invalid('pinRoot must be an absolute path', { pinRoot: r.pinRoot });
  if (!isAbsolute(r.bpfObjectDir)) invalid('bpfObjectDir must be an absolute path', { bpfObjectDir: r.bpfObjectDir });
  if (r.cgroupPath !== undefined && !isAbsolute(r.cgroupPath)) invalid('cgroupPath must be an absolute path', { cgroupPath: r.cgroupPath });
  if (!Number.isInteger(r.agentMark) || r.agentMark < 1 || r.agentMark > 0xffffffff) {
    invalid('agentMark must be a non-zero 32-bit integer', { agentMark: r.agentMark });
  }
  if (new Set([r.outboundPort, r.inboundPlaintextPort, r.tunnelPort]).size !== 3) {
    invalid('outboundPort, inboundPlaintextPort and tunnelPort must differ', {
      outboundPort: r.outboundPort,
      inboundPlaintextPort: r.inboundPlaintextPort,
      tunnelPort: r.tunnelPort,
    });
  }
  for (const a of ['listenAddress', 'fallbackListenAddress'] as const) {
    try {
      familyOf(r[a]);
    } catch {
      invalid(`${a} must be an IP address`, { [a]: r[a] });
    }
  }
  if (!Number.isInteger(r.backlog) || r.backlog < 1 || r.backlog > 65535) invalid('backlog must be 1-65535', { backlog: r.backlog });
  return r;
}

/** What capture needs of a pod (a Workload with its netns path). */
export type CapturePod = Pick<Workload, 'uid' | 'ips' | 'excludeOutboundPorts' | 'excludeInboundPorts'> & {
  netnsPath: string;
};

/** Validates a pod for enrolment; throws SKEIN_CAPTURE_INVALID_POD. */
export function validateCapturePod(pod: Partial<CapturePod>): CapturePod {
  const bad = (message: string): never => {
    throw new SkeinError(CaptureCode.InvalidPod, message, { uid: pod.uid });
  };
  if (typeof pod.uid !== 'string' || pod.uid === '') bad('pod uid is required');
  const uid = pod.uid as string;
  if (Buffer.byteLength(uid) > POD_UID_MAX_BYTES) bad(`pod uid longer than ${POD_UID_MAX_BYTES} bytes`);
  if (typeof pod.netnsPath !== 'string' || !isAbsolute(pod.netnsPath)) bad(`pod ${uid}: netnsPath must be an absolute path`);
  const ips = pod.ips ?? [];
  if (!Array.isArray(ips) || ips.length === 0) bad(`pod ${uid}: at least one pod IP is required`);
  for (const ip of ips) {
    try {
      familyOf(ip);
    } catch {
      bad(`pod ${uid}: ${ip} is not an IP address`);
    }
  }
  const ports = (name: string, list: number[] | undefined): number[] => {
    for (const p of list ?? []) if (!Number.isInteger(p) || p < 1 || p > 65535) bad(`pod ${uid}: ${name} has ${p}, not a port`);
    return [...new Set(list ?? [])];
  };
  return {
    uid,
    netnsPath: pod.netnsPath as string,
    ips: [...ips],
    excludeOutboundPorts: ports('excludeOutboundPorts', pod.excludeOutboundPorts),
    excludeInboundPorts: ports('excludeInboundPorts', pod.excludeInboundPorts),
  };
}
