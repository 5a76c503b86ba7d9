/**
 * The objects in force in a lab, replaced as an operator would: `skein lab delete -f` what
 * was applied before, `skein lab apply -f` the new file (the CLI writes into the folder the
 * lab's controller watches). One applied set per lab at a time.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import type { LabRecord } from '../../../src/lab/registry.js';
import { repo } from './lab.js';
import { agentGet, waitUntil } from './mesh.js';

const execFileP = promisify(execFile);
const applied = new Map<string, string>();

/** Replaces the objects applied to lab `rec` with `objects` (none: removes them). Returns what `lab apply` printed. */
export async function labApply(rec: LabRecord, objects: object[]): Promise<string> {
  const skein = (args: string[]) => execFileP(process.execPath, [join(repo, 'bin', 'skein.js'), 'lab', ...args, '--lab', rec.id]);
  const before = applied.get(rec.id);
  if (before) {
    await skein(['delete', '-f', before]);
    rmSync(dirname(before), { recursive: true, force: true });
    applied.delete(rec.id);
  }
  if (objects.length === 0) return '';
  const dir = mkdtempSync(join(tmpdir(), 'skein-apply-'));
  const file = join(dir, 'objects.yaml');
  writeFileSync(file, objects.map((o) => JSON.stringify(o)).join('\n---\n'));
  applied.set(rec.id, file);
  const out = await skein(['apply', '-f', file]);
  if (!out.stdout.includes('applied')) throw new Error(`lab apply printed ${out.stdout}`);
  return out.stdout;
}

/**
 * Applies `objects` over what is applied (same kind, namespace and name: a new version of
 * that object), as `kubectl apply` of an edited file; what labApply applied stays listed.
 */
export async function labApplyOver(rec: LabRecord, objects: object[]): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), 'skein-apply-'));
  const file = join(dir, 'objects.yaml');
  writeFileSync(file, objects.map((o) => JSON.stringify(o)).join('\n---\n'));
  try {
    const out = await execFileP(process.execPath, [join(repo, 'bin', 'skein.js'), 'lab', 'apply', '-f', file, '--lab', rec.id]);
    return out.stdout;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Waits until every listed node's agent serves exactly these names in snapshot field `kind`. */
export async function servedBy(rec: LabRecord, nodes: string[], kind: string, names: string[], timeoutMs = 15_000): Promise<number> {
  const want = [...names].sort().join(',');
  return waitUntil(async () => {
    for (const node of nodes) {
      const d = await agentGet<{ snapshot: Record<string, { name: string }[] | undefined> | null }>(rec, node, '/config_dump');
      const have = (d.snapshot?.[kind] ?? []).map((p) => p.name).sort().join(',');
      if (have !== want) return false;
    }
    return true;
  }, timeoutMs);
}
