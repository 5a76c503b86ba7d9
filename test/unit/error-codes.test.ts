/**
 * Every stable error code of src/ lives in its room's codes.ts, once, named
 * SKEIN_<AREA>_<CAUSE>, with each area's codes in one file, and is listed in the README.
 * A quoted 'SKEIN_...' anywhere else in src/ is a stray: it belongs in a codes.ts.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import { repoPath } from '../../src/paths.js';

// Areas are the first word after SKEIN_; a new area is a decision, so it is listed here.
const AREAS = ['ADMIN', 'AGENT', 'INSTALL', 'CAPTURE', 'CONFIG', 'CONTROLLER', 'KUBE', 'IDENTITY', 'LAB', 'HTTP', 'HTTP1', 'HTTP2', 'OUTBOUND', 'TUNNEL', 'INBOUND', 'POLICY', 'TELEMETRY'];
const CODE = /^SKEIN_([A-Z0-9]+)_[A-Z0-9]+(?:_[A-Z0-9]+)*$/;
// A trailing HTTP status (SKEIN_X_REFUSED_401) names a wire detail, not a cause.
const HTTP_STATUS_SUFFIX = /_[1-5]\d\d$/;

const src = repoPath('src');
const tsFiles = readdirSync(src, { recursive: true })
  .map(String)
  .filter((f) => f.endsWith('.ts'))
  .map((f) => join(src, f));
const registryFiles = tsFiles.filter((f) => f.endsWith('/codes.ts'));

interface Defined {
  code: string;
  where: string;
}

async function definedCodes(): Promise<Defined[]> {
  const out: Defined[] = [];
  for (const file of registryFiles) {
    const mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
    for (const [name, value] of Object.entries(mod)) {
      if (typeof value !== 'object' || value === null) continue;
      for (const [key, code] of Object.entries(value)) {
        if (typeof code === 'string') out.push({ code, where: `${relative(src, file)} ${name}.${key}` });
      }
    }
  }
  return out;
}

t.test('every code is SKEIN_<AREA>_<CAUSE>, defined once, each area in one codes.ts', async (t) => {
  const defined = await definedCodes();
  t.ok(defined.length > 50, `found the registries (${defined.length} codes in ${registryFiles.length} files)`);
  const seen = new Map<string, string>();
  const areaFile = new Map<string, string>();
  for (const { code, where } of defined) {
    const m = CODE.exec(code);
    t.ok(m, `${where}: ${code} follows SKEIN_<AREA>_<CAUSE>`);
    t.notOk(HTTP_STATUS_SUFFIX.test(code), `${where}: ${code} is named after a cause, not an HTTP status`);
    const area = m?.[1] ?? '';
    t.ok(AREAS.includes(area), `${where}: ${code} has a known area (${area})`);
    const first = seen.get(code);
    t.notOk(first, `${code} is defined once (${where}${first ? `, and ${first}` : ''})`);
    seen.set(code, where);
    const file = where.split(' ')[0]!;
    const areaHome = areaFile.get(area) ?? file;
    t.equal(file, areaHome, `area ${area} lives in one file (${code})`);
    areaFile.set(area, areaHome);
  }
});

t.test('no code is written outside a codes.ts', async (t) => {
  const strays: string[] = [];
  for (const file of tsFiles) {
    if (registryFiles.includes(file)) continue;
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/(['"`])(SKEIN_[A-Z0-9_]+)\1/g)) strays.push(`${relative(src, file)}: ${m[2]}`);
  }
  t.same(strays, [], 'every SKEIN_ code literal is in a codes.ts');
});

t.test('the README lists every code', async (t) => {
  const readme = readFileSync(repoPath('README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Errors'));
  const missing = (await definedCodes()).filter(({ code }) => !new RegExp(`\\b${code}\\b`).test(section)).map((d) => d.code);
  t.same(missing, [], 'README.md "## Errors" names every code');
});
