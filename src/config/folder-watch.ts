/**
 * Watching a folder of YAML: one plain fs.watch per directory with a debounce, a periodic
 * rescan as a safety net, and reads that never overlap: a change during a read asks for
 * exactly one more read after it. Used by the agent's folder source and by the controller's.
 *
 * Not `fs.watch(dir, { recursive: true })`: on Linux, Node's recursive watch watches files
 * one by one and misses a file replaced by rename (write a temp file, rename it over), which
 * is how the lab and most tools write: measured, it missed 29 of 30 such updates, leaving
 * changes to the rescan seconds later. A directory's own watch sees every rename into it.
 */
import { type FSWatcher, watch } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { messageOf } from '../errors.js';
import type { Logger } from '../telemetry/log.js';
import { ConfigCode } from './codes.js';

/** Every *.yaml / *.yml below `dir` (hidden entries skipped), sorted. */
export async function listYamlFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      if (e.name.startsWith('.')) continue; // editor swap files, hidden state
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if ((e.isFile() || e.isSymbolicLink()) && /\.ya?ml$/i.test(e.name)) out.push(p);
    }
  };
  await walk(dir);
  return out.sort();
}

export interface FolderWatchOptions {
  dir: string;
  /** One read of the folder; it reports its own errors (a throw is only logged). */
  read: () => Promise<void>;
  /** Quiet time after an fs event before reading (ms). */
  debounceMs: number;
  /** Rescan period (ms); 0 disables. */
  rescanMs: number;
  /** false: no fs.watch and no rescans, reads only on start() / readNow(). Default true. */
  watch?: boolean;
  log: Logger;
  /** Log code for a watch that failed or is unavailable. */
  watchErrorCode?: string;
}

/** Every directory at or below `dir` (hidden ones skipped). */
async function listDirs(dir: string): Promise<string[]> {
  const out = [dir];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.isDirectory() && !e.name.startsWith('.')) out.push(...(await listDirs(join(dir, e.name))));
  }
  return out;
}

export class FolderWatch {
  private readonly watchers = new Map<string, FSWatcher>();
  private debounce: NodeJS.Timeout | undefined;
  private rescan: NodeJS.Timeout | undefined;
  private reading: Promise<void> | undefined;
  private again = false;
  private running = false;

  constructor(private readonly opts: FolderWatchOptions) {}

  get isRunning(): boolean {
    return this.running;
  }

  /** Starts watching and resolves after the first read. */
  async start(): Promise<void> {
    this.running = true;
    if (this.opts.watch !== false) {
      await this.syncWatchers();
      if (this.opts.rescanMs > 0) {
        this.rescan = setInterval(() => this.schedule(0), this.opts.rescanMs);
        this.rescan.unref();
      }
    }
    await this.readNow();
  }

  async stop(): Promise<void> {
    this.running = false;
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
    if (this.debounce) clearTimeout(this.debounce);
    if (this.rescan) clearInterval(this.rescan);
    await this.reading;
  }

  /** One watch per directory of the tree: added for new ones, closed for vanished ones. */
  private async syncWatchers(): Promise<void> {
    const code = this.opts.watchErrorCode ?? ConfigCode.WatchFailed;
    let dirs: string[];
    try {
      dirs = await listDirs(this.opts.dir);
    } catch (err) {
      this.opts.log.warn({ code, err: messageOf(err) }, 'cannot list the folder to watch; relying on rescans');
      return;
    }
    const want = new Set(dirs);
    for (const [d, w] of this.watchers) {
      if (!want.has(d)) {
        w.close();
        this.watchers.delete(d);
      }
    }
    for (const d of dirs) {
      if (this.watchers.has(d)) continue;
      try {
        const w = watch(d, () => this.schedule());
        w.on('error', (err) => {
          this.opts.log.warn({ code, dir: d, err: messageOf(err) }, 'folder watch failed; relying on rescans');
          w.close();
          this.watchers.delete(d);
        });
        this.watchers.set(d, w);
      } catch (err) {
        this.opts.log.warn({ code, dir: d, err: messageOf(err) }, 'folder watch unavailable; relying on rescans');
      }
    }
  }

  schedule(delay = this.opts.debounceMs): void {
    if (!this.running) return;
    if (this.debounce) clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      void this.readNow();
    }, delay);
    this.debounce.unref();
  }

  /** Reads now, or once more after the read in progress (concurrent calls coalesce). */
  readNow(): Promise<void> {
    if (this.reading) {
      this.again = true;
      return this.reading;
    }
    this.reading = (async () => {
      do {
        this.again = false;
        try {
          await this.opts.read();
        } catch (err) {
          this.opts.log.warn({ err: messageOf(err) }, 'folder read failed; keeping what was read');
        }
        if (this.opts.watch !== false && this.running) await this.syncWatchers(); // new or removed subfolders
      } while (this.again && this.running);
    })().finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }
}
