/**
 * The source side's routing hook: where one request (L7) or one connection (L4) goes. Traffic
 * management (routes, weights, retries' endpoint choice) plugs in here as another
 * implementation; ServiceRouter is the one there is now: a Service's ready endpoints by its
 * load balancer, a pod addressed directly as itself.
 */
import type { Endpoint, Service, Workload } from '../../config/model.js';
import { EndpointSelector } from '../../routing/endpoint-selector.js';
import type { LoadBalancer } from '../../routing/load-balancer.js';
import type { RequestInfo } from '../http/types.js';
import type { Destination } from './destination.js';

export type { RequestInfo } from '../http/types.js';

/** One routing decision: the endpoint and port, and the balancer to tell when it is done. */
export interface Route {
  endpoint: Endpoint;
  port: number;
  lb?: LoadBalancer;
}

export interface RequestRouter {
  /** The endpoint for one request (`req` set) or connection of `source` to `dest`; undefined: none ready. */
  route(source: Workload, dest: Destination, req?: RequestInfo): Route | undefined;
  /** Config changed: forget balancers of Services that left. */
  retain(services: readonly Service[]): void;
  /** Requests/connections in flight to endpoint `ip` of `svc` (admin, tests). */
  inFlight(svc: Service, ip: string): number;
}

/** Today's router: Service -> ready endpoint by the Service's balancer; pod IP -> that pod. */
export class ServiceRouter implements RequestRouter {
  private readonly selector = new EndpointSelector();

  route(_source: Workload, dest: Destination): Route | undefined {
    if (dest.kind === 'service') {
      const sel = this.selector.select(dest.service, dest.servicePort);
      return sel ? { endpoint: sel.endpoint, port: sel.port, lb: sel.lb } : undefined;
    }
    if (dest.kind === 'workload') return { endpoint: dest.endpoint, port: dest.port };
    return undefined;
  }

  retain(services: readonly Service[]): void {
    this.selector.retain(services);
  }

  inFlight(svc: Service, ip: string): number {
    return this.selector.balancerFor(svc).inFlight(ip);
  }
}
