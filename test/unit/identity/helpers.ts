// Shared fixtures of the identity tests (not a test file itself).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CertificateAuthority, type CertificateAuthorityOptions } from '../../../src/identity/ca/ca.js';
import type { CertificateIssuer, IssuerResponse } from '../../../src/identity/workload/ca-client.js';
import type { Clock, Timers } from '../../../src/identity/workload/renewal.js';

export const TD = 'cluster.local';
export const id = (ns: string, sa: string) => `spiffe://${TD}/ns/${ns}/sa/${sa}`;

/** The part of a tap test the fixtures use. */
export interface Teardown {
  teardown(fn: () => unknown): void;
}

/** A temp dir removed at teardown. */
export function tempDir(t: Teardown, tag: string): string {
  const dir = mkdtempSync(join(tmpdir(), `skein-identity-${tag}-${process.pid}-`));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export async function makeCa(opts: Partial<CertificateAuthorityOptions> = {}): Promise<CertificateAuthority> {
  return CertificateAuthority.create({ trustDomain: TD, ...opts });
}

/**
 * Manual time: timers fire only when the test advances the clock. `now` starts at the real
 * time so certificates signed "now" by a CA on this clock look right to Node's X509 code.
 */
export class FakeTime implements Clock, Timers {
  t = Date.now();
  private seq = 0;
  private readonly pending = new Map<number, { at: number; fn: () => void }>();

  now(): number {
    return this.t;
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const h = ++this.seq;
    this.pending.set(h, { at: this.t + Math.max(0, ms), fn });
    return h;
  }
  clearTimeout(h: unknown): void {
    this.pending.delete(h as number);
  }
  /** Delays of pending timers from now, sorted. */
  delays(): number[] {
    return [...this.pending.values()].map((p) => p.at - this.t).sort((a, b) => a - b);
  }
  /** Moves time forward, firing due timers in order. */
  advance(ms: number): void {
    if (!Number.isFinite(ms)) throw new Error(`FakeTime.advance(${ms}): no finite delay (no timer pending?)`);
    const target = this.t + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.pending) if (e[1].at <= target && (!next || e[1].at < next[1].at)) next = e;
      if (!next) break;
      this.pending.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = target;
  }
}

/** An in-process issuer over a CA, with failures the test can switch on. */
export class LocalIssuer implements CertificateIssuer {
  calls = 0;
  failWith: Error | undefined;
  trusted: string[][] = [];
  constructor(readonly ca: CertificateAuthority) {}
  async issue(req: { csrPem: string; ttlSeconds: number }): Promise<IssuerResponse> {
    this.calls++;
    if (this.failWith) throw this.failWith;
    const r = await this.ca.issue(req.csrPem, req.ttlSeconds);
    return { certChainPem: r.certChainPem, trustBundlePem: r.trustBundlePem, ttlSeconds: r.ttlSeconds };
  }
  async fetchTrustBundle(): Promise<string[]> {
    if (this.failWith) throw this.failWith;
    return this.ca.trustBundlePem();
  }
  updateTrust(roots: string[]): void {
    this.trusted.push(roots);
  }
}

import { importSigningKey } from '../../../src/identity/x509/keys.js';
import { generateP256KeyPair, privateKeyToPem } from '../../../src/identity/x509/keys.js';
import type { SigningAuthority } from '../../../src/identity/ca/authority.js';
import { x509 } from '../../../src/identity/x509/provider.js';

/** A leaf signed by `authority` with arbitrary SANs and validity (for negative tests). */
export async function craftLeaf(
  authority: SigningAuthority,
  opts: { names?: x509.JsonGeneralName[]; notBefore?: Date; notAfter?: Date; ca?: boolean } = {},
): Promise<{ pem: string; keyPem: string }> {
  const signer = await importSigningKey(authority.material().privateKeyPem);
  const keys = await generateP256KeyPair();
  const extensions: x509.Extension[] = [new x509.BasicConstraintsExtension(opts.ca ?? false, undefined, true)];
  if (opts.names) extensions.push(new x509.SubjectAlternativeNameExtension(opts.names, true));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '01ab',
    issuer: new x509.X509Certificate(authority.signingCert.raw).subjectName,
    subject: opts.names ? undefined : 'CN=no-san',
    notBefore: opts.notBefore ?? new Date(Date.now() - 60_000),
    notAfter: opts.notAfter ?? new Date(Date.now() + 3600_000),
    publicKey: keys.publicKey,
    signingKey: signer.key,
    signingAlgorithm: signer.algorithm,
    extensions,
  });
  return { pem: cert.toString('pem'), keyPem: await privateKeyToPem(keys.privateKey) };
}

/** An intermediate CA (material) under `root`. */
export async function craftIntermediate(root: SigningAuthority): Promise<{ certChainPem: string[]; privateKeyPem: string }> {
  const signer = await importSigningKey(root.material().privateKeyPem);
  const keys = await generateP256KeyPair();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '02cd',
    issuer: new x509.X509Certificate(root.signingCert.raw).subjectName,
    subject: 'O=cluster.local, CN=skein test intermediate',
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 24 * 3600_000),
    publicKey: keys.publicKey,
    signingKey: signer.key,
    signingAlgorithm: signer.algorithm,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      new x509.AuthorityKeyIdentifierExtension(
        new x509.X509Certificate(root.signingCert.raw).getExtension(x509.SubjectKeyIdentifierExtension)?.keyId as string,
      ),
    ],
  });
  return { certChainPem: [cert.toString('pem'), root.rootPem], privateKeyPem: await privateKeyToPem(keys.privateKey) };
}
