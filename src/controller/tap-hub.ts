/**
 * Tap sessions (`skein tap`, ConfigDiscovery.Tap): the controller asks every connected agent,
 * on its config stream, to sample requests matching a filter, and relays the events the
 * agents send back to the caller, until the caller goes away, the session's time is up or it
 * has had its events. An agent that connects meanwhile is asked too; when a session ends,
 * every agent is told to stop (and stops by itself after the session's time to live, should
 * the controller be gone).
 *
 * Bounded: MAX_SESSIONS at once, at most MAX_RATE events per second per agent, at most
 * MAX_DURATION_S per session. Events carry request metadata only (the agents never put
 * bodies or header values other than the path in them).
 */
import { randomBytes } from 'node:crypto';
import type { TapControl, TapEvent, TapFilter, TapRequest } from '../api/config-wire.js';

export const MAX_SESSIONS = 32;
export const MAX_RATE = 100;
export const DEFAULT_RATE = 20;
export const MAX_DURATION_S = 600;

/** An agent's stream, as the hub sees it. */
export interface TapAgent {
  node: string;
  send(control: TapControl): void;
}

export interface TapSessionHandlers {
  onEvent(e: TapEvent): void;
  /** Called once: `limit` (max events), `expired` (duration), `stopped` (the caller). */
  onEnd(reason: 'limit' | 'expired' | 'stopped'): void;
}

interface Session {
  id: string;
  filter: TapFilter;
  rate: number;
  maxEvents: number;
  expiresAt: number;
  events: number;
  timer: NodeJS.Timeout;
  handlers: TapSessionHandlers;
}

export class TapError extends Error {}

export class TapHub {
  private readonly sessions = new Map<string, Session>();
  private readonly agents = new Set<TapAgent>();

  constructor(private readonly now: () => number = Date.now) {}

  /** Starts a session; throws TapError when MAX_SESSIONS run already. Returns its stop function. */
  start(req: TapRequest, handlers: TapSessionHandlers): { id: string; stop: () => void } {
    if (this.sessions.size >= MAX_SESSIONS) throw new TapError(`${MAX_SESSIONS} tap sessions run already; try again later`);
    const id = randomBytes(6).toString('hex');
    const seconds = Math.min(MAX_DURATION_S, req.duration_seconds || MAX_DURATION_S);
    const s: Session = {
      id,
      filter: req.filter ?? { namespace: '', from: '', to: '', path: '' },
      rate: Math.max(1, Math.min(MAX_RATE, req.max_per_second || DEFAULT_RATE)),
      maxEvents: req.max_events || 0,
      expiresAt: this.now() + seconds * 1000,
      events: 0,
      timer: setTimeout(() => this.end(id, 'expired'), seconds * 1000),
      handlers,
    };
    s.timer.unref();
    this.sessions.set(id, s);
    for (const a of this.agents) a.send(this.control(s));
    return { id, stop: () => this.end(id, 'stopped') };
  }

  private control(s: Session): TapControl {
    const ttl = Math.max(1, Math.ceil((s.expiresAt - this.now()) / 1000));
    return { session: s.id, stop: false, filter: s.filter, max_per_second: s.rate, ttl_seconds: ttl };
  }

  private end(id: string, reason: 'limit' | 'expired' | 'stopped'): void {
    const s = this.sessions.get(id);
    if (!s) return;
    this.sessions.delete(id);
    clearTimeout(s.timer);
    for (const a of this.agents) a.send({ session: id, stop: true, filter: null, max_per_second: 0, ttl_seconds: 0 });
    s.handlers.onEnd(reason);
  }

  /** A (re)connected agent: asked for every running session. */
  agentConnected(a: TapAgent): void {
    this.agents.add(a);
    for (const s of this.sessions.values()) a.send(this.control(s));
  }

  agentGone(a: TapAgent): void {
    this.agents.delete(a);
  }

  /** Events an agent sent: each to its session (unknown or ended sessions' are dropped). */
  deliver(node: string, events: readonly TapEvent[]): void {
    for (const e of events) {
      const s = this.sessions.get(e.session);
      if (!s) continue;
      s.events++;
      s.handlers.onEvent({ ...e, node });
      if (s.maxEvents && s.events >= s.maxEvents) this.end(s.id, 'limit');
    }
  }

  /** Sessions running now. */
  get size(): number {
    return this.sessions.size;
  }

  close(): void {
    for (const id of [...this.sessions.keys()]) this.end(id, 'stopped');
  }
}
