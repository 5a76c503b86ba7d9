/**
 * Labs for e2e tests: each test gets its own lab (unique id), owned by the test process so
 * that `skein lab gc` removes it if the test is killed, and torn down in t.teardown even
 * when the test fails. Needs root.
 */
import { cpSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { labDown, labExecCaptured, labUp } from '../../../src/lab/lab.js';
import type { LabRecord } from '../../../src/lab/registry.js';
import type { ClientSummary } from '../../../src/lab/workloads/client.js';

export const repo = join(import.meta.dirname, '..', '..', '..');
export const demoScenario = join(repo, 'deploy', 'local', 'demo.yaml');

export function isRoot(): boolean {
  return process.getuid?.() === 0;
}

/** Writes scenario text to a temporary file. */
export function scenarioFile(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'skein-scenario-'));
  const file = join(dir, 'scenario.yaml');
  writeFileSync(file, text);
  return file;
}

export async function startLab(
  t: Test,
  file = demoScenario,
  opts: { mesh?: boolean; agentArgs?: string[]; agentEnv?: Record<string, string>; prometheus?: boolean; agentRestartBackoffMs?: number } = {},
): Promise<LabRecord> {
  const rec = await labUp({
    scenarioFile: file,
    ownerPid: process.pid,
    mesh: opts.mesh ?? false,
    agentArgs: opts.agentArgs ?? [],
    agentEnv: opts.agentEnv ?? {},
    ...(opts.prometheus ? { prometheus: true } : {}),
    ...(opts.agentRestartBackoffMs !== undefined ? { agentRestartBackoffMs: opts.agentRestartBackoffMs } : {}),
  });
  t.teardown(async () => {
    // A failed test keeps the lab's logs (agents, controller, pods) for whoever debugs it.
    if (!t.passing()) {
      const keep = join(tmpdir(), 'skein-e2e-logs', rec.id);
      cpSync(rec.logDir, keep, { recursive: true });
      t.comment(`lab logs kept in ${keep}`);
    }
    await labDown(rec);
  });
  return rec;
}

/** Runs the lab client inside a pod and returns its summary. */
export async function client(rec: LabRecord, pod: string, args: string[], timeoutMs = 60_000): Promise<ClientSummary & { exitCode: number; stderr: string }> {
  const r = await labExecCaptured(rec, pod, ['skein', 'workload', 'client', ...args], timeoutMs);
  const last = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return { ...(JSON.parse(last) as ClientSummary), exitCode: r.code, stderr: r.stderr };
  } catch {
    throw new Error(`client in ${pod} printed no summary (exit ${r.code}): ${r.stderr || r.stdout}`);
  }
}
