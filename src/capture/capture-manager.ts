/**
 * CaptureManager: the lifecycle of skein's BPF programs on one node and the enrolment of
 * pods into capture.
 *
 * start()   checks the host, loads the programs, and attaches connect4/connect6/sock_ops at
 *           the cgroup v2 root — or adopts the links a previous agent pinned, swapping their
 *           programs atomically (bpf_link_update), so restarts never stack copies.
 * enroll()  opens the pod's outbound (15001), inbound plaintext (15006) and tunnel (15008)
 *           listeners inside its netns (fds for the proxy to serve), fills the maps and
 *           attaches sk_lookup in the netns; the netns cookie goes into the enrolled map last,
 *           once the outbound listener exists.
 * release() reverses it; reconcile() releases pods that are gone (also ones a previous
 *           agent enrolled), found through the pinned slot registry (skein_pods).
 *
 * The jobs around it have their own modules: the pin folder and bpffs (pins.ts), loading and
 * attaching the programs (programs.ts), reading original destinations (original-destination.ts).
 *
 * The listener fds belong to the caller from enroll() on. To release a pod: release() first,
 * keep serving the listeners for a short drain (connects redirected just before the release
 * may still sit in the accept queue; closing at once resets them), then close the servers.
 * Closing the 15006 socket also drops it from the SOCKMAP.
 */
import { existsSync, statSync } from 'node:fs';
import { Socket } from 'node:net';
import { SkeinError } from '../errors.js';
import { type Logger, silentLogger } from '../telemetry/log.js';
import { captureError, errnoName } from './errors.js';
import { checkHost, type HostFacts, readHostFacts } from './host.js';
import type { IpFamily, OriginalDestination } from '../config/address.js';
import { COUNTER, type CounterName, decodeInboundPod, decodeNetnsPort, decodePodRecord, decodeSlotPort, encodeConfig, encodeEnrolled, encodeInboundPod, encodeNetnsPort, encodePodAddr, encodePodRecord, encodeSlotPort, encodeSocketFd, encodeStamp, MAP, type MapName, PIN_LAYOUT, PRESENT, type PodRecord, sumPerCpuU64, u32Key, u64Key } from './maps.js';
import { loadNative, type SkeinNative } from './native.js';
import { type NetnsConnectOptions, NetnsConnector, type NetnsConnectorOptions, type NetnsConnectStats } from './netns-connect.js';
import { inboundDestination, readOriginalDestination } from './original-destination.js';
import { PinFolder } from './pins.js';
import { BpfPrograms } from './programs.js';
import { type CaptureOptions, type CapturePod, type ResolvedCaptureOptions, resolveCaptureOptions, validateCapturePod } from './options.js';
import { CaptureCode } from './codes.js';


/** The listening sockets of one pod, as fds for net.Server.listen({ fd }). */
export interface PodListeners {
  /** Receives the pod's redirected outbound connections (original destination: originalDestination()). */
  outbound: number;
  /** Receives inbound plaintext steered by sk_lookup (original destination: getsockname). */
  inboundPlaintext: number;
  /** The tunnel (HBONE) port, reached by normal lookup on the pod's addresses. */
  tunnel: number;
  /** Address they are bound to inside the pod netns. */
  address: string;
}

/** A pod in the capture maps: served (EnrolledPod) or held refusing (`held`). */
export interface CapturedPod {
  uid: string;
  netnsPath: string;
  netnsCookie: bigint;
  netnsIno: bigint;
  /** Index of the pod in the inbound SOCKMAP and the pinned registry. */
  slot: number;
  ips: string[];
  excludeOutboundPorts: number[];
  excludeInboundPorts: number[];
  /** Absent while the pod is held refusing (`held`): it is captured but nothing serves it. */
  listeners: PodListeners | undefined;
  /**
   * Why the pod is captured but refusing: a port the agent needs is held by the app. Its
   * connects fail (EPERM, connect4/6 with outbound port 0) and inbound plaintext is dropped
   * (sk_lookup finds no agent socket) until a later enroll() opens the listeners.
   */
  held?: PortHeld;
}

/** A captured pod with its listeners, to be served. */
export interface EnrolledPod extends CapturedPod {
  listeners: PodListeners;
}

/**
 * A pod's listening sockets as a previous agent handed them over (agent upgrade): the same
 * kernel sockets, received as new fds of this process.
 */
export interface HandedListeners {
  uid: string;
  netnsCookie: bigint;
  slot: number;
  listeners: PodListeners;
}

/** Passing fds to another agent process over a unix socket (SCM_RIGHTS); see native.ts. */
export type FdPassing = Pick<SkeinNative, 'connectUnix' | 'sendFds' | 'recvFds' | 'closeFd'>;

export interface PortHeld {
  code: string;
  port: number | undefined;
  reason: string;
}

export interface CaptureDeps {
  native?: SkeinNative;
  logger?: Logger;
  hostFacts?: () => HostFacts;
  /** Connects from inside pod netns (connectFromAgent): per-netns cap, queue, timeout. */
  connector?: NetnsConnectorOptions;
}

const MAX_SLOTS = 4096; // SKEIN_MAX_PODS in bpf/skein.h

/** The enrolled map's outbound port that tells connect4/6 to refuse the pod's connects (EPERM). */
const REFUSE_OUTBOUND = 0;

/** The pod with its listeners, or SKEIN_CAPTURE_PORT_HELD when it is held refusing. */
function servedOrHeld(pod: CapturedPod): EnrolledPod {
  if (pod.held || !pod.listeners) {
    throw new SkeinError(CaptureCode.PortHeld, `pod ${pod.uid} is captured but refusing: ${pod.held?.reason ?? 'no listeners'}`, { uid: pod.uid, port: pod.held?.port, held: pod.held });
  }
  return pod as EnrolledPod;
}

/** A listener failure because the app holds the port (EADDRINUSE): the pod is held refusing. */
function heldPortOf(err: unknown): PortHeld | undefined {
  if (!(err instanceof SkeinError) || err.code !== CaptureCode.ListenFailed || err.details?.errno === undefined) return undefined;
  if (errnoName(err.cause) !== 'EADDRINUSE') return undefined;
  const port = typeof err.details.port === 'number' ? err.details.port : undefined;
  return { code: CaptureCode.PortHeld, port, reason: `port ${port ?? '?'} is already held in the pod's network namespace (EADDRINUSE)` };
}

export class CaptureManager {
  readonly options: ResolvedCaptureOptions;
  private readonly log: Logger;
  private readonly deps: CaptureDeps;
  private nativeAddon: SkeinNative | undefined;
  private connector: NetnsConnector | undefined;
  private readonly pins: PinFolder;
  private readonly programs: BpfPrograms;
  private cgroupPath = '';
  private ownNetnsCookie: bigint | undefined;
  private readonly pods = new Map<string, CapturedPod>();
  /** Listeners a previous agent handed over, by pod uid, until enroll() takes them. */
  private readonly handed = new Map<string, HandedListeners>();
  /** Every mutation runs in this chain, one at a time (enroll/release/reconcile may race). */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(options: CaptureOptions = {}, deps: CaptureDeps = {}) {
    this.options = resolveCaptureOptions(options);
    this.deps = deps;
    this.log = deps.logger ?? silentLogger();
    this.pins = new PinFolder(() => this.native, this.options, this.log);
    this.programs = new BpfPrograms(() => this.native, this.options, this.pins, this.log);
  }

  private get native(): SkeinNative {
    this.nativeAddon ??= this.deps.native ?? loadNative();
    return this.nativeAddon;
  }

  get started(): boolean {
    return this.programs.loaded;
  }

  /** The cgroup v2 directory the cgroup programs are attached at (after start). */
  get attachedCgroup(): string {
    return this.cgroupPath;
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private map(name: MapName): number {
    return this.programs.map(name);
  }

  /** Host checks, load programs, attach or adopt the cgroup links, adopt pods' sk_lookup links. */
  start(): Promise<void> {
    return this.serial(async () => {
      if (this.started) return;
      const o = this.options;
      const host = checkHost((this.deps.hostFacts ?? readHostFacts)(), o.pinRoot);
      if (!host.bpffs) this.pins.mountBpffs();
      this.cgroupPath = o.cgroupPath ?? host.cgroup2Root;
      if (!existsSync(this.cgroupPath)) {
        throw new SkeinError(CaptureCode.Cgroup2Missing, `cgroup directory ${this.cgroupPath} does not exist`, {
          cgroupPath: this.cgroupPath,
        });
      }
      this.pins.checkStale();
      this.pins.makeDirs();
      await this.programs.load();
      this.native.mapUpdate(this.map(MAP.stamp), u32Key(0), encodeStamp(PIN_LAYOUT));
      this.native.mapUpdate(this.map(MAP.config), u32Key(0), encodeConfig(o.agentMark, o.podShare));
      this.programs.attachCgroupHooks(this.cgroupPath);
      for (const slot of this.programs.adoptPodLinks()) this.purgeSlot(slot);
      this.log.info({ pinRoot: o.pinRoot, cgroup: this.cgroupPath, programs: this.programIds() }, 'capture started');
    });
  }

  /** Ids of the loaded programs (bpftool prog show id ...). */
  programIds(): Record<string, number> {
    return this.programs.programIds();
  }

  /**
   * What the programs counted in the kernel (summed over CPUs; kept in the pinned map, so
   * since the pins were made, not since this process started). Zeros before start().
   */
  counters(): Record<CounterName, number> {
    const out = Object.fromEntries(Object.keys(COUNTER).map((k) => [k, 0])) as Record<CounterName, number>;
    if (!this.started) return out;
    const fd = this.map(MAP.counters);
    for (const [name, index] of Object.entries(COUNTER) as [CounterName, number][]) {
      const v = this.native.mapLookup(fd, u32Key(index));
      if (v) out[name] = Number(sumPerCpuU64(v));
    }
    return out;
  }

  /** Pods enrolled by this agent process. */
  enrolled(): CapturedPod[] {
    return [...this.pods.values()];
  }

  /** Capture a pod: listeners in its netns, maps, sk_lookup. Idempotent for the same netns. */
  /**
   * Capture a pod and open its listeners. When the app already holds one of their ports
   * (EADDRINUSE) the pod is still captured, refusing (see CapturedPod.held), and this rejects
   * with SKEIN_CAPTURE_PORT_HELD: the caller must not release it. A later enroll() of the same
   * pod tries the ports again.
   */
  enroll(input: CapturePod): Promise<EnrolledPod> {
    const pod = validateCapturePod(input);
    return this.serial(async () => {
      if (!this.started) throw new SkeinError(CaptureCode.NotStarted, 'capture is not started');
      const { cookie, ino } = await this.netnsIdentity(pod.netnsPath, pod.uid);
      this.ownNetnsCookie ??= await this.native.netnsCookie('/proc/self/ns/net');
      if (cookie === this.ownNetnsCookie) {
        // A host-network pod shares the agent's netns: capturing it would capture the agent.
        throw new SkeinError(CaptureCode.HostNetworkPod, `pod ${pod.uid} shares the agent's network namespace; not captured`, {
          uid: pod.uid,
          netnsPath: pod.netnsPath,
        });
      }
      const current = this.pods.get(pod.uid);
      if (current && current.netnsCookie === cookie) {
        this.writePodTables(current.slot, cookie, pod);
        Object.assign(current, { ips: pod.ips, excludeOutboundPorts: pod.excludeOutboundPorts, excludeInboundPorts: pod.excludeInboundPorts });
        if (current.held) await this.serveHeld(current);
        return servedOrHeld(current);
      }
      if (current) this.releaseNow(current.uid); // same uid in a new netns: a restarted pod

      const registry = this.readRegistry();
      let slot = [...registry].find(([, r]) => r.uid === pod.uid)?.[0];
      if (slot !== undefined && registry.get(slot)?.netnsCookie !== cookie) {
        this.purgeSlot(slot); // left by a previous agent for an older netns of this pod
        registry.delete(slot);
      }
      slot ??= this.freeSlot(registry);

      // A previous agent's sockets for this very netns (upgrade): serve those, so the pod's
      // ports never close. The SOCKMAP already holds that 15006 socket: it is left as it is.
      const handed = this.takeHanded(pod.uid, cookie);
      // A port the app already holds does not release the pod to plaintext: it is captured
      // refusing (no agent socket for sk_lookup, connects refused) and served once it is free.
      let listeners: PodListeners | undefined = handed?.listeners;
      let held: PortHeld | undefined;
      if (!listeners) {
        try {
          listeners = await this.openListeners(pod.netnsPath);
        } catch (err) {
          held = heldPortOf(err);
          if (!held) throw err;
        }
      }
      try {
        const record: PodRecord = { netnsCookie: cookie, netnsIno: ino, uid: pod.uid };
        this.native.mapUpdate(this.map(MAP.pods), u32Key(slot), encodePodRecord(record));
        this.writePodTables(slot, cookie, pod);
        if (listeners && !handed) this.native.mapUpdate(this.map(MAP.inboundSockets), u32Key(slot), encodeSocketFd(listeners.inboundPlaintext));
        else if (!listeners) this.clearInboundSocket(slot);
        this.programs.attachSkLookup(slot, pod.netnsPath, ino);
        // Last: from here on the pod's connect() calls land on the outbound listener (or, held, are refused).
        this.native.mapUpdate(this.map(MAP.enrolled), u64Key(cookie), encodeEnrolled(listeners ? this.options.outboundPort : REFUSE_OUTBOUND));
      } catch (err) {
        this.purgeSlot(slot);
        if (listeners) for (const fd of [listeners.outbound, listeners.inboundPlaintext, listeners.tunnel]) this.native.closeFd(fd);
        throw captureError(CaptureCode.EnrollFailed, `cannot enrol pod ${pod.uid}`, err, { uid: pod.uid });
      }
      const captured: CapturedPod = { ...pod, netnsCookie: cookie, netnsIno: ino, slot, listeners, ...(held ? { held } : {}) };
      this.pods.set(pod.uid, captured);
      if (held) this.log.warn({ uid: pod.uid, slot, code: held.code, port: held.port, reason: held.reason }, 'pod captured refusing: a port the agent needs is held by the app');
      else this.log.info({ uid: pod.uid, slot, netnsCookie: cookie.toString(), ips: pod.ips }, 'pod enrolled');
      return servedOrHeld(captured);
    });
  }

  /**
   * Listening sockets a previous agent handed over (agent upgrade): enroll() serves them for
   * the pods they belong to (same uid and netns) instead of opening new ones.
   */
  adoptHandedListeners(list: HandedListeners[]): void {
    for (const h of list) {
      const old = this.handed.get(h.uid);
      if (old) this.closeListeners(old.listeners);
      this.handed.set(h.uid, h);
    }
  }

  /** Closes this process' copies of handed listeners no pod took (the kernel sockets live on where else they are held). */
  dropUnusedHandedListeners(): number {
    const n = this.handed.size;
    for (const h of this.handed.values()) this.closeListeners(h.listeners);
    this.handed.clear();
    return n;
  }

  private takeHanded(uid: string, cookie: bigint): HandedListeners | undefined {
    const h = this.handed.get(uid);
    if (!h) return undefined;
    this.handed.delete(uid);
    if (h.netnsCookie === cookie) return h;
    this.closeListeners(h.listeners); // for an older netns of the pod: not ours to serve
    return undefined;
  }

  private closeListeners(l: PodListeners): void {
    for (const fd of [l.outbound, l.inboundPlaintext, l.tunnel]) {
      try {
        this.native.closeFd(fd);
      } catch {
        // already closed
      }
    }
  }

  /** The native calls that pass fds between agent processes (the upgrade handover). */
  fdPassing(): FdPassing {
    return this.native;
  }

  /** No agent socket for the slot (so sk_lookup drops); an empty entry already is none. */
  private clearInboundSocket(slot: number): void {
    try {
      this.native.mapDelete(this.map(MAP.inboundSockets), u32Key(slot));
    } catch {
      // nothing there: what we want
    }
  }

  /** A held pod: try its listeners again; once open, steer to them (inbound first, then outbound). */
  private async serveHeld(pod: CapturedPod): Promise<void> {
    let listeners: PodListeners;
    try {
      listeners = await this.openListeners(pod.netnsPath);
    } catch (err) {
      const held = heldPortOf(err);
      if (!held) throw err;
      pod.held = held;
      return;
    }
    try {
      this.native.mapUpdate(this.map(MAP.inboundSockets), u32Key(pod.slot), encodeSocketFd(listeners.inboundPlaintext));
      this.native.mapUpdate(this.map(MAP.enrolled), u64Key(pod.netnsCookie), encodeEnrolled(this.options.outboundPort));
    } catch (err) {
      for (const fd of [listeners.outbound, listeners.inboundPlaintext, listeners.tunnel]) this.native.closeFd(fd);
      throw captureError(CaptureCode.EnrollFailed, `cannot serve held pod ${pod.uid}`, err, { uid: pod.uid });
    }
    pod.listeners = listeners;
    delete pod.held;
    this.log.info({ uid: pod.uid, slot: pod.slot }, 'held pod: its ports are free, now served');
  }

  /**
   * Which of `ips` the netns at `netnsPath` does NOT hold as local addresses (empty: it holds
   * them all), and whether it is the agent's own netns. Checked the way the kernel decides it:
   * a listening socket bound to the address inside that netns (port 0, closed at once) is
   * refused with EADDRNOTAVAIL when the address is not local there. For a netns given by
   * path (CNI_NETNS), where no process of the pod runs yet to read /proc/PID/net from.
   */
  async addressesMissingIn(netnsPath: string, ips: readonly string[]): Promise<{ missing: string[]; hostNetns: boolean }> {
    const cookie = await this.native.netnsCookie(netnsPath);
    this.ownNetnsCookie ??= await this.native.netnsCookie('/proc/self/ns/net');
    const missing: string[] = [];
    for (const ip of ips) {
      try {
        this.native.closeFd(await this.native.openListener(netnsPath, ip, 0, 1));
      } catch (err) {
        if (errnoName(err) !== 'EADDRNOTAVAIL') throw captureError(CaptureCode.NetnsUnavailable, `cannot check address ${ip} in ${netnsPath}`, err, { netnsPath });
        missing.push(ip);
      }
    }
    return { missing, hostNetns: cookie === this.ownNetnsCookie };
  }

  /** Stop capturing a pod (this agent's or a previous agent's); false when it was not enrolled. */
  release(uid: string): Promise<boolean> {
    return this.serial(async () => this.releaseNow(uid));
  }

  private releaseNow(uid: string): boolean {
    this.pods.delete(uid);
    let found = false;
    for (const [slot, r] of this.readRegistry()) {
      if (r.uid !== uid) continue;
      this.purgeSlot(slot);
      found = true;
    }
    if (found) this.log.info({ uid }, 'pod released');
    return found;
  }

  /**
   * Release every enrolled pod (including those a previous agent enrolled) that is not in
   * `live`, or whose netns is gone or changed. Returns the released uids: close their servers.
   */
  reconcile(live: ReadonlyArray<{ uid: string; netnsPath?: string }>): Promise<string[]> {
    return this.serial(async () => {
      const byUid = new Map(live.map((p) => [p.uid, p]));
      const released: string[] = [];
      for (const [slot, record] of this.readRegistry()) {
        const path = byUid.get(record.uid)?.netnsPath ?? this.pods.get(record.uid)?.netnsPath;
        let stale = !byUid.has(record.uid);
        if (!stale && path) {
          try {
            stale = (await this.native.netnsCookie(path)) !== record.netnsCookie;
          } catch {
            stale = true; // the netns path is gone
          }
        }
        if (!stale) continue;
        this.purgeSlot(slot);
        this.pods.delete(record.uid);
        released.push(record.uid);
      }
      if (released.length) this.log.info({ released }, 'reconciled: released gone pods');
      return released;
    });
  }

  /** The destination a pod's connection asked for, for a socket accepted on its outbound listener. */
  originalDestination(socket: Socket): OriginalDestination {
    return readOriginalDestination(() => this.native, () => this.map(MAP.originalByPeer), socket);
  }

  /** The destination of a connection steered to the inbound plaintext listener (its local address). */
  inboundDestination(socket: Socket): OriginalDestination {
    return inboundDestination(socket);
  }

  /** An unconnected TCP socket in the netns carrying the agent's mark (never redirected). */
  openAgentSocket(netnsPath: string, family: IpFamily): Promise<number> {
    return this.native.openSocket(netnsPath, family, this.options.agentMark);
  }

  /**
   * A TCP connection made from inside the netns with the agent's mark: the socket is made in
   * the netns, the connect runs on the event loop (NetnsConnector), capped per netns.
   */
  /**
   * A connected pair of kernel stream sockets inside the agent (AF_UNIX socketpair): what
   * same-node HTTP/2 sessions between the outbound and inbound sides run on.
   */
  socketPair(): [Socket, Socket] {
    const [a, b] = this.native.socketPair();
    return [new Socket({ fd: a, readable: true, writable: true }), new Socket({ fd: b, readable: true, writable: true })];
  }

  connectFromAgent(netnsPath: string, host: string, port: number, opts: NetnsConnectOptions = {}): Promise<Socket> {
    return this.netnsConnector().connect(netnsPath, host, port, opts);
  }

  /** Connects from pod netns now (in progress, waiting) and their failures by code (admin, metrics). */
  connectStats(): NetnsConnectStats {
    return this.netnsConnector().stats();
  }

  private netnsConnector(): NetnsConnector {
    this.connector ??= new NetnsConnector((path, family) => this.openAgentSocket(path, family), this.deps.connector);
    return this.connector;
  }

  /** Stop managing; capture stays in place through the pins (a restarted agent adopts it). */
  close(): Promise<void> {
    return this.serial(async () => {
      this.programs.close();
      this.pods.clear();
    });
  }

  /** Remove everything skein put in the kernel for this pin root: links, maps, pins. */
  uninstall(): Promise<void> {
    return this.serial(async () => {
      if (this.started) for (const slot of this.readRegistry().keys()) this.purgeSlot(slot);
      this.programs.close();
      this.pods.clear();
      this.pins.wipe();
      this.log.info({ pinRoot: this.options.pinRoot }, 'capture uninstalled');
    });
  }

  private async netnsIdentity(path: string, uid: string): Promise<{ cookie: bigint; ino: bigint }> {
    try {
      const cookie = await this.native.netnsCookie(path);
      return { cookie, ino: statSync(path, { bigint: true }).ino };
    } catch (err) {
      throw captureError(CaptureCode.NetnsUnavailable, `cannot enter the netns of pod ${uid} at ${path}`, err, { uid, path });
    }
  }

  private async openListeners(netnsPath: string): Promise<PodListeners> {
    const o = this.options;
    const ports = [o.outboundPort, o.inboundPlaintextPort, o.tunnelPort];
    let address = o.listenAddress;
    const opened: number[] = [];
    let failedPort: number | undefined;
    try {
      for (const port of ports) {
        failedPort = port;
        try {
          opened.push(await this.native.openListener(netnsPath, address, port, o.backlog));
        } catch (err) {
          if (opened.length !== 0 || errnoName(err) !== 'EAFNOSUPPORT' || address === o.fallbackListenAddress) throw err;
          address = o.fallbackListenAddress; // no IPv6 in this netns
          opened.push(await this.native.openListener(netnsPath, address, port, o.backlog));
        }
      }
    } catch (err) {
      for (const fd of opened) this.native.closeFd(fd);
      throw captureError(CaptureCode.ListenFailed, `cannot open listeners in ${netnsPath}`, err, { netnsPath, address, port: failedPort });
    }
    const [outbound, inboundPlaintext, tunnel] = opened as [number, number, number];
    return { outbound, inboundPlaintext, tunnel, address };
  }

  /** Pod addresses and excluded ports: make the maps say exactly what `pod` says. */
  private writePodTables(slot: number, cookie: bigint, pod: CapturePod): void {
    const n = this.native;
    const addrs = this.map(MAP.inboundAddresses);
    const wanted = new Set(pod.ips.map((ip) => encodePodAddr(ip).toString('hex')));
    for (const key of this.keys(addrs)) {
      const v = n.mapLookup(addrs, key);
      if (v && decodeInboundPod(v).slot === slot && !wanted.has(key.toString('hex'))) n.mapDelete(addrs, key);
    }
    for (const ip of pod.ips) {
      const key = encodePodAddr(ip);
      const prev = n.mapLookup(addrs, key);
      if (prev && decodeInboundPod(prev).slot !== slot) {
        this.log.warn({ ip, slot, previousSlot: decodeInboundPod(prev).slot }, 'pod address was held by another slot');
      }
      n.mapUpdate(addrs, key, encodeInboundPod(slot, this.options.tunnelPort));
    }
    const inExcl = this.map(MAP.inboundExcluded);
    for (const key of this.keys(inExcl)) {
      const k = decodeSlotPort(key);
      if (k.slot === slot && !pod.excludeInboundPorts.includes(k.port)) n.mapDelete(inExcl, key);
    }
    for (const p of pod.excludeInboundPorts) n.mapUpdate(inExcl, encodeSlotPort(slot, p), PRESENT);
    const outExcl = this.map(MAP.outboundExcluded);
    for (const key of this.keys(outExcl)) {
      const k = decodeNetnsPort(key);
      if (k.netnsCookie === cookie && !pod.excludeOutboundPorts.includes(k.port)) n.mapDelete(outExcl, key);
    }
    for (const p of pod.excludeOutboundPorts) n.mapUpdate(outExcl, encodeNetnsPort(cookie, p), PRESENT);
  }

  /** Remove every trace of a slot: enrolment first (stops outbound capture), then sk_lookup, then tables. */
  private purgeSlot(slot: number): void {
    const n = this.native;
    const recordBuf = n.mapLookup(this.map(MAP.pods), u32Key(slot));
    const record = recordBuf ? decodePodRecord(recordBuf) : undefined;
    if (record) {
      n.mapDelete(this.map(MAP.enrolled), u64Key(record.netnsCookie));
      // The pod's share count goes with it (its sockets, if any, find none at close).
      n.mapDelete(this.map(MAP.podShare), u64Key(record.netnsCookie));
    }
    this.programs.detachSkLookup(slot);
    const addrs = this.map(MAP.inboundAddresses);
    for (const key of this.keys(addrs)) {
      const v = n.mapLookup(addrs, key);
      if (v && decodeInboundPod(v).slot === slot) n.mapDelete(addrs, key);
    }
    const inExcl = this.map(MAP.inboundExcluded);
    for (const key of this.keys(inExcl)) if (decodeSlotPort(key).slot === slot) n.mapDelete(inExcl, key);
    if (record) {
      const outExcl = this.map(MAP.outboundExcluded);
      for (const key of this.keys(outExcl)) if (decodeNetnsPort(key).netnsCookie === record.netnsCookie) n.mapDelete(outExcl, key);
      const peers = this.map(MAP.originalByPeer);
      for (const key of this.keys(peers)) if (key.readBigUInt64LE(0) === record.netnsCookie) n.mapDelete(peers, key);
    }
    try {
      n.mapDelete(this.map(MAP.inboundSockets), u32Key(slot));
    } catch (err) {
      // A SOCKMAP says EINVAL for an empty slot (the socket was closed and dropped already).
      if (errnoName(err) !== 'EINVAL') throw err;
    }
    n.mapDelete(this.map(MAP.pods), u32Key(slot));
  }

  /** Slot -> owner, from the pinned registry (survives agent restarts). */
  private readRegistry(): Map<number, PodRecord> {
    const pods = this.map(MAP.pods);
    const out = new Map<number, PodRecord>();
    for (const key of this.keys(pods)) {
      const v = this.native.mapLookup(pods, key);
      if (v) out.set(key.readUInt32LE(0), decodePodRecord(v));
    }
    return out;
  }

  private freeSlot(registry: Map<number, PodRecord>): number {
    for (let slot = 0; slot < MAX_SLOTS; slot++) if (!registry.has(slot)) return slot;
    throw new SkeinError(CaptureCode.SlotsExhausted, `all ${MAX_SLOTS} pod slots are in use`);
  }

  /** All keys of a map (collected first: deleting while iterating restarts the walk). */
  private keys(mapFd: number): Buffer[] {
    const keys: Buffer[] = [];
    let key = this.native.mapNextKey(mapFd, null);
    while (key && keys.length < 1_000_000) {
      keys.push(key);
      key = this.native.mapNextKey(mapFd, key);
    }
    return keys;
  }
}
