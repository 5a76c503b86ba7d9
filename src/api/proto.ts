import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

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

/** Absolute path of a file of the repository, e.g. repoPath('src/api/ca.proto'). */
export function repoPath(...segments: string[]): string {
  return join(findRepoRoot(), ...segments);
}

/**
 * Loads a .proto of src/api at run time into a grpc-js package object. Options keep field
 * names as written (snake_case), int64 as numbers and defaults filled in. Parsed once per file.
 */
const loaded = new Map<string, grpc.GrpcObject>();

export function loadApiProto(file: string): grpc.GrpcObject {
  const cached = loaded.get(file);
  if (cached) return cached;
  const def = protoLoader.loadSync(repoPath('src', 'api', file), {
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def);
  loaded.set(file, pkg);
  return pkg;
}
