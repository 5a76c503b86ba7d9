/**
 * skein's BPF programs on one node: loading the objects (maps pinned by name, shared by all
 * of them), attaching the cgroup hooks at the cgroup v2 root and sk_lookup in a pod's netns,
 * and adopting the links a previous agent pinned by swapping their programs atomically
 * (bpf_link_update), so restarts never stack copies.
 */
import { existsSync, readdirSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { SkeinError } from '../errors.js';
import type { Logger } from '../telemetry/log.js';
import { CaptureCode } from './codes.js';
import { captureError, errnoName, isIncompatiblePin } from './errors.js';
import type { MapName } from './maps.js';
import type { CgroupAttachType, LoadedObject, SkeinNative } from './native.js';
import type { ResolvedCaptureOptions } from './options.js';
import type { PinFolder } from './pins.js';

export const CGROUP_HOOKS: ReadonlyArray<{ hook: CgroupAttachType; object: string; program: string }> = [
  { hook: 'connect4', object: 'connect4', program: 'skein_connect4' },
  { hook: 'connect6', object: 'connect6', program: 'skein_connect6' },
  { hook: 'sock_ops', object: 'sock_ops', program: 'skein_sock_ops' },
];
const SK_LOOKUP = { object: 'sk_lookup', program: 'skein_sk_lookup' };
const SK_LOOKUP_PIN = /^sk_lookup_(\d+)$/;

export class BpfPrograms {
  private objects: LoadedObject[] = [];
  private programs: Record<string, number> = {};
  private maps: Partial<Record<MapName, number>> = {};

  constructor(
    private readonly native: () => SkeinNative,
    private readonly options: ResolvedCaptureOptions,
    private readonly pins: PinFolder,
    private readonly log: Logger,
  ) {}

  get loaded(): boolean {
    return this.objects.length > 0;
  }

  map(name: MapName): number {
    const fd = this.maps[name];
    if (fd === undefined) throw new SkeinError(CaptureCode.NotStarted, 'capture is not started');
    return fd;
  }

  async load(): Promise<void> {
    const names = [...CGROUP_HOOKS.map((h) => h.object), SK_LOOKUP.object];
    for (const name of names) {
      const path = join(this.options.bpfObjectDir, `${name}.bpf.o`);
      if (!existsSync(path)) {
        throw new SkeinError(CaptureCode.BpfObjectMissing, `BPF object ${path} not found (run \`make build-bpf\`)`, { path });
      }
      let obj: LoadedObject;
      try {
        obj = await this.native().loadObject(path, this.pins.mapsDir);
      } catch (err) {
        if (isIncompatiblePin(err)) {
          this.close();
          this.pins.staleOrWipe(`pinned maps in ${this.pins.mapsDir} do not match ${name}.bpf.o`, undefined);
          this.pins.makeDirs();
          return this.load();
        }
        this.close();
        throw captureError(CaptureCode.LoadFailed, `cannot load ${path}`, err, { path });
      }
      this.objects.push(obj);
      Object.assign(this.programs, obj.programs);
      // Every object declares all maps (pinned by name), so they are the same maps.
      if (this.objects.length === 1) this.maps = obj.maps as Partial<Record<MapName, number>>;
    }
  }

  close(): void {
    for (const o of this.objects) this.native().closeObject(o.handle);
    this.objects = [];
    this.programs = {};
    this.maps = {};
  }

  private program(name: string): number {
    const fd = this.programs[name];
    if (fd === undefined) throw new SkeinError(CaptureCode.LoadFailed, `program ${name} missing from the BPF objects`);
    return fd;
  }

  /** Attach (or adopt) connect4, connect6 and sock_ops at `cgroupPath`. */
  attachCgroupHooks(cgroupPath: string): void {
    for (const h of CGROUP_HOOKS) this.attachCgroupHook(h.hook, this.program(h.program), cgroupPath);
  }

  /** Adopt the pinned link (swap its program) when it is attached here, else attach anew. */
  private attachCgroupHook(hook: CgroupAttachType, progFd: number, cgroupPath: string): void {
    const native = this.native();
    const pin = join(this.pins.linksDir, hook);
    const cgroupId = statSync(cgroupPath, { bigint: true }).ino;
    if (existsSync(pin)) {
      const fd = native.objGet(pin);
      try {
        const info = native.linkInfo(fd);
        if (info.cgroupId === cgroupId) {
          native.linkUpdate(fd, progFd);
          this.log.info({ hook, link: info.id }, 'adopted pinned link');
          return;
        }
        this.log.warn({ hook, link: info.id }, 'pinned link is attached elsewhere; replacing it');
        native.linkDetach(fd);
      } catch (err) {
        this.log.warn({ hook, err: errnoName(err) }, 'pinned link unusable; replacing it');
      } finally {
        native.closeFd(fd);
      }
      unlinkSync(pin);
    }
    let fd: number;
    try {
      fd = native.attachCgroup(progFd, cgroupPath, hook);
    } catch (err) {
      throw captureError(CaptureCode.AttachFailed, `cannot attach ${hook} at ${cgroupPath}`, err, { hook });
    }
    try {
      native.objPin(fd, pin);
    } finally {
      native.closeFd(fd);
    }
  }

  /**
   * After a restart: point every pod's sk_lookup link at the program just loaded. Returns the
   * slots whose link is defunct (their netns is gone): the caller cleans them.
   */
  adoptPodLinks(): number[] {
    const native = this.native();
    const defunct: number[] = [];
    for (const name of readdirSync(this.pins.linksDir)) {
      const m = SK_LOOKUP_PIN.exec(name);
      if (!m) continue;
      const slot = Number(m[1]);
      const fd = native.objGet(join(this.pins.linksDir, name));
      try {
        native.linkUpdate(fd, this.program(SK_LOOKUP.program));
      } catch (err) {
        // ENOLINK: the netns is gone and the link with it.
        this.log.info({ slot, err: errnoName(err) }, 'pinned sk_lookup link is defunct; cleaning the slot');
        defunct.push(slot);
      } finally {
        native.closeFd(fd);
      }
    }
    return defunct;
  }

  /** Attach sk_lookup in a pod's netns for `slot`, or swap the program of its pinned link. */
  attachSkLookup(slot: number, netnsPath: string, ino: bigint): void {
    const native = this.native();
    const pin = this.pins.skLookupPin(slot);
    const prog = this.program(SK_LOOKUP.program);
    if (existsSync(pin)) {
      const fd = native.objGet(pin);
      try {
        const info = native.linkInfo(fd);
        if (info.netnsIno !== undefined && BigInt(info.netnsIno) === ino) {
          native.linkUpdate(fd, prog);
          return;
        }
        native.linkDetach(fd);
      } catch {
        // defunct (netns gone): replaced below
      } finally {
        native.closeFd(fd);
      }
      unlinkSync(pin);
    }
    const fd = native.attachNetns(prog, netnsPath);
    try {
      native.objPin(fd, pin);
    } finally {
      native.closeFd(fd);
    }
  }

  /** Detach and unpin a pod's sk_lookup link, if any. */
  detachSkLookup(slot: number): void {
    const native = this.native();
    const pin = this.pins.skLookupPin(slot);
    if (!existsSync(pin)) return;
    try {
      const fd = native.objGet(pin);
      try {
        native.linkDetach(fd);
      } catch {
        // already defunct
      } finally {
        native.closeFd(fd);
      }
    } finally {
      unlinkSync(pin);
    }
  }

  /** Ids of the loaded programs (bpftool prog show id ...). */
  programIds(): Record<string, number> {
    const ids: Record<string, number> = {};
    for (const [name, fd] of Object.entries(this.programs)) ids[name] = this.native().progInfo(fd).id;
    return ids;
  }
}
