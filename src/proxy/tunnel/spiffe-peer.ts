/**
 * SPIFFE identity of a TLS peer, checked the same way on both ends of a tunnel. The chain to
 * the trust bundle is verified by Node's TLS (`ca` + `rejectUnauthorized`); what TLS does not
 * know about is checked here: an X509-SVID carries exactly one URI SAN, a well-formed
 * `spiffe://<trust-domain>/<path>` in this mesh's trust domain, and — on the client side —
 * exactly the identity the caller expected to reach.
 *
 * Kept in the tunnel room until src/identity exports a shared helper; the rules are the
 * SPIFFE X509-SVID ones, so switching is a one-line change at the call sites.
 */
import { X509Certificate } from 'node:crypto';
import type { SpiffeId } from '../../config/model.js';

export interface SpiffeParts {
  trustDomain: string;
  path: string;
}

// Trust domain: lowercase letters, digits, dots, dashes, underscores (SPIFFE-ID spec §2.1).
// Path: one or more `/segment`, segments of [A-Za-z0-9._-], never `.` or `..` (§2.2).
const SPIFFE_RE = /^spiffe:\/\/([a-z0-9._-]+)((?:\/[A-Za-z0-9._-]+)+)$/;

/** Parse a SPIFFE ID; undefined when it is not one. */
export function parseSpiffeId(id: string): SpiffeParts | undefined {
  if (id.length > 2048) return undefined;
  const m = SPIFFE_RE.exec(id);
  if (!m?.[1] || !m[2]) return undefined;
  if (m[2].split('/').some((seg) => seg === '.' || seg === '..')) return undefined;
  return { trustDomain: m[1], path: m[2] };
}

/**
 * Split Node's `subjectAltName` text (`URI:spiffe://a/b, DNS:x`) into its entries. Node quotes
 * a value as a JSON string when it holds a comma, quote or other special character (since the
 * CVE-2021-44532 fix), so a crafted SAN cannot pose as two entries.
 */
export function parseSubjectAltName(text: string): { type: string; value: string }[] {
  const out: { type: string; value: string }[] = [];
  let i = 0;
  while (i < text.length) {
    const colon = text.indexOf(':', i);
    if (colon < 0) throw new Error('malformed subjectAltName');
    const type = text.slice(i, colon);
    let j = colon + 1;
    let value: string;
    if (text[j] === '"') {
      // JSON string: find its closing quote, skipping escapes.
      let k = j + 1;
      while (k < text.length && text[k] !== '"') k += text[k] === '\\' ? 2 : 1;
      if (k >= text.length) throw new Error('unterminated quoted subjectAltName');
      value = JSON.parse(text.slice(j, k + 1)) as string;
      j = k + 1;
    } else {
      const comma = text.indexOf(', ', j);
      const end = comma < 0 ? text.length : comma;
      value = text.slice(j, end);
      j = end;
    }
    out.push({ type, value });
    if (j < text.length) {
      if (text.slice(j, j + 2) !== ', ') throw new Error('malformed subjectAltName');
      j += 2;
    }
    i = j;
  }
  return out;
}

/** URI SANs of a DER certificate (empty when it has no SAN extension). */
export function uriSansOf(der: Uint8Array): string[] {
  const san = new X509Certificate(der).subjectAltName;
  if (!san) return [];
  return parseSubjectAltName(san)
    .filter((n) => n.type === 'URI')
    .map((n) => n.value);
}

export type PeerIdentityCheck =
  | { ok: true; identity: SpiffeId }
  | { ok: false; reason: 'no-certificate' | 'no-uri-san' | 'multiple-uri-sans' | 'not-spiffe' | 'wrong-trust-domain' | 'unexpected-identity' | 'unparsable'; detail?: string };

/**
 * Check the SPIFFE identity a peer certificate (DER of the leaf) carries. `expected`, when set,
 * must match exactly (client side: the destination identity the control plane promised).
 */
export function checkPeerIdentity(der: Uint8Array | undefined, trustDomain: string, expected?: SpiffeId): PeerIdentityCheck {
  if (!der || der.length === 0) return { ok: false, reason: 'no-certificate' };
  let uris: string[];
  try {
    uris = uriSansOf(der);
  } catch (err) {
    return { ok: false, reason: 'unparsable', detail: err instanceof Error ? err.message : String(err) };
  }
  if (uris.length === 0) return { ok: false, reason: 'no-uri-san' };
  if (uris.length > 1) return { ok: false, reason: 'multiple-uri-sans', detail: uris.join(',') };
  const id = uris[0] as string;
  const parts = parseSpiffeId(id);
  if (!parts) return { ok: false, reason: 'not-spiffe', detail: id };
  if (parts.trustDomain !== trustDomain) return { ok: false, reason: 'wrong-trust-domain', detail: id };
  if (expected !== undefined && id !== expected) return { ok: false, reason: 'unexpected-identity', detail: id };
  return { ok: true, identity: id };
}
