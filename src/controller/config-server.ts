/**
 * skein.config.v1.ConfigDiscovery: streams each authenticated agent the resources of its
 * node, a full state first and deltas after, one unacknowledged response at a time.
 *
 * Per stream the server keeps what the agent has ACKed (resource -> version). A change in
 * the index is turned into the difference between what the agent should hold now and what
 * it ACKed, restricted to the resources that changed (plus policies, whose reach depends on
 * which workloads a node runs). A NACK leaves the ACKed state as it was; the refused
 * resources are reconsidered at the next change.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { messageOf } from '../errors.js';
import type { Authenticator, CallerIdentity } from '../identity/ca/authn.js';
import { bearerTokenOf } from '../identity/ca/authn.js';
import {
  type ConfigDiscoveryHandlers,
  type ConfigRequest,
  type ConfigResponse,
  configDiscoveryService,
  type PolicyStatus,
  type TrafficStatus,
  type Resource,
  type StatusResponse,
  type TapControl,
  type CaStatus,
  type IdentityControl,
  type IdentityReport,
} from '../api/config-wire.js';
import { TapError, TapHub } from './tap-hub.js';
import { TrafficWindow } from './traffic-window.js';
import { type Logger, silentLogger } from '../telemetry/log.js';
import type { MeshIndex } from './mesh-index.js';
import type { AuthorizationPolicy } from '../config/policy-model.js';
import { tcpNote } from '../policy/authorization.js';
import type { IndexUpdate, Refusal, ResourceEntry } from './resources.js';
import { selectorMatches } from '../config/policy-model.js';
import { shutdownGrpcServer } from '../api/grpc-shutdown.js';
import { ControllerCode } from './codes.js';
import type { ConfigServerMetrics } from './metrics.js';

export const DEFAULT_CONFIG_PORT = 15010;

export interface AgentStatus {
  node: string;
  peer: string;
  connectedAt: string;
  ackedVersion: string;
  acks: number;
  nacks: number;
  lastNack: string;
  resources: number;
  bytesSent: number;
}

export interface ConfigServerOptions {
  index: MeshIndex;
  authenticator: Authenticator;
  /** host:port; default 0.0.0.0:15010. Port 0 picks a free one. */
  address?: string;
  /** Default insecure (loopback tests); the controller passes TLS credentials. */
  credentials?: grpc.ServerCredentials;
  /** Identifies this replica in responses and status. */
  controllerId?: string;
  /** Extra status fields (leadership) supplied by the controller. */
  isLeader?: () => boolean;
  /** Every refusal to report (the controller adds unreadable files); default the index's. */
  refusals?: () => readonly Refusal[];
  /** Number of declared objects, for status. */
  objects?: () => number;
  /** Pushes and the agents' answers, as they happen (the controller's metrics). */
  metrics?: ConfigServerMetrics;
  /** How far back GetTraffic and the graph page look (ms). Default 60 s. */
  trafficWindowMs?: number;
  /** The operator's credential (RotateCa needs it; status calls accept it too). Absent: RotateCa is refused. */
  operatorToken?: () => string | undefined;
  logger?: Logger;
}

/** What GetCaStatus and RotateCa do (ca-rotation.ts); absent when the controller hosts no CA. */
export interface CaOperations {
  status(): CaStatus;
  rotate(step: string): Promise<CaStatus>;
}

/** An agent's last identity report (its trust bundle, its certificates' roots). */
export interface AgentIdentity {
  node: string;
  report: IdentityReport | undefined;
  reportedAt: Date | undefined;
}

interface AgentStream {
  call: grpc.ServerDuplexStream<ConfigRequest, ConfigResponse>;
  caller: CallerIdentity;
  node: string;
  peer: string;
  connectedAt: Date;
  /** resource key (`type|key`) -> version the agent ACKed. */
  acked: Map<string, string>;
  ackedVersion: string;
  inflight: { nonce: string; next: Map<string, string>; version: string; keys: string[]; sentAt: number } | undefined;
  /** Changed since the last response (candidates for the next delta). */
  pending: Set<string>;
  /** Policy keys among `acked` (their reach can end without the policy changing). */
  ackedPolicies: Set<string>;
  /** Keys of NACKed responses: reconsidered at the next change. */
  refused: Set<string>;
  needFull: boolean;
  seq: number;
  acks: number;
  nacks: number;
  lastNack: string;
  bytesSent: number;
  identity: IdentityReport | undefined;
  identityAt: Date | undefined;
}

function isPolicyKey(k: string): boolean {
  return k.startsWith('authorization|') || k.startsWith('peer-authentication|');
}

export class ConfigServer {
  readonly controllerId: string;
  private readonly server = new grpc.Server({ 'grpc.keepalive_time_ms': 30_000, 'grpc.keepalive_timeout_ms': 10_000 });
  private readonly streams = new Set<AgentStream>();
  private readonly log: Logger;
  private boundPort: number | undefined;
  private unsubscribe: (() => void) | undefined;
  /** The agents' per-edge summaries over the last window (GetTraffic, the graph page). */
  readonly traffic: TrafficWindow;
  /** Tap sessions, relayed to and from the agents on their streams. */
  readonly taps = new TapHub();
  /** Set by the controller when it hosts the CA. */
  caOperations: CaOperations | undefined;

  constructor(private readonly opts: ConfigServerOptions) {
    this.controllerId = opts.controllerId ?? `controller-${randomBytes(4).toString('hex')}`;
    this.log = (opts.logger ?? silentLogger()).child({ component: 'config-server' });
    this.traffic = new TrafficWindow({ windowMs: opts.trafficWindowMs });
    const handlers: ConfigDiscoveryHandlers = {
      StreamConfig: (call) => {
        this.serve(call).catch((err) => this.log.warn({ err: messageOf(err) }, 'config stream failed'));
      },
      GetStatus: (call, cb) => {
        this.authenticate(call.metadata, call.getPeer()).then(
          () => cb(null, this.wireStatus()),
          (err) => cb({ code: grpc.status.UNAUTHENTICATED, details: messageOf(err) }),
        );
      },
      GetCaStatus: (call, cb) => {
        this.authenticate(call.metadata, call.getPeer()).then(
          () => {
            const ops = this.caOperations;
            if (!ops) cb({ code: grpc.status.UNIMPLEMENTED, details: `${ControllerCode.NoCa}: this controller hosts no CA` });
            else cb(null, ops.status());
          },
          (err) => cb({ code: grpc.status.UNAUTHENTICATED, details: messageOf(err) }),
        );
      },
      RotateCa: (call, cb) => {
        const ops = this.caOperations;
        if (!this.isOperator(call.metadata)) {
          this.log.warn({ peer: call.getPeer(), code: ControllerCode.OperatorRefused, step: call.request.step }, 'CA rotation refused: not the operator credential');
          cb({ code: grpc.status.PERMISSION_DENIED, details: `${ControllerCode.OperatorRefused}: rotating the CA needs the operator credential (controller --operator-token-file)` });
          return;
        }
        if (!ops) {
          cb({ code: grpc.status.UNIMPLEMENTED, details: `${ControllerCode.NoCa}: this controller hosts no CA` });
          return;
        }
        ops.rotate(call.request.step).then(
          (res) => cb(null, res),
          (err) => {
            const code = (err as { code?: string }).code ?? '';
            const grpcCode = code === ControllerCode.RotationNotConverged || code === ControllerCode.RotationNotRotatable ? grpc.status.FAILED_PRECONDITION : code === ControllerCode.RotationStep ? grpc.status.INVALID_ARGUMENT : grpc.status.INTERNAL;
            cb({ code: grpcCode, details: code && !messageOf(err).startsWith(code) ? `${code}: ${messageOf(err)}` : messageOf(err) });
          },
        );
      },
      GetTraffic: (call, cb) => {
        this.authenticate(call.metadata, call.getPeer()).then(
          () => cb(null, this.traffic.snapshot()),
          (err) => cb({ code: grpc.status.UNAUTHENTICATED, details: messageOf(err) }),
        );
      },
      // Request metadata of live traffic: the same credentials as status, and bounded (tap-hub.ts).
      Tap: (call) => {
        this.authenticate(call.metadata, call.getPeer()).then(
          () => {
            if (call.cancelled) return;
            let session: { id: string; stop: () => void };
            try {
              session = this.taps.start(call.request, { onEvent: (e) => call.write(e), onEnd: () => call.end() });
            } catch (err) {
              if (!(err instanceof TapError)) throw err;
              call.emit('error', { code: grpc.status.RESOURCE_EXHAUSTED, details: err.message });
              return;
            }
            this.log.info({ session: session.id, peer: call.getPeer(), filter: call.request.filter }, 'tap session started');
            call.on('cancelled', () => session.stop());
            call.on('close', () => session.stop());
          },
          (err) => call.emit('error', { code: grpc.status.UNAUTHENTICATED, details: messageOf(err) }),
        );
      },
    };
    this.server.addService(configDiscoveryService(), handlers);
  }

  get port(): number {
    if (this.boundPort === undefined) throw new Error('config server not started');
    return this.boundPort;
  }

  async start(): Promise<number> {
    const address = this.opts.address ?? `0.0.0.0:${DEFAULT_CONFIG_PORT}`;
    const creds = this.opts.credentials ?? grpc.ServerCredentials.createInsecure();
    this.boundPort = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(address, creds, (err, port) => (err ? reject(err) : resolve(port))),
    );
    this.unsubscribe = this.opts.index.onUpdate((u) => this.onIndexUpdate(u));
    this.log.info({ address, port: this.boundPort, controllerId: this.controllerId }, 'config gRPC server listening');
    return this.boundPort;
  }

  /** Stops: open streams are cancelled (agents reconnect elsewhere / later). */
  async stop(graceMs = 1000): Promise<void> {
    this.unsubscribe?.();
    this.taps.close();
    for (const s of this.streams) s.call.end();
    await shutdownGrpcServer(this.server, graceMs);
  }

  /** Kills every stream and the listener at once (tests: a crashed controller). */
  kill(): void {
    this.unsubscribe?.();
    this.server.forceShutdown();
  }

  agents(): AgentStatus[] {
    return [...this.streams].map((s) => ({
      node: s.node,
      peer: s.peer,
      connectedAt: s.connectedAt.toISOString(),
      ackedVersion: s.ackedVersion,
      acks: s.acks,
      nacks: s.nacks,
      lastNack: s.lastNack,
      resources: s.acked.size,
      bytesSent: s.bytesSent,
    }));
  }

  /**
   * Per accepted policy (authorization, peer authentication): the connected agents whose node
   * runs a pod it applies to, and which of them ACKed its current version. A policy is
   * Enforced once every one of them has; Accepted alone only says it is valid.
   */
  policyStatus(): PolicyStatus[] {
    const out: PolicyStatus[] = [];
    for (const [key, e] of this.opts.index.entries()) {
      if (e.type !== 'authorization' && e.type !== 'peer-authentication') continue;
      const needed: string[] = [];
      const enforced: string[] = [];
      for (const s of this.streams) {
        if (!this.applies(e, s.node)) continue;
        needed.push(s.node);
        if (s.acked.get(key) === e.version) enforced.push(s.node);
      }
      needed.sort();
      enforced.sort();
      const kind = e.type === 'authorization' ? 'AuthorizationPolicy' : 'PeerAuthentication';
      const note = e.type === 'authorization' ? tcpNote(JSON.parse(e.json) as AuthorizationPolicy) : '';
      out.push({ object: `${kind}/${e.key}`, version: e.version, needed_on: needed, enforced_on: enforced, enforced: enforced.length === needed.length, note });
    }
    return out.sort((a, b) => (a.object < b.object ? -1 : 1));
  }

  /** Accepted routes and backend traffic policies, and which connected agents ACKed their version. */
  trafficStatus(): TrafficStatus[] {
    const out: TrafficStatus[] = [];
    for (const [key, e] of this.opts.index.entries()) {
      if (e.type !== 'route' && e.type !== 'backend-policy') continue;
      const acked: string[] = [];
      for (const s of this.streams) if (s.acked.get(key) === e.version) acked.push(s.node);
      acked.sort();
      out.push({ object: e.type === 'route' ? e.key : `BackendTrafficPolicy/${e.key}`, version: e.version, acked_on: acked, agents: this.streams.size });
    }
    return out.sort((a, b) => (a.object < b.object ? -1 : 1));
  }

  private wireStatus(): StatusResponse {
    const idx = this.opts.index;
    return {
      controller_id: this.controllerId,
      version: idx.version,
      objects: this.opts.objects?.() ?? 0,
      resources: idx.entries().size,
      refusals: (this.opts.refusals?.() ?? idx.refusals()).map((r) => ({ object: r.object, origin: r.origin, field: r.field, reason: r.reason, code: r.code })),
      agents: this.agents().map((a) => ({
        node: a.node,
        peer: a.peer,
        connected_at: a.connectedAt,
        acked_version: a.ackedVersion,
        acks: a.acks,
        nacks: a.nacks,
        last_nack: a.lastNack,
        resources: a.resources,
        bytes_sent: a.bytesSent,
      })),
      leader: this.opts.isLeader?.() ?? true,
      policies: this.policyStatus(),
      traffic: this.trafficStatus(),
    };
  }

  /** The connected agents' identity reports (one per stream). */
  agentIdentities(): AgentIdentity[] {
    return [...this.streams].map((s) => ({ node: s.node, report: s.identity, reportedAt: s.identityAt }));
  }

  /** Sends an identity control (refresh the bundle, re-issue) to the named agents' streams, or every agent's. */
  sendIdentityControl(control: IdentityControl, nodes?: readonly string[]): string[] {
    const sent: string[] = [];
    for (const s of this.streams) {
      if (nodes && !nodes.includes(s.node)) continue;
      this.sendControl(s, { identity: control });
      sent.push(s.node);
    }
    return sent;
  }

  private isOperator(md: grpc.Metadata): boolean {
    const want = this.opts.operatorToken?.();
    const auth = md.get('authorization')[0];
    const got = bearerTokenOf(typeof auth === 'string' ? auth : undefined);
    if (!want || !got) return false;
    const a = Buffer.from(want);
    const b = Buffer.from(got);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  private async authenticate(md: grpc.Metadata, peer: string, allowOperator = true): Promise<CallerIdentity> {
    // The operator's credential reads what a node's does (status, traffic, tap, CA status); it opens no config stream.
    if (allowOperator && this.isOperator(md)) return { node: '(operator)', method: 'operator-token' };
    const auth = md.get('authorization')[0];
    return this.opts.authenticator.authenticate({ bearerToken: bearerTokenOf(typeof auth === 'string' ? auth : undefined), peer });
  }

  private async serve(call: grpc.ServerDuplexStream<ConfigRequest, ConfigResponse>): Promise<void> {
    const peer = call.getPeer();
    let caller: CallerIdentity;
    try {
      caller = await this.authenticate(call.metadata, peer, false);
    } catch (err) {
      this.log.warn({ peer, code: ControllerCode.Unauthenticated, err: messageOf(err) }, 'config stream refused');
      call.emit('error', { code: grpc.status.UNAUTHENTICATED, details: `${ControllerCode.Unauthenticated}: unauthenticated` });
      return;
    }
    let stream: AgentStream | undefined;
    let tapAgent: { node: string; send: (tap: TapControl) => void } | undefined;
    call.on('data', (req: ConfigRequest) => {
      try {
        if (!stream) {
          const node = req.node || caller.node;
          if (node !== caller.node) {
            this.log.warn({ peer, node, authenticated: caller.node }, 'agent asked for another node; refused');
            call.emit('error', {
              code: grpc.status.PERMISSION_DENIED,
              details: `${ControllerCode.Unauthenticated}: credentials are for node ${caller.node}, not ${node}`,
            });
            return;
          }
          stream = {
            call,
            caller,
            node,
            peer,
            connectedAt: new Date(),
            acked: new Map(),
            ackedVersion: '',
            inflight: undefined,
            pending: new Set(),
            refused: new Set(),
            ackedPolicies: new Set(),
            needFull: true,
            seq: 0,
            acks: 0,
            nacks: 0,
            lastNack: '',
            bytesSent: 0,
            identity: undefined,
            identityAt: undefined,
          };
          this.streams.add(stream);
          if (req.identity) {
            stream.identity = req.identity;
            stream.identityAt = new Date();
          }
          this.log.info({ node, peer, agentVersion: req.agent_version }, 'agent connected');
          this.send(stream);
          const s = stream;
          tapAgent = { node, send: (tap) => this.sendControl(s, { tap }) };
          this.taps.agentConnected(tapAgent);
          return;
        }
        // Reports and tap events carry no nonce: neither an ACK nor a NACK.
        if (req.traffic) this.traffic.add(stream.node, req.traffic);
        if (req.identity) {
          stream.identity = req.identity;
          stream.identityAt = new Date();
        }
        if (req.tap_events?.length) this.taps.deliver(stream.node, req.tap_events);
        if (!req.response_nonce) return;
        this.onAck(stream, req);
      } catch (err) {
        this.log.error({ err: messageOf(err), node: stream?.node }, 'config stream handling failed');
      }
    });
    const done = () => {
      if (tapAgent) this.taps.agentGone(tapAgent);
      if (stream && this.streams.delete(stream)) this.log.info({ node: stream.node, peer }, 'agent disconnected');
    };
    call.on('end', () => {
      done();
      call.end();
    });
    call.on('error', done);
    call.on('cancelled', done);
    call.on('close', done);
  }

  private onAck(s: AgentStream, req: ConfigRequest): void {
    const inflight = s.inflight;
    if (!inflight || req.response_nonce !== inflight.nonce) return; // stale: an older response
    s.inflight = undefined;
    const seconds = (performance.now() - inflight.sentAt) / 1000;
    if (req.error_detail && (req.error_detail.message || req.error_detail.code)) {
      this.opts.metrics?.answered({ result: 'nack', seconds });
      s.nacks++;
      s.lastNack = `${req.error_detail.code ?? ''}: ${req.error_detail.message ?? ''}`;
      for (const k of inflight.keys) s.refused.add(k);
      this.log.warn({ node: s.node, version: inflight.version, nonce: inflight.nonce, ...req.error_detail }, 'agent NACKed config; it keeps its last good one');
      // A NACKed full state stays owed: the next change sends a full state again.
      return;
    }
    this.opts.metrics?.answered({ result: 'ack', seconds });
    s.acks++;
    s.acked = inflight.next;
    s.ackedPolicies = new Set([...s.ackedPolicies, ...inflight.keys].filter((k) => isPolicyKey(k) && s.acked.has(k)));
    s.ackedVersion = inflight.version;
    s.needFull = false;
    s.refused.clear();
    this.send(s);
  }

  private onIndexUpdate(u: IndexUpdate): void {
    for (const s of this.streams) {
      for (const k of u.changed) s.pending.add(k);
      for (const k of s.refused) s.pending.add(k);
      s.refused.clear();
      this.send(s);
    }
  }

  /** Does `e` belong in `node`'s view? */
  private applies(e: ResourceEntry, node: string): boolean {
    return entryAppliesTo(this.opts.index, e, node);
  }

  /** A control message (tap, identity) on an agent's stream: no nonce, no config, nothing to ACK. */
  private sendControl(s: AgentStream, control: { tap: TapControl } | { identity: IdentityControl }): void {
    if (!this.streams.has(s)) return;
    s.call.write({
      system_version: s.ackedVersion,
      nonce: '',
      full_state: false,
      resources: [],
      removed_resources: [],
      trust_domain: this.opts.index.trustDomain,
      cluster_domain: this.opts.index.clusterDomain,
      controller_id: this.controllerId,
      ...control,
    });
  }

  private send(s: AgentStream): void {
    if (s.inflight) return;
    const entries = this.opts.index.entries();
    const resources: Resource[] = [];
    const removed: { type: string; key: string }[] = [];
    let next: Map<string, string>;
    const full = s.needFull;
    if (full) {
      next = new Map();
      for (const [k, e] of entries) {
        if (!this.applies(e, s.node)) continue;
        next.set(k, e.version);
        resources.push({ type: e.type, key: e.key, version: e.version, json: e.json });
      }
    } else {
      // Policies' reach moves with workloads: always reconsider them.
      const candidates = s.pending;
      for (const k of this.opts.index.policyKeys()) candidates.add(k);
      for (const k of s.ackedPolicies) candidates.add(k);
      next = new Map(s.acked);
      for (const k of candidates) {
        const e = entries.get(k);
        const want = e && this.applies(e, s.node) ? e.version : undefined;
        const have = s.acked.get(k);
        if (want === have) continue;
        if (e && want !== undefined) {
          next.set(k, want);
          resources.push({ type: e.type, key: e.key, version: e.version, json: e.json });
        } else {
          next.delete(k);
          const bar = k.indexOf('|');
          removed.push({ type: k.slice(0, bar), key: k.slice(bar + 1) });
        }
      }
    }
    s.pending = new Set();
    if (!full && resources.length === 0 && removed.length === 0) return;
    const nonce = `${++s.seq}-${randomBytes(4).toString('hex')}`;
    const version = this.opts.index.version;
    const res: ConfigResponse = {
      system_version: version,
      nonce,
      full_state: full,
      resources,
      removed_resources: removed,
      trust_domain: this.opts.index.trustDomain,
      cluster_domain: this.opts.index.clusterDomain,
      controller_id: this.controllerId,
    };
    s.inflight = { nonce, next, version, keys: [...resources.map((r) => `${r.type}|${r.key}`), ...removed.map((r) => `${r.type}|${r.key}`)], sentAt: performance.now() };
    let bytes = 64 + version.length + nonce.length;
    for (const r of resources) bytes += r.type.length + r.key.length + r.version.length + r.json.length + 8;
    for (const r of removed) bytes += r.type.length + r.key.length + 4;
    s.bytesSent += bytes;
    this.opts.metrics?.pushed({ full, resources: resources.length, removed: removed.length, bytes });
    this.log.debug({ node: s.node, version, nonce, full, added: resources.length, removed: removed.length, bytes }, 'config sent');
    s.call.write(res);
  }
}

/**
 * Does `e` belong in `node`'s view: its own workloads, every Service and node, and the
 * policies that apply to a meshed pod the node runs (in the policy's namespace, or any
 * namespace from the root namespace)?
 */
export function entryAppliesTo(index: MeshIndex, e: ResourceEntry, node: string): boolean {
  if (e.type === 'workload') return e.node === node;
  if (!e.policy) return true;
  const root = e.namespace === index.rootNamespace;
  for (const w of index.workloadsOn(node)) {
    if (!w.meshEnabled) continue;
    if (!root && w.namespace !== e.namespace) continue;
    if (selectorMatches(e.selector, w.labels)) return true;
  }
  return false;
}
