/** IP addresses as the 4 or 16 network-order bytes the kernel (and our BPF maps) use. */
import { isIPv4, isIPv6 } from 'node:net';
import { type IpFamily, ipFamilyOf } from '../config/address.js';
import { SkeinError } from '../errors.js';
import { CaptureCode } from './codes.js';

/** The family of an address as the kernel keys it (an IPv4-mapped IPv6 address is IPv4). */
export function familyOf(address: string): IpFamily {
  const family = ipFamilyOf(address);
  if (family === undefined) throw new SkeinError(CaptureCode.InvalidAddress, `not an IP address: ${address}`, { address });
  return family;
}

function v4Bytes(address: string): Buffer {
  return Buffer.from(address.split('.').map((p) => Number(p)));
}

/** 4 bytes for IPv4, 16 for IPv6 (network order). */
export function ipToBytes(address: string): Buffer {
  if (isIPv4(address)) return v4Bytes(address);
  if (!isIPv6(address)) throw new SkeinError(CaptureCode.InvalidAddress, `not an IP address: ${address}`, { address });
  let text = address.replace(/%.*$/, '');
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes its two hex groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1]) {
    const b = v4Bytes(v4[1]);
    text = `${text.slice(0, -v4[1].length)}${b.readUInt16BE(0).toString(16)}:${b.readUInt16BE(2).toString(16)}`;
  }
  const [head = '', rest] = text.split('::');
  const parse = (s: string) => (s === '' ? [] : s.split(':').map((g) => Number.parseInt(g, 16)));
  const h = parse(head);
  const r = rest === undefined ? [] : parse(rest);
  const groups = rest === undefined ? h : [...h, ...new Array<number>(8 - h.length - r.length).fill(0), ...r];
  const out = Buffer.alloc(16);
  for (const [i, g] of groups.entries()) out.writeUInt16BE(g, i * 2);
  return out;
}

/** Text form of 4 or 16 bytes (IPv6 compressed as RFC 5952). */
export function bytesToIp(bytes: Buffer): string {
  if (bytes.length === 4) return [...bytes].join('.');
  if (bytes.length !== 16) throw new SkeinError(CaptureCode.InvalidAddress, `address of ${bytes.length} bytes`);
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(bytes.readUInt16BE(i * 2));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}
