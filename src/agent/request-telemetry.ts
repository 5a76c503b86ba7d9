/**
 * The proxies' records (outbound: reporter source; inbound: reporter destination) as Istio's
 * standard metrics (telemetry/istio-metrics.ts). Per record: one key built from the record's
 * own fields and one Map lookup; the labels (workloads, apps, versions, services: store
 * lookups) are worked out only the first time a key is seen under a config.
 *
 * Who the peer is: at the source, the local pod that connected (its listener says so) and the
 * endpoint chosen; at the destination, the authenticated peer identity, and the source pod
 * found by the IP its agent names only if that pod has that identity (an agent can only speak
 * for pods of the identity whose certificate it holds).
 */
import { parseAuthority } from '../proxy/tunnel/authority.js';
import type { Service, SpiffeId, Workload } from '../config/model.js';
import type { ConfigStore } from '../config/store.js';
import type { OutboundRecord } from '../proxy/outbound/outbound-proxy.js';
import type { InboundConnectionRecord } from '../proxy/inbound/inbound-proxy.js';
import type { InboundRequestRecord } from '../proxy/inbound/inbound-http.js';
import type { MeshTraffic } from '../telemetry/mesh-traffic.js';
import { type IstioMetrics, NO_FLAGS, ResponseFlag, flagsLabel, type RequestLabels, type TcpLabels, UNKNOWN } from '../telemetry/istio-metrics.js';

/**
 * Fields the source side's records carry once the HTTP forwarders count them (the lead wires
 * them in src/proxy/http and src/proxy/outbound); used when present.
 */
export interface SourceRecordExtras {
  /** Request body bytes the client sent (HTTP). */
  requestBytes?: number;
  /** Response body bytes sent back to the client (HTTP). */
  responseBytes?: number;
  /** Envoy-style flags (telemetry/istio-metrics.ts ResponseFlag), comma-separated. */
  responseFlags?: string;
}
export type SourceRecord = OutboundRecord & SourceRecordExtras;

interface Peer {
  workload: string;
  namespace: string;
  principal: string;
  app: string;
  version: string;
}

interface ServiceLabels {
  service: string;
  name: string;
  namespace: string;
}

const NO_SERVICE: ServiceLabels = { service: UNKNOWN, name: UNKNOWN, namespace: UNKNOWN };

/** `ns` of `spiffe://td/ns/<ns>/sa/<sa>`. */
function namespaceOf(id: SpiffeId | undefined): string | undefined {
  if (!id) return undefined;
  const m = /\/ns\/([^/]+)\/sa\//.exec(id);
  return m?.[1];
}

function peerOf(w: Workload | undefined, principal: SpiffeId | undefined): Peer {
  if (!w) return { workload: UNKNOWN, namespace: namespaceOf(principal) ?? UNKNOWN, principal: principal ?? UNKNOWN, app: UNKNOWN, version: UNKNOWN };
  const l = w.labels;
  return {
    workload: w.workloadName ?? w.name,
    namespace: w.namespace,
    principal: principal ?? UNKNOWN,
    app: l.app ?? l['app.kubernetes.io/name'] ?? UNKNOWN,
    version: l.version ?? l['app.kubernetes.io/version'] ?? UNKNOWN,
  };
}

function serviceLabels(s: Service): ServiceLabels {
  return { service: s.hostname, name: s.name, namespace: s.namespace };
}

/** `ip` of `ip:port` / `[v6]:port`. */
function ipOf(authority: string | undefined): string | undefined {
  return authority ? parseAuthority(authority)?.address : undefined;
}

/** The host of a Host / :authority value (port and IPv6 brackets removed). */
export function hostOf(authority: string): string {
  const m = /^\[([^\]]*)\](?::\d+)?$/.exec(authority) ?? /^([^:]*)(?::\d+)?$/.exec(authority);
  return m ? m[1]! : authority; // a bare IPv6 address has colons and no port
}

/** Flags a source record says, or what its fields imply when it says none. */
export function sourceFlags(rec: SourceRecord): string {
  if (rec.responseFlags) return flagsLabel(rec.responseFlags);
  if (rec.kind !== 'http') {
    if (rec.end === 'connect-failed') return ResponseFlag.UpstreamConnectFailure;
    if (rec.end === 'idle-timeout') return ResponseFlag.StreamIdleTimeout;
    return NO_FLAGS;
  }
  // Only what is certain from the record: a 503 with no endpoint chosen was answered here; a
  // 503 from an endpoint may be the app's own (the forwarders will say UF when it is not).
  if (rec.status === 0) return ResponseFlag.DownstreamConnectionTermination;
  if (rec.status === 503 && !rec.upstream) return ResponseFlag.NoHealthyUpstream;
  return NO_FLAGS;
}

export class RequestTelemetry {
  private readonly unsubscribe: () => void;

  constructor(
    private readonly store: ConfigStore,
    private readonly metrics: IstioMetrics,
    /** Per-edge summaries and tap for the controller (skein top, tap, the graph); absent: none. */
    private readonly traffic?: MeshTraffic,
  ) {
    // A new config may relabel the same records (a pod's labels, a Service's endpoints).
    this.unsubscribe = store.subscribe(() => metrics.invalidate());
  }

  close(): void {
    this.unsubscribe();
  }

  /** The outbound proxy's hook: one record per request (L7) or connection (L4). */
  outbound(rec: SourceRecord): void {
    const flags = sourceFlags(rec);
    if (rec.kind === 'http') {
      const key = `${rec.sourceWorkload}|${rec.destination}|${rec.upstream ?? ''}|${rec.destinationPrincipal ?? ''}|${rec.status ?? 0}|${rec.grpcStatus ?? ''}|${flags}`;
      const s = this.metrics.lookupRequest(key) ?? this.metrics.bindRequest(key, this.outboundLabels(rec, flags));
      this.metrics.request(s, rec.durationMs, rec.requestBytes, rec.responseBytes);
      this.traffic?.request(s.labels, { method: rec.method, path: rec.path, status: rec.status ?? 0, grpcStatus: rec.grpcStatus, durationMs: rec.durationMs, requestBytes: rec.requestBytes, responseBytes: rec.responseBytes, flags });
      return;
    }
    const key = `${rec.kind}|${rec.sourceWorkload}|${rec.destination}|${rec.upstream ?? ''}|${rec.destinationPrincipal ?? ''}|${flags}`;
    const s = this.metrics.lookupTcp(key) ?? this.metrics.bindTcp(key, this.outboundTcpLabels(rec, flags));
    // Istio's TCP metrics count at the proxy towards the client: sent = to the client.
    this.metrics.connection(s, rec.bytesSent ?? 0, rec.bytesReceived ?? 0);
    this.traffic?.connection(s.labels, { durationMs: rec.durationMs, towardsDestination: rec.bytesSent ?? 0, towardsSource: rec.bytesReceived ?? 0, flags });
  }

  /** The inbound side's hook for HTTP requests (reporter destination). */
  inboundRequest(rec: InboundRequestRecord): void {
    const flags = flagsLabel(rec.responseFlags);
    const key = `${rec.workload}|${rec.port}|${rec.source}|${rec.sourceIp ?? ''}|${rec.sourcePeer?.workload ?? ''}|${rec.authority}|${rec.grpc ? 1 : 0}|${rec.status}|${rec.grpcStatus ?? ''}|${flags}`;
    const s = this.metrics.lookupRequest(key) ?? this.metrics.bindRequest(key, this.inboundLabels(rec, flags));
    this.metrics.request(s, rec.durationMs, rec.requestBytes, rec.responseBytes);
    this.traffic?.request(s.labels, { method: rec.method, path: rec.path, status: rec.status, grpcStatus: rec.grpcStatus, durationMs: rec.durationMs, requestBytes: rec.requestBytes, responseBytes: rec.responseBytes, flags });
  }

  /** The inbound side's hook for connections: L4, upgrades, refusals (reporter destination). */
  inboundConnection(rec: InboundConnectionRecord): void {
    const flags = flagsLabel(rec.responseFlags);
    const key = `${rec.workload}|${rec.port}|${rec.source ?? ''}|${rec.sourceIp ?? ''}|${rec.connectionSecurityPolicy}|${flags}`;
    const s = this.metrics.lookupTcp(key) ?? this.metrics.bindTcp(key, this.inboundTcpLabels(rec, flags));
    // bytesReceived: from the client towards the app.
    this.metrics.connection(s, rec.bytesReceived, rec.bytesSent);
    this.traffic?.connection(s.labels, { durationMs: rec.durationMs, towardsDestination: rec.bytesReceived, towardsSource: rec.bytesSent, flags });
  }

  // --- label resolution (once per record key and config) ---

  private workloadByName(nsName: string): Workload | undefined {
    const slash = nsName.indexOf('/');
    const ns = nsName.slice(0, slash);
    const name = nsName.slice(slash + 1);
    // The pod's own record: the local pods are few, so a scan of this node's list would do, but
    // the uid is not in the record; look it up among all workloads once per key.
    for (const w of this.store.snapshot()?.workloads ?? []) if (w.namespace === ns && w.name === name) return w;
    return undefined;
  }

  /** The Service a request to `dst` (`ip:port`) was for: by VIP, else one selecting the pod there. */
  private serviceOfDestination(dst: string, hostname: string | undefined): ServiceLabels {
    const a = parseAuthority(dst);
    if (a) {
      const byVip = this.store.serviceByVip(a.address, a.port);
      if (byVip) return serviceLabels(byVip.service);
      const w = this.store.workloadByIp(a.address);
      if (w) {
        const s = this.serviceOfPod(w, a.port, undefined);
        if (s !== NO_SERVICE) return s;
      }
    }
    if (hostname) {
      const s = this.store.snapshot()?.services.find((x) => x.hostname === hostname);
      if (s) return serviceLabels(s);
    }
    return NO_SERVICE;
  }

  /**
   * The Service a request to pod `w`'s `port` was for: the one whose endpoints include the pod
   * on that target port; when several do, the one the request's host names (FQDN, short forms,
   * ClusterIP), else the first by namespace/name.
   */
  private serviceOfPod(w: Workload, port: number, authority: string | undefined): ServiceLabels {
    const matches: Service[] = [];
    for (const s of this.store.snapshot()?.services ?? []) {
      for (const e of s.endpoints) {
        if (e.workloadUid !== w.uid && !w.ips.includes(e.ip)) continue;
        if (Object.values(e.ports).includes(port)) matches.push(s);
        break;
      }
    }
    if (matches.length === 0) return NO_SERVICE;
    if (matches.length > 1 && authority) {
      const host = hostOf(authority).toLowerCase();
      const named = matches.find(
        (s) => s.hostname === host || s.name === host || `${s.name}.${s.namespace}` === host || `${s.name}.${s.namespace}.svc` === host || s.vips.includes(host),
      );
      if (named) return serviceLabels(named);
    }
    matches.sort((x, y) => `${x.namespace}/${x.name}`.localeCompare(`${y.namespace}/${y.name}`));
    return serviceLabels(matches[0]!);
  }

  /**
   * The pod at `ip`, if it has identity `principal` (any, for plaintext): this node's own
   * workloads are in the store; another node's are known by the Service endpoints they are.
   */
  private peerAt(ip: string | undefined, principal: SpiffeId | undefined, plaintext: boolean): Peer {
    if (!ip) return peerOf(undefined, principal);
    const w = this.store.workloadByIp(ip);
    if (w) return plaintext || w.identity === principal ? peerOf(w, principal) : peerOf(undefined, principal);
    for (const s of this.store.snapshot()?.services ?? []) {
      for (const e of s.endpoints) {
        if (e.ip !== ip || !e.peer || (!plaintext && e.identity !== principal)) continue;
        const m = e.peer;
        return { workload: m.workloadName, namespace: m.namespace, principal: principal ?? UNKNOWN, app: m.app ?? UNKNOWN, version: m.version ?? UNKNOWN };
      }
    }
    return peerOf(undefined, principal);
  }

  /** The source pod at the destination: the one at the IP its agent names, if it has the peer's identity. */
  private sourceAtDestination(source: SpiffeId | undefined, sourceIp: string | undefined, plaintext: boolean): Peer {
    return this.peerAt(sourceIp, plaintext ? undefined : source, plaintext);
  }

  private outboundLabels(rec: SourceRecord, flags: string): RequestLabels {
    const grpc = rec.grpcStatus !== undefined || this.declaredGrpc(rec.destination);
    return {
      ...this.outboundCommon(rec, flags),
      request_protocol: grpc ? 'grpc' : 'http',
      response_code: String(rec.status ?? 0),
      grpc_response_status: rec.grpcStatus !== undefined ? String(rec.grpcStatus) : '',
      response_flags: flags,
    };
  }

  private outboundTcpLabels(rec: SourceRecord, flags: string): TcpLabels {
    return { ...this.outboundCommon(rec, flags), request_protocol: 'tcp', response_flags: flags };
  }

  private outboundCommon(rec: SourceRecord, flags: string): Omit<TcpLabels, 'request_protocol' | 'response_flags'> & { response_flags: string } {
    const src = peerOf(this.workloadByName(rec.sourceWorkload), rec.source);
    const upstreamIp = ipOf(rec.upstream);
    const dst = this.peerAt(upstreamIp, rec.destinationPrincipal, rec.destinationPrincipal === undefined);
    let svc = rec.kind === 'passthrough' ? undefined : this.serviceOfDestination(rec.destination, rec.destinationService);
    if (!svc) {
      // Istio's name for traffic to destinations outside the mesh's services.
      const ip = ipOf(rec.destination) ?? UNKNOWN;
      svc = { service: ip, name: 'PassthroughCluster', namespace: UNKNOWN };
    }
    return {
      reporter: 'source',
      source_workload: src.workload,
      source_workload_namespace: src.namespace,
      source_principal: rec.connectionSecurityPolicy === 'mutual_tls' ? src.principal : UNKNOWN,
      source_app: src.app,
      source_version: src.version,
      destination_workload: dst.workload,
      destination_workload_namespace: dst.namespace,
      destination_principal: dst.principal,
      destination_app: dst.app,
      destination_version: dst.version,
      destination_service: svc.service,
      destination_service_name: svc.name,
      destination_service_namespace: svc.namespace,
      response_flags: flags,
      connection_security_policy: rec.connectionSecurityPolicy,
    };
  }

  private declaredGrpc(dst: string): boolean {
    const a = parseAuthority(dst);
    if (!a) return false;
    return this.store.serviceByVip(a.address, a.port)?.port.appProtocol === 'grpc';
  }

  private inboundCommon(workload: string, port: number, authority: string | undefined, src: Peer, csp: 'mutual_tls' | 'none'): Omit<TcpLabels, 'request_protocol' | 'response_flags'> {
    const pod = this.workloadByName(workload);
    const slash = workload.indexOf('/');
    const dst = peerOf(pod, pod?.identity);
    const svc = pod ? this.serviceOfPod(pod, port, authority) : NO_SERVICE;
    return {
      reporter: 'destination',
      source_workload: src.workload,
      source_workload_namespace: src.namespace,
      source_principal: src.principal,
      source_app: src.app,
      source_version: src.version,
      destination_workload: pod ? dst.workload : workload.slice(slash + 1),
      destination_workload_namespace: pod ? dst.namespace : workload.slice(0, slash),
      destination_principal: csp === 'mutual_tls' ? dst.principal : UNKNOWN,
      destination_app: dst.app,
      destination_version: dst.version,
      destination_service: svc.service,
      destination_service_name: svc.name,
      destination_service_namespace: svc.namespace,
      connection_security_policy: csp,
    };
  }

  private inboundLabels(rec: InboundRequestRecord, flags: string): RequestLabels {
    let src = this.sourceAtDestination(rec.source, rec.sourceIp, false);
    // A pod of another node that is no Service's endpoint: its agent's peer metadata names it
    // (the namespace and principal stay the authenticated ones).
    if (src.workload === UNKNOWN && rec.sourcePeer) {
      const p = rec.sourcePeer;
      src = { ...src, workload: p.workload, app: p.app || UNKNOWN, version: p.version || UNKNOWN };
    }
    return {
      ...this.inboundCommon(rec.workload, rec.port, rec.authority, src, rec.connectionSecurityPolicy),
      request_protocol: rec.grpc ? 'grpc' : 'http',
      response_code: String(rec.status),
      grpc_response_status: rec.grpcStatus !== undefined ? String(rec.grpcStatus) : '',
      response_flags: flags,
    };
  }

  private inboundTcpLabels(rec: InboundConnectionRecord, flags: string): TcpLabels {
    const src = this.sourceAtDestination(rec.source, rec.sourceIp, rec.transport === 'plaintext');
    return { ...this.inboundCommon(rec.workload, rec.port, undefined, src, rec.connectionSecurityPolicy), request_protocol: 'tcp', response_flags: flags };
  }
}
