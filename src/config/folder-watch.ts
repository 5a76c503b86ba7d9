/**
 * Watching a folder of YAML: fs.watch (recursive) with a debounce, a periodic rescan as a
 * safety net (watches can miss events or be unavailable), and reads that never overlap: a
 * change during a read asks for exactly one more read after it. Used by the agent's folder
 * source and by the controller's.
 */
import { type FSWatcher, watch } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { messageOf } from '../errors.js';
import type { Logger } from '../telemetry/log.js';

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

export class FolderWatch {
  private watcher: FSWatcher | undefined;
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
      const code = this.opts.watchErrorCode ?? 'SKEIN_CONFIG_WATCH';
      try {
        this.watcher = watch(this.opts.dir, { recursive: true }, () => this.schedule());
        this.watcher.on('error', (err) => this.opts.log.warn({ code, err: messageOf(err) }, 'folder watch failed; relying on rescans'));
      } catch (err) {
        this.opts.log.warn({ code, err: messageOf(err) }, 'folder watch unavailable; relying on rescans');
      }
      if (this.opts.rescanMs > 0) {
        this.rescan = setInterval(() => this.schedule(0), this.opts.rescanMs);
        this.rescan.unref();
      }
    }
    await this.readNow();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.watcher?.close();
    this.watcher = undefined;
    if (this.debounce) clearTimeout(this.debounce);
    if (this.rescan) clearInterval(this.rescan);
    await this.reading;
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
      } while (this.again && this.running);
    })().finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }
}
