/**
 * A fast non-cryptographic string hash for consistent hashing (Maglev tables, request keys).
 *
 * FNV-1a 64, computed over two 32-bit halves because a BigInt per request would allocate and a
 * 32-bit FNV collides too often once tables hold tens of thousands of slots. Keys come from
 * request headers or identities; a client choosing keys can only steer its own requests, so
 * collision resistance against an adversary buys nothing here and a crypto hash would only
 * cost time. FNV's last bytes barely reach the high bits, so each half goes through a
 * murmur3-style finalizer before use.
 */

/** Raw FNV-1a 64 of `s` as [high, low] words (UTF-16 code units: low byte, then the high byte when non-zero). */
export function fnv1a64(s: string, out: Uint32Array = new Uint32Array(2)): Uint32Array {
  // Offset basis 0xcbf29ce484222325; prime 0x100000001b3 = 2^40 + 0x1b3.
  let hi = 0xcbf29ce4;
  let lo = 0x84222325;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    lo = (lo ^ (c & 0xff)) >>> 0;
    // (hi:lo) * (2^40 + 0x1b3) mod 2^64: every product stays below 2^53, exact in a double.
    let p = lo * 0x1b3;
    hi = (hi * 0x1b3 + Math.floor(p / 0x100000000) + ((lo << 8) >>> 0)) >>> 0;
    lo = p >>> 0;
    if (c > 0xff) {
      lo = (lo ^ (c >>> 8)) >>> 0;
      p = lo * 0x1b3;
      hi = (hi * 0x1b3 + Math.floor(p / 0x100000000) + ((lo << 8) >>> 0)) >>> 0;
      lo = p >>> 0;
    }
  }
  out[0] = hi;
  out[1] = lo;
  return out;
}

/** FNV-1a 64 of `s`, finalized into two well-mixed 32-bit words (two independent-enough hashes). */
export function hash64(s: string, out: Uint32Array = new Uint32Array(2)): Uint32Array {
  fnv1a64(s, out);
  const hi = out[0]!;
  const lo = out[1]!;
  out[0] = fmix32(hi ^ lo);
  out[1] = fmix32((hi + 0x9e3779b9) ^ Math.imul(lo, 0x85ebca6b));
  return out;
}

/** Spreads every input bit over every output bit (murmur3's finalizer). */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const scratch = new Uint32Array(2);

/** 32-bit hash of `s` (no allocation). */
export function hash32(s: string): number {
  return hash64(s, scratch)[0]!;
}
