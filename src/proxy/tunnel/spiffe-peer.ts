/**
 * SPIFFE identity of a tunnel peer, checked the same way on both ends. Thin adapter over
 * identity's `verifyPeer` (src/identity/peer-verification.ts: chain to the bundle, leaf valid
 * now, exactly one SAN, a workload SPIFFE ID in our trust domain, optionally the expected
 * one), turning its thrown SkeinError into a result the tunnel maps to its own answers
 * (server: 401 on every stream; client: SKEIN_TUNNEL_PEER_IDENTITY_MISMATCH).
 */
import type { PeerCertificate } from 'node:tls';
import type { SpiffeId } from '../../config/model.js';
import { messageOf } from '../../errors.js';
import { type PeerChain, verifyPeer } from '../../identity/workload/peer-verification.js';
import { IdentityCode } from '../../identity/codes.js';

export type PeerIdentityCheck = { ok: true; identity: SpiffeId } | { ok: false; reason: string; detail?: string };

/**
 * Check a peer: `peer` is what tls gives (`getPeerCertificate(true)`, or the certificate passed
 * to checkServerIdentity), `bundle` the PEM roots the TLS context was built with.
 */
export function checkPeerIdentity(
  peer: PeerCertificate | PeerChain | undefined,
  bundle: string[],
  trustDomain: string,
  expected?: SpiffeId,
): PeerIdentityCheck {
  try {
    const opts = expected === undefined ? { trustDomain } : { trustDomain, expected };
    // (tls gives {} when the peer sent no certificate; verifyPeer reports that as no certificate.)
    return { ok: true, identity: verifyPeer(peer, bundle, opts) };
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    return { ok: false, reason: typeof code === 'string' ? code : IdentityCode.PeerUntrusted, detail: messageOf(err) };
  }
}
