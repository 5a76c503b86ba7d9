/**
 * Invariants a MeshSnapshot must hold before the store serves it. Checked on every apply so a
 * bad snapshot (from any source) is refused whole and the last good one keeps serving.
 */
import { isIP } from 'node:net';
import type { ConfigProblem } from './codes.js';
import type { MeshSnapshot } from './model.js';

const SPIFFE_RE = /^spiffe:\/\/[^/]+\/ns\/[^/]+\/sa\/[^/]+$/;

function validPort(p: unknown): boolean {
  return typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 65535;
}

/** Returns the first problem found, or undefined when the snapshot is sound. */
export function findSnapshotProblem(s: MeshSnapshot): ConfigProblem | undefined {
  if (typeof s.version !== 'string' || s.version === '') return { field: 'version', reason: 'missing' };
  if (!s.trustDomain) return { field: 'trustDomain', reason: 'missing' };
  const uids = new Set<string>();
  const ips = new Map<string, string>();
  for (const [i, w] of s.workloads.entries()) {
    const at = `workloads[${i}]`;
    if (!w.uid) return { field: `${at}.uid`, reason: 'missing' };
    if (uids.has(w.uid)) return { field: `${at}.uid`, reason: `duplicate workload uid ${w.uid}` };
    uids.add(w.uid);
    if (!SPIFFE_RE.test(w.identity)) return { field: `${at}.identity`, reason: `not a SPIFFE id: ${w.identity}` };
    for (const ip of w.ips) {
      if (isIP(ip) === 0) return { field: `${at}.ips`, reason: `not an IP address: ${ip}` };
      const other = ips.get(ip);
      if (other !== undefined) return { field: `${at}.ips`, reason: `IP ${ip} also claimed by workload ${other}` };
      ips.set(ip, w.uid);
    }
    for (const p of [...w.excludeInboundPorts, ...w.excludeOutboundPorts]) {
      if (!validPort(p)) return { field: `${at}.exclude*Ports`, reason: `not a port: ${p}` };
    }
  }
  const vipPorts = new Map<string, string>();
  for (const [i, svc] of s.services.entries()) {
    const at = `services[${i}]`;
    const key = `${svc.namespace}/${svc.name}`;
    for (const vip of svc.vips) {
      if (isIP(vip) === 0) return { field: `${at}.vips`, reason: `not an IP address: ${vip}` };
      for (const p of svc.ports) {
        const k = `${vip}:${p.port}`;
        const other = vipPorts.get(k);
        if (other !== undefined && other !== key) return { field: `${at}.vips`, reason: `${k} also claimed by ${other}` };
        vipPorts.set(k, key);
      }
    }
    for (const [j, p] of svc.ports.entries()) {
      if (!validPort(p.port)) return { field: `${at}.ports[${j}].port`, reason: `not a port: ${p.port}` };
      if (p.targetPort !== 0 && !validPort(p.targetPort)) {
        return { field: `${at}.ports[${j}].targetPort`, reason: `not a port: ${p.targetPort}` };
      }
    }
    for (const [j, e] of svc.endpoints.entries()) {
      if (isIP(e.ip) === 0) return { field: `${at}.endpoints[${j}].ip`, reason: `not an IP address: ${e.ip}` };
      if (e.meshEnabled && !e.identity) {
        return { field: `${at}.endpoints[${j}].identity`, reason: 'meshed endpoint without identity' };
      }
    }
  }
  return undefined;
}
