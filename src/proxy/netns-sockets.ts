/**
 * How the proxy reaches into a pod: a TCP connection made from inside the pod's network
 * namespace, carrying the agent's mark so capture never redirects it. Inbound uses it to reach
 * the app in the destination pod; outbound for traffic that leaves the mesh from the source
 * pod (so it keeps the pod's address). The agent implements it over capture; the proxy never
 * touches capture itself.
 */
import type { Duplex } from 'node:stream';
import type { Workload } from '../config/model.js';
import type { AppConnector } from './inbound/types.js';
import type { DirectConnect } from './outbound/endpoint-connector.js';

export interface NetnsSocketFactory {
  connect(pod: Workload, host: string, port: number, signal?: AbortSignal): Promise<Duplex>;
}

/** Inbound's way to the app: the pod's own primary address, from inside the pod. */
export function appConnectorOver(sockets: NetnsSocketFactory): AppConnector {
  return { connect: (workload, port, signal) => sockets.connect(workload, workload.ips[0]!, port, signal) };
}

/** Outbound's way out of the mesh: from inside the source pod. */
export function directConnectOver(sockets: NetnsSocketFactory): DirectConnect {
  return (source, address, port, signal) => sockets.connect(source, address, port, signal);
}
