/**
 * Where running labs are recorded: one folder per lab under the lab directory (default
 * /run/skein/labs, env SKEIN_LAB_DIR), holding lab.json (the plan and the processes), the
 * Kubernetes-shaped state folder and the logs. The record is written before anything is
 * created, so `lab down` and `lab gc` can undo a half-made lab.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SkeinError } from '../errors.js';
import type { LabPlan } from './plan.js';
import type { Scenario } from './scenario.js';
import { LabCode } from './codes.js';

export interface LabProcess {
  /**
   * pod: a pod's program; agent / controller: skein components (an agent's pid is its first
   * one: it may have been restarted since, see supervisor); supervisor: the lab's kubelet for
   * a node's agent (restarts, upgrades); prometheus and its host port forward.
   */
  kind: 'pod' | 'agent' | 'supervisor' | 'controller' | 'prometheus' | 'forward';
  /** `namespace/pod`, or the node name for an agent. */
  name: string;
  pid: number;
  log: string;
  /** cgroup directory (absolute). */
  cgroup: string;
  netns: string;
}

export interface LabRecord {
  version: 1;
  id: string;
  scenarioFile: string;
  createdAt: string;
  /** The lab belongs to this process (a test); `lab gc` removes it once the process is gone. */
  ownerPid?: number;
  status: 'creating' | 'up' | 'deleting';
  dir: string;
  stateDir: string;
  logDir: string;
  cgroupRoot: string;
  /** The scenario as parsed, then as changed by `lab label` / `lab scale`. */
  scenario: Scenario;
  plan: LabPlan;
  processes: LabProcess[];
  /** The lab's Prometheus (`lab up --prometheus`): where the host reaches it. */
  prometheus?: { url: string; port: number; dir: string };
  /** The controller's service graph page on the host's loopback (a port forward; mesh labs). */
  graph?: { url: string; port: number };
}

export function labBaseDir(): string {
  return process.env.SKEIN_LAB_DIR || '/run/skein/labs';
}

export function recordPath(base: string, id: string): string {
  return join(base, id, 'lab.json');
}

export function writeRecord(rec: LabRecord): void {
  mkdirSync(rec.dir, { recursive: true });
  const file = join(rec.dir, 'lab.json');
  writeFileSync(`${file}.tmp`, `${JSON.stringify(rec, null, 2)}\n`);
  renameSync(`${file}.tmp`, file);
}

export function readRecord(base: string, id: string): LabRecord | null {
  const file = recordPath(base, id);
  if (!existsSync(file)) return null;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as LabRecord;
  } catch {
    return null;
  }
}

/** Ids of every recorded lab (including half-made ones). */
export function listLabIds(base = labBaseDir()): string[] {
  if (!existsSync(base)) return [];
  return readdirSync(base, { withFileTypes: true })
    .filter((e) => e.isDirectory() && /^[0-9a-f]{6}$/.test(e.name))
    .map((e) => e.name);
}

/**
 * The lab a command means: the given id (or SKEIN_LAB), else the only one running.
 */
export function resolveLab(id: string | undefined, base = labBaseDir()): LabRecord {
  const want = id ?? process.env.SKEIN_LAB;
  if (want) {
    const rec = readRecord(base, want.replace(/^skein-/, ''));
    if (!rec) throw new SkeinError(LabCode.NotFound, `no lab ${want} under ${base}`);
    return rec;
  }
  const ids = listLabIds(base);
  if (ids.length === 0) throw new SkeinError(LabCode.NotFound, `no lab is running (records in ${base}); start one with skein lab up`);
  if (ids.length > 1) throw new SkeinError(LabCode.Ambiguous, `${ids.length} labs are running (${ids.join(', ')}): choose one with --lab ID or SKEIN_LAB`);
  const rec = readRecord(base, ids[0]!);
  if (!rec) throw new SkeinError(LabCode.NotFound, `lab ${ids[0]} has no readable record`);
  return rec;
}
