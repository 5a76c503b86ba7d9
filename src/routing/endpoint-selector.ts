/**
 * Per-request endpoint choice for services: ready endpoints that can serve the port, through
 * the service's load balancer. Load balancer state lives per service and survives config
 * updates (same algorithm -> same instance), so updates do not reset spreading or in-flight counts.
 */
import type { Endpoint, Service, ServicePort } from '../config/model.js';
import { createLoadBalancer, endpointPort, type LoadBalancer } from './load-balancer.js';

export interface Selection {
  endpoint: Endpoint;
  port: number;
  /** Load balancer to notify when the request/connection ends (`lb.end(endpoint)`). */
  lb: LoadBalancer;
}

export class EndpointSelector {
  private readonly balancers = new Map<string, LoadBalancer>();
  /** Ready candidates per (service object, port name), recomputed when the Service object changes. */
  private readonly candidates = new WeakMap<Service, Map<string, Endpoint[]>>();

  balancerFor(service: Service): LoadBalancer {
    const key = `${service.namespace}/${service.name}`;
    let lb = this.balancers.get(key);
    if (!lb || lb.algorithm !== service.loadBalancer) {
      lb = createLoadBalancer(service.loadBalancer);
      this.balancers.set(key, lb);
    }
    return lb;
  }

  /** Ready endpoints able to serve `sp`; cached per immutable Service object. */
  readyEndpoints(service: Service, sp: ServicePort): readonly Endpoint[] {
    let perPort = this.candidates.get(service);
    if (!perPort) {
      perPort = new Map();
      this.candidates.set(service, perPort);
    }
    let list = perPort.get(sp.name);
    if (!list) {
      list = service.endpoints.filter((e) => e.ready && endpointPort(e, sp) !== undefined);
      perPort.set(sp.name, list);
    }
    return list;
  }

  /** Picks an endpoint and counts it as started; undefined when none is ready. */
  select(service: Service, sp: ServicePort): Selection | undefined {
    const lb = this.balancerFor(service);
    const endpoint = lb.pick(this.readyEndpoints(service, sp));
    if (!endpoint) return undefined;
    lb.start(endpoint);
    return { endpoint, port: endpointPort(endpoint, sp) as number, lb };
  }

  /** Drops load balancers of services that no longer exist. */
  retain(services: readonly Service[]): void {
    const live = new Set(services.map((s) => `${s.namespace}/${s.name}`));
    for (const k of this.balancers.keys()) if (!live.has(k)) this.balancers.delete(k);
  }
}
