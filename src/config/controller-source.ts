/**
 * ControllerConfigSource: the agent's ConfigSource over the controller's config stream
 * (skein.config.v1.ConfigDiscovery, src/api/config.proto).
 *
 * It holds the resources the controller sent (type|key -> version + value). Each response
 * is applied to a copy: a full state replaces the copy, a delta patches it; the copy is
 * assembled into a snapshot and checked with the same validation ConfigStore.apply runs
 * (plus the agent's own `validate`). Only a sound snapshot is committed, handed to
 * `onSnapshot` and ACKed; otherwise the response is NACKed with the reason and the agent
 * keeps its last good config — never half of one.
 *
 * When the stream breaks the source reconnects with exponential backoff (jittered) and the
 * agent keeps serving its last snapshot meanwhile; a (re)connected controller sends a full
 * state, which replaces the held one (identical content makes an empty diff in the store).
 */
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type { NodeInfo, Service, Workload } from './model.js';
import { messageOf, SkeinError } from '../errors.js';
import type { AuthorizationPolicy, BackendTrafficPolicy, ControlledMeshSnapshot, MeshRoute, PeerAuthenticationPolicy } from './policy-model.js';
import { ConfigDiscoveryClient, type ConfigRequest, type ConfigResponse, type IdentityControl, type IdentityReport } from '../api/config-wire.js';
import { type Logger, silentLogger } from '../telemetry/log.js';
import type { MeshTraffic } from '../telemetry/mesh-traffic.js';
import type { ConfigSource } from './source.js';
import { findSnapshotProblem } from './validate.js';
import { ConfigCode } from './codes.js';

export interface ControllerBackoff {
  /** First retry delay (ms). Default 250. */
  initialMs?: number;
  /**
   * Ceiling (ms). Default 10000: an agent is back on a returned controller within ~10 s. (At
   * 30 s, an outage of about 30 s left agents up to 36 s more on their last config; the
   * controller e2e caught it once in CI.)
   */
  maxMs?: number;
  /** Growth factor. Default 2. */
  multiplier?: number;
  /** +-fraction of random spread so agents don't reconnect in lockstep. Default 0.2. */
  jitter?: number;
}

export interface ControllerConfigSourceOptions {
  /** host:port of the controller's config stream (default port 15010). */
  address: string;
  /** This agent's node name (must be the node the token authenticates). */
  node: string;
  /** Bearer token (lab: the node's bootstrap token), or a file to read it from on each connect. */
  token?: string;
  tokenFile?: string;
  /** PEM roots to verify the controller's TLS certificate; absent (and no rootsFile) = plaintext (loopback only). */
  rootsPem?: string | string[];
  /** A PEM bundle file (the lab's roots.pem), re-read at every (re)connect so a rotated bundle is picked up. */
  rootsFile?: string;
  /**
   * The roots to verify the controller with, asked at every (re)connect: the agent's current
   * trust bundle, so a reconnect after a root rotation verifies the controller's new
   * certificate. Wins over rootsPem and rootsFile.
   */
  roots?: () => string[];
  /** TLS name to verify when dialling by IP (default: the host of `address`). */
  serverName?: string;
  backoff?: ControllerBackoff;
  /** Agent-side checks beyond the store's; return a reason to NACK. */
  validate?: (snapshot: ControlledMeshSnapshot) => string | undefined;
  agentVersion?: string;
  /** Called for every response received, before it is applied (admin view, tests). */
  observe?: (r: ObservedResponse) => void;
  /** What the agent saw per edge, reported every `trafficReportMs` on the stream, and tap sessions served; absent: none. */
  traffic?: MeshTraffic;
  /** How often the per-edge summaries go to the controller (ms). Default 5000. */
  trafficReportMs?: number;
  /**
   * The agent's identity state for the controller (root rotation): `report` goes in the first
   * request and with every `reportIdentity()`; `onControl` gets the controller's signals.
   */
  identity?: { report: () => IdentityReport; onControl: (c: IdentityControl) => void };
  logger?: Logger;
}

/** A response as received: what changed, not the content. */
export interface ObservedResponse {
  version: string;
  nonce: string;
  full: boolean;
  controllerId: string;
  /** `type|key` of resources added or updated. */
  updated: string[];
  /** `type|key` of resources removed. */
  removed: string[];
}

/** What the source holds now (admin/config dump). */
export interface ControllerSourceState {
  connected: boolean;
  controllerId: string;
  version: string;
  resources: number;
  acks: number;
  nacks: number;
  reconnects: number;
  lastError: string | undefined;
}

interface Held {
  type: string;
  version: string;
  value: unknown;
}

function byKey<T>(a: [string, T], b: [string, T]): number {
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}

/** Assembles the snapshot an agent serves from the held resources. */
export function assembleSnapshot(held: Map<string, Held>, version: string, trustDomain: string, clusterDomain: string): ControlledMeshSnapshot {
  const s: ControlledMeshSnapshot = {
    version,
    trustDomain,
    clusterDomain,
    nodes: [],
    workloads: [],
    services: [],
    routes: [],
    authorizationPolicies: [],
    peerAuthentications: [],
    backendTrafficPolicies: [],
  };
  for (const [, h] of [...held.entries()].sort(byKey)) {
    switch (h.type) {
      case 'node':
        s.nodes.push(h.value as NodeInfo);
        break;
      case 'workload':
        s.workloads.push(h.value as Workload);
        break;
      case 'service':
        s.services.push(h.value as Service);
        break;
      case 'route':
        s.routes.push(h.value as MeshRoute);
        break;
      case 'authorization':
        s.authorizationPolicies.push(h.value as AuthorizationPolicy);
        break;
      case 'peer-authentication':
        s.peerAuthentications.push(h.value as PeerAuthenticationPolicy);
        break;
      case 'backend-policy':
        s.backendTrafficPolicies.push(h.value as BackendTrafficPolicy);
        break;
      default:
        break; // a newer controller's type: ignored, so controllers can upgrade first
    }
  }
  return s;
}

export class ControllerConfigSource implements ConfigSource {
  private readonly log: Logger;
  private client: ConfigDiscoveryClient | undefined;
  private call: grpc.ClientDuplexStream<ConfigRequest, ConfigResponse> | undefined;
  private clientRoots = '';
  private held = new Map<string, Held>();
  private running = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private reportTimer: NodeJS.Timeout | undefined;
  private attempt = 0;
  private firstReported: (() => void) | undefined;
  private onSnapshot: ((s: ControlledMeshSnapshot) => void) | undefined;
  private onError: ((e: SkeinError) => void) | undefined;
  private readonly status: ControllerSourceState = {
    connected: false,
    controllerId: '',
    version: '',
    resources: 0,
    acks: 0,
    nacks: 0,
    reconnects: 0,
    lastError: undefined,
  };

  constructor(private readonly opts: ControllerConfigSourceOptions) {
    this.log = (opts.logger ?? silentLogger()).child({ component: 'controller-source', node: opts.node });
  }

  state(): ControllerSourceState {
    return { ...this.status, resources: this.held.size };
  }

  async start(onSnapshot: (s: ControlledMeshSnapshot) => void, onError: (e: SkeinError) => void): Promise<void> {
    if (this.running) throw new SkeinError(ConfigCode.SourceStarted, 'ControllerConfigSource already started');
    this.running = true;
    this.onSnapshot = onSnapshot;
    this.onError = onError;
    const traffic = this.opts.traffic;
    if (traffic) {
      // Reports ride the stream held now; while there is none the summaries keep adding up.
      this.reportTimer = setInterval(() => {
        if (this.call && this.status.connected) this.call.write({ traffic: traffic.drain() });
      }, this.opts.trafficReportMs ?? 5000);
      this.reportTimer.unref();
      traffic.setTapSink((events) => this.call?.write({ tap_events: events }));
    }
    await new Promise<void>((resolve) => {
      this.firstReported = resolve;
      this.connect();
    });
  }

  async stop(): Promise<void> {
    this.running = false;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.reportTimer) clearInterval(this.reportTimer);
    this.opts.traffic?.setTapSink(undefined);
    this.call?.cancel();
    this.call = undefined;
    this.client?.close();
    this.firstReported?.();
  }

  /** Sends the agent's identity report on the stream held now (none held: the next connect sends it). */
  reportIdentity(): void {
    const id = this.opts.identity;
    if (!id || !this.call) return;
    this.call.write({ identity: id.report() });
  }

  /** The channel, rebuilt when the trusted roots changed (a rotated CA bundle in `rootsFile`). */
  private ensureClient(): NonNullable<typeof this.client> {
    // An empty bundle never means plaintext: fall back to the configured roots.
    const current = this.opts.roots?.();
    const roots = current?.length ? current : this.opts.rootsFile ? readFileSync(this.opts.rootsFile, 'utf8') : this.opts.rootsPem;
    const rootsText = roots === undefined ? '' : Array.isArray(roots) ? roots.join('') : roots;
    if (this.client && rootsText === this.clientRoots) return this.client;
    this.client?.close();
    const creds = rootsText ? grpc.credentials.createSsl(Buffer.from(rootsText)) : grpc.credentials.createInsecure();
    const options: grpc.ChannelOptions = {
      'grpc.keepalive_time_ms': 20_000,
      'grpc.keepalive_timeout_ms': 10_000,
      // Our own backoff decides when to retry; keep grpc-js's channel from adding much of its own.
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 1000,
      // A full state is one message: ~1.1 KB per Service with a few endpoints, so the 4 MiB
      // default would cap a mesh at a few thousand Services.
      'grpc.max_receive_message_length': 256 * 1024 * 1024,
    };
    if (this.opts.serverName) options['grpc.ssl_target_name_override'] = this.opts.serverName;
    this.client = new ConfigDiscoveryClient(this.opts.address, creds, options);
    this.clientRoots = rootsText;
    return this.client;
  }

  private token(): string | undefined {
    if (this.opts.tokenFile) return readFileSync(this.opts.tokenFile, 'utf8').trim();
    return this.opts.token;
  }

  private connect(): void {
    if (!this.running) return;
    const md = new grpc.Metadata();
    let token: string | undefined;
    let client: NonNullable<typeof this.client>;
    try {
      token = this.token();
      client = this.ensureClient();
    } catch (err) {
      this.fail(new SkeinError(ConfigCode.ControllerUnavailable, `cannot read token or roots file: ${messageOf(err)}`, { file: this.opts.tokenFile ?? this.opts.rootsFile }));
      return;
    }
    if (token) md.set('authorization', `Bearer ${token}`);
    const call = client.streamConfig(md);
    this.call = call;
    let ended = false;
    const end = (err: unknown) => {
      if (ended) return;
      ended = true;
      if (this.call === call) this.call = undefined;
      this.status.connected = false;
      this.opts.traffic?.stopTaps(); // the controller that asked is gone; a new one asks again
      if (!this.running) return;
      const e = err as grpc.ServiceError | undefined;
      this.fail(
        new SkeinError(ConfigCode.ControllerUnavailable, `controller stream ended: ${e?.details ?? messageOf(err ?? 'closed')}`, {
          grpcCode: e?.code,
          address: this.opts.address,
        }),
      );
    };
    call.on('data', (res: ConfigResponse) => this.onResponse(call, res));
    call.on('error', end);
    call.on('end', () => end(undefined));
    call.write({
      node: this.opts.node,
      agent_version: this.opts.agentVersion ?? 'skein-agent',
      ...(this.opts.identity ? { identity: this.opts.identity.report() } : {}),
    });
  }

  private fail(err: SkeinError): void {
    this.status.lastError = err.message;
    const delay = this.nextDelay();
    this.log.warn({ code: err.code, err: err.message, retryInMs: delay }, 'controller unavailable; serving last good config');
    this.onError?.(err);
    this.reportFirst();
    if (this.running) {
      this.status.reconnects++;
      this.retryTimer = setTimeout(() => this.connect(), delay);
      this.retryTimer.unref();
    }
  }

  private nextDelay(): number {
    const b = this.opts.backoff ?? {};
    const initial = b.initialMs ?? 250;
    const max = b.maxMs ?? 10_000;
    const mult = b.multiplier ?? 2;
    const jitter = b.jitter ?? 0.2;
    const base = Math.min(max, initial * mult ** this.attempt++);
    return Math.max(1, Math.round(base * (1 + (Math.random() * 2 - 1) * jitter)));
  }

  private reportFirst(): void {
    const r = this.firstReported;
    this.firstReported = undefined;
    r?.();
  }

  private onResponse(call: grpc.ClientDuplexStream<ConfigRequest, ConfigResponse>, res: ConfigResponse): void {
    if (res.tap) this.opts.traffic?.tapControl(res.tap);
    if (res.identity) this.opts.identity?.onControl(res.identity);
    if (!res.nonce) return; // a control message (tap), no config: nothing to apply or ACK
    this.status.connected = true;
    this.attempt = 0; // the controller answered: the next outage starts the backoff afresh
    this.status.controllerId = res.controller_id;
    this.opts.observe?.({
      version: res.system_version,
      nonce: res.nonce,
      full: res.full_state,
      controllerId: res.controller_id,
      updated: res.resources.map((r) => `${r.type}|${r.key}`),
      removed: res.removed_resources.map((r) => `${r.type}|${r.key}`),
    });
    const next = res.full_state ? new Map<string, Held>() : new Map(this.held);
    let problem: { resource?: string; field?: string; reason: string } | undefined;
    for (const r of res.resources) {
      const k = `${r.type}|${r.key}`;
      const prev = this.held.get(k);
      if (prev && prev.version === r.version) {
        next.set(k, prev); // same content: keep the parsed value (and object identity)
        continue;
      }
      try {
        next.set(k, { type: r.type, version: r.version, value: JSON.parse(r.json) });
      } catch (err) {
        problem = { resource: k, field: 'json', reason: `not JSON: ${messageOf(err)}` };
        break;
      }
    }
    for (const r of res.removed_resources) next.delete(`${r.type}|${r.key}`);
    let snapshot: ControlledMeshSnapshot | undefined;
    if (!problem) {
      snapshot = assembleSnapshot(next, res.system_version, res.trust_domain, res.cluster_domain);
      const p = findSnapshotProblem(snapshot);
      if (p) problem = { field: p.field, reason: p.reason };
      else {
        const reason = this.opts.validate?.(snapshot);
        if (reason) problem = { reason };
      }
    }
    if (problem || !snapshot) {
      const reason = problem?.reason ?? 'unknown';
      const err = new SkeinError(ConfigCode.ControllerRejected, `config ${res.system_version} refused: ${problem?.field ? `${problem.field}: ` : ''}${reason}`, {
        version: res.system_version,
        nonce: res.nonce,
        ...problem,
      });
      this.status.nacks++;
      this.status.lastError = err.message;
      this.log.warn({ code: err.code, version: res.system_version, ...problem }, 'config from controller refused; keeping last good config');
      call.write({
        response_nonce: res.nonce,
        applied_version: this.status.version,
        error_detail: { code: err.code, message: err.message, resource: problem?.resource ?? '', field: problem?.field ?? '' },
      });
      this.onError?.(err);
      this.reportFirst();
      return;
    }
    this.held = next;
    this.status.version = res.system_version;
    this.status.acks++;
    this.status.lastError = undefined;
    this.log.debug({ version: res.system_version, full: res.full_state, changed: res.resources.length, removed: res.removed_resources.length }, 'config applied');
    try {
      this.onSnapshot?.(snapshot);
    } finally {
      call.write({ response_nonce: res.nonce, applied_version: res.system_version });
      this.reportFirst();
    }
  }
}
