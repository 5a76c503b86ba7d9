/**
 * The agent's one config store: the current MeshSnapshot plus the indexes the data path reads
 * on every connection. `apply` validates first and swaps everything in one assignment, so a
 * reader never sees half of two snapshots, and a refused snapshot leaves the last good one.
 */
import { SkeinError } from '../errors.js';
import { canonicalIp } from './address.js';
import type { Endpoint, MeshSnapshot, Service, ServicePort, Workload } from './model.js';
import { findSnapshotProblem } from './validate.js';
import { ConfigCode } from './codes.js';

export interface SnapshotDiff {
  version: string;
  previousVersion: string | undefined;
  workloads: { added: Workload[]; removed: Workload[]; changed: Workload[] };
  /** Services keyed `<namespace>/<name>`. */
  services: { added: Service[]; removed: Service[]; changed: Service[] };
}

export type ApplyResult = { ok: true; diff: SnapshotDiff } | { ok: false; error: SkeinError };

export type ConfigListener = (diff: SnapshotDiff, snapshot: MeshSnapshot) => void;

/** A service port reached by VIP:port. */
export interface ServiceTarget {
  service: Service;
  port: ServicePort;
}

/** Immutable indexes over one snapshot. */
class Indexes {
  readonly byVipPort = new Map<string, ServiceTarget>();
  readonly workloadByIp = new Map<string, Workload>();
  readonly workloadByUid = new Map<string, Workload>();
  readonly workloadsByNode = new Map<string, Workload[]>();
  readonly serviceByKey = new Map<string, Service>();
  /** Endpoints by IP: how an agent knows remote pods, which its snapshot lists only as endpoints. */
  readonly endpointByIp = new Map<string, Endpoint>();

  constructor(readonly snapshot: MeshSnapshot) {
    for (const w of snapshot.workloads) {
      this.workloadByUid.set(w.uid, w);
      for (const ip of w.ips) this.workloadByIp.set(addressKey(ip), w);
      let list = this.workloadsByNode.get(w.node);
      if (!list) {
        list = [];
        this.workloadsByNode.set(w.node, list);
      }
      list.push(w);
    }
    for (const svc of snapshot.services) {
      this.serviceByKey.set(serviceKey(svc), svc);
      for (const vip of svc.vips) {
        for (const port of svc.ports) this.byVipPort.set(vipPortKey(vip, port.port), { service: svc, port });
      }
      for (const ep of svc.endpoints) if (ep.identity) this.endpointByIp.set(addressKey(ep.ip), ep);
    }
  }
}

export function serviceKey(svc: { namespace: string; name: string }): string {
  return `${svc.namespace}/${svc.name}`;
}

/** Index key of an address: its canonical form, so config and sockets agree on how it is written. */
function addressKey(ip: string): string {
  return canonicalIp(ip) ?? ip.toLowerCase();
}

function vipPortKey(ip: string, port: number): string {
  return `${addressKey(ip)}|${port}`;
}

function diffBy<T>(prev: Map<string, T>, next: Map<string, T>) {
  const added: T[] = [];
  const removed: T[] = [];
  const changed: T[] = [];
  for (const [k, v] of next) {
    const old = prev.get(k);
    if (old === undefined) added.push(v);
    // Sources keep the same object for what did not change: skip serialising those.
    else if (old !== v && JSON.stringify(old) !== JSON.stringify(v)) changed.push(v);
  }
  for (const [k, v] of prev) if (!next.has(k)) removed.push(v);
  return { added, removed, changed };
}

export class ConfigStore {
  private current: Indexes | undefined;
  private readonly listeners = new Set<ConfigListener>();
  private lastError: SkeinError | undefined;

  /** The snapshot being served, or undefined before the first good one. */
  snapshot(): MeshSnapshot | undefined {
    return this.current?.snapshot;
  }

  /** Why the most recent apply was refused (cleared by the next good apply). */
  lastRejection(): SkeinError | undefined {
    return this.lastError;
  }

  apply(snapshot: MeshSnapshot): ApplyResult {
    const problem = findSnapshotProblem(snapshot);
    if (problem) {
      const error = new SkeinError(
        ConfigCode.SnapshotInvalid,
        `snapshot ${snapshot.version} refused: ${problem.field}: ${problem.reason}`,
        { ...problem, version: snapshot.version },
      );
      this.lastError = error;
      return { ok: false, error };
    }
    const next = new Indexes(snapshot);
    const prev = this.current;
    const diff: SnapshotDiff = {
      version: snapshot.version,
      previousVersion: prev?.snapshot.version,
      workloads: diffBy(prev?.workloadByUid ?? new Map(), next.workloadByUid),
      services: diffBy(prev?.serviceByKey ?? new Map(), next.serviceByKey),
    };
    this.current = next;
    this.lastError = undefined;
    for (const l of this.listeners) l(diff, snapshot);
    return { ok: true, diff };
  }

  /** Adds a listener; returns the function that removes it. */
  subscribe(listener: ConfigListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  serviceByVip(ip: string, port: number): ServiceTarget | undefined {
    return this.current?.byVipPort.get(vipPortKey(ip, port));
  }

  workloadByIp(ip: string): Workload | undefined {
    return this.current?.workloadByIp.get(addressKey(ip));
  }

  workloadByUid(uid: string): Workload | undefined {
    return this.current?.workloadByUid.get(uid);
  }

  /** A Service endpoint with this IP (and a known identity), e.g. a pod on another node. */
  endpointByIp(ip: string): Endpoint | undefined {
    return this.current?.endpointByIp.get(addressKey(ip));
  }

  service(namespace: string, name: string): Service | undefined {
    return this.current?.serviceByKey.get(`${namespace}/${name}`);
  }

  /** Workloads scheduled on `node` (meshed or not). */
  localWorkloads(node: string): readonly Workload[] {
    return this.current?.workloadsByNode.get(node) ?? [];
  }
}
