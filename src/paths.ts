/** Where skein's own files are, found from this module rather than the working directory. */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/** The repository (package) root: the nearest folder up from here whose package.json is skein's. */
export function repoRoot(): string {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'skein') {
      cached = dir;
      return dir;
    }
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find the skein package root above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** The `skein` CLI entry, for starting skein programs in pods and nodes. */
export function skeinCommand(): string[] {
  return [process.execPath, join(repoRoot(), 'bin', 'skein.js')];
}
