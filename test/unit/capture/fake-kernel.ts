/**
 * An in-memory stand-in for the native addon and the kernel behind it, so CaptureManager's
 * bookkeeping (slots, tables, pins, adoption, reconcile) is tested without root. Pins are
 * mirrored as empty files under a temporary folder so the manager's fs checks see them.
 */
import { basename, join } from 'node:path';
import { statSync, writeFileSync } from 'node:fs';
import type { LinkInfo, LoadedObject, SkeinNative } from '../../../src/capture/native.js';
import { MAP } from '../../../src/capture/maps.js';

const SIZES: Record<string, [number, number]> = {
  [MAP.stamp]: [4, 8],
  [MAP.config]: [4, 8],
  [MAP.enrolled]: [8, 8],
  [MAP.outboundExcluded]: [16, 1],
  [MAP.originalOnSocket]: [4, 40],
  [MAP.podShare]: [8, 8],
  [MAP.originalByPeer]: [16, 20],
  [MAP.inboundAddresses]: [20, 8],
  [MAP.inboundExcluded]: [8, 1],
  [MAP.inboundSockets]: [4, 8],
  [MAP.pods]: [4, 144],
  [MAP.counters]: [4, 8],
};

interface FakeMap {
  kind: 'map';
  id: number;
  name: string;
  entries: Map<string, Buffer>;
  incompatible?: boolean;
}
interface FakeProg {
  kind: 'prog';
  id: number;
  name: string;
}
interface FakeLink {
  kind: 'link';
  id: number;
  prog: FakeProg;
  type: number;
  cgroupId?: bigint;
  netnsIno?: number;
  detached: boolean;
  target: string;
}
type Obj = FakeMap | FakeProg | FakeLink;

function sysError(code: string, errno: number, syscall: string): Error {
  return Object.assign(new Error(`${syscall} failed: ${code}`), { code, errno: -errno, syscall });
}

export class FakeKernel {
  nextId = 100;
  pins = new Map<string, Obj>();
  fds = new Map<number, Obj | { kind: 'socket'; netnsCookie: bigint }>();
  nextFd = 10;
  links: FakeLink[] = [];
  progs: FakeProg[] = [];
  /** netns path -> cookie; a path missing here is a vanished netns. */
  netns = new Map<string, bigint>([['/proc/self/ns/net', 1n]]);
  /** netns path -> ports an app already listens on there: openListener fails with EADDRINUSE. */
  heldPorts = new Map<string, Set<number>>();

  private fd(obj: Obj | { kind: 'socket'; netnsCookie: bigint }): number {
    const fd = this.nextFd++;
    this.fds.set(fd, obj);
    return fd;
  }

  private get<T extends Obj['kind']>(fd: number, kind: T): Extract<Obj, { kind: T }> {
    const o = this.fds.get(fd);
    if (!o || o.kind !== kind) throw sysError('EBADF', 9, kind);
    return o as Extract<Obj, { kind: T }>;
  }

  pin(path: string, obj: Obj): void {
    this.pins.set(path, obj);
    writeFileSync(path, '');
  }

  mapByName(name: string): FakeMap | undefined {
    for (const o of this.pins.values()) if (o.kind === 'map' && o.name === name) return o;
    return undefined;
  }

  liveLinks(): FakeLink[] {
    return this.links.filter((l) => !l.detached);
  }

  native(): SkeinNative {
    const k = this;
    const checkSizes = (m: FakeMap, key: Buffer, value?: Buffer) => {
      const [ks, vs] = SIZES[m.name] ?? [0, 0];
      if (key.length !== ks) throw Object.assign(new RangeError(`key size for ${m.name}`), { code: 'SKEIN_NATIVE_KEY_SIZE_MISMATCH' });
      if (value && value.length !== vs) throw Object.assign(new RangeError(`value size for ${m.name}`), { code: 'SKEIN_NATIVE_VALUE_SIZE_MISMATCH' });
    };
    return {
      async loadObject(path: string, pinDir: string): Promise<LoadedObject> {
        const maps: Record<string, number> = {};
        for (const name of Object.keys(SIZES)) {
          const pinPath = join(pinDir, name);
          let m = k.pins.get(pinPath) as FakeMap | undefined;
          if (m?.incompatible) throw sysError('EINVAL', 22, "bpf_object__load: couldn't reuse pinned map");
          if (!m) {
            m = { kind: 'map', id: k.nextId++, name, entries: new Map() };
            k.pin(pinPath, m);
          }
          maps[name] = k.fd(m);
        }
        const prog: FakeProg = { kind: 'prog', id: k.nextId++, name: `skein_${basename(path).replace('.bpf.o', '')}` };
        k.progs.push(prog);
        return { handle: prog.id, programs: { [prog.name]: k.fd(prog) }, maps };
      },
      closeObject() {},
      attachCgroup(progFd, cgroupPath) {
        const link: FakeLink = { kind: 'link', id: k.nextId++, prog: k.get(progFd, 'prog'), type: 3, cgroupId: statSync(cgroupPath, { bigint: true }).ino, detached: false, target: cgroupPath };
        k.links.push(link);
        return k.fd(link);
      },
      attachNetns(progFd, netnsPath) {
        if (!k.netns.has(netnsPath)) throw sysError('ENOENT', 2, 'open');
        const link: FakeLink = { kind: 'link', id: k.nextId++, prog: k.get(progFd, 'prog'), type: 5, netnsIno: Number(statSync(netnsPath).ino), detached: false, target: netnsPath };
        k.links.push(link);
        return k.fd(link);
      },
      linkUpdate(linkFd, progFd) {
        const l = k.get(linkFd, 'link');
        if (l.detached) throw sysError('ENOLINK', 67, 'bpf_link_update');
        l.prog = k.get(progFd, 'prog');
      },
      linkDetach(linkFd) {
        k.get(linkFd, 'link').detached = true;
      },
      objPin(fd, path) {
        const o = k.fds.get(fd);
        if (!o || o.kind === 'socket') throw sysError('EBADF', 9, 'bpf_obj_pin');
        k.pin(path, o);
      },
      objGet(path) {
        const o = k.pins.get(path);
        if (!o) throw sysError('ENOENT', 2, 'bpf_obj_get');
        return k.fd(o);
      },
      linkInfo(fd): LinkInfo {
        const l = k.get(fd, 'link');
        return { id: l.id, progId: l.prog.id, type: l.type, cgroupId: l.cgroupId, netnsIno: l.netnsIno };
      },
      progInfo(fd) {
        const p = k.get(fd, 'prog');
        return { id: p.id, name: p.name, type: 0, tag: '' };
      },
      mapInfo(fd) {
        const m = k.get(fd, 'map');
        const [keySize, valueSize] = SIZES[m.name] ?? [0, 0];
        return { id: m.id, name: m.name, type: 1, keySize, valueSize, maxEntries: 4096 };
      },
      mapLookup(fd, key) {
        const m = k.get(fd, 'map');
        checkSizes(m, key);
        return m.entries.get(key.toString('hex')) ?? null;
      },
      mapLookupAndDelete(fd, key, valueSize) {
        const m = k.get(fd, 'map');
        checkSizes(m, key);
        if (valueSize !== SIZES[m.name]?.[1]) throw Object.assign(new RangeError(`value size for ${m.name}`), { code: 'SKEIN_NATIVE_VALUE_SIZE_MISMATCH' });
        const v = m.entries.get(key.toString('hex')) ?? null;
        m.entries.delete(key.toString('hex'));
        return v;
      },
      mapUpdate(fd, key, value) {
        const m = k.get(fd, 'map');
        checkSizes(m, key, value);
        m.entries.set(key.toString('hex'), Buffer.from(value));
      },
      mapDelete(fd, key) {
        const m = k.get(fd, 'map');
        checkSizes(m, key);
        const had = m.entries.delete(key.toString('hex'));
        if (!had && m.name === MAP.inboundSockets) throw sysError('EINVAL', 22, 'bpf_map_delete_elem');
        return had;
      },
      mapNextKey(fd, key) {
        const m = k.get(fd, 'map');
        const keys = [...m.entries.keys()].sort();
        const i = key ? keys.indexOf(key.toString('hex')) + 1 : 0;
        const next = keys[i];
        return next === undefined ? null : Buffer.from(next, 'hex');
      },
      async openListener(netnsPath, _address, port) {
        const cookie = k.netns.get(netnsPath);
        if (cookie === undefined) throw sysError('ENOENT', 2, 'open');
        if (k.heldPorts.get(netnsPath)?.has(port)) throw sysError('EADDRINUSE', 98, 'bind');
        return k.fd({ kind: 'socket', netnsCookie: cookie });
      },
      async openSocket(netnsPath) {
        return k.fd({ kind: 'socket', netnsCookie: k.netns.get(netnsPath) ?? 0n });
      },
      async netnsCookie(netnsPath) {
        const cookie = k.netns.get(netnsPath);
        if (cookie === undefined) throw sysError('ENOENT', 2, 'open');
        return cookie;
      },
      socketNetnsCookie(fd) {
        const s = k.fds.get(fd);
        if (s?.kind !== 'socket') throw sysError('ENOTSOCK', 88, 'getsockopt');
        return s.netnsCookie;
      },
      mountBpffs() {},
      socketPair(): [number, number] {
        throw new Error('the fake kernel makes no socket pairs');
      },
      connectUnix(): number {
        throw new Error('the fake kernel passes no fds');
      },
      sendFds(): void {
        throw new Error('the fake kernel passes no fds');
      },
      recvFds(): { data: Buffer; fds: number[] } {
        throw new Error('the fake kernel passes no fds');
      },
      closeFd(fd) {
        k.fds.delete(fd);
      },
    };
  }
}
