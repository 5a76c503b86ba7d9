/**
 * Each pod's share of the agent's event loop when the loop is contended.
 *
 * One agent serves every pod of the node on one event loop, and Node does its costliest work
 * for a request (reading it, parsing the head, writing it on) before any skein code decides
 * anything about it. A pod that sends as fast as it is answered (the reliability suite's header
 * flood: 32 keep-alive connections of 100-field requests) therefore fills the loop, and every
 * other pod's request waits behind that pod's queue: measured, their p99 went 13 ms -> 100-195
 * ms while no request failed. Refusing requests would not help (refusing costs the same read
 * and parse), so the share is enforced where the cost begins: a pod over its share stops being
 * read, and its new connections wait before anything is done for them. Its requests then wait
 * in its own sockets' kernel buffers, at no cost to the agent.
 *
 * The controller, every `intervalMs`:
 *  - measures the loop's utilization (the fraction of the interval it was busy: Node's ELU) and
 *    how late its own timer fired (the wait any event has on the loop right now);
 *  - when either is above its bound and at least two pods were active in the last second, each
 *    pod whose recent work is above the active pods' mean (the pods that make the queue) gets an
 *    allowance per interval of `DECREASE` times its recent work; a pod under the mean, or under
 *    `MIN_THROTTLED` units an interval, is never slowed, so a pod that sends little always gets
 *    through;
 *  - when both are low, a slowed pod's allowance grows by `INCREASE`, and is lifted once the pod
 *    no longer uses half of it, or once no other pod is active (there is nobody to be fair to:
 *    one pod alone may use the whole agent, which is what the benchmark measures).
 * A slowed pod's allowance works as a token bucket of one interval: work beyond it is a debt
 * paid from the next intervals' allowance, and while it is in debt the pod is paused.
 * Work is counted in units: one per new connection and one per request, plus one per 16 header
 * fields (a 100-field request costs the agent about seven small ones).
 *
 * Pausing is lazy, so that it costs in proportion to the pod's traffic, not to its connections
 * (one pod may hold thousands): a socket is stopped when it brings a request while its pod is
 * paused (that request is served: it has been read and parsed already), and new connections of a
 * paused pod are not read and wait in a bounded queue, in order, before any work is done for them
 * (an outbound connect, for one). Stopping reads at the socket's handle (readStop/readStart) is
 * how Node's own HTTP server pauses a consumed socket: HTTP/1 (Node's parser) and HTTP/2
 * (nghttp2) both read there directly, so a stream-level pause would not reach them.
 */
import type { Socket } from 'node:net';
import { type EventLoopUtilization, performance } from 'node:perf_hooks';

/** Default controller period (ms). A paused pod waits at least this long to be read again. */
export const DEFAULT_LOAD_SHARE_INTERVAL_MS = 25;
/** Default loop utilization above which heavy pods are slowed (`skein agent --load-share-busy`; 1 turns the share off). */
export const DEFAULT_LOAD_SHARE_BUSY = 0.5;
/** Default lateness of the controller's own timer (ms) that also means contended. */
export const DEFAULT_LOAD_SHARE_MAX_LAG_MS = 5;
/** Default new connections of a paused pod waiting at once; more are reset and counted. */
export const DEFAULT_LOAD_SHARE_MAX_QUEUED = 1024;
/** Below this fraction of `busy` (and half the lag bound) slowed pods get more again. */
const CALM_FRACTION = 2 / 3;
/** A heavy pod's allowance under contention: this fraction of what it did in the interval. */
const DECREASE = 0.7;
/** A slowed pod's allowance growth per calm interval. */
const INCREASE = 1.25;
/** Never below one request of a typical size per interval: a slowed pod still makes progress. */
const MIN_ALLOWANCE = 2;
/** A pod doing fewer units an interval than this (160 small requests a second) is never slowed. */
const MIN_THROTTLED = 4;
/** Weight of the last interval in a pod's recent work (an average over about 125 ms). */
const DEMAND_WEIGHT = 0.2;
/** At most this many intervals' allowance of debt: a slowed pod is paused for at most about as many intervals after a burst. */
const MAX_DEBT = 4;
/** A pod is active when it was charged within this many ms. */
const ACTIVE_MS = 1000;

export interface LoadShareOptions {
  intervalMs?: number;
  /** Loop utilization (0..1] above which the share is enforced; 1 never enforces it. */
  busy?: number;
  /** Timer lateness (ms) above which the share is enforced too. */
  maxLagMs?: number;
  /** New connections of a paused pod that may wait at once. */
  maxQueued?: number;
}

export interface LoadShareStats {
  /** Loop utilization measured over the last interval. */
  utilization: number;
  /** How late the controller's timer fired at the last interval (ms). */
  lagMs: number;
  /** Per pod (`namespace/name`) that was ever slowed: times paused, connections refused with the queue full, and its allowance per interval while slowed. */
  pods: Record<string, { pauses: number; refused: number; allowance?: number }>;
}

type ReadHandle = { readStop?: () => number; readStart?: () => number };

function handleOf(socket: Socket): ReadHandle | undefined {
  return (socket as unknown as { _handle?: ReadHandle | null })._handle ?? undefined;
}

/** One pod's account: what it did, what it may do, what waits for it. */
export class PodLoad {
  /** Units this interval. */
  used = 0;
  /** Recent units per interval (moving average). */
  demand = 0;
  allowance = Number.POSITIVE_INFINITY;
  /** Units left this interval while slowed (negative: debt). */
  credit = 0;
  paused = false;
  pauses = 0;
  refused = 0;
  /** Recent units per request (moving average): what reading one stopped socket again costs. */
  perRequest = 1;
  lastActive = Number.NEGATIVE_INFINITY;
  /** Sockets stopped while the pod is paused, read again at its resume. */
  private readonly stopped = new Set<Socket>();
  /** New connections waiting for the pod's resume, in arrival order. */
  private queue: Array<{ socket: Socket; serve: () => void }> = [];

  constructor(
    readonly pod: string,
    private readonly share: LoadShare,
  ) {}

  /**
   * A new connection of the pod: `serve` runs now, or once the pod is resumed (not read until
   * then). False when the pod is paused and its queue is full: the caller refuses it.
   */
  admit(socket: Socket, serve: () => void): boolean {
    if (!this.paused) {
      this.charge(1);
      serve();
      return true;
    }
    if (this.queue.length >= this.share.maxQueued) {
      this.refused++;
      return false;
    }
    handleOf(socket)?.readStop?.();
    this.queue.push({ socket, serve });
    return true;
  }

  /**
   * Whether a connection arriving now would be refused (paused, queue full); counts it as
   * refused when so. The listener asks before Node makes a Socket of the accepted handle, so a
   * refusal costs closing the handle only (a connect flood is ~9k of them a second).
   */
  refuseNew(): boolean {
    if (!this.paused || this.queue.length < this.share.maxQueued) return false;
    this.refused++;
    return true;
  }

  /** One request with `headerFields` fields, read from `socket`. */
  chargeRequest(headerFields: number, socket: Socket | undefined): void {
    const units = 1 + (headerFields >> 4);
    this.perRequest += 0.1 * (units - this.perRequest);
    this.charge(units);
    if (this.paused && socket && !this.stopped.has(socket)) {
      this.stopped.add(socket);
      handleOf(socket)?.readStop?.();
    }
  }

  private charge(units: number): void {
    this.used += units;
    this.lastActive = this.share.now;
    if (this.allowance === Number.POSITIVE_INFINITY) return;
    // Debt is bounded (MAX_DEBT intervals): a slowed pod's requests wait at most a few intervals.
    this.credit = Math.max(this.credit - units, -MAX_DEBT * this.allowance);
    if (this.credit <= 0 && !this.paused) {
      this.paused = true;
      this.pauses++;
    }
  }

  /** The pod left the node (or the agent stops): stopped sockets are read again to drain, waiting connections, never served, are closed. */
  close(): void {
    this.share.forget(this);
    for (const s of this.stopped) if (!s.destroyed) handleOf(s)?.readStart?.();
    this.stopped.clear();
    for (const { socket } of this.queue) socket.destroy();
    this.queue = [];
    this.paused = false;
  }

  /** @internal the controller's: a new allowance (Infinity: not slowed). */
  setAllowance(allowance: number): void {
    if (this.allowance === Number.POSITIVE_INFINITY && allowance !== Number.POSITIVE_INFINITY) this.credit = allowance;
    this.allowance = allowance;
  }

  /** @internal the controller's: the interval's allowance is added; out of debt, the pod is read again, as far as its credit goes. */
  refill(): void {
    if (this.allowance !== Number.POSITIVE_INFINITY) this.credit = Math.min(this.credit + this.allowance, this.allowance);
    if (this.allowance === Number.POSITIVE_INFINITY || this.credit > 0) {
      this.paused = false;
      this.release();
    }
  }

  /**
   * Reads stopped sockets again and serves waiting connections, oldest first, within the
   * pod's credit: a stopped socket holds about one request (`perRequest` units), a waiting
   * connection costs one. Restarting them all at once would let every connection of the pod
   * bring a request in the same turn (the header flood's 32 connections: a burst of ~25 ms of
   * work, whatever the allowance); what the credit does not cover waits for the next interval.
   * A socket stopped again goes to the back, so every connection gets its turn.
   */
  private release(): void {
    const unlimited = this.allowance === Number.POSITIVE_INFINITY;
    let budget = unlimited ? Number.POSITIVE_INFINITY : this.credit;
    for (const s of this.stopped) {
      if (budget <= 0) break;
      this.stopped.delete(s);
      if (s.destroyed) continue;
      handleOf(s)?.readStart?.();
      budget -= this.perRequest;
    }
    let i = 0;
    while (i < this.queue.length && !this.paused && (unlimited || this.credit > 0)) {
      const { socket, serve } = this.queue[i++]!;
      if (socket.destroyed) continue;
      handleOf(socket)?.readStart?.();
      this.charge(1);
      serve();
    }
    if (i > 0) this.queue = i === this.queue.length ? [] : this.queue.slice(i);
  }

  /** Whether anything waits for the pod's resume. */
  get waiting(): boolean {
    return this.queue.length > 0 || this.stopped.size > 0;
  }
}

export class LoadShare {
  private readonly pods = new Set<PodLoad>();
  private readonly timer: NodeJS.Timeout | undefined;
  private last: EventLoopUtilization = performance.eventLoopUtilization();
  private utilization = 0;
  private lagMs = 0;
  private readonly intervalMs: number;
  private readonly maxLagMs: number;
  private readonly busy: number;
  private readonly calm: number;
  readonly maxQueued: number;
  /** Milliseconds of the controller's clock (performance.now at the last tick): cheaper than a clock read per charge. */
  now = performance.now();

  constructor(opts: LoadShareOptions = {}) {
    this.busy = opts.busy ?? DEFAULT_LOAD_SHARE_BUSY;
    this.calm = this.busy * CALM_FRACTION;
    this.intervalMs = opts.intervalMs ?? DEFAULT_LOAD_SHARE_INTERVAL_MS;
    this.maxLagMs = opts.maxLagMs ?? DEFAULT_LOAD_SHARE_MAX_LAG_MS;
    this.maxQueued = opts.maxQueued ?? DEFAULT_LOAD_SHARE_MAX_QUEUED;
    if (this.busy < 1) {
      this.timer = setInterval(() => this.tick(), this.intervalMs);
      this.timer.unref();
    }
  }

  /** The account of one pod (one per pod: its outbound listener holds it). */
  pod(name: string): PodLoad {
    const p = new PodLoad(name, this);
    this.pods.add(p);
    return p;
  }

  forget(p: PodLoad): void {
    this.pods.delete(p);
  }

  /** Stops the controller; every pod's account is closed. */
  stop(): void {
    if (this.timer) clearInterval(this.timer);
    for (const p of [...this.pods]) p.close();
  }

  stats(): LoadShareStats {
    const pods: LoadShareStats['pods'] = {};
    for (const p of this.pods) {
      if (p.pauses === 0 && p.refused === 0 && p.allowance === Number.POSITIVE_INFINITY) continue;
      pods[p.pod] = { pauses: p.pauses, refused: p.refused, ...(p.allowance !== Number.POSITIVE_INFINITY ? { allowance: Math.round(p.allowance) } : {}) };
    }
    return { utilization: this.utilization, lagMs: this.lagMs, pods };
  }

  /** One controller step; `measured` is given by tests, measured otherwise. */
  tick(measured?: { utilization: number; lagMs: number }): void {
    const elu = performance.eventLoopUtilization();
    const now = performance.now();
    this.utilization = measured?.utilization ?? performance.eventLoopUtilization(elu, this.last).utilization;
    this.lagMs = measured?.lagMs ?? Math.max(0, now - this.now - this.intervalMs);
    this.last = elu;
    this.now = now;
    let active = 0;
    let total = 0;
    for (const p of this.pods) {
      p.demand += DEMAND_WEIGHT * (p.used - p.demand);
      if (now - p.lastActive > ACTIVE_MS) continue;
      active++;
      total += p.demand;
    }
    const mean = active > 0 ? total / active : 0;
    const contended = (this.utilization > this.busy || this.lagMs > this.maxLagMs) && active >= 2;
    const calm = this.utilization < this.calm && this.lagMs <= this.maxLagMs / 2;
    for (const p of this.pods) {
      if (contended && p.demand > mean && p.demand > MIN_THROTTLED) {
        p.setAllowance(Math.max(MIN_ALLOWANCE, Math.min(p.allowance, Math.max(p.used, p.demand)) * DECREASE));
      } else if (p.allowance !== Number.POSITIVE_INFINITY) {
        if (active < 2 || (calm && !p.paused && !p.waiting && p.used < p.allowance / 2)) p.setAllowance(Number.POSITIVE_INFINITY);
        else if (calm) p.setAllowance(p.allowance * INCREASE);
      }
      p.used = 0;
      p.refill();
    }
  }
}
