/**
 * KubeFolderSource: a folder of Kubernetes-shaped YAML (the lab's state, or a one-machine
 * install) as a ConfigSource. Reads every *.yaml / *.yml below the folder (multi-document,
 * `kind: List` expanded), translates the lot into one MeshSnapshot, and re-reads on change
 * (fs.watch, debounced) and on a periodic rescan (fs.watch can miss events: editors that
 * rename, bind mounts, overlay filesystems). Any malformed file fails the whole read with a
 * SkeinError naming file, field and reason; the caller keeps its last good snapshot.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { relative } from 'node:path';
import { LineCounter, parseAllDocuments } from 'yaml';
import { messageOf, SkeinError } from '../../errors.js';
import type { Logger } from '../../telemetry/log.js';
import { silentLogger } from '../../telemetry/log.js';
import { FolderWatch, listYamlFiles } from '../folder-watch.js';
import type { MeshSnapshot } from '../model.js';
import type { ConfigSource } from '../source.js';
import type { Obj, SourcedObject } from './objects.js';
import { type TranslateOptions, translate } from './translate.js';
import { ConfigCode } from '../codes.js';

export interface KubeFolderSourceOptions extends TranslateOptions {
  dir: string;
  /** Quiet time after the last fs event before re-reading (ms). Default 100. */
  debounceMs?: number;
  /** Full rescan period as a safety net for missed events (ms); 0 disables. Default 30000. */
  rescanMs?: number;
  /** Watch the folder at all (false: read once at start). Default true. */
  watch?: boolean;
  logger?: Logger;
}

/** Parses one file's text into objects, or throws a SkeinError naming file/line/reason. */
export function parseYamlObjects(file: string, text: string): SourcedObject[] {
  const out: SourcedObject[] = [];
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { prettyErrors: false, lineCounter: lines });
  // parseAllDocuments returns an EmptyStream (not an array) for an empty file.
  if (!Array.isArray(docs)) return out;
  for (const [i, doc] of docs.entries()) {
    const err = doc.errors[0];
    if (err) {
      const line = lines.linePos(err.pos[0]).line;
      throw new SkeinError(ConfigCode.Parse, `${file}: document ${i}${line ? ` line ${line}` : ''}: ${err.message}`, {
        file,
        document: i,
        field: line ? `line ${line}` : `document ${i}`,
        reason: err.message,
      });
    }
    const value: unknown = doc.toJS({ maxAliasCount: 100 });
    if (value === null || value === undefined) continue;
    if (typeof value !== 'object' || Array.isArray(value)) {
      throw new SkeinError(ConfigCode.Invalid, `${file}: document ${i}: expected a Kubernetes object (a mapping)`, {
        file,
        document: i,
        field: '(document)',
        reason: 'expected a mapping',
      });
    }
    const obj = value as Obj;
    if (obj.kind === 'List' || (typeof obj.kind === 'string' && obj.kind.endsWith('List') && Array.isArray(obj.items))) {
      const items = obj.items;
      if (!Array.isArray(items)) {
        throw new SkeinError(ConfigCode.Invalid, `${file}: document ${i}: List without items`, {
          file,
          document: i,
          field: 'items',
          reason: 'expected a list',
        });
      }
      for (const item of items) {
        if (item && typeof item === 'object' && !Array.isArray(item)) out.push({ file, doc: i, obj: item as Obj });
      }
    } else out.push({ file, doc: i, obj });
  }
  return out;
}

export class KubeFolderSource implements ConfigSource {
  private readonly opts: KubeFolderSourceOptions;
  private readonly log: Logger;
  private readonly folder: FolderWatch;
  private seq = 0;
  private lastHash: string | undefined;
  private onSnapshot: ((s: MeshSnapshot) => void) | undefined;
  private onError: ((e: SkeinError) => void) | undefined;

  constructor(opts: KubeFolderSourceOptions) {
    this.opts = opts;
    this.log = opts.logger ?? silentLogger();
    this.folder = new FolderWatch({
      dir: opts.dir,
      read: () => this.readOnce(),
      debounceMs: opts.debounceMs ?? 100,
      rescanMs: opts.rescanMs ?? 30_000,
      watch: opts.watch !== false,
      log: this.log,
    });
  }

  async start(onSnapshot: (s: MeshSnapshot) => void, onError: (e: SkeinError) => void): Promise<void> {
    if (this.folder.isRunning) throw new SkeinError(ConfigCode.SourceStarted, 'KubeFolderSource already started');
    this.onSnapshot = onSnapshot;
    this.onError = onError;
    await this.folder.start();
  }

  stop(): Promise<void> {
    return this.folder.stop();
  }

  /** Reads the folder once and returns the snapshot (or throws); no callbacks. */
  async load(): Promise<MeshSnapshot> {
    const files = await listYamlFiles(this.opts.dir).catch((err: unknown) => {
      throw new SkeinError(ConfigCode.Read, `cannot list ${this.opts.dir}: ${messageOf(err)}`, {
        file: this.opts.dir,
        field: '(folder)',
        reason: messageOf(err),
      });
    });
    const objects: SourcedObject[] = [];
    const hash = createHash('sha256');
    for (const f of files) {
      const rel = relative(this.opts.dir, f);
      let text: string;
      try {
        text = await readFile(f, 'utf8');
      } catch (err) {
        // A file removed between listing and reading is a normal race: the next read sees it gone.
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        throw new SkeinError(ConfigCode.Read, `cannot read ${rel}: ${messageOf(err)}`, {
          file: rel,
          field: '(file)',
          reason: messageOf(err),
        });
      }
      hash.update(rel).update('\0').update(text).update('\0');
      objects.push(...parseYamlObjects(rel, text));
    }
    const digest = hash.digest('hex').slice(0, 12);
    const snapshot = translate(objects, `${++this.seq}-${digest}`, this.opts);
    (snapshot as MeshSnapshot & { [kDigest]?: string })[kDigest] = digest;
    return snapshot;
  }

  /** One read: a new snapshot when the content changed, or the reason it was rejected. */
  private async readOnce(): Promise<void> {
    try {
      const s = await this.load();
      const digest = (s as MeshSnapshot & { [kDigest]?: string })[kDigest];
      delete (s as MeshSnapshot & { [kDigest]?: string })[kDigest];
      if (digest === this.lastHash) return; // unchanged content (periodic rescan)
      this.lastHash = digest;
      this.onSnapshot?.(s);
    } catch (err) {
      // Forget the hash so a later identical good state is emitted again after the fix.
      this.lastHash = undefined;
      const e =
        err instanceof SkeinError
          ? err
          : new SkeinError(ConfigCode.Invalid, messageOf(err), { field: '(unknown)', reason: messageOf(err) });
      this.log.warn({ code: e.code, ...e.details }, 'config folder rejected; keeping last good snapshot');
      this.onError?.(e);
    }
  }
}

const kDigest = Symbol('skein.folderDigest');
