import { chmod, mkdir, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { hasCode, SkeinError } from '../../errors.js';
import type { AuthorityMaterial } from './authority.js';
import { IdentityCode } from '../codes.js';

/**
 * What the CA persists: every authority it holds (several during a root rotation) and which
 * one signs. Contains private keys: stored only where the operator restricts access (a file
 * with mode 0600, a Kubernetes Secret).
 */
export interface PersistedCaState {
  version: 1;
  /** Id (root SHA-256 fingerprint) of the authority that signs new leaves. */
  activeId: string;
  authorities: AuthorityMaterial[];
  /**
   * A root rotation in progress (or the last one finished), kept with the roots so a
   * restarted controller resumes it where it stopped. Absent before the first rotation.
   */
  rotation?: RotationRecord;
}

/**
 * Where a root rotation stands. Phases, in order: `trusting` (the new root is in the bundle,
 * the old one still signs), `reissuing` (the new root signs; workload certificates move to
 * it), `retiring` (the old root left the bundle; agents drop it), `done`.
 */
export interface RotationRecord {
  phase: RotationPhase;
  /** Id of the root being retired. */
  from: string;
  /** Id of the new root. */
  to: string;
  startedAt: string;
  updatedAt: string;
  completedAt?: string;
}

export type RotationPhase = 'trusting' | 'reissuing' | 'retiring' | 'done';

/** Where the CA keeps its state: a file in the lab, a Secret in Kubernetes (controller). */
export interface RootStore {
  /** The stored state, or undefined when nothing was stored yet (first start). */
  load(): Promise<PersistedCaState | undefined>;
  save(state: PersistedCaState): Promise<void>;
}

export const DEFAULT_ROOT_FILE = '/var/lib/skein/ca/root.json';

/**
 * A JSON file with mode 0600, written atomically (temp file + rename) so a crash never
 * leaves half a key. Refuses to read a file others can read: the operator must fix it.
 */
export class FileRootStore implements RootStore {
  constructor(readonly path: string = DEFAULT_ROOT_FILE) {}

  async load(): Promise<PersistedCaState | undefined> {
    let text: string;
    try {
      const info = await stat(this.path);
      if ((info.mode & 0o077) !== 0) {
        throw new SkeinError(IdentityCode.RootFilePermissions, `CA state file ${this.path} is readable by group/others; chmod 600 it`, {
          path: this.path,
          mode: (info.mode & 0o777).toString(8),
        });
      }
      text = await readFile(this.path, 'utf8');
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return undefined;
      throw err;
    }
    let state: PersistedCaState;
    try {
      state = JSON.parse(text) as PersistedCaState;
    } catch (err) {
      throw new SkeinError(IdentityCode.RootInvalid, `CA state file ${this.path} is not JSON`, { path: this.path }, { cause: err });
    }
    if (state.version !== 1 || !Array.isArray(state.authorities) || typeof state.activeId !== 'string') {
      throw new SkeinError(IdentityCode.RootInvalid, `CA state file ${this.path} has an unknown format`, { path: this.path });
    }
    return state;
  }

  async save(state: PersistedCaState): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
    const tmp = `${this.path}.${process.pid}.${Date.now()}.tmp`;
    const fh = await open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(`${JSON.stringify(state, null, 2)}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await chmod(tmp, 0o600); // umask cannot widen it, but be explicit
      await rename(tmp, this.path);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw err;
    }
  }
}

/** Keeps the state in memory only (tests, benchmarks, an operator-supplied root). */
export class MemoryRootStore implements RootStore {
  private state: PersistedCaState | undefined;
  async load(): Promise<PersistedCaState | undefined> {
    return this.state && structuredClone(this.state);
  }
  async save(state: PersistedCaState): Promise<void> {
    this.state = structuredClone(state);
  }
}

/** Reads operator-supplied CA material: cert, key and an optional chain file up to the root. */
export async function readAuthorityFiles(files: { certFile: string; keyFile: string; chainFile?: string }): Promise<AuthorityMaterial> {
  const cert = await readFile(files.certFile, 'utf8');
  const key = await readFile(files.keyFile, 'utf8');
  const chain = files.chainFile ? await readFile(files.chainFile, 'utf8') : '';
  return { certChainPem: [cert, chain].filter((s) => s.trim() !== ''), privateKeyPem: key };
}
