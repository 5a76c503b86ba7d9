/**
 * Agent-level metrics read at scrape time from where the numbers live (the kernel's
 * counters, the proxy's refusal tallies), so nothing has to push them.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { CaptureManager } from '../capture/capture-manager.js';
import { messageOf } from '../errors.js';
import type { Logger } from '../telemetry/log.js';
import { AgentCode } from './codes.js';

export interface AgentMetricsSources {
  capture: Pick<CaptureManager, 'counters'>;
  /** Refusals at the local pods' tunnel ports by stable code (NodeAgent.tunnelRefusals). */
  tunnelRefusals: ReadonlyMap<string, number>;
  /** Connections refused at the local pods' 15001 and 15006 listeners by code (NodeAgent.listenerRefusals). */
  listenerRefusals?: ReadonlyMap<string, number>;
  /** Local meshed pods by state: serving, pending (captured, certificate not there yet: refused), failed (not captured). */
  podStates?: () => Iterable<{ state: string }>;
  log: Logger;
}

/** Registers the agent's own metrics on `registry` (once per registry). */
export function registerAgentMetrics(registry: Registry, src: AgentMetricsSources): void {
  if (registry.getSingleMetric('skein_capture_inbound_dropped_total')) return;
  let warned = false;
  new Counter({
    name: 'skein_capture_inbound_dropped_total',
    help: 'Inbound connections sk_lookup dropped instead of passing them to the app in plaintext, by reason (counted in the kernel since the pins were made)',
    labelNames: ['reason'] as const,
    registers: [registry],
    collect() {
      try {
        const c = src.capture.counters();
        this.reset();
        this.inc({ reason: 'sk_assign_failed' }, c.skLookupAssignFailed);
        this.inc({ reason: 'no_agent_socket' }, c.skLookupNoSocket);
      } catch (err) {
        if (!warned) src.log.warn({ err: messageOf(err), code: AgentCode.MetricsUnreadable }, 'cannot read the BPF counters');
        warned = true;
      }
    },
  });
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
    help: 'Local meshed pods by state: serving; pending (captured, its mesh traffic refused until its certificate arrives); failed (not captured, retried)',
    labelNames: ['state'] as const,
    registers: [registry],
    collect() {
      if (!src.podStates) return;
      const n: Record<string, number> = { serving: 0, pending: 0, failed: 0 };
      for (const p of src.podStates()) n[p.state] = (n[p.state] ?? 0) + 1;
      for (const [state, v] of Object.entries(n)) this.set({ state }, v);
    },
  });
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
}
