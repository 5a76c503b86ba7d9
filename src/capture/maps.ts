/**
 * Byte layouts of skein's BPF map keys and values, matching bpf/skein.h field by field
 * (little-endian host; explicit padding is zero). Pure functions, so they are unit-tested
 * without a kernel. Changing a layout means bumping PIN_LAYOUT here and SKEIN_PIN_LAYOUT in
 * bpf/skein.h together.
 */
import { SkeinError } from '../errors.js';
import type { IpFamily, OriginalDestination } from '../config/address.js';
import { bytesToIp, familyOf, ipToBytes } from './ip.js';
import { CaptureCode } from './codes.js';

/** Version of the pinned layout (maps and their types); see skein_stamp in bpf/skein.h. */
export const PIN_LAYOUT = 2;

/** Map names, as pinned under <pinRoot>/maps/. */
export const MAP = {
  stamp: 'skein_stamp',
  config: 'skein_config',
  enrolled: 'skein_enrolled',
  outboundExcluded: 'skein_out_excl',
  /** Socket-local storage (the socket's own record, freed with it); not read by user space. */
  originalOnSocket: 'skein_sk_orig',
  /** Redirected sockets each pod holds now, by netns cookie (its share of the records). */
  podShare: 'skein_pod_share',
  originalByPeer: 'skein_orig_peer',
  inboundAddresses: 'skein_in_addrs',
  inboundExcluded: 'skein_in_excl',
  inboundSockets: 'skein_in_socks',
  pods: 'skein_pods',
  counters: 'skein_counters',
} as const;
export type MapName = (typeof MAP)[keyof typeof MAP];

const AF_INET = 2;
const AF_INET6 = 10;
export const POD_UID_MAX_BYTES = 127;

export function afOf(family: IpFamily): number {
  return family === 4 ? AF_INET : AF_INET6;
}

export function familyOfAf(af: number): IpFamily {
  if (af === AF_INET) return 4;
  if (af === AF_INET6) return 6;
  throw new SkeinError(CaptureCode.BadRecord, `unknown address family ${af}`);
}

/** __u32 key (array indexes, slots). */
export function u32Key(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

/** __u64 key (netns cookies). */
export function u64Key(n: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
}

/** __u8 value 1 (set membership). */
export const PRESENT = Buffer.from([1]);

/** struct skein_stamp */
export function encodeStamp(layout: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(layout, 0);
  return b;
}
/** Refuses a record shorter than its struct (a map of another layout, a bad read). */
function need(b: Buffer, size: number, what: string): void {
  if (b.length < size) throw new SkeinError(CaptureCode.BadRecord, `${what} record of ${b.length} bytes, expected ${size}`);
}

export function decodeStamp(b: Buffer): { layout: number } {
  need(b, 4, 'skein_stamp');
  return { layout: b.readUInt32LE(0) };
}

/** struct skein_config: the agent's mark, and each pod's share of redirected sockets (0 = no cap). */
export function encodeConfig(agentMark: number, podShare: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(agentMark, 0);
  b.writeUInt32LE(podShare, 4);
  return b;
}

/** struct enrolled_netns */
export function encodeEnrolled(outboundPort: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt16LE(outboundPort, 0);
  return b;
}
export function decodeEnrolled(b: Buffer): { outboundPort: number } {
  need(b, 2, 'enrolled_netns');
  return { outboundPort: b.readUInt16LE(0) };
}

/** struct netns_port */
export function encodeNetnsPort(netnsCookie: bigint, port: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(netnsCookie, 0);
  b.writeUInt16LE(port, 8);
  return b;
}
export function decodeNetnsPort(b: Buffer): { netnsCookie: bigint; port: number } {
  need(b, 10, 'netns_port');
  return { netnsCookie: b.readBigUInt64LE(0), port: b.readUInt16LE(8) };
}

export const ORIG_DST_SIZE = 20;

/** struct orig_dst (written by BPF; encoded here for tests). */
export function encodeOrigDst(dst: OriginalDestination): Buffer {
  const b = Buffer.alloc(ORIG_DST_SIZE);
  b.writeUInt16LE(afOf(dst.family), 0);
  b.writeUInt16BE(dst.port, 2);
  ipToBytes(dst.address).copy(b, 4);
  return b;
}
export function decodeOrigDst(b: Buffer): OriginalDestination {
  need(b, ORIG_DST_SIZE, 'orig_dst');
  const family = familyOfAf(b.readUInt16LE(0));
  const port = b.readUInt16BE(2);
  const address = bytesToIp(b.subarray(4, family === 4 ? 8 : 20));
  return { address, port, family };
}

/**
 * struct peer_key: the pod's netns and the client's local port. `wireFamily` is the family
 * of the connection on the wire: 4 also when the client used an IPv4-mapped IPv6 socket.
 */
export function encodePeerKey(netnsCookie: bigint, port: number, wireFamily: IpFamily): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64LE(netnsCookie, 0);
  b.writeUInt16LE(port, 8);
  b.writeUInt16LE(afOf(wireFamily), 10);
  return b;
}

/** struct pod_addr */
export function encodePodAddr(address: string): Buffer {
  const family = familyOf(address);
  const b = Buffer.alloc(20);
  b.writeUInt32LE(afOf(family), 0);
  ipToBytes(family === 4 ? address.replace(/^::ffff:/i, '') : address).copy(b, 4);
  return b;
}
export function decodePodAddr(b: Buffer): string {
  const family = familyOfAf(b.readUInt32LE(0));
  return bytesToIp(b.subarray(4, family === 4 ? 8 : 20));
}

/** struct inbound_pod */
export function encodeInboundPod(slot: number, tunnelPort: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(slot, 0);
  b.writeUInt16LE(tunnelPort, 4);
  return b;
}
export function decodeInboundPod(b: Buffer): { slot: number; tunnelPort: number } {
  return { slot: b.readUInt32LE(0), tunnelPort: b.readUInt16LE(4) };
}

/** struct slot_port */
export function encodeSlotPort(slot: number, port: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(slot, 0);
  b.writeUInt16LE(port, 4);
  return b;
}
export function decodeSlotPort(b: Buffer): { slot: number; port: number } {
  return { slot: b.readUInt32LE(0), port: b.readUInt16LE(4) };
}

export interface PodRecord {
  netnsCookie: bigint;
  netnsIno: bigint;
  uid: string;
}

/** struct pod_record */
export function encodePodRecord(r: PodRecord): Buffer {
  const uid = Buffer.from(r.uid, 'utf8');
  if (uid.length > POD_UID_MAX_BYTES) {
    throw new SkeinError(CaptureCode.InvalidPod, `pod uid longer than ${POD_UID_MAX_BYTES} bytes`, { uid: r.uid });
  }
  const b = Buffer.alloc(144);
  b.writeBigUInt64LE(r.netnsCookie, 0);
  b.writeBigUInt64LE(r.netnsIno, 8);
  uid.copy(b, 16);
  return b;
}
export function decodePodRecord(b: Buffer): PodRecord {
  const raw = b.subarray(16, 144);
  const end = raw.indexOf(0);
  return {
    netnsCookie: b.readBigUInt64LE(0),
    netnsIno: b.readBigUInt64LE(8),
    uid: raw.subarray(0, end < 0 ? raw.length : end).toString('utf8'),
  };
}

/** SOCKMAP value: the socket's fd, as a __u64. */
export function encodeSocketFd(fd: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(fd));
  return b;
}

/** skein_counters indexes (enum skein_counter in bpf/skein.h). */
export const COUNTER = {
  /** sk_lookup: bpf_sk_assign refused the agent's 15006 socket; the packet was dropped. */
  skLookupAssignFailed: 0,
  /** sk_lookup: no 15006 socket in the SOCKMAP (agent down); the packet was dropped. */
  skLookupNoSocket: 1,
  /** connect4/6: the pod held its share of redirected sockets; its connect was refused (EPERM). */
  podShareRefused: 2,
  /** connect4/6: no socket storage for the record; the connect was refused, never passed uncaptured. */
  noRecordRefused: 3,
} as const;
export type CounterName = keyof typeof COUNTER;

/**
 * A per-CPU __u64 value as user space reads it: one little-endian slot per possible CPU
 * (each 8 bytes, the kernel's alignment), summed.
 */
export function sumPerCpuU64(b: Buffer): bigint {
  if (b.length % 8 !== 0) throw new SkeinError(CaptureCode.BadRecord, `per-CPU value of ${b.length} bytes is not a multiple of 8`);
  let sum = 0n;
  for (let i = 0; i < b.length; i += 8) sum += b.readBigUInt64LE(i);
  return sum;
}
