import { X509Certificate } from 'node:crypto';
import type { PeerCertificate, TLSSocket } from 'node:tls';
import type { SpiffeId } from '../spiffe.js';
import { SkeinError } from '../../errors.js';
import { IdentityCode } from '../codes.js';
import { pemBlocks } from '../x509/pem.js';
import { parseWorkloadSpiffeId } from '../spiffe.js';
import { TrustBundle } from './trust-bundle.js';
import { x509 } from '../x509/provider.js';

/** A peer's chain as the data path has it: PEM text(s), DER buffer(s), or what tls gives. */
export type PeerChain = string | string[] | Uint8Array | Uint8Array[] | X509Certificate[] | PeerCertificate;

export interface VerifyPeerOptions {
  /** The mesh's trust domain: the peer's SPIFFE ID must be in it. */
  trustDomain: string;
  /** When set, the peer must be this identity (or one of these). */
  expected?: SpiffeId | SpiffeId[];
  /** Verification time (tests); default now. */
  now?: Date;
}

const MAX_DEPTH = 8;
const SAN_OID = '2.5.29.17';

function fail(code: string, message: string, details?: Record<string, unknown>): never {
  throw new SkeinError(code, message, details);
}

/** Certificates of a peer chain, leaf first (tls's issuerCertificate links are followed). */
export function peerChainCertificates(chain: PeerChain): X509Certificate[] {
  if (typeof chain === 'string') return pemBlocks(chain).map((p) => new X509Certificate(p));
  if (chain instanceof Uint8Array) return [new X509Certificate(chain)];
  if (Array.isArray(chain)) {
    return (chain as Array<string | Uint8Array | X509Certificate>).flatMap((c) =>
      c instanceof X509Certificate ? [c] : typeof c === 'string' ? pemBlocks(c).map((p) => new X509Certificate(p)) : [new X509Certificate(c)],
    );
  }
  const out: X509Certificate[] = [];
  const seen = new Set<string>();
  let cur: (PeerCertificate & { issuerCertificate?: PeerCertificate }) | undefined = chain;
  while (cur?.raw && out.length < MAX_DEPTH + 1) {
    const c = new X509Certificate(cur.raw);
    if (seen.has(c.fingerprint256)) break; // a root points at itself
    seen.add(c.fingerprint256);
    out.push(c);
    cur = cur.issuerCertificate;
  }
  return out;
}

function validAt(c: X509Certificate, now: Date): boolean {
  return c.validFromDate <= now && now < c.validToDate;
}

/** The URI SANs and the count of all SANs of a certificate. */
function sansOf(cert: X509Certificate): { all: number; uris: string[] } {
  const ext = new x509.X509Certificate(cert.raw).getExtension(SAN_OID);
  if (!ext) return { all: 0, uris: [] };
  const items = new x509.SubjectAlternativeNameExtension(ext.rawData).names.items;
  return { all: items.length, uris: items.filter((n) => n.type === 'url').map((n) => n.value) };
}

/**
 * Verifies a mesh peer: its chain leads to a root of `bundle` (any of them) through valid
 * CA certificates, the leaf is valid now, carries exactly one SAN which is a workload SPIFFE
 * ID in `trustDomain`, and (optionally) equal to the expected identity. Returns the peer's
 * SPIFFE ID or throws a SkeinError: SKEIN_IDENTITY_PEER_{NO_CERTIFICATE, UNTRUSTED, EXPIRED,
 * SAN_COUNT, NOT_SPIFFE, TRUST_DOMAIN, UNEXPECTED_IDENTITY}.
 */
export function verifyPeer(chain: PeerChain | undefined | null, bundle: TrustBundle | string[], opts: VerifyPeerOptions): SpiffeId {
  const now = opts.now ?? new Date();
  let certs: X509Certificate[];
  try {
    certs = chain ? peerChainCertificates(chain) : [];
  } catch (err) {
    throw new SkeinError(IdentityCode.PeerUntrusted, 'peer certificate unparseable', undefined, { cause: err });
  }
  const leaf = certs[0];
  if (!leaf) fail(IdentityCode.PeerNoCert, 'peer presented no certificate');
  const roots = (bundle instanceof TrustBundle ? bundle : new TrustBundle(bundle)).roots();

  if (leaf.ca) fail(IdentityCode.PeerUntrusted, 'peer leaf is a CA certificate');
  if (!validAt(leaf, now)) {
    fail(IdentityCode.PeerExpired, `peer certificate is not valid now (notBefore ${leaf.validFrom}, notAfter ${leaf.validTo})`, {
      notAfter: leaf.validTo,
    });
  }
  chainToBundle(leaf, certs.slice(1), roots, now);

  const sans = sansOf(leaf);
  if (sans.all !== 1) fail(IdentityCode.PeerSanCount, `peer certificate must carry exactly one SAN, found ${sans.all}`, { count: sans.all });
  const uri = sans.uris[0];
  if (!uri?.startsWith('spiffe://')) fail(IdentityCode.PeerNotSpiffe, 'peer SAN is not a SPIFFE URI');
  let parsed: ReturnType<typeof parseWorkloadSpiffeId>;
  try {
    parsed = parseWorkloadSpiffeId(uri);
  } catch (err) {
    throw new SkeinError(IdentityCode.PeerNotSpiffe, 'peer SAN is not a workload SPIFFE ID', { uri }, { cause: err });
  }
  if (parsed.trustDomain !== opts.trustDomain) {
    fail(IdentityCode.PeerTrustDomain, `peer is in trust domain ${parsed.trustDomain}, not ${opts.trustDomain}`, { identity: uri });
  }
  if (opts.expected !== undefined) {
    const wanted = Array.isArray(opts.expected) ? opts.expected : [opts.expected];
    if (!wanted.includes(uri)) fail(IdentityCode.PeerUnexpectedIdentity, `peer is ${uri}, expected ${wanted.join(' or ')}`, { identity: uri, expected: wanted });
  }
  return uri;
}

/** Walks issuer links from `leaf` through `intermediates` to one of `roots`, or throws. */
function chainToBundle(leaf: X509Certificate, intermediates: X509Certificate[], roots: X509Certificate[], now: Date): void {
  let cur = leaf;
  const used = new Set<X509Certificate>();
  for (let depth = 0; depth < MAX_DEPTH; depth++) {
    for (const r of roots) {
      if (cur.checkIssued(r) && validAt(r, now) && cur.verify(r.publicKey)) return;
    }
    const next = intermediates.find((i) => !used.has(i) && i.ca && cur.checkIssued(i) && cur.verify(i.publicKey));
    if (!next) break;
    if (!validAt(next, now)) fail(IdentityCode.PeerExpired, 'an intermediate of the peer chain is not valid now', { subject: next.subject });
    used.add(next);
    cur = next;
  }
  fail(IdentityCode.PeerUntrusted, 'peer certificate does not chain to a root of the trust bundle', { issuer: cur.issuer });
}

/** The verified SPIFFE ID of the peer of a TLS socket (server side, after the handshake). */
export function peerIdentityOf(socket: TLSSocket, bundle: TrustBundle | string[], opts: VerifyPeerOptions): SpiffeId {
  const peer = socket.getPeerCertificate(true);
  return verifyPeer(peer && Object.keys(peer).length > 0 ? peer : undefined, bundle, opts);
}
