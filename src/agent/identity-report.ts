/**
 * What the agent tells the controller about its identity state during a root rotation: the
 * roots it trusts and, per workload certificate, the trusted root it chains to. And what it
 * does when the controller asks: fetch the bundle from the CA now, re-issue now.
 */
import { X509Certificate } from 'node:crypto';
import type { CertificateRoot, IdentityControl, IdentityReport } from '../api/config-wire.js';
import { messageOf } from '../errors.js';
import type { CertificateStore } from '../identity/workload/certificate-store.js';
import { pemBlocks } from '../identity/x509/pem.js';
import type { Logger } from '../telemetry/log.js';

/** Fingerprint of the root in `roots` that issued the last certificate of `chainPem`; '' when none does. */
export function rootOfChain(chainPem: string, roots: X509Certificate[]): string {
  const blocks = pemBlocks(chainPem);
  const last = blocks.at(-1);
  if (!last) return '';
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(last);
  } catch {
    return '';
  }
  for (const r of roots) {
    if (cert.fingerprint256 === r.fingerprint256) return r.fingerprint256;
    if (cert.checkIssued(r) && cert.verify(r.publicKey)) return r.fingerprint256;
  }
  return '';
}

export function identityReportOf(store: CertificateStore): IdentityReport {
  const roots = store.bundle.roots();
  const certificates: CertificateRoot[] = [];
  for (const c of store.status()) {
    if (!c.certChainPem) continue;
    certificates.push({ identity: c.identity, root: rootOfChain(c.certChainPem, roots), serial: c.serialNumber ?? '', not_after: c.notAfter?.toISOString() ?? '' });
  }
  return { trusted_roots: store.bundle.fingerprints(), certificates };
}

/**
 * Follows the controller's rotation signals and reports back. Reports are coalesced (one per
 * tick) since a re-issue of many identities fires many events at once.
 */
export function wireIdentityReports(store: CertificateStore, send: () => void, log: Logger): { onControl: (c: IdentityControl) => void; stop: () => void } {
  let queued = false;
  const report = () => {
    if (queued) return;
    queued = true;
    setImmediate(() => {
      queued = false;
      send();
    });
  };
  store.on('issued', report);
  store.on('bundleChanged', report);
  store.on('released', report);
  const onControl = (c: IdentityControl) => {
    void (async () => {
      log.info({ refreshBundle: c.refresh_bundle, reissue: c.reissue }, 'controller asked for a trust bundle refresh / re-issue');
      if (c.refresh_bundle || c.reissue) {
        // The bundle first: a re-issued leaf from a new root must verify against what we trust.
        await store.refreshTrustBundle().catch((err) => log.warn({ err: messageOf(err) }, 'trust bundle refresh (asked by the controller) failed'));
      }
      if (c.reissue) await store.renewNow().catch((err) => log.warn({ err: messageOf(err) }, 're-issue (asked by the controller) failed'));
      report(); // also when nothing changed: the controller waits for an answer
    })();
  };
  return {
    onControl,
    stop: () => {
      store.off('issued', report);
      store.off('bundleChanged', report);
      store.off('released', report);
    },
  };
}
