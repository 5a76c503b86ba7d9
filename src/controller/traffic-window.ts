/**
 * The mesh's traffic over a sliding window (default the last 60 s), from the per-edge
 * summaries the agents send on their config streams every few seconds. What `skein top`
 * (GetTraffic) and the graph page show.
 *
 * Both agents of a request may report it: the source's (what the client experienced: every
 * request, failures to reach the destination, both workloads named) and the destination's
 * (which authenticated the source and decided authorization). An edge is shown once: with
 * the source's numbers when its agent reported it, its denials from the destination (only
 * the destination knows a 403 was a policy's), its errors the larger of the two sides'
 * counts. Edges only a destination saw (sources outside the mesh) keep the destination's.
 * The two sides are matched by the source's principal (both know it under mTLS; the
 * destination's agent may not know the name of a source workload on another node), else its
 * workload, and the destination workload and protocol.
 *
 * Bounded: reports older than the window are dropped as time passes, and at most `maxEntries`
 * edge entries are held over the window; the rest are counted as dropped, never kept.
 */
import type { EdgeSummary, TrafficEdge, TrafficReport, TrafficResponse, TrafficWorkload } from '../api/config-wire.js';
import { histogramQuantile, LATENCY_BOUNDS_MS, latencyBucket } from '../telemetry/mesh-traffic.js';

export const DEFAULT_TRAFFIC_WINDOW_MS = 60_000;
export const DEFAULT_MAX_TRAFFIC_ENTRIES = 50_000;

export interface TrafficWindowOptions {
  windowMs?: number;
  /** Edge entries held over the window at most (every agent's reports together). */
  maxEntries?: number;
  now?: () => number;
}

interface StoredReport {
  node: string;
  /** When the interval it covers started and ended (controller clock). */
  from: number;
  to: number;
  edges: EdgeSummary[];
  dropped: number;
}

/** One side's (or the merged) figures of an edge. */
interface Acc {
  source: string;
  destination: string;
  service: string;
  protocol: string;
  mtls: boolean;
  requests: number;
  errors: number;
  denials: number;
  latency: number[];
  sent: number;
  received: number;
}

const UNKNOWN = 'unknown';

function newAcc(e: EdgeSummary): Acc {
  return {
    source: `${e.source_namespace}/${e.source_workload}`,
    destination: `${e.destination_namespace}/${e.destination_workload}`,
    service: e.destination_service,
    protocol: e.protocol,
    mtls: e.mtls,
    requests: 0,
    errors: 0,
    denials: 0,
    latency: new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0),
    sent: 0,
    received: 0,
  };
}

/** Adds a report's latency counts (on its own bounds) into `into` (on LATENCY_BOUNDS_MS). */
function addLatency(into: number[], counts: readonly number[], bounds: readonly number[]): void {
  const same = bounds.length === LATENCY_BOUNDS_MS.length && bounds.every((b, i) => b === LATENCY_BOUNDS_MS[i]);
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i] ?? 0;
    if (c === 0) continue;
    // Another agent version's bucket lands in ours by its upper bound (above the last: overflow).
    const j = same ? i : i < bounds.length ? latencyBucket(bounds[i]!) : LATENCY_BOUNDS_MS.length;
    into[j]! += c;
  }
}

/** Which side's edges belong together: source principal (else workload), destination workload, protocol. */
function matchKey(e: EdgeSummary): string {
  const src = e.source_principal && e.source_principal !== UNKNOWN ? `p:${e.source_principal}` : `w:${e.source_namespace}/${e.source_workload}`;
  return `${e.source_namespace}\u0000${src}\u0000${e.destination_namespace}/${e.destination_workload}\u0000${e.protocol}`;
}

function sideKey(e: EdgeSummary): string {
  return `${matchKey(e)}\u0000${e.source_workload}\u0000${e.destination_service}`;
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

export class TrafficWindow {
  readonly windowMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  private reports: StoredReport[] = [];
  private entries = 0;
  /** Edge entries refused over the cap, and records the agents could not summarise, within the window. */
  private droppedHere: { at: number; n: number }[] = [];

  constructor(opts: TrafficWindowOptions = {}) {
    this.windowMs = opts.windowMs ?? DEFAULT_TRAFFIC_WINDOW_MS;
    this.maxEntries = opts.maxEntries ?? DEFAULT_MAX_TRAFFIC_ENTRIES;
    this.now = opts.now ?? Date.now;
  }

  /** One agent's report, as it arrives. */
  add(node: string, r: TrafficReport): void {
    const now = this.now();
    this.prune(now);
    const room = Math.max(0, this.maxEntries - this.entries);
    const edges = r.edges.length > room ? r.edges.slice(0, room) : r.edges;
    const over = r.edges.length - edges.length;
    // Bounds of this report, kept per edge through the latency counts' re-bucketing below.
    const bounds = r.latency_bounds_ms.length ? r.latency_bounds_ms : LATENCY_BOUNDS_MS;
    const normalised = edges.map((e) => {
      const latency = new Array<number>(LATENCY_BOUNDS_MS.length + 1).fill(0);
      addLatency(latency, e.latency_counts, bounds);
      return { ...e, latency_counts: latency };
    });
    this.reports.push({ node, from: now - Math.min(r.interval_ms, this.windowMs), to: now, edges: normalised, dropped: r.dropped + over });
    this.entries += normalised.length;
    if (r.dropped + over > 0) this.droppedHere.push({ at: now, n: r.dropped + over });
  }

  private prune(now: number): void {
    const cutoff = now - this.windowMs;
    if (this.reports.length && this.reports[0]!.to < cutoff) {
      const keep = this.reports.filter((r) => r.to >= cutoff);
      for (const r of this.reports) if (r.to < cutoff) this.entries -= r.edges.length;
      this.reports = keep;
    }
    this.droppedHere = this.droppedHere.filter((d) => d.at >= cutoff);
  }

  /** Edge entries held now (tests, status). */
  get size(): number {
    return this.entries;
  }

  /** The window's figures: edges (each once), workloads, rates over the time covered. */
  snapshot(): TrafficResponse {
    const now = this.now();
    this.prune(now);
    let oldest = now;
    const nodes = new Set<string>();
    // Per side: matched group -> side key -> figures.
    const sides = { source: new Map<string, Map<string, Acc>>(), destination: new Map<string, Map<string, Acc>>() };
    for (const r of this.reports) {
      oldest = Math.min(oldest, r.from);
      nodes.add(r.node);
      for (const e of r.edges) {
        const side = e.reporter === 'destination' ? sides.destination : sides.source;
        const group = matchKey(e);
        let g = side.get(group);
        if (!g) {
          g = new Map();
          side.set(group, g);
        }
        const k = sideKey(e);
        let a = g.get(k);
        if (!a) {
          a = newAcc(e);
          g.set(k, a);
        }
        a.mtls ||= e.mtls;
        a.requests += e.requests;
        a.errors += e.errors;
        a.denials += e.denials;
        for (let i = 0; i < a.latency.length; i++) a.latency[i]! += e.latency_counts[i] ?? 0;
        a.sent += e.bytes_sent;
        a.received += e.bytes_received;
      }
    }
    const seconds = Math.max(1, Math.min(this.windowMs, now - oldest) / 1000);
    const merged: { acc: Acc; reporters: string[] }[] = [];
    for (const [group, src] of sides.source) {
      const dst = sides.destination.get(group);
      const accs = [...src.values()];
      if (dst) {
        const d = sumAccs([...dst.values()]);
        // The destination's denials and errors go to the busiest source edge of the group (one,
        // unless several workloads share a principal and a destination).
        const main = accs.reduce((x, y) => (y.requests > x.requests ? y : x));
        main.denials = Math.max(main.denials, d.denials);
        main.errors = Math.max(main.errors, d.errors);
        main.mtls ||= d.mtls;
      }
      for (const a of accs) merged.push({ acc: a, reporters: dst ? ['source', 'destination'] : ['source'] });
    }
    for (const [group, dst] of sides.destination) {
      if (sides.source.has(group)) continue;
      for (const a of dst.values()) merged.push({ acc: a, reporters: ['destination'] });
    }
    const edges: TrafficEdge[] = merged
      .map(({ acc: a, reporters }) => ({
        source: a.source,
        destination: a.destination,
        destination_service: a.service,
        protocol: a.protocol,
        mtls: a.mtls,
        requests: a.requests,
        errors: a.errors,
        denials: a.denials,
        rps: round(a.requests / seconds, 3),
        success_rate: a.requests ? round(1 - a.errors / a.requests, 4) : 1,
        p50_ms: round(histogramQuantile(LATENCY_BOUNDS_MS, a.latency, 0.5), 3),
        p99_ms: round(histogramQuantile(LATENCY_BOUNDS_MS, a.latency, 0.99), 3),
        bytes_sent: a.sent,
        bytes_received: a.received,
        reporters,
      }))
      .sort((x, y) => (x.source === y.source ? (x.destination === y.destination ? x.protocol.localeCompare(y.protocol) : x.destination.localeCompare(y.destination)) : x.source.localeCompare(y.source)));
    return {
      window_seconds: round(seconds, 3),
      edges,
      workloads: workloadsOf(merged.map((m) => m.acc), seconds),
      dropped: this.droppedHere.reduce((n, d) => n + d.n, 0),
      nodes: [...nodes].sort(),
    };
  }
}

function sumAccs(accs: Acc[]): Acc {
  const out = { ...accs[0]!, latency: [...accs[0]!.latency] };
  for (const a of accs.slice(1)) {
    out.requests += a.requests;
    out.errors += a.errors;
    out.denials += a.denials;
    out.sent += a.sent;
    out.received += a.received;
    out.mtls ||= a.mtls;
    for (let i = 0; i < out.latency.length; i++) out.latency[i]! += a.latency[i]!;
  }
  return out;
}

/** Per workload: what came in (rate, success, latency over every inbound edge) and the rate it sent. */
function workloadsOf(edges: Acc[], seconds: number): TrafficWorkload[] {
  const by = new Map<string, { inbound: Acc[]; outbound: number }>();
  const get = (name: string) => {
    let w = by.get(name);
    if (!w) {
      w = { inbound: [], outbound: 0 };
      by.set(name, w);
    }
    return w;
  };
  for (const e of edges) {
    get(e.destination).inbound.push(e);
    get(e.source).outbound += e.requests;
  }
  const out: TrafficWorkload[] = [];
  for (const [name, w] of by) {
    const s = w.inbound.length ? sumAccs(w.inbound) : undefined;
    out.push({
      name,
      requests: s?.requests ?? 0,
      errors: s?.errors ?? 0,
      denials: s?.denials ?? 0,
      rps: round((s?.requests ?? 0) / seconds, 3),
      success_rate: s?.requests ? round(1 - s.errors / s.requests, 4) : 1,
      p50_ms: s ? round(histogramQuantile(LATENCY_BOUNDS_MS, s.latency, 0.5), 3) : 0,
      p99_ms: s ? round(histogramQuantile(LATENCY_BOUNDS_MS, s.latency, 0.99), 3) : 0,
      outbound_rps: round(w.outbound / seconds, 3),
      mtls: w.inbound.length > 0 && w.inbound.every((e) => e.mtls),
    });
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}
