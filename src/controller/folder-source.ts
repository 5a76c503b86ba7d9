/**
 * A folder of Kubernetes YAML (recursive, watched) feeding the controller's ObjectStore,
 * one origin per file: a changed file replaces only its own objects. A file that cannot be
 * read or parsed is reported (file, field/line, reason) and its last good objects stay, so
 * a half-written or broken file never withdraws what it declared before; every other file
 * keeps flowing. Files are re-read when their size/mtime/inode change, on fs.watch events
 * (debounced) and on a periodic rescan (fs.watch misses renames on some filesystems).
 *
 * Reuses the config room's YAML reader (parseYamlObjects: multi-document, `kind: List`).
 */
import { readFile, stat } from 'node:fs/promises';
import { relative } from 'node:path';
import { parseYamlObjects } from '../config/kube/folder-source.js';
import { FolderWatch, listYamlFiles } from '../config/folder-watch.js';
import { messageOf, SkeinError } from '../errors.js';
import { type Logger, silentLogger } from '../telemetry/log.js';
import type { ObjectStore } from './object-store.js';
import { ConfigCode } from '../config/codes.js';

export interface FolderSourceOptions {
  dir: string;
  /** Quiet time after an fs event (ms). Default 50. */
  debounceMs?: number;
  /** Rescan period (ms); 0 disables. Default 10000. */
  rescanMs?: number;
  logger?: Logger;
}

/** A file the source could not take. */
export interface FileProblem {
  file: string;
  field: string;
  reason: string;
  code: string;
}

export class FolderSource {
  private readonly log: Logger;
  private readonly folder: FolderWatch;
  private readonly seen = new Map<string, string>();
  private readonly problems = new Map<string, FileProblem>();
  /** Resolves after each completed scan (tests wait on it). */
  scans = 0;

  constructor(
    private readonly store: ObjectStore,
    private readonly opts: FolderSourceOptions,
  ) {
    this.log = (opts.logger ?? silentLogger()).child({ component: 'folder-source', dir: opts.dir });
    this.folder = new FolderWatch({
      dir: opts.dir,
      read: async () => {
        try {
          await this.scanOnce();
        } catch (err) {
          this.log.warn({ err: messageOf(err) }, 'folder scan failed; keeping what was read');
        }
        this.scans++;
      },
      debounceMs: opts.debounceMs ?? 50,
      rescanMs: opts.rescanMs ?? 10_000,
      log: this.log,
    });
  }

  fileProblems(): FileProblem[] {
    return [...this.problems.values()];
  }

  start(): Promise<void> {
    return this.folder.start();
  }

  stop(): Promise<void> {
    return this.folder.stop();
  }

  /** Reads what changed (coalescing concurrent calls into one more pass). */
  scan(): Promise<void> {
    return this.folder.readNow();
  }

  private async scanOnce(): Promise<void> {
    const files = await listYamlFiles(this.opts.dir);
    const present = new Set<string>();
    for (const f of files) {
      const rel = relative(this.opts.dir, f);
      present.add(rel);
      let sig: string;
      try {
        const st = await stat(f);
        sig = `${st.ino}:${st.size}:${st.mtimeMs}`;
      } catch {
        continue; // vanished between listing and stat
      }
      if (this.seen.get(rel) === sig) continue;
      let text: string;
      try {
        text = await readFile(f, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        this.report({ file: rel, field: '(file)', reason: messageOf(err), code: ConfigCode.Read });
        continue;
      }
      this.seen.set(rel, sig);
      try {
        const objs = parseYamlObjects(rel, text);
        this.problems.delete(rel);
        this.store.replaceOrigin(rel, objs.map((o) => ({ obj: o.obj, doc: o.doc })));
      } catch (err) {
        const e = err instanceof SkeinError ? err : new SkeinError(ConfigCode.Parse, messageOf(err));
        this.report({ file: rel, field: String(e.details?.field ?? '(file)'), reason: String(e.details?.reason ?? e.message), code: e.code });
      }
    }
    for (const rel of [...this.seen.keys()]) {
      if (present.has(rel)) continue;
      this.seen.delete(rel);
      this.problems.delete(rel);
      this.store.replaceOrigin(rel, []);
    }
  }

  private report(p: FileProblem): void {
    this.problems.set(p.file, p);
    this.log.warn({ ...p }, 'config file refused; keeping its last good objects');
  }
}
