/** The lab's cgroup v2 directories: one per pod (and per lab process), killed as a tree. */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export function createCgroup(root: string, rel: string): string {
  const dir = join(root, rel);
  mkdirSync(dir, { recursive: true });
  return dir;
}

function procsIn(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

function subdirs(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => join(dir, e.name));
  } catch {
    return [];
  }
}

/** Every pid in the subtree. */
export function pidsInTree(dir: string): number[] {
  return [...procsIn(dir), ...subdirs(dir).flatMap(pidsInTree)];
}

/**
 * Kills every process in the subtree and removes the directories, deepest first. Uses
 * cgroup.kill (Linux 5.14+) and falls back to SIGKILL per pid; waits until empty (bounded).
 */
export async function destroyCgroupTree(dir: string, timeoutMs = 10_000): Promise<void> {
  if (!existsSync(dir)) return;
  try {
    writeFileSync(join(dir, 'cgroup.kill'), '1');
  } catch {
    for (const pid of pidsInTree(dir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  const deadline = Date.now() + timeoutMs;
  while (pidsInTree(dir).length > 0 && Date.now() < deadline) await sleep(20);
  // A killed task leaves cgroup.procs before it is fully gone (until its parent reaps it),
  // and rmdir says EBUSY meanwhile: retry until the deadline.
  while (!removeTree(dir) && Date.now() < deadline) await sleep(20);
}

/** Removes the tree deepest first; true when nothing of it is left. */
function removeTree(dir: string): boolean {
  let ok = true;
  for (const sub of subdirs(dir)) ok = removeTree(sub) && ok;
  try {
    rmdirSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') ok = false; // busy: the caller retries, gc later
  }
  return ok;
}
