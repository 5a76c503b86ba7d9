/**
 * Starting programs inside a pod (or node): in its netns (`ip netns exec`, which also mounts
 * /etc/netns/<netns>/hosts as /etc/hosts) and in its cgroup, joined before exec so every
 * descendant is accounted to (and killed with) the pod.
 */
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { skeinCommand } from '../paths.js';
import type { LabPlan, PlannedPod } from './plan.js';
import { spawnDetached } from './sys.js';

/** sh: join the cgroup given as $1, then exec `ip netns exec <netns> <cmd...>`. */
const ENTER = 'cg="$1"; shift; echo $$ > "$cg/cgroup.procs" && exec ip netns exec "$@"';

export function enterArgs(cgroupDir: string, netns: string, cmd: string[]): string[] {
  return ['-c', ENTER, 'skein-enter', cgroupDir, netns, ...cmd];
}

/** The command line of a pod's container: built-in images run skein's own workloads. */
export function containerCommand(pod: PlannedPod): string[] {
  const c = pod.container;
  if (c.command && c.command.length > 0) return [...c.command, ...c.args];
  const workload = c.image === 'skein/echo' ? 'echo' : 'client';
  return [...skeinCommand(), 'workload', workload, ...c.args];
}

/** Downward-API-like environment: who am I, where am I. */
export function podEnv(plan: LabPlan, pod: PlannedPod, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH,
    HOME: '/root',
    POD_NAME: pod.name,
    POD_NAMESPACE: pod.namespace,
    POD_IP: pod.ip,
    POD_UID: pod.uid,
    NODE_NAME: pod.node,
    SERVICE_ACCOUNT: pod.serviceAccount,
    SKEIN_LAB: plan.id,
    SKEIN_LOG_LEVEL: process.env.SKEIN_LOG_LEVEL,
    ...pod.container.env,
    ...extra,
  };
}

export function startDetached(cgroupDir: string, netns: string, cmd: string[], env: NodeJS.ProcessEnv, logFile: string): number {
  const fd = openSync(logFile, 'a');
  try {
    return spawnDetached('/bin/sh', enterArgs(cgroupDir, netns, cmd), env, fd);
  } finally {
    closeSync(fd);
  }
}

/** Runs a command in the foreground inside a pod; resolves with its exit code. */
export function execAttached(cgroupDir: string, netns: string, cmd: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', enterArgs(cgroupDir, netns, cmd), { stdio: 'inherit', env });
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve(code ?? (signal ? 128 + 15 : 1)));
  });
}

/** Runs a command inside a pod and collects its output (bounded by `timeoutMs`). */
export function execCaptured(
  cgroupDir: string,
  netns: string,
  cmd: string[],
  env: NodeJS.ProcessEnv,
  timeoutMs = 120_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('/bin/sh', enterArgs(cgroupDir, netns, cmd), { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c) => {
      stdout += c;
    });
    child.stderr.on('data', (c) => {
      stderr += c;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 137 : 1), stdout, stderr });
    });
  });
}
