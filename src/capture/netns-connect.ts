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
 * in progress, so one pod connecting to a black hole cannot hold the agent's resources: past
 * it, connects fail fast with SKEIN_CAPTURE_TOO_MANY_CONNECTS.
 */
import net from 'node:net';
import { SkeinError } from '../errors.js';

/** Makes an unconnected TCP socket (fd) inside the netns, carrying the agent's mark. */
export type NetnsSocketFactory = (netnsPath: string, family: 4 | 6) => Promise<number>;

export interface NetnsConnectorOptions {
  /** Connects in progress per netns before new ones are refused. Default 64. */
  maxConnectsPerNetns?: number;
  /** Default connect timeout (ms). Default 5000. */
  timeoutMs?: number;
  /** How an fd becomes a socket (tests substitute an unconnected net.Socket). */
  socketFromFd?: (fd: number) => net.Socket;
}

export interface NetnsConnectOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
}

export const NetnsConnectCode = {
  /** The pod has maxConnectsPerNetns connects in progress already. */
  TooManyConnects: 'SKEIN_CAPTURE_TOO_MANY_CONNECTS',
  /** No answer within the timeout (SYNs dropped). */
  Timeout: 'SKEIN_CAPTURE_CONNECT_TIMEOUT',
  /** The destination refused or was unreachable (errno in details). */
  Failed: 'SKEIN_CAPTURE_CONNECT_FAILED',
} as const;

export class NetnsConnector {
  private readonly inProgress = new Map<string, number>();
  private readonly max: number;
  private readonly timeoutMs: number;
  private readonly socketFromFd: (fd: number) => net.Socket;

  constructor(
    private readonly openSocket: NetnsSocketFactory,
    opts: NetnsConnectorOptions = {},
  ) {
    this.max = opts.maxConnectsPerNetns ?? 64;
    this.timeoutMs = opts.timeoutMs ?? 5_000;
    this.socketFromFd = opts.socketFromFd ?? ((fd) => new net.Socket({ fd, readable: true, writable: true, allowHalfOpen: true }));
  }

  /** Connects in progress for a netns (admin, tests). */
  connecting(netnsPath: string): number {
    return this.inProgress.get(netnsPath) ?? 0;
  }

  /** A socket connected from inside the netns; rejects on abort, timeout, refusal or the cap. */
  async connect(netnsPath: string, host: string, port: number, opts: NetnsConnectOptions = {}): Promise<net.Socket> {
    const family = net.isIP(host);
    if (family !== 4 && family !== 6) throw new SkeinError(NetnsConnectCode.Failed, `not an IP address: ${host}`, { host });
    opts.signal?.throwIfAborted();
    const n = this.inProgress.get(netnsPath) ?? 0;
    if (n >= this.max) {
      throw new SkeinError(NetnsConnectCode.TooManyConnects, `${n} connects already in progress from ${netnsPath}`, { netnsPath, limit: this.max });
    }
    this.inProgress.set(netnsPath, n + 1);
    try {
      const fd = await this.openSocket(netnsPath, family);
      return await this.connectFd(fd, host, port, opts);
    } finally {
      const left = (this.inProgress.get(netnsPath) ?? 1) - 1;
      if (left > 0) this.inProgress.set(netnsPath, left);
      else this.inProgress.delete(netnsPath);
    }
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
        finish(new SkeinError(NetnsConnectCode.Failed, `connect to ${where} failed: ${err.message}`, { errno: err.code, where }, { cause: err }));
      const onAbort = (): void => finish(opts.signal?.reason instanceof Error ? opts.signal.reason : new Error('aborted'));
      const timer = setTimeout(() => finish(new SkeinError(NetnsConnectCode.Timeout, `connect to ${where} timed out after ${timeoutMs} ms`, { where, timeoutMs })), timeoutMs);
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
