/**
 * The CONNECT `:authority` of an HBONE stream: `podIP:port`, IPv6 in brackets
 * (`[fd00::5]:8080`). Only IP literals are valid: the tunnel carries pod-to-pod traffic, names
 * were resolved before it was dialled.
 */
import { isIP } from 'node:net';
import { canonicalIp } from '../../config/address.js';

export interface Authority {
  /** Canonical text form of the IP (IPv6 compressed, lowercase). */
  address: string;
  port: number;
  family: 4 | 6;
}

function parsePort(s: string): number | undefined {
  if (!/^[0-9]{1,5}$/.test(s)) return undefined;
  const n = Number(s);
  return n >= 1 && n <= 65535 ? n : undefined;
}

/** Parse an HBONE authority; undefined when malformed (the server answers 400). */
export function parseAuthority(authority: string | undefined): Authority | undefined {
  if (!authority || authority.length > 64) return undefined;
  let host: string;
  let portText: string;
  if (authority.startsWith('[')) {
    const close = authority.indexOf(']');
    if (close < 0 || authority[close + 1] !== ':') return undefined;
    host = authority.slice(1, close);
    portText = authority.slice(close + 2);
    if (isIP(host) !== 6) return undefined;
  } else {
    const colon = authority.lastIndexOf(':');
    if (colon < 0) return undefined;
    host = authority.slice(0, colon);
    portText = authority.slice(colon + 1);
    if (isIP(host) !== 4) return undefined;
  }
  const port = parsePort(portText);
  const address = canonicalIp(host);
  if (port === undefined || address === undefined) return undefined;
  return { address, port, family: isIP(host) === 6 ? 6 : 4 };
}
