/**
 * Connections the agent makes from inside a pod's network namespace (delivering inbound
 * traffic to the app, traffic that leaves the mesh from the source pod), without a blocked
 * thread per connect.
 *
 * Only the socket is made in the netns (a short setns + socket() + SO_MARK on a thread of its
 * own); the connect itself is Node's, non-blocking on the event loop. A socket keeps the
 * namespace it was created in, so connecting it from the agent's thread still connects from
 * the pod. (The native connectInNetns waited in poll() on a libuv pool thread for up to the
 * timeout: four connects to an address that drops SYNs stalled file, DNS and crypto work of
 * every pod on the node.)
 *
 * Aborts are honoured at once (the socket is destroyed), and each netns has a cap on connects
 * in progress (default 64, `--max-pod-connects`): past it, connects wait their turn (within
 * their own timeout and abort), and past a bounded queue (default 1024) they fail fast
 * (CaptureCode.TooManyConnects). Failures are counted by code for /stats and metrics. A pod connecting
 * to a black hole thus only delays its own connects; a burst (hundreds of new connections in
 * one tick) queues instead of failing.
 *
 * The socket is wrapped with manualStart: Node must not start reading an fd that is not
 * connected yet (it would see the unconnected socket's hang-up as the end of the stream).
 */
import net from 'node:net';
import { SkeinError } from '../errors.js';
import { CaptureCode } from './codes.js';

/** Failures counted by code: capture's own (an abort's reason is the caller's, not counted). */
const CAPTURE_CODES: ReadonlySet<string> = new Set(Object.values(CaptureCode));

/** Makes an unconnected TCP socket (fd) inside the netns, carrying the agent's mark. */
export type NetnsSocketFactory = (netnsPath: string, family: 4 | 6) => Promise<number>;

/** Default connects in progress per pod netns (`skein agent --max-pod-connects`). */
export const DEFAULT_MAX_CONNECTS_PER_NETNS = 64;
/** Default connects waiting per pod netns behind those (`--max-pod-connects-queued`). */
export const DEFAULT_MAX_QUEUED_PER_NETNS = 1024;

export interface NetnsConnectorOptions {
  /** Connects in progress per netns; more wait in a queue. Default DEFAULT_MAX_CONNECTS_PER_NETNS. */
  maxConnectsPerNetns?: number;
  /** Connects waiting per netns beyond those in progress; more are refused. Default DEFAULT_MAX_QUEUED_PER_NETNS. */
  maxQueuedPerNetns?: number;
  /** Default connect timeout (ms). Default 5000. */
  timeoutMs?: number;
  /** How an fd becomes a socket (tests substitute an unconnected net.Socket). */
  socketFromFd?: (fd: number) => net.Socket;
}

export interface NetnsConnectOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}


interface NetnsSlots {
  active: number;
  /** Connects waiting for a slot, oldest first; called with the slot handed over. */
  waiting: Array<() => void>;
}

/** Node-wide figures of connects from pod netns (admin /stats, skein_pod_connect_* metrics). */
export interface NetnsConnectStats {
  /** Connects in progress now, all pods. */
  inProgress: number;
  /** Connects waiting for a slot now, all pods. */
  queued: number;
  /** Connects that failed, by stable code (TOO_MANY_CONNECTS, CONNECT_TIMEOUT, CONNECT_FAILED); aborts are not failures. */
  refusals: Record<string, number>;
}

export class NetnsConnector {
  private readonly refusals: Record<string, number> = {};
  private readonly slots = new Map<string, NetnsSlots>();
  private readonly max: number;
  private readonly maxQueued: number;
  private readonly timeoutMs: number;
  private readonly socketFromFd: (fd: number) => net.Socket;

  constructor(
    private readonly openSocket: NetnsSocketFactory,
    opts: NetnsConnectorOptions = {},
  ) {
    this.max = opts.maxConnectsPerNetns ?? DEFAULT_MAX_CONNECTS_PER_NETNS;
    this.maxQueued = opts.maxQueuedPerNetns ?? DEFAULT_MAX_QUEUED_PER_NETNS;
    this.timeoutMs = opts.timeoutMs ?? 5_000;
    this.socketFromFd = opts.socketFromFd ?? ((fd) => new net.Socket({ fd, allowHalfOpen: true, manualStart: true } as net.SocketConstructorOpts));
  }

  /** Connects in progress for a netns (admin, tests). */
  connecting(netnsPath: string): number {
    return this.slots.get(netnsPath)?.active ?? 0;
  }

  /** Connects waiting for a slot for a netns (admin, tests). */
  queued(netnsPath: string): number {
    return this.slots.get(netnsPath)?.waiting.length ?? 0;
  }

  /** Connects in progress and waiting, all pods, and failures by code since start. */
  stats(): NetnsConnectStats {
    let inProgress = 0;
    let queued = 0;
    for (const q of this.slots.values()) {
      inProgress += q.active;
      queued += q.waiting.length;
    }
    return { inProgress, queued, refusals: { ...this.refusals } };
  }

  /** A socket connected from inside the netns; rejects on abort, timeout, refusal or a full queue. */
  async connect(netnsPath: string, host: string, port: number, opts: NetnsConnectOptions = {}): Promise<net.Socket> {
    try {
      return await this.connectCounted(netnsPath, host, port, opts);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (typeof code === 'string' && CAPTURE_CODES.has(code)) this.refusals[code] = (this.refusals[code] ?? 0) + 1;
      throw err;
    }
  }

  private async connectCounted(netnsPath: string, host: string, port: number, opts: NetnsConnectOptions): Promise<net.Socket> {
    const family = net.isIP(host);
    if (family !== 4 && family !== 6) throw new SkeinError(CaptureCode.ConnectFailed, `not an IP address: ${host}`, { host });
    opts.signal?.throwIfAborted();
    // One deadline for the wait in the queue and the connect itself.
    const deadline = performance.now() + (opts.timeoutMs ?? this.timeoutMs);
    await this.acquire(netnsPath, `${host}:${port}`, deadline, opts.signal);
    try {
      const fd = await this.openSocket(netnsPath, family);
      return await this.connectFd(fd, host, port, { ...opts, timeoutMs: Math.max(1, deadline - performance.now()) });
    } finally {
      this.release(netnsPath);
    }
  }

  private acquire(netnsPath: string, where: string, deadline: number, signal: AbortSignal | undefined): Promise<void> | undefined {
    let q = this.slots.get(netnsPath);
    if (!q) {
      q = { active: 0, waiting: [] };
      this.slots.set(netnsPath, q);
    }
    if (q.active < this.max) {
      q.active++;
      return undefined;
    }
    if (q.waiting.length >= this.maxQueued) {
      throw new SkeinError(CaptureCode.TooManyConnects, `${q.active} connects in progress and ${q.waiting.length} waiting from ${netnsPath}`, {
        netnsPath,
        inProgress: this.max,
        queued: this.maxQueued,
      });
    }
    const slots = q;
    return new Promise<void>((resolve, reject) => {
      const leave = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        const i = slots.waiting.indexOf(turn);
        if (i >= 0) slots.waiting.splice(i, 1);
      };
      const turn = (): void => {
        leave();
        resolve();
      };
      const onAbort = (): void => {
        leave();
        reject(signal?.reason instanceof Error ? signal.reason : new Error('aborted'));
      };
      const timer = setTimeout(() => {
        leave();
        reject(new SkeinError(CaptureCode.ConnectTimeout, `connect to ${where} timed out waiting behind ${slots.active} connects from ${netnsPath}`, { where, netnsPath }));
      }, Math.max(1, deadline - performance.now()));
      signal?.addEventListener('abort', onAbort, { once: true });
      slots.waiting.push(turn);
    });
  }

  /** A connect finished: its slot goes to the oldest waiter, else back to the pool. */
  private release(netnsPath: string): void {
    const q = this.slots.get(netnsPath);
    if (!q) return;
    const next = q.waiting.shift();
    if (next) {
      next();
      return;
    }
    q.active--;
    if (q.active <= 0) this.slots.delete(netnsPath);
  }

  private connectFd(fd: number, host: string, port: number, opts: NetnsConnectOptions): Promise<net.Socket> {
    const socket = this.socketFromFd(fd);
    const where = `${host.includes(':') ? `[${host}]` : host}:${port}`;
    return new Promise<net.Socket>((resolve, reject) => {
      const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
      const finish = (err: Error | undefined): void => {
        clearTimeout(timer);
        opts.signal?.removeEventListener('abort', onAbort);
        socket.removeListener('error', onError);
        socket.removeListener('connect', onConnect);
        if (err) {
          socket.destroy();
          reject(err);
        } else resolve(socket);
      };
      const onConnect = (): void => finish(undefined);
      const onError = (err: NodeJS.ErrnoException): void =>
        finish(new SkeinError(CaptureCode.ConnectFailed, `connect to ${where} failed: ${err.message}`, { errno: err.code, where }, { cause: err }));
      const onAbort = (): void => finish(opts.signal?.reason instanceof Error ? opts.signal.reason : new Error('aborted'));
      const timer = setTimeout(() => finish(new SkeinError(CaptureCode.ConnectTimeout, `connect to ${where} timed out after ${timeoutMs} ms`, { where, timeoutMs })), timeoutMs);
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      socket.once('connect', onConnect);
      socket.once('error', onError);
      if (opts.signal?.aborted) {
        onAbort();
        return;
      }
      socket.connect(port, host);
    });
  }
}
