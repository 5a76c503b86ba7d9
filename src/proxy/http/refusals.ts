/**
 * Refusals on the client-facing side (smuggling, oversized headers, slow clients, reset
 * floods...): each is logged once with a stable code and counted, so operators can alert on it.
 */
import type { Logger } from '../../telemetry/log.js';

export class RefusalLog {
  private readonly counts = new Map<string, number>();

  constructor(private readonly log: Logger) {}

  refuse(code: string, fields: Record<string, unknown>, message: string): void {
    this.counts.set(code, (this.counts.get(code) ?? 0) + 1);
    this.log.warn({ code, ...fields }, message);
  }

  /**
   * Counted the same, logged at debug only: refusals that come by the thousand when a pod is
   * at a cap (stream limit), where a warn line each would cost more than the refusal itself.
   * The count (/stats, skein_outbound_refusals_total) is what operators alert on.
   */
  refuseQuietly(code: string, fields: () => Record<string, unknown>, message: string): void {
    this.counts.set(code, (this.counts.get(code) ?? 0) + 1);
    if (this.log.isLevelEnabled('debug')) this.log.debug({ code, ...fields() }, message);
  }

  count(code: string): number {
    return this.counts.get(code) ?? 0;
  }

  snapshot(): Record<string, number> {
    return Object.fromEntries(this.counts);
  }
}
