/**
 * One node's agent: keeps the proxy's view of the mesh (config store), the kernel's capture of
 * local pods (BPF, listeners in pod netns) and the certificates of local identities in step.
 *
 *   config source ──▶ ConfigStore ──▶ reconcile(): for every local, meshed pod with a netns
 *                                       acquire its identity, enroll it in capture, serve it
 *                                       (PodRuntime); release what is gone.
 *
 * Reconciles run one at a time; a pod that fails to enrol is logged and retried on the next
 * change or tick, never taking the agent down.
 */
import { statSync } from 'node:fs';
import type { CaptureManager, HandedListeners, PortHeld } from '../capture/capture-manager.js';
import { CaptureCode } from '../capture/codes.js';
import type { MeshSnapshot, Workload } from '../config/model.js';
import type { ConfigSource } from '../config/source.js';
import { ConfigStore } from '../config/store.js';
import { messageOf, SkeinError } from '../errors.js';
import type { CertificateStore } from '../identity/workload/certificate-store.js';
import { InboundProxy } from '../proxy/inbound/inbound-proxy.js';
import { AgentAuthorizer } from './authorization.js';
import { AgentRateLimits } from './rate-limits.js';
import type { AuditLog } from '../policy/audit-log.js';
import { appConnectorOver, directConnectOver } from '../proxy/netns-sockets.js';
import { LoadShare } from '../proxy/load-share.js';
import { OutboundProxy } from '../proxy/outbound/outbound-proxy.js';
import { TunnelPool } from '../proxy/tunnel/tunnel-pool.js';
import { endLivePipes, livePipeCount } from '../proxy/tcp/l4-pipe.js';
import type { AccessLogPolicy, Logger } from '../telemetry/log.js';
import type { Tracing } from '../telemetry/tracing.js';
import type { IstioMetrics } from '../telemetry/istio-metrics.js';
import type { MeshTraffic } from '../telemetry/mesh-traffic.js';
import { RequestTelemetry } from './request-telemetry.js';
import { AgentCode } from './codes.js';
import type { PodNetnsLocator } from './pod-netns.js';
import { PodRuntime } from './pod-runtime.js';
import { PodSockets } from './pod-sockets.js';
import { type CniAnswer, type CniCall, CniError, CniErrorCode, passThroughAnswer } from './cni-request.js';

export interface NodeAgentOptions {
  node: string;
  source: ConfigSource;
  capture: CaptureManager;
  certificates: CertificateStore;
  /** Finds local pods' network namespaces (from the kubelet's cgroups, never from pod objects). */
  netns: PodNetnsLocator;
  log: Logger;
  /** Periodic reconcile, to retry failures and notice pods whose netns vanished (ms). */
  resyncMs?: number;
  /** After a pod leaves capture, how long its listeners keep accepting what was queued (ms). */
  releaseDrainMs?: number;
  /** HTTP/1 `Upgrade` protocols piped after a 101 (default: websocket only). */
  upgradeProtocols?: readonly string[];
  /** Connections each pod's listener (15001, 15006, 15008) holds at once; beyond it new ones are closed. */
  maxConnectionsPerListener?: number;
  /** Streams each pod's tunnel port (15008) has open at once, and one source identity's share of them. */
  tunnelStreams?: { max?: number; perPeer?: number };
  /** Loop utilization above which a pod sending more than its share is slowed (load-share.ts; 1: never). */
  loadShareBusy?: number;
  /** HTTP requests and HTTP/2 streams each pod's outbound listener (15001) has in flight at once. */
  maxOutboundStreams?: number;
  /** Streams an app's HTTP/2 session at 15001 may reset before their answer per second (rapid-reset budget). */
  h2ResetBudget?: number;
  /** The same budget for each tunnel session at the pods' 15008. */
  tunnelResetBudget?: number;
  /** PING liveness of outbound tunnel sessions (TunnelPool's defaults when absent: 30 s / 10 s). */
  tunnelKeepalive?: { intervalMs: number; timeoutMs: number };
  /** How long opening a tunnel session (TCP + TLS to a peer node's 15008) may take (TunnelPool's default when absent: 10 s). */
  tunnelConnectTimeoutMs?: number;
  /** The hash-chained audit trail of authorization (DENY, AUDIT, dry run); absent: none. */
  auditLog?: AuditLog;
  /** Istio's standard request and TCP metrics, fed by both proxies' records; absent: none. */
  istioMetrics?: IstioMetrics;
  /** Client and server spans of sampled requests, exported over OTLP; absent: no tracing. */
  tracing?: Tracing;
  /** Generate `x-request-id` on requests whose app sent none (Envoy's behaviour). */
  requestIds?: boolean;
  /** Which access-log lines both proxies write (default: all). */
  accessLog?: AccessLogPolicy;
  /** Per-edge summaries and tap for the controller, fed with the metrics' labels (needs istioMetrics). */
  traffic?: MeshTraffic;
  /** CNI ADD: how long to wait for a new pod to appear in the config before refusing (ms). */
  cniPodWaitMs?: number;
}

/** A pod a CNI ADD captured: served from the sandbox's netns (CNI_NETNS) until its DEL. */
interface CniHeldPod {
  containerId: string;
  netnsPath: string;
  /** The sandbox's IPs, from the network plugin's result (the pod object may not have them yet). */
  ips: string[];
}

export interface AgentPodStatus {
  uid: string;
  pod: string;
  identity: string;
  ips: string[];
  netns: string | undefined;
  /**
   * serving; pending: captured and refusing its mesh traffic until it can be served (its
   * certificate not issued yet, or a port the agent needs held by the app); failed: not captured.
   */
  state: 'serving' | 'pending' | 'failed';
  /** Why the pod is pending: SKEIN_AGENT_IDENTITY_PENDING or SKEIN_CAPTURE_PORT_HELD. */
  code?: string;
  error?: string;
}

/** What capture says when it keeps a pod captured and refusing (SKEIN_CAPTURE_PORT_HELD). */
function portHeldOf(err: unknown): PortHeld | undefined {
  if (!(err instanceof SkeinError) || err.code !== CaptureCode.PortHeld) return undefined;
  const held = err.details?.held as PortHeld | undefined;
  return held ?? { code: CaptureCode.PortHeld, port: undefined, reason: err.message };
}

/** The inode of a netns path, or undefined when it is gone. */
function netnsInode(path: string): bigint | undefined {
  try {
    return statSync(path, { bigint: true }).ino;
  } catch {
    return undefined;
  }
}

export class NodeAgent {
  readonly store = new ConfigStore();
  readonly outbound: OutboundProxy;
  readonly inbound: InboundProxy;
  readonly authorizer: AgentAuthorizer;
  readonly rateLimits: AgentRateLimits;
  readonly tunnels: TunnelPool;
  /** Refusals at every local pod's tunnel port (:15008), by stable code, since the agent started. */
  readonly tunnelRefusals = new Map<string, number>();
  /** Connections the local pods' outbound (15001) and plaintext (15006) listeners refused, by code. */
  readonly listenerRefusals = new Map<string, number>();
  /** Each pod's share of this agent's event loop when it is contended (load-share.ts). */
  readonly loadShare: LoadShare;
  private readonly pods = new Map<string, PodRuntime>();
  private readonly failures = new Map<string, string>();
  /** Pods captured at sandbox creation (CNI ADD), by uid; released at their DEL. */
  private readonly cniHeld = new Map<string, CniHeldPod>();
  /**
   * Pods captured but held refusing because the app holds a port the agent needs in its netns
   * (capture's `held`): never released to plaintext; every reconcile tries their listeners again.
   */
  private readonly held = new Map<string, { workload: Workload; held: PortHeld }>();
  /**
   * The netns of each local meshed pod, as found on this node (path and the namespace's
   * inode then): what the proxies connect from.
   */
  private readonly netnsPaths = new Map<string, { path: string; ino: bigint | undefined }>();
  private queue: Promise<void> = Promise.resolve();
  private resyncTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Handing over to a successor: capture is left exactly as it was sent. */
  private frozen = false;
  private configErrors = 0;
  /** Configs applied (ACK) and refused whole (NACK) since the agent started. */
  readonly configUpdates = { ack: 0, nack: 0 };
  /** The proxies' records as Istio's metrics, when asked for. */
  readonly telemetry: RequestTelemetry | undefined;
  private firstReconcileDone = false;

  constructor(readonly opts: NodeAgentOptions) {
    const { capture, certificates, log } = opts;
    // Sockets from inside a pod's netns, found on this node (never the pod object's say).
    const sockets = new PodSockets(capture, (pod) => this.netnsOf(pod));
    this.authorizer = new AgentAuthorizer(this.store, log, opts.auditLog);
    this.rateLimits = new AgentRateLimits(this.store, opts.node);
    const telemetry = opts.istioMetrics ? new RequestTelemetry(this.store, opts.istioMetrics, opts.traffic) : undefined;
    this.telemetry = telemetry;
    this.inbound = new InboundProxy({
      ...(telemetry ? { onRequest: (rec) => telemetry.inboundRequest(rec), onConnection: (rec) => telemetry.inboundConnection(rec) } : {}),
      logger: log,
      // AuthorizationPolicy, per connection (L4) and per request (L7), at the destination.
      authorize: (req) => this.authorizer.authorize(req),
      // BackendTrafficPolicy rateLimit, per request, once the source identity is known.
      rateLimit: (ctx, port) => this.rateLimits.admit(ctx, port),
      // The app is reached from inside its own netns, on its own address, by a marked socket.
      app: appConnectorOver(sockets),
      // Same-node HTTP/2 sessions (outbound -> inbound) on kernel socket pairs.
      socketPair: () => capture.socketPair(),
      ...(opts.tracing ? { tracing: opts.tracing } : {}),
      ...(opts.accessLog ? { accessLog: opts.accessLog } : {}),
    });
    // One agent carries every local pod's connections: a source/destination pair may need
    // thousands of concurrent streams (100 per session), so sessions per key are not the limit.
    this.tunnels = new TunnelPool({
      identity: certificates,
      logger: log,
      maxSessionsPerKey: 1024,
      ...(opts.tunnelKeepalive ? { keepaliveIntervalMs: opts.tunnelKeepalive.intervalMs, keepaliveTimeoutMs: opts.tunnelKeepalive.timeoutMs } : {}),
      ...(opts.tunnelConnectTimeoutMs !== undefined ? { connectTimeoutMs: opts.tunnelConnectTimeoutMs } : {}),
    });
    this.loadShare = new LoadShare(opts.loadShareBusy !== undefined ? { busy: opts.loadShareBusy } : {});
    this.outbound = new OutboundProxy({
      store: this.store,
      localNode: opts.node,
      tunnel: this.tunnels,
      inbound: this.inbound,
      logger: log,
      ...(opts.upgradeProtocols ? { http1: { upgradeProtocols: opts.upgradeProtocols } } : {}),
      ...(opts.h2ResetBudget ? { http2: { maxClientResetsPerWindow: opts.h2ResetBudget } } : {}),
      // Traffic that leaves the mesh (unknown destinations, endpoints outside the mesh) starts
      // from the source pod's netns, so it carries the pod's address as before capture.
      connectDirect: directConnectOver(sockets),
      ...(telemetry ? { onRecord: (rec) => telemetry.outbound(rec) } : {}),
      ...(opts.tracing ? { tracing: opts.tracing } : {}),
      ...(opts.requestIds ? { requestIds: true } : {}),
      ...(opts.accessLog ? { accessLog: opts.accessLog } : {}),
    });
    this.store.subscribe(() => this.schedule());
  }

  /**
   * A new certificate or trust bundle reaches every local tunnel server at once, not at its
   * next periodic check: in a root rotation a peer presents a certificate of the new root
   * right after the CA switched, and our servers must already trust it (and, once the old
   * root is retired, stop trusting that one).
   */
  private readonly onCredentialsChanged = () => {
    for (const rt of this.pods.values()) {
      rt.refreshCredentials().catch((err) => this.opts.log.warn({ err: messageOf(err), pod: `${rt.workload.namespace}/${rt.workload.name}` }, 'tunnel credential refresh failed'));
    }
  };

  async start(): Promise<void> {
    const { source, capture, log } = this.opts;
    this.opts.certificates.on('issued', this.onCredentialsChanged);
    this.opts.certificates.on('bundleChanged', this.onCredentialsChanged);
    await capture.start();
    await source.start(
      (snapshot: MeshSnapshot) => {
        const r = this.store.apply(snapshot);
        this.configUpdates[r.ok ? 'ack' : 'nack']++;
        if (r.ok) log.info({ version: snapshot.version, workloads: snapshot.workloads.length, services: snapshot.services.length }, 'config applied');
        else {
          this.configErrors += 1;
          log.error({ err: r.error, code: r.error.code }, 'config rejected; serving the last good config');
        }
      },
      (err: SkeinError) => {
        this.configErrors += 1;
        log.error({ err, code: err.code }, 'config source error; serving the last good config');
      },
    );
    this.resyncTimer = setInterval(() => this.schedule(), this.opts.resyncMs ?? 5000);
    this.resyncTimer.unref();
    await this.schedule();
    this.firstReconcileDone = true;
  }

  /** Ready once capture is up, a config is applied and the local pods were enrolled once. */
  get ready(): boolean {
    return this.firstReconcileDone && this.opts.capture.started && this.store.snapshot() !== undefined;
  }

  /**
   * The netns of a local meshed pod; the store's copy of a pod never says (it is not the pod's
   * to say). Checked on every use: /proc/PID/ns/net dies with its process, and the process
   * found may have exited since the last reconcile.
   */
  private netnsOf(w: Workload): string {
    const known = this.netnsPaths.get(w.uid);
    if (!known) throw new SkeinError(AgentCode.NoNetns, `pod ${w.namespace}/${w.name} has no known netns on this node`);
    let path: string;
    try {
      path = this.opts.netns.locate(w);
    } catch {
      return known.path; // the reconcile deals with it; this connect fails on its own if the path is dead
    }
    if (path === known.path) return path;
    if (netnsInode(path) === known.ino) {
      known.path = path; // the same namespace, through another process of the pod
      return path;
    }
    void this.schedule(); // a new namespace: the pod is served afresh by the reconcile
    throw new SkeinError(AgentCode.NoNetns, `pod ${w.namespace}/${w.name} changed network namespace; re-enrolling`);
  }

  private rememberNetns(uid: string, path: string): void {
    if (this.netnsPaths.get(uid)?.path !== path) this.netnsPaths.set(uid, { path, ino: netnsInode(path) });
  }

  /**
   * Local pods that belong in capture now, each with the netns found for it on this node. A
   * pod whose netns cannot be found (yet) or trusted is a failure, retried on the next tick.
   */
  private desired(): Map<string, Workload> {
    const out = new Map<string, Workload>();
    for (const w of this.store.localWorkloads(this.opts.node)) {
      if (!w.meshEnabled) continue;
      const held = this.cniHeld.get(w.uid);
      if (held) {
        // Captured when its sandbox was made: the sandbox's netns and IPs are the kernel's
        // truth, known before any process of the pod runs (which the cgroup search needs).
        out.set(w.uid, { ...w, ips: held.ips, netnsPath: held.netnsPath });
        this.rememberNetns(w.uid, held.netnsPath);
        continue;
      }
      if (w.ips.length === 0) continue;
      try {
        const netnsPath = this.opts.netns.locate(w);
        out.set(w.uid, { ...w, netnsPath });
        // Known from now on, not once enrolled: a local pod may be the destination of a meshed
        // neighbour's connection before this reconcile reaches it.
        this.rememberNetns(w.uid, netnsPath);
        this.failures.delete(w.uid); // an enrolment that fails again below says so again
      } catch (err) {
        const why = messageOf(err);
        if (this.failures.get(w.uid) !== why) {
          this.opts.log.warn({ pod: `${w.namespace}/${w.name}`, uid: w.uid, code: (err as { code?: string }).code, err }, 'pod network namespace not found; not captured yet');
        }
        this.failures.set(w.uid, why);
        // A pod already served stays captured on what was found before: releasing it would let
        // its traffic out uncaptured. Capture itself drops it if that namespace is gone.
        const served = this.pods.get(w.uid);
        if (served) out.set(w.uid, { ...w, netnsPath: served.workload.netnsPath });
      }
    }
    return out;
  }

  /** Queues one reconcile (they never overlap). */
  schedule(): Promise<void> {
    this.queue = this.queue.then(() => (this.stopped || this.frozen ? undefined : this.reconcile())).catch((err) => {
      this.opts.log.error({ err }, 'reconcile failed');
    });
    return this.queue;
  }

  private async reconcile(): Promise<void> {
    const { capture, certificates, log } = this.opts;
    const want = this.desired();
    for (const [uid, rt] of this.pods) {
      if (want.has(uid)) continue;
      await this.releasePod(uid, rt);
    }
    for (const [uid, h] of this.held) {
      if (want.has(uid)) continue;
      this.held.delete(uid);
      await capture.release(uid).catch(() => false);
      certificates.release(h.workload.identity, uid);
      log.info({ pod: `${h.workload.namespace}/${h.workload.name}` }, 'held pod released');
    }
    for (const uid of this.netnsPaths.keys()) if (!want.has(uid) && !this.pods.has(uid)) this.netnsPaths.delete(uid);
    for (const uid of this.failures.keys()) if (!this.store.workloadByUid(uid)) this.failures.delete(uid);
    for (const w of this.store.localWorkloads(this.opts.node)) if (!w.meshEnabled) this.failures.delete(w.uid);
    // Pods a previous agent enrolled, or whose netns is gone, are cleaned up by capture itself.
    const gone = await capture.reconcile([...want.values()].map((w) => ({ uid: w.uid, netnsPath: w.netnsPath })));
    for (const uid of gone) log.info({ uid }, 'released pod capture left by a previous agent or a vanished netns');
    for (const [uid, w] of want) {
      let rt = this.pods.get(uid);
      if (rt && rt.workload.netnsPath !== w.netnsPath && netnsInode(w.netnsPath!) !== rt.enrolled.netnsIno) {
        // A new sandbox, so a new namespace: serve it afresh (new listeners, new capture slot).
        await this.releasePod(uid, rt);
        rt = undefined;
      }
      this.rememberNetns(uid, w.netnsPath!);
      if (rt) {
        rt.update(w); // the same namespace, perhaps reached through another process
        continue;
      }
      certificates.acquire(w.identity, uid);
      try {
        const enrolled = await capture.enroll({
          uid: w.uid,
          netnsPath: w.netnsPath!,
          ips: w.ips,
          excludeOutboundPorts: w.excludeOutboundPorts,
          excludeInboundPorts: w.excludeInboundPorts,
        });
        this.held.delete(uid);
        const started = await PodRuntime.start(w, enrolled, {
          capture,
          outbound: this.outbound,
          inbound: this.inbound,
          identity: certificates,
          log,
          onTunnelRefusal: (code) => this.tunnelRefusals.set(code, (this.tunnelRefusals.get(code) ?? 0) + 1),
          onListenerRefusal: (code) => this.listenerRefusals.set(code, (this.listenerRefusals.get(code) ?? 0) + 1),
          ...(this.opts.maxConnectionsPerListener ? { maxConnections: this.opts.maxConnectionsPerListener } : {}),
          ...(this.opts.tunnelStreams ? { tunnelStreams: this.opts.tunnelStreams } : {}),
          loadShare: this.loadShare,
          ...(this.opts.maxOutboundStreams ? { maxOutboundStreams: this.opts.maxOutboundStreams } : {}),
          ...(this.opts.tunnelResetBudget ? { tunnelResetBudget: this.opts.tunnelResetBudget } : {}),
          peerAuthentication: (pod, port) => this.authorizer.mtlsMode(pod, port),
        });
        this.pods.set(uid, started);
        this.failures.delete(uid);
        log.info({ pod: `${w.namespace}/${w.name}`, identity: w.identity, ips: w.ips, ...(started.pending ? { pending: started.pending } : {}) }, 'pod enrolled');
      } catch (err) {
        const held = portHeldOf(err);
        if (held) {
          // Captured and refusing, NOT released: releasing would hand the pod plaintext.
          const before = this.held.get(uid);
          this.held.set(uid, { workload: w, held });
          this.failures.delete(uid);
          if (before?.held.reason !== held.reason) {
            log.warn({ pod: `${w.namespace}/${w.name}`, code: held.code, port: held.port, reason: held.reason }, 'pod captured refusing: the app holds a port the agent needs; served once it is free');
          }
          continue;
        }
        this.failures.set(uid, messageOf(err));
        this.held.delete(uid);
        certificates.release(w.identity, uid);
        await capture.release(uid).catch(() => false);
        log.error({ err, pod: `${w.namespace}/${w.name}`, code: (err as { code?: string }).code }, 'pod enrolment failed; will retry');
      }
    }
  }

  private async releasePod(uid: string, rt: PodRuntime): Promise<void> {
    this.pods.delete(uid);
    // Capture off first (new connections go direct again), then stop accepting once what the
    // kernel already queued on the listeners has been taken: the other order resets them.
    await this.opts.capture.release(uid);
    await new Promise((r) => setTimeout(r, this.opts.releaseDrainMs ?? 500));
    await rt.close();
    this.netnsPaths.delete(uid);
    this.opts.netns.forget(uid);
    this.opts.certificates.release(rt.workload.identity, uid);
    this.opts.log.info({ pod: `${rt.workload.namespace}/${rt.workload.name}` }, 'pod released');
  }

  /**
   * Upgrade, old side: stop changing capture (a successor is receiving the pods' listening
   * sockets, which must stay as they were sent) and list them.
   */
  async freezeForHandover(): Promise<HandedListeners[]> {
    this.frozen = true;
    await this.queue;
    return [...this.pods.entries()].map(([uid, rt]) => ({ uid, netnsCookie: rt.enrolled.netnsCookie, slot: rt.enrolled.slot, listeners: rt.enrolled.listeners }));
  }

  /** The successor went away before taking over: reconcile again. */
  resumeAfterHandover(): void {
    this.frozen = false;
    void this.schedule();
  }

  /**
   * Upgrade, old side, after the successor took over: stop accepting (the successor accepts
   * on the same sockets), let HTTP/1 keep-alive connections close after their next response,
   * send HTTP/2 client and tunnel sessions a graceful GOAWAY, let L4 streams run. At
   * `drainMs`, or once everything closed: idle keep-alive connections are closed and L4 pipes
   * ended with a FIN. Call stop() after.
   */
  async drainForHandover(drainMs: number): Promise<{ complete: boolean; pipesEnded: number; ms: number }> {
    const t0 = Date.now();
    this.frozen = true;
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    this.outbound.drain();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), drainMs);
    });
    // Keep-alive connections that sent nothing since the drain began are idle, not busy:
    // close them halfway (a busy one has had its Connection: close by then).
    const idleTimer = setTimeout(() => this.outbound.closeIdleHttp1(), Math.min(1000, drainMs / 2));
    const drained = Promise.allSettled([...this.pods.values()].map((rt) => rt.drain(drainMs))).then(() => true as const);
    const complete = await Promise.race([drained, deadline]);
    clearTimeout(timer);
    clearTimeout(idleTimer);
    this.outbound.closeIdleHttp1();
    const pipesEnded = endLivePipes();
    if (!complete) {
      this.opts.log.warn({ code: AgentCode.DrainTimeout, drainMs, pipesEnded }, 'drain timeout: ending the connections still open (L4 with a FIN)');
      // A moment for the FINs to be answered, bounded.
      for (let i = 0; i < 20 && livePipeCount() > 0; i++) await new Promise((r) => setTimeout(r, 50));
    }
    return { complete, pipesEnded, ms: Date.now() - t0 };
  }

  /**
   * One CNI call from skein-cni (the pod's sandbox is being made or removed). ADD of a meshed
   * pod answers only once the pod is captured and its listeners serve; anything else that
   * stops that fails the ADD, so the runtime retries and the pod never starts uncaptured.
   */
  async cni(call: CniCall): Promise<CniAnswer> {
    if (call.command === 'ADD') return this.cniAdd(call);
    if (call.command === 'DEL') return this.cniDel(call);
    return this.cniCheck(call);
  }

  private cniPodOf(call: CniCall): Workload | undefined {
    const p = call.pod;
    if (!p) return undefined;
    for (const w of this.store.localWorkloads(this.opts.node)) {
      if (w.namespace !== p.namespace || w.name !== p.name) continue;
      if (p.uid && w.uid !== p.uid) continue; // a pod of the same name, not this one
      return w;
    }
    return undefined;
  }

  /** The pod from the config, waiting a bounded time: the sandbox may be made before the controller's update arrives. */
  private async cniWaitPod(call: CniCall): Promise<Workload> {
    const deadline = Date.now() + (this.opts.cniPodWaitMs ?? 10_000);
    for (;;) {
      const w = this.cniPodOf(call);
      if (w) return w;
      if (Date.now() >= deadline || this.stopped) {
        throw new CniError(CniErrorCode.TryAgainLater, AgentCode.CniPodUnknown, `pod ${call.pod?.namespace}/${call.pod?.name} is not in the agent's config for node ${this.opts.node} yet`, {
          uid: call.pod?.uid,
        });
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  private async cniAdd(call: CniCall): Promise<CniAnswer> {
    const w = await this.cniWaitPod(call);
    const pod = `${w.namespace}/${w.name}`;
    if (!w.meshEnabled) {
      this.opts.log.info({ pod, containerId: call.containerId }, 'CNI ADD: pod not in the mesh; passed through');
      return passThroughAnswer(call);
    }
    const netns = call.netns!;
    if (call.prevIps.length === 0) {
      throw new CniError(CniErrorCode.InvalidConfig, AgentCode.CniNetnsMismatch, `the network plugin gave pod ${pod} no IP (prevResult.ips is empty): nothing to capture`);
    }
    let check: { missing: string[]; hostNetns: boolean };
    try {
      check = await this.opts.capture.addressesMissingIn(netns, call.prevIps);
    } catch (err) {
      throw new CniError(CniErrorCode.TryAgainLater, AgentCode.CniNetnsMismatch, `cannot check CNI_NETNS ${netns} of pod ${pod}: ${messageOf(err)}`);
    }
    // The path is the runtime's to give, but the agent is privileged: it captures only a
    // namespace that really holds the addresses the network plugin just gave this pod.
    if (check.hostNetns || check.missing.length > 0) {
      throw new CniError(
        CniErrorCode.InvalidConfig,
        AgentCode.CniNetnsMismatch,
        check.hostNetns ? `CNI_NETNS ${netns} is the node's own network namespace; not captured` : `CNI_NETNS ${netns} does not hold ${check.missing.join(', ')} of pod ${pod}`,
        { netns, ips: call.prevIps },
      );
    }
    this.cniHeld.set(w.uid, { containerId: call.containerId, netnsPath: netns, ips: call.prevIps });
    await this.schedule();
    const rt = this.pods.get(w.uid);
    if (!rt || rt.enrolled.netnsIno !== netnsInode(netns)) {
      if (this.cniHeld.get(w.uid)?.containerId === call.containerId) this.cniHeld.delete(w.uid);
      void this.schedule(); // drop whatever half of it is left
      throw new CniError(CniErrorCode.TryAgainLater, AgentCode.CniCaptureFailed, `pod ${pod} could not be captured: ${this.failures.get(w.uid) ?? 'not enrolled'}`);
    }
    this.opts.log.info({ pod, containerId: call.containerId, netns, ips: call.prevIps, ...(rt.pending ? { pending: rt.pending } : {}) }, 'CNI ADD: pod captured before start');
    return passThroughAnswer(call);
  }

  private async cniDel(call: CniCall): Promise<CniAnswer> {
    let uid: string | undefined;
    for (const [u, held] of this.cniHeld) if (held.containerId === call.containerId) uid = u;
    if (uid === undefined) return { exitCode: 0, stdout: '' }; // never held, or already released: DEL is idempotent
    const held = this.cniHeld.get(uid)!;
    this.cniHeld.delete(uid);
    // Released in the reconcile queue (never beside a reconcile), only if it is still this sandbox's.
    this.queue = this.queue.then(async () => {
      const rt = this.pods.get(uid);
      if (rt && rt.workload.netnsPath === held.netnsPath) await this.releasePod(uid, rt);
    });
    await this.queue.catch(() => {});
    this.opts.log.info({ uid, containerId: call.containerId }, 'CNI DEL: pod released');
    return { exitCode: 0, stdout: '' };
  }

  private async cniCheck(call: CniCall): Promise<CniAnswer> {
    const w = this.cniPodOf(call);
    if (!w) throw new CniError(CniErrorCode.UnknownContainer, AgentCode.CniCheckFailed, `pod ${call.pod?.namespace}/${call.pod?.name} is not in the agent's config`);
    if (!w.meshEnabled) return { exitCode: 0, stdout: '' };
    const rt = this.pods.get(w.uid);
    if (!rt || rt.enrolled.netnsIno !== netnsInode(call.netns!)) {
      throw new CniError(CniErrorCode.TryAgainLater, AgentCode.CniCheckFailed, `meshed pod ${w.namespace}/${w.name} is not captured in ${call.netns}`);
    }
    return { exitCode: 0, stdout: '' };
  }

  /** Every served local pod's tunnel port, summed: sessions open now, streams received. */
  tunnelServerStats(): { sessions: number; streams: number } {
    const sum = { sessions: 0, streams: 0 };
    for (const rt of this.pods.values()) {
      const s = rt.tunnelStats();
      if (s) {
        sum.sessions += s.sessions;
        sum.streams += s.streams;
      }
    }
    return sum;
  }

  /** Requests/streams in flight now per local pod, at its outbound listener and tunnel port (admin /stats). */
  openStreams(): Record<string, { outbound: number; tunnel: number | undefined }> {
    const out: Record<string, { outbound: number; tunnel: number | undefined }> = {};
    for (const rt of this.pods.values()) out[`${rt.workload.namespace}/${rt.workload.name}`] = rt.openStreams();
    return out;
  }

  status(): { node: string; configVersion: string | undefined; configErrors: number; pods: AgentPodStatus[] } {
    const pods: AgentPodStatus[] = [];
    for (const [uid, rt] of this.pods) {
      const w = rt.workload;
      const pending = rt.pending;
      pods.push({ uid, pod: `${w.namespace}/${w.name}`, identity: w.identity, ips: w.ips, netns: w.netnsPath, state: pending ? 'pending' : 'serving', ...(pending ? { code: AgentCode.IdentityPending, error: pending } : {}) });
    }
    for (const [uid, { workload: w, held }] of this.held) {
      pods.push({ uid, pod: `${w.namespace}/${w.name}`, identity: w.identity, ips: w.ips, netns: w.netnsPath, state: 'pending', code: held.code, error: held.reason });
    }
    for (const [uid, error] of this.failures) {
      const w = this.store.workloadByUid(uid);
      pods.push({ uid, pod: w ? `${w.namespace}/${w.name}` : uid, identity: w?.identity ?? '', ips: w?.ips ?? [], netns: w?.netnsPath, state: 'failed', error });
    }
    return { node: this.opts.node, configVersion: this.store.snapshot()?.version, configErrors: this.configErrors, pods };
  }

  /**
   * Stops serving. Capture stays in the kernel (pins) so a restarted agent adopts it; in the
   * meantime captured connections are refused rather than leaking around the mesh.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.opts.certificates.off('issued', this.onCredentialsChanged);
    this.opts.certificates.off('bundleChanged', this.onCredentialsChanged);
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    await this.queue;
    await this.opts.source.stop();
    await Promise.allSettled([...this.pods.values()].map((rt) => rt.close()));
    this.pods.clear();
    await this.outbound.close();
    this.loadShare.stop();
    await this.tunnels.close();
    this.inbound.close();
    this.telemetry?.close();
    this.opts.traffic?.close();
    this.opts.certificates.close();
    this.opts.auditLog?.close();
    await this.opts.capture.close();
  }
}

