/**
 * Opens a byte stream from a source workload to one endpoint, the way the mesh reaches it:
 * - meshed endpoint on another node: an HBONE CONNECT stream through the tunnel pool, with
 *   the source's identity, expecting the endpoint's identity;
 * - meshed endpoint on this node: the inbound proxy directly (same policy path, no TLS hop);
 * - endpoint outside the mesh: a plain connection, as the app would have made it.
 * Every failure becomes OutboundCode.UpstreamConnectFailed (with the cause), which the HTTP side maps to
 * 503 and the L4 side to a reset.
 */
import type { ClientHttp2Stream, ClientSessionRequestOptions, OutgoingHttpHeaders } from 'node:http2';
import type { Duplex } from 'node:stream';
import type { Endpoint, Workload } from '../../config/model.js';
import type { ConfigStore } from '../../config/store.js';
import { hasCode, messageOf, SkeinError } from '../../errors.js';
import type { LocalInbound } from '../inbound/types.js';
import type { TunnelDialer } from '../tunnel/types.js';
import { OutboundCode, TunnelCode } from '../codes.js';
import { encodePeer, MeshHeader } from '../http/mesh-headers.js';
import { deadline, untilAborted } from '../deadline.js';

/** Plain connection from (the netns of) `source` to address:port; the agent provides it. */
export type DirectConnect = (source: Workload, address: string, port: number, signal?: AbortSignal) => Promise<Duplex>;

export interface EndpointConnectorOptions {
  store: ConfigStore;
  /** This agent's node name: meshed endpoints here go through `inbound`. */
  localNode: string;
  tunnel: TunnelDialer;
  /** Same-node delivery; when absent, same-node meshed endpoints go through the tunnel too. */
  inbound?: LocalInbound;
  connectDirect: DirectConnect;
  /** Give up opening a stream after this long (ms). Default 10000. */
  connectTimeoutMs?: number;
  /** Port of the destination's tunnel listener; absent: the tunnel's default (15008). */
  tunnelPort?: number;
}

/** `skein-peer` per source pod record (records are replaced, never mutated, on config updates). */
const peerHeaders = new WeakMap<Workload, string>();

function peerHeaderOf(w: Workload): string {
  let v = peerHeaders.get(w);
  if (v === undefined) {
    const l = w.labels;
    v = encodePeer({ workload: w.workloadName ?? w.name, app: l.app ?? l['app.kubernetes.io/name'] ?? '', version: l.version ?? l['app.kubernetes.io/version'] ?? '' });
    peerHeaders.set(w, v);
  }
  return v;
}

export class EndpointConnector {
  constructor(private readonly opts: EndpointConnectorOptions) {}

  /** How `ep` is reached from this node: 'tunnel', 'local' or 'direct'. */
  pathTo(ep: Endpoint): 'tunnel' | 'local' | 'direct' {
    if (!ep.meshEnabled || !ep.identity) return 'direct';
    if (ep.node === this.opts.localNode && this.opts.inbound && ep.workloadUid) return 'local';
    return 'tunnel';
  }

  async connect(source: Workload, ep: Endpoint, port: number, signal?: AbortSignal): Promise<Duplex> {
    const path = this.pathTo(ep);
    try {
      if (path === 'local') {
        const workload = this.opts.store.workloadByUid(ep.workloadUid as string);
        if (workload) return await this.opts.inbound?.openLocal(source.identity, workload, port, opts(signal, source)) as Duplex;
      }
      if (path !== 'direct') {
        return await this.opts.tunnel.connect(
          source.identity,
          {
            address: ep.ip,
            port,
            identity: ep.identity as string,
            node: ep.node ?? '',
            ...(this.opts.tunnelPort ? { tunnelPort: this.opts.tunnelPort } : {}),
          },
          opts(signal, source),
        );
      }
      // The tunnel and inbound enforce their own connect timeouts; a direct connect gets ours.
      const d = deadline(this.opts.connectTimeoutMs ?? 10_000, signal, {
        timeout: () => new SkeinError(OutboundCode.ConnectTimeout, `connect to ${ep.ip}:${port} timed out`),
      });
      try {
        return await untilAborted(this.opts.connectDirect(source, ep.ip, port, d.signal), d.signal, (late) => late.destroy());
      } finally {
        d.done();
      }
    } catch (err) {
      throw failure(err, ep, port, path);
    }
  }

  /**
   * Whether HTTP requests to `ep` travel as request streams to a skein agent (L7 between
   * agents): meshed, and the tunnel (or, on this node, the inbound side) can carry them.
   */
  servesRequests(ep: Endpoint): boolean {
    const path = this.pathTo(ep);
    if (path === 'local') return this.opts.inbound?.requestLocal !== undefined;
    return path === 'tunnel' && this.opts.tunnel.request !== undefined;
  }

  /** One HTTP request stream to the agent serving `ep` (see servesRequests). Not async: one promise per request. */
  request(
    source: Workload,
    ep: Endpoint,
    port: number,
    headers: OutgoingHttpHeaders,
    o: ClientSessionRequestOptions & { signal?: AbortSignal },
  ): Promise<ClientHttp2Stream> {
    const path = this.pathTo(ep);
    // The source pod's IP, for the destination's policy (skein-* fields are the agents' own).
    const ip = source.ips[0];
    if (ip) headers[MeshHeader.Source] = ip;
    headers[MeshHeader.Peer] = peerHeaderOf(source);
    const fail = (err: unknown): never => {
      throw failure(err, ep, port, path);
    };
    if (path === 'local') {
      const workload = this.opts.store.workloadByUid(ep.workloadUid as string);
      const local = this.opts.inbound?.requestLocal;
      if (workload && local) return local.call(this.opts.inbound, source.identity, workload, headers, o).catch(fail);
    }
    const tunnel = this.opts.tunnel;
    if (!tunnel.request) return Promise.reject(failure(new Error('the tunnel carries no request streams'), ep, port, path));
    const target = { address: ep.ip, port, identity: ep.identity as string, node: ep.node ?? '' };
    return tunnel.request(source.identity, this.opts.tunnelPort ? { ...target, tunnelPort: this.opts.tunnelPort } : target, headers, o).catch(fail);
  }
}

/** Every failure to open becomes UpstreamConnectFailed, or UpstreamDenied when the destination refused the source. */
function failure(err: unknown, ep: Endpoint, port: number, path: string): unknown {
  if (hasCode(err, OutboundCode.UpstreamConnectFailed) || hasCode(err, OutboundCode.UpstreamDenied)) return err;
  // The destination's agent refused this source (authentication or authorization): not an
  // outage, and the app should be told so (403), not invited to retry (503).
  const denied = hasCode(err, TunnelCode.SourceDenied) || hasCode(err, TunnelCode.WrongDestination);
  return new SkeinError(
    denied ? OutboundCode.UpstreamDenied : OutboundCode.UpstreamConnectFailed,
    `cannot reach ${ep.ip}:${port} (${path}): ${messageOf(err)}`,
    { endpoint: `${ep.ip}:${port}`, path, cause: (err as { code?: string }).code },
    { cause: err },
  );
}

/**
 * The CONNECT's options: the abort signal, and `Forwarded: for=<source pod IP>` (RFC 7239) so
 * the destination's policy can match the source's IP blocks. The source pod is known from
 * the listener that accepted the app's connection, never from what the app sent.
 */
function opts(signal: AbortSignal | undefined, source: Workload): { signal?: AbortSignal; headers?: Record<string, string> } {
  const ip = source.ips[0];
  const headers = ip ? { forwarded: `for=${ip.includes(':') ? `"[${ip}]"` : ip}` } : undefined;
  return { ...(signal ? { signal } : {}), ...(headers ? { headers } : {}) };
}

