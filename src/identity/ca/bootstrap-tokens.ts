import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { SkeinError } from '../../errors.js';
import type { Authenticator, CallerIdentity, PresentedCredentials } from './authn.js';
import { IdentityCode } from '../codes.js';

/**
 * Lab bootstrap credentials: a directory with one file per node, named after the node,
 * holding that node's token (one line, 43 base64url chars = 256 random bits), mode 0600, in
 * a 0700 directory. `skein lab up` creates it with `createBootstrapTokens`; each lab agent
 * is given the path of its own file; the CA reads the whole directory.
 */
export const BOOTSTRAP_TOKEN_FILE_MODE = 0o600;
const NODE_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

function digest(token: string): Buffer {
  return createHash('sha256').update(token).digest();
}

/** Creates (or replaces) a token file for each node; returns node -> token file path. */
export async function createBootstrapTokens(dir: string, nodes: string[]): Promise<Record<string, string>> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const out: Record<string, string> = {};
  for (const node of nodes) {
    if (!NODE_NAME.test(node)) throw new SkeinError(IdentityCode.BootstrapTokens, `bad node name for a token file: ${node}`);
    const path = join(dir, node);
    await writeFile(path, `${randomBytes(32).toString('base64url')}\n`, { mode: BOOTSTRAP_TOKEN_FILE_MODE });
    out[node] = path;
  }
  return out;
}

/** Reads one node's token file (the agent side). */
export async function readBootstrapToken(path: string): Promise<string> {
  const token = (await readFile(path, 'utf8')).trim();
  if (token === '') throw new SkeinError(IdentityCode.BootstrapTokens, `empty bootstrap token file ${path}`);
  return token;
}

/**
 * Authenticates callers by bootstrap token. Tokens are kept only as SHA-256 digests; a file that group/others can read is skipped (and reported by `load`).
 */
export class BootstrapTokenAuthenticator implements Authenticator {
  private byDigest = new Map<string, string>();

  private constructor(private readonly dir: string | undefined) {}

  /** From a directory of token files; call `reload()` when nodes are added. */
  static async fromDirectory(dir: string): Promise<BootstrapTokenAuthenticator> {
    const a = new BootstrapTokenAuthenticator(dir);
    await a.reload();
    return a;
  }

  /** From an in-memory node -> token map (tests, embedding). */
  static fromTokens(tokens: Record<string, string>): BootstrapTokenAuthenticator {
    const a = new BootstrapTokenAuthenticator(undefined);
    for (const [node, token] of Object.entries(tokens)) a.byDigest.set(digest(token).toString('hex'), node);
    return a;
  }

  /** Re-reads the directory; returns the nodes loaded and files skipped (bad permissions). */
  async reload(): Promise<{ nodes: string[]; skipped: string[] }> {
    if (!this.dir) return { nodes: [...this.byDigest.values()], skipped: [] };
    const next = new Map<string, string>();
    const skipped: string[] = [];
    for (const name of await readdir(this.dir)) {
      if (!NODE_NAME.test(name)) continue;
      const path = join(this.dir, name);
      const info = await stat(path);
      if (!info.isFile()) continue;
      if ((info.mode & 0o077) !== 0) {
        skipped.push(name);
        continue;
      }
      const token = (await readFile(path, 'utf8')).trim();
      if (token !== '') next.set(digest(token).toString('hex'), name);
    }
    this.byDigest = next;
    return { nodes: [...next.values()], skipped };
  }

  async authenticate(creds: PresentedCredentials): Promise<CallerIdentity> {
    const token = creds.bearerToken;
    if (!token) throw new SkeinError(IdentityCode.Unauthenticated, 'no bearer token');
    // Lookup by SHA-256 digest: any timing difference of the map lookup depends on the
    // digest, which an attacker cannot steer toward a valid token's digest.
    const node = this.byDigest.get(digest(token).toString('hex'));
    if (node === undefined) {
      throw new SkeinError(IdentityCode.Unauthenticated, 'unknown bootstrap token');
    }
    return { node, method: 'bootstrap-token' };
  }
}
