/**
 * PlaintextListener: a pod's :15006. Connections from outside the mesh to the pod are steered
 * here by the sk_lookup program in the pod's netns without rewriting them, so the original
 * destination is simply the accepted socket's local address and port.
 *
 * The workload's peer-authentication mode decides:
 *   STRICT      refuse: the client gets a TCP reset (not a FIN, so it cannot mistake the
 *               refusal for an empty response); logged and counted.
 *   PERMISSIVE  serve: the InboundProxy path (authorization with no source identity, app
 *               connect, L4 pipe, access log) as for a tunnel stream.
 * The mode is read per connection, so a config update applies to the next connection.
 */
import { type AddressInfo, createServer, type Server, type Socket } from 'node:net';
import type { Workload } from '../../config/model.js';
import { messageOf } from '../../errors.js';
import { type Logger, silentLogger } from '../../telemetry/log.js';
import { resetStream } from '../tcp/l4-pipe.js';
import type { InboundProxy, InboundRequest } from './inbound-proxy.js';
import { InboundCode } from '../codes.js';
import { capConnections } from '../connection-cap.js';

export interface PlaintextListenerOptions {
  workload: Workload;
  inbound: InboundProxy;
  logger?: Logger;
  /**
   * Original destination of an accepted connection. Default: the socket's local address and
   * port, which sk_lookup leaves untouched. (Tests, which cannot steer with sk_lookup, map it.)
   */
  originalDestination?: (socket: Socket) => { address: string | undefined; port: number | undefined };
  /** Connections held at once; beyond it new ones are closed. Default DEFAULT_MAX_CONNECTIONS_PER_LISTENER. */
  maxConnections?: number;
  /** Called with the stable code of every connection refused at this listener. */
  onRefusal?: (code: string) => void;
  /** STRICT or PERMISSIVE for plaintext to a port of the pod (PeerAuthentication). Default: the workload's annotation-derived mode. */
  peerAuthentication?: (workload: Workload, port: number) => 'STRICT' | 'PERMISSIVE';
}

const localEndpoint = (s: Socket): { address: string | undefined; port: number | undefined } => ({ address: s.localAddress, port: s.localPort });

export interface PlaintextStats {
  accepted: number;
  refusedStrict: number;
  refusedOther: number;
}

export class PlaintextListener {
  readonly stats: PlaintextStats = { accepted: 0, refusedStrict: 0, refusedOther: 0 };
  private workload: Workload;
  private readonly inbound: InboundProxy;
  private readonly log: Logger;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly originalDestination: NonNullable<PlaintextListenerOptions['originalDestination']>;
  private readonly opts: PlaintextListenerOptions;

  constructor(opts: PlaintextListenerOptions) {
    this.opts = opts;
    this.workload = opts.workload;
    this.inbound = opts.inbound;
    this.originalDestination = opts.originalDestination ?? localEndpoint;
    this.log = (opts.logger ?? silentLogger()).child({ component: 'inbound-plaintext', workload: `${opts.workload.namespace}/${opts.workload.name}` });
    // allowHalfOpen: a client's FIN must not close our side before the app has answered.
    this.server = createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (s) => this.onConnection(s));
    this.server.on('error', (err) => this.log.error({ err: messageOf(err) }, 'plaintext listener error'));
    capConnections(this.server, opts.maxConnections, InboundCode.ConnectionLimit, opts.onRefusal);
  }

  /** Listen on an fd from the capture layer (inside the pod's netns), or a port. */
  listen(where: { fd: number } | { port: number; host?: string }): Promise<AddressInfo | undefined> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(where, () => {
        this.server.removeListener('error', reject);
        resolve(this.address());
      });
    });
  }

  address(): AddressInfo | undefined {
    const a = this.server.address();
    return typeof a === 'object' && a !== null ? a : undefined;
  }

  updateWorkload(workload: Workload): void {
    this.workload = workload;
  }

  async close(): Promise<void> {
    const closing = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await closing;
  }

  /**
   * Stops accepting and waits for the connections open now to end on their own (agent
   * handover: the next agent accepts on the same socket meanwhile).
   */
  drain(): Promise<void> {
    return new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onConnection(socket: Socket): void {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    socket.on('error', () => {});
    const workload = this.workload;
    const dst = this.originalDestination(socket);
    const req: InboundRequest = { transport: 'plaintext', workload, port: dst.port ?? 0 };
    if (socket.remoteAddress !== undefined) req.sourceAddress = socket.remoteAddress;
    if (socket.remotePort !== undefined) req.sourcePort = socket.remotePort;

    const mode = this.opts.peerAuthentication ? this.opts.peerAuthentication(workload, req.port) : workload.peerAuthentication;
    if (mode !== 'PERMISSIVE') {
      this.stats.refusedStrict++;
      this.inbound.recordRefusal(req, 401, `plaintext refused: peer authentication STRICT on port ${req.port}`);
      resetStream(socket);
      return;
    }
    // A connection made to 15006 itself (not steered by sk_lookup) has no app behind it.
    const own = this.address()?.port;
    if (req.port === 0 || req.port === own) {
      this.stats.refusedOther++;
      this.inbound.recordRefusal(req, 400, `plaintext connection to the listener port ${req.port} itself`);
      resetStream(socket);
      return;
    }
    this.stats.accepted++;
    this.inbound.accept(req, socket, {
      // Paused since accept: bytes flow once the pipe to the app is in place.
      serving: () => socket.resume(),
      // Refused or unreachable: already logged by the inbound path; the client sees a reset,
      // as it would from a closed port.
      refused: () => resetStream(socket),
    });
  }
}
