/** Where skein's own files are, found from this module rather than the working directory. */
import { join } from 'node:path';
import { findRepoRoot } from './identity/repo-path.js';

/** The repository (package) root: the nearest folder up from here whose package.json is skein's. */
export function repoRoot(): string {
  return findRepoRoot(import.meta.url);
}

/** The `skein` CLI entry, for starting skein programs in pods and nodes. */
export function skeinCommand(): string[] {
  return [process.execPath, join(repoRoot(), 'bin', 'skein.js')];
}
