/**
 * Agent upgrade without refusing a connection: the old agent hands the pods' listening
 * sockets to the new one over a unix socket (SCM_RIGHTS), the new one serves them, then the
 * old one stops accepting, drains and exits.
 *
 * Why pass the sockets rather than open new ones and swap them into the maps: a pod's three
 * listeners are reached three ways, and only one of them goes through a map we could swap
 * atomically. 15006 is in the SOCKMAP that sk_lookup assigns from (a swap would do), but
 * 15001 is reached by connect4 rewriting the destination to 127.0.0.1:15001, and 15008 by the
 * kernel's own lookup on the pod's address: two sockets on one port need SO_REUSEPORT, and
 * when the old one closes, connections still in its accept queue are reset (unless
 * net.ipv4.tcp_migrate_req, Linux 5.14+, and only for what is queued). Passing the sockets
 * keeps one kernel socket per port for the whole upgrade: both processes accept from the same
 * queue while they overlap, and when the old process closes its fds the socket (and its
 * queue, and its SOCKMAP entry) lives on in the new one. No SYN ever meets a closed port.
 * It is what Envoy's hot restart does with its listeners.
 *
 * The wire (JSON lines over an AF_UNIX stream socket, root only):
 *   new -> old  {"op":"listeners"}
 *   old -> new  {"op":"pod","uid":...,"netnsCookie":"...","slot":N,"address":"...","fds":3}
 *                 (one sendmsg per pod, its three fds attached: outbound, plaintext, tunnel)
 *               {"op":"end","pods":N}
 *      (the old agent stops changing capture from here on: the sockets it sent stay as sent)
 *   new -> old  {"op":"takeover"}   once the new agent serves every pod (certificates in hand)
 *   old -> new  {"op":"draining","drainMs":N}   after it closed its admin and handover sockets
 *   A connection that closes before "takeover" leaves the old agent serving as before.
 */
import { chmodSync, existsSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import type { FdPassing, HandedListeners } from '../capture/capture-manager.js';
import { messageOf, SkeinError } from '../errors.js';
import type { Logger } from '../telemetry/log.js';
import { AgentCode } from './codes.js';

export const DEFAULT_HANDOVER_SOCKET = '/run/skein/handover.sock';

/** Bytes one handover line may take (a pod line is ~200). */
const MAX_LINE = 64 * 1024;

type WireLine =
  | { op: 'listeners' }
  | { op: 'pod'; uid: string; netnsCookie: string; slot: number; address: string; fds: number }
  | { op: 'end'; pods: number }
  | { op: 'takeover' }
  | { op: 'draining'; drainMs: number }
  | { op: 'error'; error: string };

/** The fd of a Node socket (its libuv handle's): SCM_RIGHTS goes beside Node's own writes. */
function fdOf(socket: Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new SkeinError(AgentCode.HandoverFailed, 'handover connection has no fd');
  return fd;
}

export interface HandoverServerOptions {
  path: string;
  fdPassing: FdPassing;
  log: Logger;
  /** Freeze capture and list the pods' listening sockets as they are now. */
  listeners: () => Promise<HandedListeners[]>;
  /** The successor went away before taking over: carry on as before. */
  resume: () => void;
  /** The successor takes over: close what it must bind (admin socket, probes) before it does. */
  takeover: () => Promise<void>;
  /** Told after the successor heard "draining": drain and exit. */
  onHandedOver: () => void;
  drainMs: number;
}

/** The old agent's side: serves one successor at a time on a root-only unix socket. */
export class HandoverServer {
  private readonly server: Server;
  private busy = false;
  private handedOver = false;

  constructor(private readonly opts: HandoverServerOptions) {
    this.server = createServer((socket) => this.onConnection(socket));
  }

  async listen(): Promise<void> {
    const path = this.opts.path;
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    if (existsSync(path)) {
      if (!lstatSync(path).isSocket()) throw new SkeinError(AgentCode.HandoverFailed, `--handover-socket ${path} exists and is not a socket`, { path });
      unlinkSync(path);
    }
    const mask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        this.server.listen(path, () => resolve());
      });
    } finally {
      process.umask(mask);
    }
    chmodSync(path, 0o600);
  }

  /**
   * Stops listening now (libuv unlinks the socket file as the handle closes: call it before a
   * successor binds the path, never after). Connections still open end on their own.
   */
  stopListening(): void {
    if (this.server.listening) this.server.close();
  }

  private send(socket: Socket, line: WireLine, fds: number[] = []): void {
    this.opts.fdPassing.sendFds(fdOf(socket), Buffer.from(`${JSON.stringify(line)}\n`), fds, 5000);
  }

  private onConnection(socket: Socket): void {
    const { log } = this.opts;
    socket.on('error', () => {});
    if (this.busy || this.handedOver) {
      log.warn({ code: AgentCode.HandoverFailed }, 'a second handover request while one is under way; refused');
      socket.destroy();
      return;
    }
    this.busy = true;
    let tookOver = false;
    let buffered = '';
    let queue = Promise.resolve();
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      if (buffered.length > MAX_LINE) {
        socket.destroy();
        return;
      }
      let nl = buffered.indexOf('\n');
      while (nl >= 0) {
        const text = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        nl = buffered.indexOf('\n');
        queue = queue.then(() => this.onLine(socket, text)).then(
          (took) => {
            if (took) tookOver = true;
          },
          (err: unknown) => {
            log.error({ code: AgentCode.HandoverFailed, err: messageOf(err) }, 'handover to the new agent failed; serving on');
            socket.destroy();
          },
        );
      }
    });
    socket.once('close', () => {
      void queue.then(() => {
        this.busy = false;
        if (tookOver) return;
        log.warn({ code: AgentCode.HandoverFailed }, 'the new agent left before taking over; serving on as before');
        this.opts.resume();
      });
    });
  }

  /** True once the successor has taken over. */
  private async onLine(socket: Socket, text: string): Promise<boolean> {
    const { log } = this.opts;
    const line = JSON.parse(text) as WireLine;
    if (line.op === 'listeners') {
      const pods = await this.opts.listeners();
      for (const p of pods) {
        const l = p.listeners;
        this.send(socket, { op: 'pod', uid: p.uid, netnsCookie: p.netnsCookie.toString(), slot: p.slot, address: l.address, fds: 3 }, [l.outbound, l.inboundPlaintext, l.tunnel]);
      }
      this.send(socket, { op: 'end', pods: pods.length });
      log.info({ pods: pods.length }, 'handover: listening sockets sent to the new agent; capture frozen until it takes over');
      return false;
    }
    if (line.op === 'takeover') {
      await this.opts.takeover();
      this.handedOver = true;
      this.send(socket, { op: 'draining', drainMs: this.opts.drainMs });
      log.info({ drainMs: this.opts.drainMs }, 'handover: the new agent took over; draining');
      this.opts.onHandedOver();
      return true;
    }
    throw new SkeinError(AgentCode.HandoverFailed, `unexpected handover message ${JSON.stringify(line.op)}`);
  }
}

/** The new agent's view of the agent it replaces. */
export interface Predecessor {
  pods: HandedListeners[];
  /** Tell the old agent to stop accepting and drain; resolves with its drain timeout. */
  takeOver(timeoutMs?: number): { drainMs: number };
  /** Give up (this agent could not get ready): the old agent serves on. */
  abort(): void;
}

/** Reads JSON lines and their fds off a blocking unix socket (see native fd_passing.cc). */
class LineReader {
  private buffered = '';
  readonly fds: number[] = [];

  constructor(
    private readonly fdPassing: FdPassing,
    private readonly fd: number,
  ) {}

  next(deadline: number): WireLine {
    for (;;) {
      const nl = this.buffered.indexOf('\n');
      if (nl >= 0) {
        const text = this.buffered.slice(0, nl);
        this.buffered = this.buffered.slice(nl + 1);
        return JSON.parse(text) as WireLine;
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new SkeinError(AgentCode.HandoverFailed, 'the old agent did not answer in time');
      const { data, fds } = this.fdPassing.recvFds(this.fd, MAX_LINE, left);
      this.fds.push(...fds);
      if (data.length === 0) throw new SkeinError(AgentCode.HandoverFailed, 'the old agent closed the handover connection');
      this.buffered += data.toString('utf8');
      if (this.buffered.length > MAX_LINE) throw new SkeinError(AgentCode.HandoverFailed, 'handover line too long');
    }
  }
}

/**
 * Connects to the agent serving the handover socket and receives its pods' listening
 * sockets. Undefined when no agent answers there (first start, or the old one is gone): the
 * caller starts afresh. Synchronous on purpose: it runs before this agent serves anything.
 */
export function connectPredecessor(path: string, fdPassing: FdPassing, log: Logger, timeoutMs = 10_000): Predecessor | undefined {
  let fd: number;
  try {
    fd = fdPassing.connectUnix(path);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ENOENT' || code === 'ECONNREFUSED') {
      log.info({ path }, 'upgrade: no agent answers on the handover socket; starting afresh');
      return undefined;
    }
    throw new SkeinError(AgentCode.HandoverFailed, `cannot reach the old agent at ${path}: ${messageOf(err)}`, { path }, { cause: err });
  }
  const reader = new LineReader(fdPassing, fd);
  const closeAll = (fds: number[]): void => {
    for (const f of fds) {
      try {
        fdPassing.closeFd(f);
      } catch {
        // already closed
      }
    }
  };
  const pods: HandedListeners[] = [];
  try {
    fdPassing.sendFds(fd, Buffer.from(`${JSON.stringify({ op: 'listeners' })}\n`), [], timeoutMs);
    const deadline = Date.now() + timeoutMs;
    const lines: Extract<WireLine, { op: 'pod' }>[] = [];
    for (;;) {
      const line = reader.next(deadline);
      if (line.op === 'pod') lines.push(line);
      else if (line.op === 'end') break;
      else throw new SkeinError(AgentCode.HandoverFailed, `unexpected handover message ${JSON.stringify(line.op)}`);
    }
    // fds arrive in the order they were sent, never after their line's bytes: hand them out in order.
    let next = 0;
    for (const l of lines) {
      const [outbound, inboundPlaintext, tunnel] = reader.fds.slice(next, next + l.fds) as [number, number, number];
      next += l.fds;
      if (tunnel === undefined) throw new SkeinError(AgentCode.HandoverFailed, `pod ${l.uid} came without its three sockets`);
      pods.push({ uid: l.uid, netnsCookie: BigInt(l.netnsCookie), slot: l.slot, listeners: { outbound, inboundPlaintext, tunnel, address: l.address } });
    }
  } catch (err) {
    closeAll(reader.fds);
    closeAll([fd]);
    throw err instanceof SkeinError ? err : new SkeinError(AgentCode.HandoverFailed, `handover from the old agent failed: ${messageOf(err)}`, {}, { cause: err });
  }
  log.info({ pods: pods.length, path }, "upgrade: received the old agent's listening sockets");
  // Closed once, never twice: a number closed here may be a new socket's soon after.
  let connected = true;
  const hangUp = (): void => {
    if (!connected) return;
    connected = false;
    closeAll([fd]);
  };
  return {
    pods,
    takeOver(takeoverTimeoutMs = 15_000) {
      try {
        fdPassing.sendFds(fd, Buffer.from(`${JSON.stringify({ op: 'takeover' })}\n`), [], takeoverTimeoutMs);
        const line = reader.next(Date.now() + takeoverTimeoutMs);
        if (line.op !== 'draining') throw new SkeinError(AgentCode.HandoverFailed, `unexpected handover answer ${JSON.stringify(line.op)}`);
        return { drainMs: line.drainMs };
      } catch (err) {
        // The old agent died meanwhile: the sockets are ours alone now, which is the same end.
        if (err instanceof SkeinError && /closed the handover/.test(err.message)) return { drainMs: 0 };
        throw err;
      } finally {
        hangUp();
      }
    },
    abort() {
      hangUp();
    },
  };
}
