/**
 * The demo's canary part, for scenarios shaped like deploy/local/canary.yaml (a Service `X`
 * with `X-v1` and `X-v2` beside it): an HTTPRoute on `X` shifts traffic 90/10 -> 50/50 ->
 * 0/100 while a client keeps calling `X` the whole time; each step's split is measured with
 * its own run, and the background load must see no failed request across the shifts.
 */
import { applyObjects, deleteObjects } from '../lab/mutate.js';
import { agentAdminGet } from '../lab/mesh.js';
import { labExecCaptured } from '../lab/lab.js';
import type { LabRecord } from '../lab/registry.js';
import type { ClientSummary } from '../lab/workloads/client.js';
import { table } from './lab-format.js';

const STEPS: [number, number][] = [
  [90, 10],
  [50, 50],
  [0, 100],
];

/** The canary triple of the scenario (`X`, `X-v1`, `X-v2` in one namespace), if it has one. */
export function canaryOf(rec: LabRecord): { namespace: string; name: string; port: number } | undefined {
  for (const s of rec.plan.services) {
    const has = (n: string) => rec.plan.services.some((x) => x.namespace === s.namespace && x.name === n);
    const port = s.ports.find((p) => (p.appProtocol ?? 'http') === 'http');
    if (port && has(`${s.name}-v1`) && has(`${s.name}-v2`)) return { namespace: s.namespace, name: s.name, port: port.port };
  }
  return undefined;
}

function route(c: { namespace: string; name: string; port: number }, w: [number, number]): object {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'HTTPRoute',
    metadata: { name: `${c.name}-canary`, namespace: c.namespace },
    spec: {
      parentRefs: [{ group: '', kind: 'Service', name: c.name, port: c.port }],
      rules: [
        {
          backendRefs: [
            { name: `${c.name}-v1`, port: c.port, weight: w[0] },
            { name: `${c.name}-v2`, port: c.port, weight: w[1] },
          ],
        },
      ],
    },
  };
}

/** Waits until the agent of `node` serves the route with these weights (bounded). */
async function served(rec: LabRecord, node: string, name: string, w: [number, number]): Promise<boolean> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    const d = await agentAdminGet<{ snapshot: { routes?: { name: string; rules: { backends: { weight: number }[] }[] }[] } | null }>(rec, node, '/config_dump');
    const r = d?.snapshot?.routes?.find((x) => x.name === name);
    if (r && r.rules[0]?.backends.map((b) => b.weight).join('/') === w.join('/')) return true;
    await new Promise((res) => setTimeout(res, 50));
  }
  return false;
}

function summaryOf(stdout: string): ClientSummary | undefined {
  try {
    return JSON.parse(stdout.trim().split('\n').pop() ?? '') as ClientSummary;
  } catch {
    return undefined;
  }
}

export interface CanaryStep {
  weights: [number, number];
  /** Requests of the step's own run, failed ones, and the v1/v2 split measured (percent). */
  requests: number;
  failed: number;
  measured: [number, number];
  /** From writing the route to the client's agent serving it. */
  appliedMs: number;
}

export interface CanaryResult {
  /** 0: every step behaved (split within 4 points, nothing failed, applied). */
  problems: number;
  steps: CanaryStep[];
  background?: { ok: number; failed: number; errors: Record<string, number> };
}

/** Runs the canary shift (nothing when the scenario has no canary triple). */
export async function runCanaryPart(rec: LabRecord, progress: (line: string) => void, out: (text: string) => void): Promise<CanaryResult> {
  const c = canaryOf(rec);
  const clientPod = rec.plan.pods.find((p) => p.container.image === 'skein/client' && p.namespace === c?.namespace);
  const steps: CanaryStep[] = [];
  if (!c || !clientPod || !rec.processes.some((p) => p.kind === 'agent')) return { problems: 0, steps };
  const host = `${c.name}.${c.namespace}.svc.${rec.plan.clusterDomain}:${c.port}`;
  const who = `${clientPod.namespace}/${clientPod.name}`;
  const file = `demo-canary-${c.namespace}-${c.name}.yaml`;
  let problems = 0;
  const rows = [['STEP', 'WEIGHTS v1/v2', 'REQUESTS', 'FAILED', 'MEASURED v1/v2 (%)', 'APPLIED IN (ms)']];
  // Background load over the whole shift (about 6 s): 50 req/s, bounded in count and time.
  progress(`demo: canary: ${who} calls ${host} at 50 req/s while the route shifts`);
  const background = labExecCaptured(rec, who, ['skein', 'workload', 'client', '--protocol', 'http1', '--target', host, '--rate', '50', '--count', '300', '--duration', '30', '--concurrency', '8'], 60_000);
  try {
    for (const [i, w] of STEPS.entries()) {
      const started = Date.now();
      applyObjects(rec, file, JSON.stringify(route(c, w)));
      const ok = await served(rec, clientPod.node, `${c.name}-canary`, w);
      const appliedMs = Date.now() - started;
      if (!ok) problems++;
      progress(`demo: canary step ${i + 1}: ${w[0]}/${w[1]}`);
      const r = await labExecCaptured(rec, who, ['skein', 'workload', 'client', '--protocol', 'http1', '--target', host, '--count', '400', '--concurrency', '8'], 60_000);
      const s = summaryOf(r.stdout);
      if (!s) {
        problems++;
        rows.push([String(i + 1), w.join('/'), '-', 'error', r.stderr.trim().split('\n').pop() ?? '', String(appliedMs)]);
        continue;
      }
      let v1 = 0;
      let v2 = 0;
      for (const [pod, n] of Object.entries(s.byPod)) {
        if (pod.includes(`/${c.name}-v1-`)) v1 += n;
        else if (pod.includes(`/${c.name}-v2-`)) v2 += n;
      }
      const total = v1 + v2 || 1;
      const measured: [number, number] = [(100 * v1) / total, (100 * v2) / total];
      if (s.failed > 0 || Math.abs(measured[1] - w[1]) > 4) problems++;
      steps.push({ weights: w, requests: s.requests, failed: s.failed, measured, appliedMs });
      rows.push([String(i + 1), w.join('/'), String(s.requests), String(s.failed), measured.map((x) => x.toFixed(1)).join(' / '), String(appliedMs)]);
    }
  } finally {
    deleteObjects(rec, file, JSON.stringify(route(c, STEPS[0] as [number, number])));
  }
  const bg = summaryOf((await background).stdout);
  out(`\ncanary: HTTPRoute ${c.namespace}/${c.name}-canary shifts ${c.name}-v1 -> ${c.name}-v2\n${table(rows)}\n`);
  if (!bg || bg.failed > 0) problems++;
  out(
    bg
      ? `canary: background load during the shifts: ${bg.ok} served, ${bg.failed} failed${bg.failed ? ` ${JSON.stringify(bg.errors)}` : ''}\n`
      : 'canary: background load printed no summary\n',
  );
  return { problems, steps, ...(bg ? { background: { ok: bg.ok, failed: bg.failed, errors: bg.errors } } : {}) };
}
