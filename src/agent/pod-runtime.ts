/**
 * The proxy's presence in one enrolled pod: the servers on the three listening sockets the
 * capture layer opened inside the pod's netns.
 *
 *   15001 outbound  -> OutboundListener -> OutboundProxy (original destination read back from the BPF map)
 *   15006 plaintext -> PlaintextListener (STRICT refuses, PERMISSIVE serves)
 *   15008 tunnel    -> TunnelServer (mTLS + HTTP/2 CONNECT, HBONE)
 */
import { closeSync } from 'node:fs';
import type { CaptureManager, EnrolledPod } from '../capture/capture-manager.js';
import type { Workload } from '../config/model.js';
import type { IdentitySource } from '../identity/workload/types.js';
import type { InboundProxy } from '../proxy/inbound/inbound-proxy.js';
import type { LoadShare } from '../proxy/load-share.js';
import { PlaintextListener } from '../proxy/inbound/plaintext-listener.js';
import { OutboundListener } from '../proxy/outbound/outbound-listener.js';
import type { OutboundProxy } from '../proxy/outbound/outbound-proxy.js';
import { TunnelServer } from '../proxy/tunnel/tunnel-server.js';
import type { Logger } from '../telemetry/log.js';
import { messageOf } from '../errors.js';
import { AgentCode } from './codes.js';

export interface PodRuntimeDeps {
  capture: CaptureManager;
  outbound: OutboundProxy;
  inbound: InboundProxy;
  identity: IdentitySource;
  log: Logger;
  /** Every refusal at the pod's :15008 (TLS, identity, request, connection limit), by stable code. */
  onTunnelRefusal?: (code: string) => void;
  /** Every connection refused at the pod's :15001 and :15006 (connection limit), by stable code. */
  onListenerRefusal?: (code: string) => void;
  /** Connections each of the pod's listeners holds at once (default: the proxy's). */
  maxConnections?: number;
  /** Streams the pod's tunnel port has open at once, and one source identity's share (default: the tunnel server's). */
  tunnelStreams?: { max?: number; perPeer?: number };
  /** The node's LoadShare: the pod's outbound connections and requests are charged to its account there. */
  loadShare?: LoadShare;
  /** Streams a tunnel session may reset before their answer per second (default: the tunnel server's). */
  tunnelResetBudget?: number;
  /** HTTP requests and HTTP/2 streams the pod's outbound listener has in flight at once (default: the listener's). */
  maxOutboundStreams?: number;
  /** STRICT or PERMISSIVE for plaintext to a port of the pod (PeerAuthentication). */
  peerAuthentication?: (workload: Workload, port: number) => 'STRICT' | 'PERMISSIVE';
}

export class PodRuntime {
  private outboundListener: OutboundListener | undefined;
  private tunnel: TunnelServer | undefined;
  private plaintext: PlaintextListener | undefined;
  private identityPending: string | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(
    public workload: Workload,
    readonly enrolled: EnrolledPod,
    private readonly deps: PodRuntimeDeps,
  ) {}

  /** Serves the pod's listeners; on failure closes what was opened and rethrows. */
  static async start(workload: Workload, enrolled: EnrolledPod, deps: PodRuntimeDeps): Promise<PodRuntime> {
    const rt = new PodRuntime(workload, enrolled, deps);
    try {
      await rt.serve();
    } catch (err) {
      await rt.close();
      throw err;
    }
    return rt;
  }

  private async serve(): Promise<void> {
    const { capture, outbound, inbound, log } = this.deps;
    const fds = this.enrolled.listeners;
    this.outboundListener = new OutboundListener({
      workload: this.workload,
      outbound,
      originalDestination: (socket) => capture.originalDestination(socket),
      onUnknownDestination: (err, workload) =>
        log.warn({ err, pod: `${workload.namespace}/${workload.name}`, code: AgentCode.NoOriginalDst }, 'outbound connection without original destination refused'),
      ...this.caps(this.deps.onListenerRefusal),
      ...(this.deps.loadShare ? { load: this.deps.loadShare.pod(`${this.workload.namespace}/${this.workload.name}`) } : {}),
      ...(this.deps.maxOutboundStreams ? { maxStreams: this.deps.maxOutboundStreams } : {}),
    });
    await this.outboundListener.listen({ fd: fds.outbound });
    this.plaintext = new PlaintextListener({
      workload: this.workload,
      inbound,
      logger: log,
      ...(this.deps.peerAuthentication ? { peerAuthentication: this.deps.peerAuthentication } : {}),
      originalDestination: (s) => {
        const d = capture.inboundDestination(s);
        return { address: d.address, port: d.port };
      },
      ...this.caps(this.deps.onListenerRefusal),
    });
    await this.plaintext.listen({ fd: fds.inboundPlaintext });
    // Last, and allowed to wait: the tunnel needs the pod's certificate. Without it (the CA
    // away, issuance timing out) the pod stays captured and fails closed rather than being
    // released to plaintext: its :15008 is not accepted from (peers' connects wait in the
    // kernel's backlog and time out), its outbound calls into the mesh fail for want of a
    // certificate, STRICT plaintext is refused. Retried until it works.
    try {
      await this.startTunnel();
    } catch (err) {
      this.identityPending = messageOf(err);
      log.warn({ pod: `${this.workload.namespace}/${this.workload.name}`, code: AgentCode.IdentityPending, err: messageOf(err) }, 'pod captured but its certificate is not there yet: refusing its mesh traffic until it is');
      this.retryTunnel(1000);
    }
  }

  private async startTunnel(): Promise<void> {
    const { identity, inbound, log } = this.deps;
    const tunnel = await TunnelServer.create({
      workload: this.workload,
      identity,
      inbound,
      logger: log,
      ...this.caps(this.deps.onTunnelRefusal),
      ...(this.deps.tunnelStreams?.max ? { maxStreams: this.deps.tunnelStreams.max } : {}),
      ...(this.deps.tunnelStreams?.perPeer ? { maxStreamsPerPeer: this.deps.tunnelStreams.perPeer } : {}),
      ...(this.deps.tunnelResetBudget ? { rapidResetLimit: this.deps.tunnelResetBudget } : {}),
    });
    if (this.closed) {
      await tunnel.close(0);
      return;
    }
    await tunnel.listen({ fd: this.enrolled.listeners.tunnel });
    this.tunnel = tunnel;
  }

  private retryTunnel(delayMs: number): void {
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (this.closed) return;
      this.startTunnel().then(
        () => {
          this.identityPending = undefined;
          this.deps.log.info({ pod: `${this.workload.namespace}/${this.workload.name}` }, 'pod certificate ready: serving its mesh traffic');
        },
        (err: unknown) => {
          this.identityPending = messageOf(err);
          // Each attempt already waits (bounded) for the certificate store, which retries
          // issuance on its own schedule and answers the moment it has one: no growing delay.
          this.retryTunnel(delayMs);
        },
      );
    }, delayMs);
    this.retryTimer.unref();
  }

  /** Installs the current certificate and trust bundle in the pod's tunnel server (no-op when unchanged). */
  async refreshCredentials(): Promise<void> {
    await this.tunnel?.refreshCredentials();
  }

  /** The pod's tunnel port: sessions open now and streams received (undefined until it is served). */
  tunnelStats(): { sessions: number; streams: number } | undefined {
    return this.tunnel ? { sessions: this.tunnel.stats.sessions, streams: this.tunnel.stats.streams } : undefined;
  }

  /**
   * Requests/streams in flight now at the pod's outbound listener (15001) and tunnel port
   * (15008, undefined until it is served): what the stream caps count (admin /stats).
   */
  openStreams(): { outbound: number; tunnel: number | undefined } {
    return { outbound: this.outboundListener?.streams.open ?? 0, tunnel: this.tunnel?.stats.openStreams };
  }

  /** Why the pod is captured but not served yet (its certificate), or undefined when it is served. */
  get pending(): string | undefined {
    return this.identityPending;
  }

  /** A listener's connection cap and where its refusals are counted. */
  private caps(onRefusal: ((code: string) => void) | undefined): { maxConnections?: number; onRefusal?: (code: string) => void } {
    return {
      ...(this.deps.maxConnections ? { maxConnections: this.deps.maxConnections } : {}),
      ...(onRefusal ? { onRefusal } : {}),
    };
  }

  /** Config changed for this pod (labels, peer authentication mode, ...). */
  update(workload: Workload): void {
    this.workload = workload;
    this.outboundListener?.updateWorkload(workload);
    this.tunnel?.updateWorkload(workload);
    this.plaintext?.updateWorkload(workload);
  }

  /**
   * Handover to the next agent, which serves the same listening sockets: stop accepting
   * (this process' fds close; the sockets live on in the next agent), let what is open here
   * finish. Resolves when every connection of the pod's listeners ended; the caller bounds
   * the wait with its drain timeout. Tunnel sessions get a graceful GOAWAY and are destroyed
   * after `drainMs`.
   */
  async drain(drainMs: number): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (!this.tunnel) {
      try {
        closeSync(this.enrolled.listeners.tunnel);
      } catch {
        // already closed
      }
    }
    await Promise.allSettled([this.outboundListener?.close(), this.tunnel?.close(drainMs), this.plaintext?.drain()]);
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    // A tunnel listener never handed to a server is still ours to close.
    if (!this.tunnel) {
      try {
        closeSync(this.enrolled.listeners.tunnel);
      } catch {
        // already closed
      }
    }
    await Promise.allSettled([
      this.outboundListener?.close(),
      this.tunnel?.close(),
      this.plaintext?.close(),
    ]);
    // Pooled connections to the pod's app ports (L7 requests served here) go with it.
    this.deps.inbound.forgetWorkload(this.workload.uid);
  }
}
