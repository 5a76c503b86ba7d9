/** IPv4 address arithmetic for the lab's address plan (pure, no I/O). */

export function isIPv4(s: string): boolean {
  const parts = s.split('.');
  return parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255);
}

export function ipToInt(ip: string): number {
  return ip.split('.').reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function intToIp(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join('.');
}

export interface Cidr {
  /** Network address as an integer. */
  base: number;
  bits: number;
  /** Number of addresses in the block. */
  size: number;
}

export function parseCidr(s: string): Cidr | null {
  const [ip, bitsStr] = s.split('/');
  if (!ip || bitsStr === undefined || !isIPv4(ip) || !/^\d{1,2}$/.test(bitsStr)) return null;
  const bits = Number(bitsStr);
  if (bits > 32) return null;
  const size = 2 ** (32 - bits);
  const base = Math.floor(ipToInt(ip) / size) * size;
  return { base, bits, size };
}

export function formatCidr(c: Cidr): string {
  return `${intToIp(c.base)}/${c.bits}`;
}

export function cidrContains(c: Cidr, ip: string): boolean {
  const n = ipToInt(ip);
  return n >= c.base && n < c.base + c.size;
}

/** The `offset`-th address of a block; throws when it does not fit. */
export function addressAt(c: Cidr, offset: number): string {
  if (offset < 0 || offset >= c.size) throw new RangeError(`offset ${offset} outside ${formatCidr(c)}`);
  return intToIp(c.base + offset);
}
