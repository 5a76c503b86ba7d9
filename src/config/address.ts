/**
 * Addresses as skein compares them. Config, sockets and HBONE authorities each write IP
 * addresses their own way (`fd00:0:0::5`, `FD00::5`, `::ffff:10.0.0.1`); everything that
 * compares one against another goes through canonicalIp first.
 */
import { isIP } from 'node:net';

export type IpFamily = 4 | 6;

/** Where a captured connection was going before capture steered it to the agent. */
export interface OriginalDestination {
  address: string;
  port: number;
  family: IpFamily;
}

// An IPv4 address a dual-stack socket reports as IPv6 (::ffff:10.0.0.1), as the URL parser
// writes it: its dotted tail in two hex groups.
const MAPPED_HEX = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/;

/**
 * The one text form of an IP literal: IPv4 dotted; IPv6 lowercase and compressed as RFC 5952;
 * an IPv4-mapped IPv6 address as its IPv4. undefined when `ip` is not an IP literal.
 */
export function canonicalIp(ip: string): string | undefined {
  const family = isIP(ip);
  if (family === 4) return ip;
  if (family !== 6) return undefined;
  let text: string;
  try {
    text = new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  } catch {
    return undefined;
  }
  const hex = MAPPED_HEX.exec(text);
  if (hex) {
    const hi = Number.parseInt(hex[1]!, 16);
    const lo = Number.parseInt(hex[2]!, 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return text;
}

/** 4 or 6; undefined when not an IP literal. */
export function ipFamilyOf(ip: string): IpFamily | undefined {
  const f = isIP(canonicalIp(ip) ?? '');
  return f === 4 || f === 6 ? f : undefined;
}

/** `ip:port`, IPv6 in brackets (`[fd00::5]:8080`): an HTTP authority and a log-friendly address. */
export function formatAuthority(ip: string, port: number): string {
  return isIP(ip) === 6 ? `[${ip}]:${port}` : `${ip}:${port}`;
}
