/**
 * Agent-level metrics read at scrape time from where the numbers live (the kernel's
 * counters, the proxy's refusal tallies), so nothing has to push them.
 */
import type { LoadShareStats } from '../proxy/load-share.js';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { CaptureManager } from '../capture/capture-manager.js';
import { messageOf } from '../errors.js';
import type { Logger } from '../telemetry/log.js';
import { AgentCode } from './codes.js';

/** What traffic policy did for one destination Service (proxy/outbound TrafficServiceStats). */
export interface TrafficRow {
  service: string;
  retries: number;
  budgetExhausted: number;
  ejections: number;
  ejectedNow: number;
  overflows: Record<string, number>;
}

export interface AgentMetricsSources {
  capture: { counters(): Partial<ReturnType<CaptureManager['counters']>> & { skLookupAssignFailed: number; skLookupNoSocket: number } } & Partial<Pick<CaptureManager, 'connectStats'>>;
  /** Refusals at the local pods' tunnel ports by stable code (NodeAgent.tunnelRefusals). */
  tunnelRefusals: ReadonlyMap<string, number>;
  /** Connections refused at the local pods' 15001 and 15006 listeners by code (NodeAgent.listenerRefusals). */
  listenerRefusals?: ReadonlyMap<string, number>;
  /** Each pod's share of the event loop (LoadShare.stats()). */
  loadShare?: () => LoadShareStats;
  /** Local meshed pods by state: serving, pending (captured, refusing; `code` says why), failed (not captured). */
  podStates?: () => Iterable<{ state: string; code?: string | undefined }>;
  /** The config version serving now, and configs applied (ACK) / refused whole (NACK). */
  config?: { version: () => string | undefined; updates: Readonly<{ ack: number; nack: number }> };
  /** The certificates held for local identities (notAfter absent while pending). */
  certificates?: () => Iterable<{ identity: string; notAfter?: Date | undefined }>;
  /** Authorization decisions by `allow|deny` and policy (AgentAuthorizer.stats.decisions). */
  authorizationDecisions?: Readonly<Record<string, number>>;
  /** Refusals on the outbound (client-facing) side by stable code (OutboundProxy.stats().refusals). */
  outboundRefusals?: () => Record<string, number>;
  /** What traffic policy did per destination Service (OutboundProxy.trafficStats()). */
  traffic?: () => Iterable<TrafficRow>;
  /** Requests refused by local rate limits, by `<namespace>/<pod>:<port>` (AgentRateLimits.stats.limited). */
  rateLimited?: Readonly<Record<string, number>>;
  /** Tunnel sessions and streams: the client pool's (per destination) and the local pods' servers'. */
  tunnels?: {
    client: () => Iterable<{ sessions: Iterable<{ active: number }> }>;
    server: () => { sessions: number; streams: number };
  };
  log: Logger;
}

/** Registers the agent's own metrics on `registry` (once per registry). */
export function registerAgentMetrics(registry: Registry, src: AgentMetricsSources): void {
  if (registry.getSingleMetric('skein_capture_inbound_dropped_total')) return;
  // Counters the BPF programs keep in the kernel, read at each scrape; an unreadable map is
  // warned about once (per agent), and the scrape goes on without those counters.
  let warned = false;
  const kernelCounter = (name: string, help: string, byReason: (c: ReturnType<AgentMetricsSources['capture']['counters']>) => Record<string, number>) =>
    new Counter({
      name,
      help,
      labelNames: ['reason'] as const,
      registers: [registry],
      collect() {
        try {
          const counts = byReason(src.capture.counters());
          this.reset();
          for (const [reason, n] of Object.entries(counts)) this.inc({ reason }, n);
        } catch (err) {
          if (!warned) src.log.warn({ err: messageOf(err), code: AgentCode.MetricsUnreadable }, 'cannot read the BPF counters');
          warned = true;
        }
      },
    });
  kernelCounter(
    'skein_capture_inbound_dropped_total',
    'Inbound connections sk_lookup dropped instead of passing them to the app in plaintext, by reason (counted in the kernel since the pins were made)',
    (c) => ({ sk_assign_failed: c.skLookupAssignFailed, no_agent_socket: c.skLookupNoSocket }),
  );
  kernelCounter(
    'skein_capture_outbound_refused_total',
    'Outbound connects of enrolled pods that connect4/6 refused (EPERM to the app) instead of capturing, by reason: pod_share (the pod held its --max-pod-captured-connections), no_record (no socket storage for the original destination); counted in the kernel since the pins were made',
    (c) => ({ pod_share: c.podShareRefused ?? 0, no_record: c.noRecordRefused ?? 0 }),
  );
  // Label values are skein's own codes (a closed set), never peer-supplied text.
  new Counter({
    name: 'skein_tunnel_refusals_total',
    help: 'Connections and streams refused at the local pods\' tunnel port (15008), by stable code (TLS handshake, peer identity, request, rapid reset)',
    labelNames: ['code'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [code, n] of src.tunnelRefusals) this.inc({ code }, n);
    },
  });
  new Gauge({
    name: 'skein_pods',
    help: 'Local meshed pods by state: serving; pending (captured, its mesh traffic refused until it can be served: skein_pods_refusing says why); failed (not captured, retried)',
    labelNames: ['state'] as const,
    registers: [registry],
    collect() {
      if (!src.podStates) return;
      const n: Record<string, number> = { serving: 0, pending: 0, failed: 0 };
      for (const p of src.podStates()) n[p.state] = (n[p.state] ?? 0) + 1;
      for (const [state, v] of Object.entries(n)) this.set({ state }, v);
    },
  });
  new Gauge({
    name: 'skein_pods_refusing',
    help: 'Local meshed pods captured but refusing their mesh traffic (state pending), by reason code: SKEIN_AGENT_IDENTITY_PENDING (certificate not issued yet), SKEIN_CAPTURE_PORT_HELD (the app holds a port the agent needs)',
    labelNames: ['reason'] as const,
    registers: [registry],
    collect() {
      this.reset();
      if (!src.podStates) return;
      const n = new Map<string, number>();
      for (const p of src.podStates()) if (p.state === 'pending') n.set(p.code ?? 'unknown', (n.get(p.code ?? 'unknown') ?? 0) + 1);
      for (const [reason, v] of n) this.set({ reason }, v);
    },
  });
  registerHealthMetrics(registry, src);
  new Counter({
    name: 'skein_listener_refusals_total',
    help: 'Connections refused at the local pods\' outbound (15001) and plaintext inbound (15006) listeners, by stable code (connection limit)',
    labelNames: ['code'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const [code, n] of src.listenerRefusals ?? []) this.inc({ code }, n);
    },
  });
  const loadShare = src.loadShare;
  if (loadShare) {
    new Gauge({
      name: 'skein_event_loop_utilization',
      help: "The agent's event loop utilization (0..1) over the load share's last interval: above --load-share-busy, pods sending more than their share are slowed",
      registers: [registry],
      collect() {
        this.set(loadShare().utilization);
      },
    });
    new Counter({
      name: 'skein_pod_load_share_pauses_total',
      help: "Times a local pod's outbound connections stopped being read for the rest of an interval because it was over its share of a contended agent (its requests wait in its own sockets instead of delaying other pods')",
      labelNames: ['pod'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [pod, s] of Object.entries(loadShare().pods)) if (s.pauses > 0) this.inc({ pod }, s.pauses);
      },
    });
  }
  const connectStats = src.capture.connectStats?.bind(src.capture);
  if (connectStats) {
    new Counter({
      name: 'skein_pod_connect_failures_total',
      help: 'Connects the agent made from inside pod netns (to the app, leaving the mesh) that failed, by stable code: over the per-pod cap and queue (TOO_MANY_CONNECTS), no answer in time (CONNECT_TIMEOUT), refused or unreachable (CONNECT_FAILED)',
      labelNames: ['code'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [code, n] of Object.entries(connectStats().refusals)) this.inc({ code }, n);
      },
    });
    new Gauge({
      name: 'skein_pod_connects',
      help: 'Connects from inside pod netns now, all pods: in_progress (holding one of a pod\'s --max-pod-connects slots) or queued (waiting for one)',
      labelNames: ['state'] as const,
      registers: [registry],
      collect() {
        const s = connectStats();
        this.set({ state: 'in_progress' }, s.inProgress);
        this.set({ state: 'queued' }, s.queued);
      },
    });
  }
}

/** Config, certificates, authorization, refusals and tunnels: read from their owners' stats at scrape. */
function registerHealthMetrics(registry: Registry, src: AgentMetricsSources): void {
  const { config, certificates, authorizationDecisions, outboundRefusals, tunnels, traffic, rateLimited } = src;
  if (traffic) registerTrafficMetrics(registry, traffic);
  if (rateLimited) {
    new Counter({
      name: 'skein_rate_limited_total',
      help: 'Requests the local rate limits refused (429 / RESOURCE_EXHAUSTED), by destination pod and port',
      labelNames: ['destination', 'port'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [k, n] of Object.entries(rateLimited)) {
          const i = k.lastIndexOf(':');
          this.inc({ destination: k.slice(0, i), port: k.slice(i + 1) }, n);
        }
      },
    });
  }
  if (config) {
    new Gauge({
      name: 'skein_config_version_info',
      help: 'The mesh config version the agent serves (value 1, the version as a label)',
      labelNames: ['version'] as const,
      registers: [registry],
      collect() {
        this.reset();
        const v = config.version();
        if (v !== undefined) this.set({ version: v }, 1);
      },
    });
    new Counter({
      name: 'skein_config_updates_total',
      help: 'Configs from the source, by result: ack (applied) or nack (refused whole; the last good config keeps serving)',
      labelNames: ['result'] as const,
      registers: [registry],
      collect() {
        this.reset();
        this.inc({ result: 'ack' }, config.updates.ack);
        this.inc({ result: 'nack' }, config.updates.nack);
      },
    });
  }
  if (certificates) {
    new Gauge({
      name: 'skein_identity_certificate_expiry_seconds',
      help: 'Seconds until the certificate held for each local identity expires (negative: expired)',
      labelNames: ['identity'] as const,
      registers: [registry],
      collect() {
        this.reset();
        const now = Date.now();
        for (const c of certificates()) if (c.notAfter) this.set({ identity: c.identity }, Math.round((c.notAfter.getTime() - now) / 1000));
      },
    });
  }
  if (authorizationDecisions) {
    new Counter({
      name: 'skein_authorization_decisions_total',
      help: 'Authorization decisions at the destination, by action (allow, deny) and the deciding policy (`-` when none decided)',
      labelNames: ['action', 'policy'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [key, n] of Object.entries(authorizationDecisions)) {
          const bar = key.indexOf('|');
          this.inc({ action: key.slice(0, bar), policy: key.slice(bar + 1) }, n);
        }
      },
    });
  }
  if (outboundRefusals) {
    new Counter({
      name: 'skein_outbound_refusals_total',
      help: 'Requests and connections the outbound side refused, by stable code (no healthy upstream, smuggling, oversized headers, slow clients, reset floods, a pod over its cap of requests in flight)',
      labelNames: ['code'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const [code, n] of Object.entries(outboundRefusals())) this.inc({ code }, n);
      },
    });
  }
  if (tunnels) {
    new Gauge({
      name: 'skein_tunnel_sessions',
      help: 'mTLS tunnel sessions open now: client (this agent towards other agents) and server (other agents to the local pods)',
      labelNames: ['side'] as const,
      registers: [registry],
      collect() {
        let client = 0;
        for (const k of tunnels.client()) for (const _ of k.sessions) client++;
        this.set({ side: 'client' }, client);
        this.set({ side: 'server' }, tunnels.server().sessions);
      },
    });
    new Gauge({
      name: 'skein_tunnel_client_streams',
      help: 'Streams open now on the tunnel sessions towards other agents',
      registers: [registry],
      collect() {
        let n = 0;
        for (const k of tunnels.client()) for (const s of k.sessions) n += s.active;
        this.set(n);
      },
    });
    new Counter({
      name: 'skein_tunnel_server_streams_total',
      help: 'Streams received on the local pods\' tunnel ports (all outcomes), since each pod was served',
      registers: [registry],
      collect() {
        this.reset();
        this.inc(tunnels.server().streams);
      },
    });
  }
}

/** Retries, budget refusals, outlier ejections and circuit-breaker overflows, per destination Service. */
function registerTrafficMetrics(registry: Registry, traffic: NonNullable<AgentMetricsSources['traffic']>): void {
  // One read per scrape, shared by the families below (collect runs per family).
  let cache: { at: number; rows: TrafficRow[] } = { at: 0, rows: [] };
  const rows = (): TrafficRow[] => {
    const now = Date.now();
    if (now - cache.at > 100) cache = { at: now, rows: [...traffic()] };
    return cache.rows;
  };
  const counter = (name: string, help: string, value: (r: TrafficRow) => number) =>
    new Counter({
      name,
      help,
      labelNames: ['destination_service'] as const,
      registers: [registry],
      collect() {
        this.reset();
        for (const r of rows()) this.inc({ destination_service: r.service }, value(r));
      },
    });
  counter('skein_retries_total', 'Retries sent (tries after the first) by the source agent, per destination Service', (r) => r.retries);
  counter('skein_retry_budget_exhausted_total', 'Retries the retry budget refused, per destination Service', (r) => r.budgetExhausted);
  counter('skein_outlier_ejections_total', 'Endpoints ejected by outlier detection, per destination Service', (r) => r.ejections);
  new Gauge({
    name: 'skein_outlier_ejected',
    help: 'Endpoints ejected by outlier detection now, per destination Service',
    labelNames: ['destination_service'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const r of rows()) this.set({ destination_service: r.service }, r.ejectedNow);
    },
  });
  new Counter({
    name: 'skein_circuit_breaker_overflows_total',
    help: 'Requests the circuit breaker refused at once (503, flag UO), per destination Service and limit',
    labelNames: ['destination_service', 'limit'] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const r of rows()) for (const [limit, n] of Object.entries(r.overflows)) this.inc({ destination_service: r.service, limit }, n);
    },
  });
}
