/**
 * Changing a running lab the way kubectl changes a cluster: label a namespace, scale a
 * Deployment. Each change updates the record, the network (pods, Service DNAT) and the
 * Kubernetes-shaped state folder that the controller watches.
 */
import { existsSync, mkdirSync, renameSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { parseYamlObjects } from '../config/kube/folder-source.js';
import { MESH_LABEL } from '../config/model.js';
import { SkeinError } from '../errors.js';
import { destroyCgroupTree } from './cgroups.js';
import { startPod, waitReady, writeKubeState } from './lab.js';
import { agentAdminGet } from './mesh.js';
import { applyServiceRules, createPod, deletePod, nodeCniOf } from './network.js';
import { endpointsOf, planPod, type PlannedPod } from './plan.js';
import { type LabRecord, readRecord, writeRecord } from './registry.js';
import { LabCode } from './codes.js';

/** One mutation at a time per lab, across processes (mkdir is atomic). */
async function withLabLock<T>(rec: LabRecord, fn: (fresh: LabRecord) => Promise<T>): Promise<T> {
  const lock = join(rec.dir, '.lock');
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      if (Date.now() > deadline) throw new SkeinError(LabCode.Busy, `lab ${rec.id} is locked by another command (${lock})`);
      await sleep(20);
    }
  }
  try {
    // Re-read under the lock: another command may have changed the lab meanwhile.
    const fresh = readRecord(join(rec.dir, '..'), rec.id) ?? rec;
    return await fn(fresh);
  } finally {
    rmdirSync(lock);
  }
}

/**
 * `key=value` sets a label, `key-` removes it (kubectl's syntax). Returns the new labels.
 */
export function parseLabelChanges(changes: string[]): { set: Record<string, string>; remove: string[] } {
  const set: Record<string, string> = {};
  const remove: string[] = [];
  for (const c of changes) {
    if (c.endsWith('-') && !c.includes('=')) remove.push(c.slice(0, -1));
    else {
      const eq = c.indexOf('=');
      if (eq <= 0) throw new SkeinError(LabCode.BadLabel, `"${c}" is neither key=value nor key-`);
      set[c.slice(0, eq)] = c.slice(eq + 1);
    }
  }
  return { set, remove };
}

export async function labelNamespace(rec: LabRecord, namespace: string, changes: string[]): Promise<Record<string, string>> {
  return changeNamespace(rec, namespace, 'labels', changes);
}

export async function annotateNamespace(rec: LabRecord, namespace: string, changes: string[]): Promise<Record<string, string>> {
  return changeNamespace(rec, namespace, 'annotations', changes);
}

async function changeNamespace(rec: LabRecord, namespace: string, field: 'labels' | 'annotations', changes: string[]): Promise<Record<string, string>> {
  const { set, remove } = parseLabelChanges(changes);
  return withLabLock(rec, async (fresh) => {
    const ns = fresh.scenario.namespaces.find((n) => n.name === namespace);
    if (!ns) throw new SkeinError(LabCode.NotFound, `no namespace ${namespace} in lab ${fresh.id}`);
    for (const k of remove) delete ns[field][k];
    Object.assign(ns[field], set);
    writeRecord(fresh);
    writeKubeState(fresh);
    return { ...ns[field] };
  });
}

function meshRuns(rec: LabRecord): boolean {
  return rec.processes.some((p) => p.kind === 'agent');
}

function namespaceMeshed(rec: LabRecord, namespace: string): boolean {
  return rec.scenario.namespaces.find((n) => n.name === namespace)?.labels[MESH_LABEL] === 'enabled';
}

/** Polls the pod's node agent (admin API inside the node netns) until it serves the pod. */
async function waitAgentServes(rec: LabRecord, pod: PlannedPod, timeoutMs: number): Promise<void> {
  const node = rec.plan.nodes.find((n) => n.name === pod.node)!;
  const deadline = Date.now() + timeoutMs;
  const want = `${pod.namespace}/${pod.name}`;
  for (;;) {
    const w = await agentAdminGet<{ pods: { pod: string; state: string }[] }>(rec, node.name, '/workloads');
    if (w?.pods.some((p) => p.pod === want && p.state === 'serving')) return;
    if (Date.now() > deadline) throw new SkeinError(LabCode.PodNotEnrolled, `the agent of ${pod.node} did not serve ${want} within ${timeoutMs} ms`);
    await sleep(50);
  }
}

function refreshServices(rec: LabRecord): void {
  for (const s of rec.plan.services) s.endpoints = endpointsOf(s, rec.plan.pods);
}

async function publish(rec: LabRecord): Promise<void> {
  refreshServices(rec);
  await Promise.all(rec.plan.nodes.map((n) => applyServiceRules(rec.plan, n)));
  writeRecord(rec);
  writeKubeState(rec);
}

export interface ScaleOptions {
  /**
   * Time between a pod leaving the Service endpoints and its process being killed, like
   * Kubernetes' termination grace: in-flight requests finish, proxies learn the change.
   */
  graceMs?: number;
  readyTimeoutMs?: number;
}

/**
 * Scales `namespace/deployment` to `replicas`; new pods are ready before endpoints list them.
 * Returns the pods added and removed.
 */
export async function scaleDeployment(rec: LabRecord, ref: string, replicas: number, opts: ScaleOptions = {}): Promise<{ added: PlannedPod[]; removed: PlannedPod[] }> {
  const [namespace, name] = ref.split('/', 2);
  if (!Number.isInteger(replicas) || replicas < 0 || replicas > 64) throw new SkeinError(LabCode.BadScale, `replicas must be 0..64, got ${replicas}`);
  return withLabLock(rec, async (fresh) => {
    const d = fresh.scenario.deployments.find((x) => x.namespace === namespace && x.name === name);
    if (!d) throw new SkeinError(LabCode.NotFound, `no deployment ${ref} in lab ${fresh.id}`);
    const current = fresh.plan.pods.filter((p) => p.namespace === namespace && p.deployment === name);
    const index = (p: PlannedPod) => Number(p.name.slice(name!.length + 1));
    if (replicas > current.length) {
      const taken = new Set(current.map(index));
      const added: PlannedPod[] = [];
      for (let r = 0; added.length < replicas - current.length; r++) {
        if (taken.has(r)) continue;
        const pod = planPod(fresh.scenario, { id: fresh.id, prefix: fresh.plan.prefix, nodes: fresh.plan.nodes, pods: fresh.plan.pods }, d, r);
        fresh.plan.pods.push(pod);
        added.push(pod);
      }
      const previous = d.replicas;
      d.replicas = replicas;
      // As in a cluster, the pod object exists (scheduled, not ready) before its node makes the
      // sandbox: the node's agent knows the pod when skein-cni asks about it. The record knows
      // the new pods before they exist, so down can undo them.
      for (const p of added) p.ready = false;
      await publish(fresh);
      const made = await Promise.allSettled(added.map((p) => createPod(fresh.plan, p, nodeCniOf(fresh.dir, p.node))));
      const failed = made.find((m) => m.status === 'rejected');
      if (failed) {
        // A sandbox the CNI chain refused (skein-cni: the agent cannot capture the pod) is not
        // started; the pods are taken back, as a kubelet that gives up on them for now.
        await Promise.all(added.map((p, i) => (made[i]!.status === 'fulfilled' ? deletePod(fresh.plan, p, nodeCniOf(fresh.dir, p.node)).catch(() => {}) : undefined)));
        const back = new Set(added);
        fresh.plan.pods = fresh.plan.pods.filter((p) => !back.has(p));
        d.replicas = previous;
        await publish(fresh);
        throw failed.reason;
      }
      for (const p of added) fresh.processes.push(startPod(fresh, p));
      writeRecord(fresh);
      await waitReady(fresh, opts.readyTimeoutMs ?? 15_000, added);
      // With the mesh on, a new meshed pod becomes a ready endpoint only once its node's agent
      // serves it; otherwise callers would tunnel to a 15008 that does not exist yet.
      const gated = added.filter((p) => meshRuns(fresh) && namespaceMeshed(fresh, p.namespace));
      if (gated.length) await Promise.all(gated.map((p) => waitAgentServes(fresh, p, opts.readyTimeoutMs ?? 15_000)));
      for (const p of added) delete p.ready;
      await publish(fresh);
      return { added, removed: [] };
    }
    const removed = current.sort((a, b) => index(b) - index(a)).slice(0, current.length - replicas);
    const gone = new Set(removed);
    fresh.plan.pods = fresh.plan.pods.filter((p) => !gone.has(p));
    d.replicas = replicas;
    await publish(fresh); // out of the endpoints first ...
    await sleep(opts.graceMs ?? 1000); // ... then, after the grace period, gone
    for (const p of removed) {
      // The kubelet's order: containers stopped, then the sandbox's network torn down (CNI DEL).
      await destroyCgroupTree(join(fresh.cgroupRoot, dirname(p.cgroup))); // the pod's slice, its container scope inside
      await deletePod(fresh.plan, p, nodeCniOf(fresh.dir, p.node));
    }
    fresh.processes = fresh.processes.filter((proc) => !removed.some((p) => proc.name === `${p.namespace}/${p.name}`));
    writeRecord(fresh);
    return { added: [], removed };
  });
}

/** The file in the lab's state folder that holds one applied object (kubectl apply's unit). */
function appliedFile(rec: LabRecord, obj: Record<string, unknown>, where: string): string {
  const meta = (obj.metadata ?? {}) as { name?: unknown; namespace?: unknown };
  if (typeof obj.kind !== 'string' || typeof obj.apiVersion !== 'string' || typeof meta.name !== 'string') {
    throw new SkeinError(LabCode.NotFound, `${where}: an object needs apiVersion, kind and metadata.name`);
  }
  const ns = typeof meta.namespace === 'string' ? meta.namespace : '_';
  const safe = (s: string) => s.replace(/[^A-Za-z0-9_.-]/g, '_');
  return join(rec.stateDir, `zz-applied.${safe(obj.kind)}.${safe(ns)}.${safe(meta.name)}.yaml`);
}

/**
 * `skein lab apply -f FILE`: each object of the YAML file goes into the folder the lab's
 * controller watches, one file per object (applying it again replaces it), as `kubectl apply`
 * would put it into a cluster. The controller validates it; `skein status` shows a refusal.
 */
export function applyObjects(rec: LabRecord, file: string, text: string): string[] {
  const objs = parseYamlObjects(file, text);
  const done: string[] = [];
  for (const o of objs) {
    const target = appliedFile(rec, o.obj, `${file} document ${o.doc + 1}`);
    writeFileSync(`${target}.tmp`, stringify(o.obj));
    renameSync(`${target}.tmp`, target); // the controller never reads half a file
    done.push(objectName(o.obj));
  }
  return done;
}

/** `skein lab delete -f FILE`: removes the objects the file names (what apply put there). */
export function deleteObjects(rec: LabRecord, file: string, text: string): string[] {
  const done: string[] = [];
  for (const o of parseYamlObjects(file, text)) {
    const target = appliedFile(rec, o.obj, `${file} document ${o.doc + 1}`);
    if (!existsSync(target)) continue;
    rmSync(target);
    done.push(objectName(o.obj));
  }
  return done;
}

function objectName(obj: Record<string, unknown>): string {
  const meta = obj.metadata as { name: string; namespace?: string };
  return `${obj.kind}/${meta.namespace ? `${meta.namespace}/` : ''}${meta.name}`;
}
