import { createSecureContext, type PeerCertificate, type SecureContext, type TlsOptions, type ConnectionOptions } from 'node:tls';
import type { SpiffeId } from '../spiffe.js';
import { type VerifyPeerOptions, verifyPeer } from './peer-verification.js';
import { parseWorkloadSpiffeId } from '../spiffe.js';
import { TrustBundle } from './trust-bundle.js';
import type { WorkloadCertificate } from './types.js';

export interface MeshTlsOptions {
  /** Trust domain peers must be in; default: the trust domain of our own certificate. */
  trustDomain?: string;
  /** Client side: the identity the server must have (checked in the handshake). */
  expectedPeer?: SpiffeId | SpiffeId[];
  /** ALPN protocols, e.g. ['h2'] for the HBONE tunnel. */
  alpnProtocols?: string[];
}

/**
 * Node `tls` options for mesh mTLS with a workload certificate: our chain and key, the
 * bundle's roots as the only CAs, TLS 1.3 only, peer certificate required and verified by
 * OpenSSL; on the client, the server's SPIFFE identity is checked in place of a host name
 * (checkServerIdentity). On the server, call `peerIdentityOf(socket, ...)` after the
 * handshake to get the client's verified SPIFFE ID.
 *
 * Usable for `tls.connect`, `tls.createServer`, `server.setSecureContext` (rotation) and
 * `tls.createSecureContext` (SNICallback).
 */
export function tlsOptionsFor(cert: WorkloadCertificate, bundle: TrustBundle | string[], opts: MeshTlsOptions = {}): TlsOptions & ConnectionOptions {
  // One snapshot for both OpenSSL's `ca` and our SPIFFE check, so they never disagree.
  const roots = bundle instanceof TrustBundle ? bundle.rootsPem() : bundle;
  const snapshot = new TrustBundle(roots);
  const verify: VerifyPeerOptions = { trustDomain: opts.trustDomain ?? parseWorkloadSpiffeId(cert.identity).trustDomain, expected: opts.expectedPeer };
  return {
    cert: cert.certChainPem,
    key: cert.privateKeyPem,
    ca: roots,
    minVersion: 'TLSv1.3',
    requestCert: true,
    rejectUnauthorized: true,
    ...(opts.alpnProtocols ? { ALPNProtocols: opts.alpnProtocols } : {}),
    checkServerIdentity: (_host: string, peer: PeerCertificate): Error | undefined => {
      try {
        verifyPeer(peer, snapshot, verify);
        return undefined;
      } catch (err) {
        return err as Error;
      }
    },
  };
}

/** A SecureContext for a server's SNICallback, from the same options. */
export function secureContextFor(cert: WorkloadCertificate, bundle: TrustBundle | string[], opts: MeshTlsOptions = {}): SecureContext {
  return createSecureContext(tlsOptionsFor(cert, bundle, opts));
}
