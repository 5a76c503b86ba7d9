/** Talking to the lab's agents from tests: their admin API is a unix socket in the lab's folder. */
import { adminGet } from '../../../src/api/agent-admin.js';
import { adminSocketOf } from '../../../src/lab/mesh.js';
import type { LabRecord } from '../../../src/lab/registry.js';

export async function agentGet<T = unknown>(rec: LabRecord, node: string, path: string): Promise<T> {
  if (!rec.plan.nodes.some((x) => x.name === node)) throw new Error(`no node ${node}`);
  return adminGet<T>(adminSocketOf(rec, node), path);
}

export interface AgentStats {
  outbound: { connections: Record<'http1' | 'http2' | 'tcp' | 'passthrough' | 'refused', number> };
  inbound: { active: number; served: number; refused: number; unavailable: number };
}

export async function outboundConnections(rec: LabRecord, node: string): Promise<number> {
  const s = await agentGet<AgentStats>(rec, node, '/stats');
  return Object.values(s.outbound.connections).reduce((a, b) => a + b, 0);
}

export interface AgentWorkloads {
  pods: { pod: string; state: 'serving' | 'failed'; identity: string; ips: string[] }[];
}

/** Polls until `cond` holds (bounded); returns how long it took. */
export async function waitUntil(cond: () => Promise<boolean>, timeoutMs: number, stepMs = 50): Promise<number> {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return Date.now() - t0;
}

export async function isServing(rec: LabRecord, node: string, pod: string): Promise<boolean> {
  const w = await agentGet<AgentWorkloads>(rec, node, '/workloads');
  return w.pods.some((p) => p.pod === pod && p.state === 'serving');
}
