/**
 * OutboundListener: a pod's :15001. cgroup/connect4 and connect6 rewrite the pod's outbound
 * connect() calls to this listener, inside the pod's netns; each accepted connection's
 * original destination is read back (capture's BPF map, through `originalDestination`) and
 * the connection handed to the OutboundProxy as coming from this pod.
 */
import { createServer, type Server, type Socket } from 'node:net';
import type { Workload } from '../../config/model.js';
import { OutboundCode } from '../codes.js';
import { capConnections } from '../connection-cap.js';
import type { PodLoad } from '../load-share.js';
import { StreamCap } from '../stream-cap.js';
import type { OutboundConnectionContext, OutboundProxy } from './outbound-proxy.js';

export interface OutboundListenerOptions {
  workload: Workload;
  outbound: OutboundProxy;
  /** Where the accepted connection was going; throws when nothing was recorded for it. */
  originalDestination: (socket: Socket) => OutboundConnectionContext['originalDst'];
  /** Called with why a connection without an original destination was refused (it is reset). */
  onUnknownDestination: (err: unknown, workload: Workload) => void;
  /** Connections held at once; beyond it new ones are closed. Default DEFAULT_MAX_CONNECTIONS_PER_LISTENER. */
  maxConnections?: number;
  /** Called with the stable code of every connection refused at this listener. */
  onRefusal?: (code: string) => void;
  /** The pod's account in the agent's LoadShare: its connections and requests are charged there, and paused when it is over its share. */
  load?: PodLoad;
  /**
   * HTTP requests and HTTP/2 streams in flight at once over all this pod's outbound
   * connections; beyond it a new one is refused (SKEIN_OUTBOUND_STREAM_LIMIT, counted in the
   * outbound refusals). Default DEFAULT_MAX_STREAMS_PER_LISTENER.
   */
  maxStreams?: number;
}

export class OutboundListener {
  private workload: Workload;
  private readonly server: Server;
  /** This pod's requests/streams in flight through 15001 (every connection's shares it). */
  readonly streams: StreamCap;

  constructor(private readonly opts: OutboundListenerOptions) {
    this.workload = opts.workload;
    this.streams = new StreamCap(opts.maxStreams);
    this.server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => this.onConnection(socket));
    capConnections(this.server, opts.maxConnections, OutboundCode.ConnectionLimit, opts.onRefusal);
  }

  /** Listen on the fd capture opened inside the pod's netns. */
  listen(where: { fd: number }): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(where, () => {
        this.refuseBeforeSocket();
        resolve();
      });
    });
  }

  /**
   * A pod over its share with its queue full: its new connections are closed as accepted,
   * before Node makes a Socket of them (Node's `onconnection` on the listening handle is
   * wrapped). A Socket (stream state, listeners) and a reset were most of what each of a
   * connect flood's ~9k refusals a second cost the agent.
   */
  private refuseBeforeSocket(): void {
    const load = this.opts.load;
    const handle = (this.server as unknown as { _handle?: { onconnection?: (err: number, client?: { close(): void }) => void } })._handle;
    const accept = handle?.onconnection;
    if (!load || !handle || !accept) return;
    const refused = () => this.opts.onRefusal?.(OutboundCode.LoadShareQueueFull);
    handle.onconnection = function (this: unknown, err: number, client?: { close(): void }) {
      if (!err && client && load.refuseNew()) {
        client.close();
        refused();
        return;
      }
      accept.call(this, err, client);
    };
  }

  updateWorkload(workload: Workload): void {
    this.workload = workload;
  }

  close(): Promise<void> {
    this.opts.load?.close();
    return new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onConnection(socket: Socket): void {
    const load = this.opts.load;
    if (!load) {
      this.serve(socket);
      return;
    }
    // The pod's share of the agent: served now, or once the pod is read again.
    if (!load.admit(socket, () => this.serve(socket))) {
      this.opts.onRefusal?.(OutboundCode.LoadShareQueueFull);
      socket.resetAndDestroy();
    }
  }

  private serve(socket: Socket): void {
    let originalDst: OutboundConnectionContext['originalDst'];
    try {
      originalDst = this.opts.originalDestination(socket);
    } catch (err) {
      // A connection the hook did not record (e.g. someone connected to 15001 directly):
      // there is nowhere to send it.
      this.opts.onUnknownDestination(err, this.workload);
      socket.resetAndDestroy();
      return;
    }
    this.opts.outbound.handleConnection(socket, { source: this.workload, originalDst, streams: this.streams, load: this.opts.load });
  }
}
