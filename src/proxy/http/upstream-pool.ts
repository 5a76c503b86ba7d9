/**
 * Reusable upstreams per (source identity, endpoint): an http.Agent (keep-alive pool of tunnel
 * streams) for HTTP/1.1 and one HTTP/2 session (over one tunnel stream) for HTTP/2 and gRPC.
 * Keyed by source identity because a tunnel stream carries the source's certificate: two pods
 * with different identities must never share one. Entries go away on error, GOAWAY, idle
 * timeout, or when the endpoint leaves the config (`evictWhere`).
 */
import http from 'node:http';
import http2 from 'node:http2';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { messageOf, SkeinError } from '../../errors.js';
import type { Logger } from '../../telemetry/log.js';
import { endToEndRawHeaders, h2ToRaw } from './headers.js';
import type { UpstreamChoice } from './types.js';
import { HttpCode, OutboundCode } from '../codes.js';
import { noop } from '../noop.js';

export interface UpstreamPoolOptions {
  /** Idle keep-alive HTTP/1.1 upstream streams kept per key. Default 64. */
  h1MaxFreeSockets?: number;
  /** Idle time before a pooled upstream (HTTP/1 free stream, HTTP/2 session) is closed (ms). Default 60000. */
  idleTimeoutMs?: number;
  /** HTTP/2 upstream session settings. */
  h2Settings?: http2.Settings;
  /** HTTP/2 upstream: wait for SETTINGS this long before failing (ms). Default 10000. */
  h2ConnectTimeoutMs?: number;
  logger: Logger;
}

/** Request option the agent reads to open a stream for this key. */
export const OPENER_OPTION = 'skeinOpen';

/**
 * The Agent's keep-alive bookkeeping calls socket methods (ref/unref/setKeepAlive/setTimeout)
 * that a tunnel stream may not have; for such streams they mean nothing, so give it no-ops.
 * Node's own pooling logic (including its guard against data on idle sockets) then applies.
 */
function socketLike(stream: Duplex): Duplex {
  const s = stream as Duplex & Partial<Record<'ref' | 'unref' | 'setKeepAlive' | 'setNoDelay' | 'setTimeout', unknown>>;
  if (typeof s.ref !== 'function') s.ref = noop;
  if (typeof s.unref !== 'function') s.unref = noop;
  if (typeof s.setKeepAlive !== 'function') s.setKeepAlive = noop;
  if (typeof s.setNoDelay !== 'function') s.setNoDelay = noop;
  if (typeof s.setTimeout !== 'function') s.setTimeout = noop;
  return stream;
}

/**
 * An Agent whose connections are streams opened by the mesh (tunnel CONNECT streams, same-node
 * inbound streams or direct sockets), not TCP connections to `host:port`.
 */
class MeshAgent extends http.Agent {
  override createConnection(
    options: Record<string, unknown>,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | undefined {
    const open = options[OPENER_OPTION] as (() => Promise<Duplex>) | undefined;
    if (!open || !callback) throw new SkeinError(HttpCode.AgentMisuse, 'MeshAgent used without an opener');
    open().then(
      (stream) => {
        // A TCP socket without allowHalfOpen closes once the peer ends; Node's Agent relies on
        // that 'close' to drop a keep-alive connection the server shut (e.g. after its idle
        // timeout). A tunnel stream stays half-open, so an idle pooled one would look alive
        // and the next request on it would hang: close it when the server ends its side.
        stream.once('end', () => stream.destroy());
        callback(null, socketLike(stream));
      },
      (err: unknown) => callback(err as Error, undefined as unknown as Duplex),
    );
    return undefined;
  }
}

interface H2Entry {
  session: Promise<http2.ClientHttp2Session>;
  live?: http2.ClientHttp2Session;
}

/**
 * One request in HTTP/2 form (`head`: pseudo-headers and fields) on the pooled HTTP/1.1
 * keep-alive upstream of `choice`: :authority becomes Host, only end-to-end fields go, and a
 * body without a declared length is chunked (trailers need it too).
 */
export function pooledHttp1Request(pool: UpstreamPool, choice: UpstreamChoice, head: Record<string, string | string[] | number | undefined>, hasBody: boolean): http.ClientRequest {
  const raw = h2ToRaw(head);
  const authority = head[':authority'];
  if (authority !== undefined && authority !== '') raw.unshift('host', String(authority));
  const filtered = endToEndRawHeaders(raw);
  if (hasBody && head['content-length'] === undefined) filtered.push('transfer-encoding', 'chunked');
  return http.request({
    agent: pool.agentFor(choice),
    method: String(head[':method'] ?? 'GET'),
    path: String(head[':path'] ?? '/'),
    headers: filtered as unknown as http.OutgoingHttpHeaders,
    setHost: false,
    // Only the pool key matters to the agent; host/port keep Node's bookkeeping sane.
    host: '127.0.0.1',
    port: 1,
    [OPENER_OPTION]: () => choice.connect(),
  } as http.RequestOptions);
}

export class UpstreamPool {
  private readonly agents = new Map<string, MeshAgent>();
  private readonly sessions = new Map<string, H2Entry>();
  private readonly opts: UpstreamPoolOptions;
  private closed = false;

  constructor(opts: UpstreamPoolOptions) {
    this.opts = opts;
  }

  agentFor(choice: UpstreamChoice): http.Agent {
    let agent = this.agents.get(choice.key);
    if (!agent) {
      const idleMs = this.opts.idleTimeoutMs ?? 60_000;
      agent = new MeshAgent({
        keepAlive: true,
        maxFreeSockets: this.opts.h1MaxFreeSockets ?? 64,
        scheduling: 'lifo',
        timeout: idleMs,
      });
      this.agents.set(choice.key, agent);
    }
    return agent;
  }

  /** The HTTP/2 session for this key, opened on first use. Rejects with OutboundCode.UpstreamConnectFailed. */
  h2SessionFor(choice: UpstreamChoice): Promise<http2.ClientHttp2Session> {
    const existing = this.sessions.get(choice.key);
    if (existing && (!existing.live || (!existing.live.closed && !existing.live.destroyed))) return existing.session;
    const entry: H2Entry = { session: this.openH2(choice) };
    this.sessions.set(choice.key, entry);
    entry.session.then(
      (s) => {
        entry.live = s;
        const forget = (): void => {
          if (this.sessions.get(choice.key) === entry) this.sessions.delete(choice.key);
        };
        s.once('close', forget);
        s.once('goaway', forget);
        s.once('error', forget);
      },
      () => {
        if (this.sessions.get(choice.key) === entry) this.sessions.delete(choice.key);
      },
    );
    return entry.session;
  }

  private async openH2(choice: UpstreamChoice): Promise<http2.ClientHttp2Session> {
    if (this.closed) throw new SkeinError(OutboundCode.UpstreamConnectFailed, 'upstream pool closed');
    const stream = await choice.connect();
    const session = http2.connect(`http://${choice.authority}`, {
      createConnection: () => stream as unknown as Socket,
      settings: { enablePush: false, ...this.opts.h2Settings },
    });
    session.on('error', (err) => {
      this.opts.logger.debug({ upstream: choice.authority, err: messageOf(err) }, 'upstream HTTP/2 session error');
    });
    session.setTimeout(this.opts.idleTimeoutMs ?? 60_000, () => session.close());
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error('no SETTINGS from upstream')), this.opts.h2ConnectTimeoutMs ?? 10_000);
      const fail = (err: Error): void => {
        clearTimeout(timer);
        session.off('connect', ok);
        session.destroy();
        reject(new SkeinError(OutboundCode.UpstreamConnectFailed, `HTTP/2 upstream ${choice.authority}: ${err.message}`, {}, { cause: err }));
      };
      const ok = (): void => {
        clearTimeout(timer);
        session.off('error', fail);
        session.off('close', onClose);
        resolve();
      };
      const onClose = (): void => fail(new Error('session closed before SETTINGS'));
      session.once('connect', ok);
      session.once('error', fail);
      session.once('close', onClose);
    });
    session.unref();
    return session;
  }

  /** Closes upstreams whose key matches (endpoint removed, identity gone). */
  evictWhere(match: (key: string) => boolean): number {
    let n = 0;
    for (const [k, a] of this.agents) {
      if (match(k)) {
        a.destroy();
        this.agents.delete(k);
        n++;
      }
    }
    for (const [k, e] of this.sessions) {
      if (match(k)) {
        this.sessions.delete(k);
        // Graceful: in-flight streams finish, new requests go to a fresh session.
        e.session.then((s) => s.close(), () => {});
        n++;
      }
    }
    return n;
  }

  keys(): string[] {
    return [...new Set([...this.agents.keys(), ...this.sessions.keys()])];
  }

  /** Sizes, for tests and the admin endpoint. */
  stats(): { h1Agents: number; h2Sessions: number } {
    return { h1Agents: this.agents.size, h2Sessions: this.sessions.size };
  }

  close(): void {
    this.closed = true;
    for (const a of this.agents.values()) a.destroy();
    this.agents.clear();
    for (const e of this.sessions.values()) e.session.then((s) => s.destroy(), () => {});
    this.sessions.clear();
  }
}
