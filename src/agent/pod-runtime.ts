/**
 * The proxy's presence in one enrolled pod: the servers on the three listening sockets the
 * capture layer opened inside the pod's netns.
 *
 *   15001 outbound  -> OutboundListener -> OutboundProxy (original destination read back from the BPF map)
 *   15006 plaintext -> PlaintextListener (STRICT refuses, PERMISSIVE serves)
 *   15008 tunnel    -> TunnelServer (mTLS + HTTP/2 CONNECT, HBONE)
 */
import type { CaptureManager, EnrolledPod } from '../capture/capture-manager.js';
import type { Workload } from '../config/model.js';
import type { IdentitySource } from '../identity/workload/types.js';
import type { InboundProxy } from '../proxy/inbound/inbound-proxy.js';
import { PlaintextListener } from '../proxy/inbound/plaintext-listener.js';
import { OutboundListener } from '../proxy/outbound/outbound-listener.js';
import type { OutboundProxy } from '../proxy/outbound/outbound-proxy.js';
import { TunnelServer } from '../proxy/tunnel/tunnel-server.js';
import type { Logger } from '../telemetry/log.js';
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
  /** STRICT or PERMISSIVE for plaintext to a port of the pod (PeerAuthentication). */
  peerAuthentication?: (workload: Workload, port: number) => 'STRICT' | 'PERMISSIVE';
}

export class PodRuntime {
  private outboundListener: OutboundListener | undefined;
  private tunnel: TunnelServer | undefined;
  private plaintext: PlaintextListener | undefined;

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
    const { capture, outbound, inbound, identity, log } = this.deps;
    const fds = this.enrolled.listeners;
    this.outboundListener = new OutboundListener({
      workload: this.workload,
      outbound,
      originalDestination: (socket) => capture.originalDestination(socket),
      onUnknownDestination: (err, workload) =>
        log.warn({ err, pod: `${workload.namespace}/${workload.name}`, code: AgentCode.NoOriginalDst }, 'outbound connection without original destination refused'),
      ...this.caps(this.deps.onListenerRefusal),
    });
    await this.outboundListener.listen({ fd: fds.outbound });
    this.tunnel = await TunnelServer.create({
      workload: this.workload,
      identity,
      inbound,
      logger: log,
      ...this.caps(this.deps.onTunnelRefusal),
    });
    await this.tunnel.listen({ fd: fds.tunnel });
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

  async close(): Promise<void> {
    await Promise.allSettled([
      this.outboundListener?.close(),
      this.tunnel?.close(),
      this.plaintext?.close(),
    ]);
    // Pooled connections to the pod's app ports (L7 requests served here) go with it.
    this.deps.inbound.forgetWorkload(this.workload.uid);
  }
}
