import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { SkeinError } from '../../errors.js';
import { IdentityCode } from '../codes.js';
import { isSelfSigned, pemBlocks } from '../x509/pem.js';

/**
 * The roots an agent trusts: several during a root rotation (old and new side by side, so
 * certificates of either chain verify). Each is a self-signed CA certificate. `version`
 * grows with every change so users can rebuild TLS contexts only when needed.
 */
export class TrustBundle {
  private byFingerprint = new Map<string, { cert: X509Certificate; pem: string }>();
  private _version = 0;
  /** rootsPem() of the current version: the data path asks for it on every new stream. */
  private pemCache: { version: number; pems: string[] } | undefined;

  constructor(rootsPem: string[] = []) {
    if (rootsPem.length > 0) this.replace(rootsPem);
  }

  get version(): number {
    return this._version;
  }

  get size(): number {
    return this.byFingerprint.size;
  }

  /** The roots' PEMs: the same (frozen) array until the bundle changes, so callers can compare it by reference. */
  rootsPem(): string[] {
    if (this.pemCache?.version !== this._version) {
      this.pemCache = { version: this._version, pems: Object.freeze([...this.byFingerprint.values()].map((r) => r.pem)) as string[] };
    }
    return this.pemCache.pems;
  }

  roots(): X509Certificate[] {
    return [...this.byFingerprint.values()].map((r) => r.cert);
  }

  fingerprints(): string[] {
    return [...this.byFingerprint.keys()];
  }

  has(fingerprint256: string): boolean {
    return this.byFingerprint.has(fingerprint256);
  }

  /** Sets the bundle to exactly these roots. Returns whether anything changed. */
  replace(rootsPem: string[]): boolean {
    const next = parseRoots(rootsPem);
    if (next.size === 0) throw new SkeinError(IdentityCode.BundleInvalid, 'a trust bundle needs at least one root');
    const same = next.size === this.byFingerprint.size && [...next.keys()].every((k) => this.byFingerprint.has(k));
    if (same) return false;
    this.byFingerprint = next;
    this._version++;
    return true;
  }

  /** Adds one root (rotation step 1). Returns whether it was new. */
  add(rootPem: string): boolean {
    const parsed = parseRoots([rootPem]);
    let changed = false;
    for (const [fp, r] of parsed) {
      if (!this.byFingerprint.has(fp)) {
        this.byFingerprint.set(fp, r);
        changed = true;
      }
    }
    if (changed) this._version++;
    return changed;
  }

  /** Removes a root by SHA-256 fingerprint (rotation step 3). Refuses to empty the bundle. */
  remove(fingerprint256: string): boolean {
    if (!this.byFingerprint.has(fingerprint256)) return false;
    if (this.byFingerprint.size === 1) throw new SkeinError(IdentityCode.BundleInvalid, 'cannot remove the last root of a trust bundle');
    this.byFingerprint.delete(fingerprint256);
    this._version++;
    return true;
  }
}

function parseRoots(rootsPem: string[]): Map<string, { cert: X509Certificate; pem: string }> {
  const out = new Map<string, { cert: X509Certificate; pem: string }>();
  for (const pem of rootsPem.flatMap((p) => pemBlocks(p))) {
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(pem);
    } catch (err) {
      throw new SkeinError(IdentityCode.BundleInvalid, 'unparseable root in trust bundle', undefined, { cause: err });
    }
    if (!cert.ca || !isSelfSigned(cert)) {
      throw new SkeinError(IdentityCode.BundleInvalid, 'trust bundle entry is not a self-signed CA certificate', { subject: cert.subject });
    }
    out.set(cert.fingerprint256, { cert, pem });
  }
  if (rootsPem.length > 0 && out.size === 0) throw new SkeinError(IdentityCode.BundleInvalid, 'no PEM certificate in trust bundle');
  return out;
}

/**
 * Trust bundle files (public, mode 0644): the CA writes its roots where agents can read them
 * as their bootstrap trust (lab: a file; Kubernetes: a ConfigMap mounted as a file).
 */
export async function saveTrustBundleFile(path: string, rootsPem: string[]): Promise<void> {
  new TrustBundle(rootsPem); // refuse to write anything that is not a bundle of roots
  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, rootsPem.join(''), { mode: 0o644 });
  await rename(tmp, path);
}

/** Reads a trust bundle file: every PEM certificate in it, checked to be a root. */
export async function loadTrustBundleFile(path: string): Promise<string[]> {
  const roots = pemBlocks(await readFile(path, 'utf8'));
  if (roots.length === 0) throw new SkeinError(IdentityCode.BundleInvalid, `no PEM certificate in trust bundle file ${path}`);
  new TrustBundle(roots);
  return roots;
}
