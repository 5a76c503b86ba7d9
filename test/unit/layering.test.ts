/**
 * Which room of src/ may import which (each folder's README says so): the layering is
 * checked on every import, so a shortcut across it fails here rather than in review.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import t from 'tap';
import { repoPath } from '../../src/paths.js';

// Rooms each room may import (besides itself and the top-level errors.ts and paths.ts).
const MAY_IMPORT: Record<string, string[]> = {
  telemetry: [],
  api: [],
  config: ['api', 'telemetry'],
  routing: ['config'],
  identity: ['api', 'telemetry'],
  capture: ['config', 'telemetry'],
  proxy: ['config', 'routing', 'identity', 'telemetry'],
  policy: ['config', 'telemetry'],
  controller: ['config', 'identity', 'api', 'policy', 'telemetry'],
  agent: ['capture', 'proxy', 'identity', 'config', 'api', 'routing', 'policy', 'telemetry'],
  lab: ['capture', 'config', 'identity', 'api', 'telemetry'],
  cli: ['agent', 'controller', 'lab', 'capture', 'proxy', 'identity', 'config', 'api', 'routing', 'policy', 'telemetry'],
};

const src = repoPath('src');
const roomOf = (file: string): string => relative(src, file).split(sep)[0] ?? '';

t.test('every import stays within what its room may import', async (t) => {
  const files = readdirSync(src, { recursive: true })
    .map(String)
    .filter((f) => f.endsWith('.ts'))
    .map((f) => join(src, f));
  const crossings: string[] = [];
  let checked = 0;
  for (const file of files) {
    const from = roomOf(file);
    if (!from.endsWith('.ts') && !(from in MAY_IMPORT)) crossings.push(`${relative(src, file)}: room ${from} has no rule`);
    const allowed = MAY_IMPORT[from];
    if (!allowed) continue;
    for (const m of readFileSync(file, 'utf8').matchAll(/(?:from|import)\s*\(?\s*'(\.\.?\/[^']+)'/g)) {
      const target = resolve(dirname(file), m[1]!);
      const to = roomOf(target);
      checked++;
      if (to === from || to.endsWith('.js')) continue;
      if (!allowed.includes(to)) crossings.push(`${relative(src, file)} imports ${relative(src, target)} (${from} -> ${to})`);
    }
  }
  t.ok(checked > 300, `imports checked: ${checked}`);
  t.same(crossings, [], 'no import crosses the layering');
});
