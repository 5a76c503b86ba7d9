/**
 * Where a captured connection was going, in mesh terms: a Service port (by VIP:port), a known
 * workload (by pod IP), or something outside the mesh's knowledge.
 */
import type { AppProtocol, Endpoint, Service, ServicePort, Workload } from '../../config/model.js';
import type { ConfigStore } from '../../config/store.js';

export type Destination =
  | { kind: 'service'; service: Service; servicePort: ServicePort; appProtocol: AppProtocol | undefined }
  | { kind: 'workload'; workload: Workload | undefined; endpoint: Endpoint; port: number }
  | { kind: 'unknown'; address: string; port: number };

export function resolveDestination(store: ConfigStore, address: string, port: number): Destination {
  const svc = store.serviceByVip(address, port);
  if (svc) return { kind: 'service', service: svc.service, servicePort: svc.port, appProtocol: svc.port.appProtocol };
  const w = store.workloadByIp(address);
  if (w) {
    // A pod addressed directly is its own single endpoint (its readiness does not matter: the
    // caller chose that pod, as it would without a mesh).
    const endpoint: Endpoint = {
      workloadUid: w.uid,
      ip: address,
      node: w.node,
      identity: w.identity,
      ready: true,
      ports: {},
      meshEnabled: w.meshEnabled,
    };
    return { kind: 'workload', workload: w, endpoint, port };
  }
  // Agents get full workloads only for their own node; a pod elsewhere is known through the
  // Services it backs, which carry its node and identity: enough to tunnel to it.
  const ep = store.endpointByIp(address);
  if (ep) return { kind: 'workload', workload: undefined, endpoint: { ...ep, ip: address, ports: {}, ready: true }, port };
  return { kind: 'unknown', address, port };
}
