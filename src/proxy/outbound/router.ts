/**
 * The source side's routing hook: where one request (L7) or one connection (L4) goes, and
 * under which plan (routes' filters, timeouts, retries; traffic policy's breaker and faults).
 * TrafficRouter (traffic-router.ts) is the implementation; this file holds the contract.
 */
import type { Endpoint, Service, Workload } from '../../config/model.js';
import type { AttemptResult, RequestInfo, UpstreamChoice } from '../http/types.js';
import type { Destination } from './destination.js';

export type { RequestInfo } from '../http/types.js';

/** One endpoint choice: the endpoint and port, and what to tell when the request or connection is done. */
export interface Route {
  endpoint: Endpoint;
  port: number;
  /** The try ended: load balancer in-flight count and latency, outlier detection. */
  done?(result?: AttemptResult): void;
}

/** Makes the upstream handle for a route (the outbound proxy knows how endpoints are reached). */
export type ChoiceFactory = (source: Workload, route: Route, plan?: UpstreamChoice['plan']) => UpstreamChoice;

/** Per destination Service, what traffic policy did (metrics: skein_retries_total, ...). */
export interface TrafficServiceStats {
  /** `<namespace>/<name>`. */
  service: string;
  /** Retries sent (tries after the first). */
  retries: number;
  /** Retries the budget refused. */
  budgetExhausted: number;
  /** Ejections since the policy's outlier detection started, and endpoints ejected now. */
  ejections: number;
  ejectedNow: number;
  /** Requests refused by the circuit breaker, by limit (pending, requests, retries). */
  overflows: Record<string, number>;
}

export interface RequestRouter {
  /**
   * The upstream for one request (`req` set) or connection of `source` to `dest`; undefined:
   * no endpoint ready. A choice may carry a plan (or be a direct answer: `plan.direct`).
   */
  choose(source: Workload, dest: Destination, req: RequestInfo | undefined, make: ChoiceFactory): UpstreamChoice | undefined;
  /** Requests/connections in flight to endpoint `ip` of `svc` (admin, tests). */
  inFlight(svc: Service, ip: string): number;
  /** What the router holds, for /config_dump (routes, policies in effect, ejections). */
  describe(): object;
  /** What traffic policy did per Service (metrics); absent for routers without policies. */
  serviceStats?(): TrafficServiceStats[];
}
