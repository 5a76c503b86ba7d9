/** Where skein's own files are, found from this module rather than the working directory. */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const roots = new Map<string, string>();

/**
 * The skein repository (or installed package) root: the nearest directory above `from`
 * holding skein's package.json. Works from src/ (tsx) and from dist/ (tsc output), which is
 * why .proto files are found through it: tsc does not copy them into dist/.
 */
export function findRepoRoot(from: string = import.meta.url): string {
  const start = dirname(from.startsWith('file:') ? fileURLToPath(from) : from);
  const cached = roots.get(start);
  if (cached) return cached;
  for (let dir = start; ; dir = dirname(dir)) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'skein') {
          roots.set(start, dir);
          return dir;
        }
      } catch {
        // not a readable package.json; keep walking up
      }
    }
    if (dirname(dir) === dir) throw new Error(`skein package.json not found above ${start}`);
  }
}

/** The repository (package) root: the nearest folder up from here whose package.json is skein's. */
export function repoRoot(): string {
  return findRepoRoot(import.meta.url);
}

/** Absolute path of a file of the repository, e.g. repoPath('src/api/ca.proto'). */
export function repoPath(...segments: string[]): string {
  return join(repoRoot(), ...segments);
}

/** The `skein` CLI entry, for starting skein programs in pods and nodes. */
export function skeinCommand(): string[] {
  return [process.execPath, join(repoRoot(), 'bin', 'skein.js')];
}
