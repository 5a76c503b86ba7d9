/**
 * The native addon (native/, built to build/native/Release/skein_native.node): a thin, typed
 * door to libbpf, setns and a few socket calls. No policy lives there; CaptureManager decides.
 *
 * Failures are Errors with `code` = errno name (e.g. 'ENOENT'), `errno` = -errno (Node's
 * convention) and `syscall`; bad arguments are TypeErrors with code SKEIN_NATIVE_ARG. Every
 * map operation checks key and value lengths against the map's own sizes first (RangeError,
 * code SKEIN_NATIVE_KEY_SIZE_MISMATCH / SKEIN_NATIVE_VALUE_SIZE_MISMATCH, with `map`,
 * `expected`, `actual`), so the kernel never reads or writes past a Buffer; an fd that is not a
 * BPF map (a program, a socket) is EBADF before any map syscall, so another object's info is
 * never read as a map's sizes. Nothing here waits on the network: connects from a pod's netns
 * take an unconnected socket (openSocket) and connect on the event loop (netns-connect.ts).
 * Calls that enter a network namespace run on a thread created for that call (never a libuv
 * pool thread) and return Promises; so does loading an object (the verifier can take a while).
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { SkeinError } from '../errors.js';
import { CaptureCode } from './codes.js';

/** A program's fd, keyed by its function name in the .bpf.c file. */
export type ProgramFds = Record<string, number>;
/** A map's fd, keyed by map name. */
export type MapFds = Record<string, number>;

export interface LoadedObject {
  /** Pass to closeObject; program and map fds stay valid until then. */
  handle: number;
  programs: ProgramFds;
  maps: MapFds;
}

export type CgroupAttachType = 'connect4' | 'connect6' | 'sock_ops';

export interface LinkInfo {
  id: number;
  progId: number;
  /** enum bpf_link_type: 3 = cgroup, 5 = netns. */
  type: number;
  attachType?: number;
  /** cgroup links: id of the cgroup (the inode number of its cgroup2 directory). */
  cgroupId?: bigint;
  /** netns links: inode number of the namespace. */
  netnsIno?: number;
}

export interface ProgInfo {
  id: number;
  name: string;
  type: number;
  tag: string;
}

export interface MapInfo {
  id: number;
  name: string;
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
}

/** Error thrown by the addon. */
export interface NativeError extends Error {
  code: string;
  errno?: number;
  syscall?: string;
}

export interface SkeinNative {
  /** Open and load an object; its maps are pinned by name under mapPinDir (reused when pinned). */
  loadObject(objectPath: string, mapPinDir: string): Promise<LoadedObject>;
  closeObject(handle: number): void;
  /** bpf_link of a cgroup program at a cgroup v2 directory; returns the link fd. */
  attachCgroup(progFd: number, cgroupPath: string, attachType: CgroupAttachType): number;
  /** bpf_link of an sk_lookup program in the netns at netnsPath; returns the link fd. */
  attachNetns(progFd: number, netnsPath: string): number;
  /** Atomically replace the program behind a link. */
  linkUpdate(linkFd: number, progFd: number): void;
  /** Detach a link now, whoever else holds it or its pin. */
  linkDetach(linkFd: number): void;
  objPin(fd: number, path: string): void;
  objGet(path: string): number;
  linkInfo(linkFd: number): LinkInfo;
  progInfo(progFd: number): ProgInfo;
  mapInfo(mapFd: number): MapInfo;
  /** Per-CPU maps answer every possible CPU's slot, each 8-byte aligned, one after another. */
  mapLookup(mapFd: number, key: Buffer): Buffer | null;
  /**
   * Read and remove an entry in one map syscall (hash maps); valueSize must be the map's
   * value size (else SKEIN_NATIVE_VALUE_SIZE_MISMATCH). Null when absent.
   */
  mapLookupAndDelete(mapFd: number, key: Buffer, valueSize: number): Buffer | null;
  /** flags: 0 = any, 1 = only new, 2 = only existing. */
  mapUpdate(mapFd: number, key: Buffer, value: Buffer, flags?: number): void;
  /** True when an entry was removed. */
  mapDelete(mapFd: number, key: Buffer): boolean;
  /** Iterate keys: start with null; null at the end. */
  mapNextKey(mapFd: number, key: Buffer | null): Buffer | null;
  /** A listening TCP socket made inside the netns (SO_REUSEADDR; '::' is dual-stack). */
  openListener(netnsPath: string, address: string, port: number, backlog: number): Promise<number>;
  /** An unconnected TCP socket made inside the netns, with SO_MARK = mark (0: no mark). */
  openSocket(netnsPath: string, family: 4 | 6, mark: number): Promise<number>;
  /** SO_NETNS_COOKIE of the namespace at netnsPath. */
  netnsCookie(netnsPath: string): Promise<bigint>;
  /** SO_NETNS_COOKIE of a socket this process holds. */
  socketNetnsCookie(fd: number): bigint;
  mountBpffs(path: string): void;
  closeFd(fd: number): void;
  /** A connected AF_UNIX stream socket pair (non-blocking, close-on-exec). */
  socketPair(): [number, number];
  /** A blocking AF_UNIX stream socket connected to `path` (close-on-exec). */
  connectUnix(path: string): number;
  /** One sendmsg of `data` with `fds` attached (SCM_RIGHTS, at most 253), waiting up to timeoutMs for room. */
  sendFds(sockFd: number, data: Buffer, fds: number[], timeoutMs: number): void;
  /** One recvmsg (up to maxBytes) with the fds that came with those bytes; empty data: the peer closed. ETIMEDOUT past timeoutMs. */
  recvFds(sockFd: number, maxBytes: number, timeoutMs: number): { data: Buffer; fds: number[] };
}

/** Where the addon is looked for: $SKEIN_NATIVE_ADDON, else build/native/Release/ of this checkout. */
export function defaultAddonPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SKEIN_NATIVE_ADDON) return env.SKEIN_NATIVE_ADDON;
  // src/capture/native.ts and dist/capture/native.js are both two levels below the root.
  return fileURLToPath(new URL('../../build/native/Release/skein_native.node', import.meta.url));
}

const loaded = new Map<string, SkeinNative>();

/** The addon at `path` (loaded once per path). */
export function loadNative(path: string = defaultAddonPath()): SkeinNative {
  const cached = loaded.get(path);
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  let addon: SkeinNative;
  try {
    addon = require(path) as SkeinNative;
  } catch (err) {
    throw new SkeinError(
      CaptureCode.NativeMissing,
      `cannot load the native addon at ${path} (run \`make build-native\`, or set SKEIN_NATIVE_ADDON)`,
      { path },
      { cause: err },
    );
  }
  loaded.set(path, addon);
  return addon;
}
