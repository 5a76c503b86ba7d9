/**
 * The agent's pin folder on bpffs (pinRoot): maps/ and links/, the layout stamp, and what to
 * do with pins another build left (wipe them or refuse). Mounts bpffs when allowed.
 *
 *   maps/<map>             every map (libbpf pins them by name; see bpf/skein.h)
 *   links/connect4|connect6|sock_ops   the cgroup links
 *   links/sk_lookup_<slot> one netns link per enrolled pod
 * maps/skein_stamp holds the pin layout version; other layouts are stale pins.
 */
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { SkeinError } from '../errors.js';
import type { Logger } from '../telemetry/log.js';
import { CaptureCode } from './codes.js';
import { captureError, errnoName } from './errors.js';
import { decodeStamp, MAP, PIN_LAYOUT, u32Key } from './maps.js';
import type { SkeinNative } from './native.js';
import type { ResolvedCaptureOptions } from './options.js';

export class PinFolder {
  constructor(
    private readonly native: () => SkeinNative,
    private readonly options: ResolvedCaptureOptions,
    private readonly log: Logger,
  ) {}

  get root(): string {
    return this.options.pinRoot;
  }

  get linksDir(): string {
    return join(this.options.pinRoot, 'links');
  }

  get mapsDir(): string {
    return join(this.options.pinRoot, 'maps');
  }

  /** The pin of a pod's sk_lookup link. */
  skLookupPin(slot: number): string {
    return join(this.linksDir, `sk_lookup_${slot}`);
  }

  makeDirs(): void {
    mkdirSync(this.mapsDir, { recursive: true });
    mkdirSync(this.linksDir, { recursive: true });
  }

  mountBpffs(): void {
    const at = '/sys/fs/bpf';
    if (!this.options.mountBpffs || !(this.options.pinRoot === at || this.options.pinRoot.startsWith(`${at}/`))) {
      throw new SkeinError(
        CaptureCode.BpffsMissing,
        `no bpf filesystem holds ${this.options.pinRoot} (mount -t bpf bpf /sys/fs/bpf)`,
        { pinRoot: this.options.pinRoot },
      );
    }
    try {
      mkdirSync(at, { recursive: true });
      this.native().mountBpffs(at);
      this.log.info({ at }, 'mounted bpffs');
    } catch (err) {
      throw captureError(CaptureCode.BpffsMissing, `cannot mount bpffs at ${at}`, err, { at });
    }
  }

  /** Pins of another layout (or of something else) in pinRoot: wipe them or refuse. */
  checkStale(): void {
    const root = this.options.pinRoot;
    if (!existsSync(root) || readdirSync(root).length === 0) return;
    let found: number | undefined;
    const stampPin = join(this.mapsDir, MAP.stamp);
    if (existsSync(stampPin)) {
      const native = this.native();
      const fd = native.objGet(stampPin);
      try {
        const v = native.mapLookup(fd, u32Key(0));
        found = v && v.length >= 4 ? decodeStamp(v).layout : undefined;
      } catch {
        found = undefined;
      } finally {
        native.closeFd(fd);
      }
    }
    if (found === PIN_LAYOUT) return;
    this.staleOrWipe(`pins in ${root} have layout ${found ?? 'unknown'}, this agent writes layout ${PIN_LAYOUT}`, found);
  }

  staleOrWipe(message: string, found: number | undefined): void {
    if (!this.options.replaceStalePins) {
      throw new SkeinError(
        CaptureCode.StalePins,
        `${message}; remove them (skein capture uninstall, or rm -r the folder) or start with replaceStalePins`,
        { pinRoot: this.options.pinRoot, found, expected: PIN_LAYOUT },
      );
    }
    this.log.warn({ pinRoot: this.options.pinRoot, found }, 'replacing stale pins');
    this.wipe();
  }

  /** Detach every pinned link, then remove the whole pin folder. */
  wipe(): void {
    const links = this.linksDir;
    if (existsSync(links)) {
      const native = this.native();
      for (const name of readdirSync(links)) {
        const pin = join(links, name);
        try {
          const fd = native.objGet(pin);
          try {
            native.linkDetach(fd);
          } finally {
            native.closeFd(fd);
          }
        } catch (err) {
          this.log.warn({ pin, err: errnoName(err) }, 'cannot detach pinned link');
        }
      }
    }
    rmSync(this.options.pinRoot, { recursive: true, force: true });
  }
}
