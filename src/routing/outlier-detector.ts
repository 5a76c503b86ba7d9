/**
 * Passive health checking for one Service, in the manner of Envoy's outlier detection:
 * consecutive failures of a host eject it from load balancing for a while, longer each time
 * it is ejected again. No timers: ejections end when the clock passes their end, checked
 * lazily when the detector is asked.
 *
 * Semantics (Envoy's documented ones, with local-origin errors not split out):
 * - a 5xx counts towards consecutive5xx; 502/503/504 ('gateway-error') count towards
 *   consecutive5xx and consecutiveGatewayErrors; a connect failure counts as a gateway error
 *   too, and towards consecutiveConnectFailures. A 5xx that is not a gateway error resets the
 *   gateway-error streak; any answer resets the connect-failure streak; a success resets all.
 * - ejection time = baseEjectionTime x times ejected, capped at maxEjectionTime.
 * - at most maxEjectionPercent of the hosts are ejected at once, but (as Envoy documents) at
 *   least one host may always be ejected, whatever the percent.
 * - the "times ejected" multiplier drops by one for every interval a host spends not ejected.
 */
import type { OutlierDetectionPolicy } from '../config/policy-model.js';

export type Outcome = 'success' | '5xx' | 'gateway-error' | 'connect-failure';

interface HostState {
  consecutive5xx: number;
  consecutiveGateway: number;
  consecutiveConnect: number;
  /** Ejections counted in the multiplier. */
  times: number;
  /** Ejected until this time (ms); 0 when not ejected. */
  until: number;
  /** Since when the multiplier has been decaying (the host is not ejected). */
  healthySince: number;
}

export interface Ejection {
  ip: string;
  until: number;
  times: number;
}

export class OutlierDetector {
  private readonly hosts = new Map<string, HostState>();
  private readonly ejectedHosts = new Map<string, HostState>();
  /** Hosts the Service has (for the percent); at least the hosts seen. */
  private hostCount = 0;
  /** Earliest end of a current ejection (Infinity when none): refresh() is O(1) until then. */
  private nextExpiry = Number.POSITIVE_INFINITY;
  /** Ejections since creation. */
  ejections = 0;
  /** Ejections refused by maxEjectionPercent. */
  overflows = 0;
  /** Bumped whenever the ejected set changes (callers cache filtered lists by it). */
  version = 0;

  constructor(
    readonly policy: OutlierDetectionPolicy,
    private readonly now: () => number = Date.now,
  ) {}

  /** The Service's endpoint IPs as of this config: the percent's denominator; drops state of gone hosts. */
  setHosts(ips: ReadonlySet<string>): void {
    for (const ip of this.hosts.keys()) {
      if (!ips.has(ip)) {
        this.hosts.delete(ip);
        if (this.ejectedHosts.delete(ip)) this.version++;
      }
    }
    this.hostCount = ips.size;
  }

  private host(ip: string): HostState {
    let h = this.hosts.get(ip);
    if (!h) {
      h = { consecutive5xx: 0, consecutiveGateway: 0, consecutiveConnect: 0, times: 0, until: 0, healthySince: this.now() };
      this.hosts.set(ip, h);
    }
    return h;
  }

  /** Ends ejections whose time has come. */
  refresh(): void {
    const now = this.now();
    if (now < this.nextExpiry) return;
    let next = Number.POSITIVE_INFINITY;
    for (const [ip, h] of this.ejectedHosts) {
      if (now >= h.until) {
        this.ejectedHosts.delete(ip);
        h.healthySince = h.until;
        h.until = 0;
        h.consecutive5xx = h.consecutiveGateway = h.consecutiveConnect = 0;
        this.version++;
      } else if (h.until < next) next = h.until;
    }
    this.nextExpiry = next;
  }

  /** Applies the multiplier's decay: minus one per whole interval spent not ejected. */
  private decay(h: HostState, now: number): void {
    if (h.until !== 0 || h.times === 0 || !(this.policy.intervalMs > 0)) return;
    const k = Math.floor((now - h.healthySince) / this.policy.intervalMs);
    if (k > 0) {
      h.times = Math.max(0, h.times - k);
      h.healthySince += k * this.policy.intervalMs;
    }
  }

  /** Most hosts that may be ejected at once. */
  maxEjected(): number {
    const total = Math.max(this.hostCount, this.hosts.size);
    return Math.max(1, Math.floor((total * this.policy.maxEjectionPercent) / 100));
  }

  record(ip: string, outcome: Outcome): void {
    this.refresh();
    const h = this.host(ip);
    if (h.until !== 0) return; // answers still arriving from before the ejection
    const p = this.policy;
    switch (outcome) {
      case 'success':
        h.consecutive5xx = h.consecutiveGateway = h.consecutiveConnect = 0;
        return;
      case '5xx':
        h.consecutive5xx++;
        h.consecutiveGateway = 0;
        h.consecutiveConnect = 0;
        break;
      case 'gateway-error':
        h.consecutive5xx++;
        h.consecutiveGateway++;
        h.consecutiveConnect = 0;
        break;
      case 'connect-failure':
        h.consecutive5xx++;
        h.consecutiveGateway++;
        h.consecutiveConnect++;
        break;
    }
    const trip =
      (p.consecutive5xx !== undefined && p.consecutive5xx > 0 && h.consecutive5xx >= p.consecutive5xx) ||
      (p.consecutiveGatewayErrors !== undefined && p.consecutiveGatewayErrors > 0 && h.consecutiveGateway >= p.consecutiveGatewayErrors) ||
      (p.consecutiveConnectFailures !== undefined && p.consecutiveConnectFailures > 0 && h.consecutiveConnect >= p.consecutiveConnectFailures);
    if (trip) this.eject(ip, h);
  }

  private eject(ip: string, h: HostState): void {
    h.consecutive5xx = h.consecutiveGateway = h.consecutiveConnect = 0;
    if (this.ejectedHosts.size + 1 > this.maxEjected()) {
      this.overflows++;
      return;
    }
    const now = this.now();
    this.decay(h, now);
    h.times++;
    const p = this.policy;
    const duration = Math.min(p.baseEjectionTimeMs * h.times, Math.max(p.maxEjectionTimeMs, p.baseEjectionTimeMs));
    h.until = now + duration;
    this.ejectedHosts.set(ip, h);
    if (h.until < this.nextExpiry) this.nextExpiry = h.until;
    this.ejections++;
    this.version++;
  }

  isEjected(ip: string): boolean {
    this.refresh();
    return this.ejectedHosts.has(ip);
  }

  /** Current ejections (for /config_dump and metrics). */
  ejected(): Ejection[] {
    this.refresh();
    return [...this.ejectedHosts].map(([ip, h]) => ({ ip, until: h.until, times: h.times }));
  }

  /** Ejection multiplier of a host as of now (tests, describe). */
  timesEjected(ip: string): number {
    const h = this.hosts.get(ip);
    if (!h) return 0;
    this.refresh();
    this.decay(h, this.now());
    return h.times;
  }

  describe(): object {
    return { ejected: this.ejected(), ejections: this.ejections, overflows: this.overflows, maxEjected: this.maxEjected() };
  }
}
