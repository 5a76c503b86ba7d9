#!/usr/bin/env node
// Runs every suite of `make test` in order and ends with one line, `N passed, N failed,
// N skipped`, summing them all. Suites: type-check and lint (one check each), unit tests
// (no root), e2e tests (root: real BPF, netns, cgroups; serial, never in parallel).
// Usage: node test/run-suites.mjs [typecheck|lint|unit|e2e ...]
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const wanted = process.argv.slice(2);
const all = ['typecheck', 'lint', 'unit', 'e2e'];
const suites = wanted.length ? wanted : all;
const totals = { passed: 0, failed: 0, skipped: 0 };
const lines = [];

function run(cmd, args, opts = {}) {
  return new Promise((resolve) => {
    let out = '';
    const child = spawn(cmd, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: process.env, ...opts });
    const tee = (stream) => (chunk) => {
      out += chunk;
      stream.write(chunk);
    };
    child.stdout.on('data', tee(process.stdout));
    child.stderr.on('data', tee(process.stderr));
    child.on('close', (code, signal) => resolve({ code: code ?? 128, signal, out }));
  });
}

// A check that is one pass or one fail (tsc, the linter).
async function check(name, cmd, args) {
  const t0 = Date.now();
  const { code } = await run(cmd, args);
  const ok = code === 0;
  totals[ok ? 'passed' : 'failed'] += 1;
  lines.push(`${name}: ${ok ? 'passed' : `FAILED (exit ${code})`} in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
}

// tap prints `# { total: N, pass: N, fail: N, skip: N, todo: N }` at the end of a run.
function tapCounts(out) {
  const m = [...out.matchAll(/^# \{ total: (\d+)(.*)\}\s*$/gm)].pop();
  if (!m) return null;
  const get = (k) => Number((m[2].match(new RegExp(`${k}: (\\d+)`)) || [])[1] ?? 0);
  return { total: Number(m[1]), pass: get('pass'), fail: get('fail'), skip: get('skip') + get('todo') };
}

function testFiles(dir) {
  const abs = join(root, dir);
  if (!existsSync(abs)) return [];
  return readdirSync(abs, { recursive: true })
    .map(String)
    .filter((f) => f.endsWith('.test.ts'))
    .map((f) => join(dir, f));
}

async function tapSuite(name, dir, extra) {
  const files = testFiles(dir);
  if (files.length === 0) {
    lines.push(`${name}: no test files`);
    return;
  }
  const t0 = Date.now();
  const { code, out } = await run('tap', ['run', '--reporter=tap', ...extra, ...files]);
  const c = tapCounts(out);
  if (!c) {
    totals.failed += 1;
    lines.push(`${name}: FAILED (tap exit ${code}, no summary)`);
    return;
  }
  // A run whose counts all passed but which exited non-zero (e.g. coverage below threshold,
  // a test file that crashed after its last assertion) is still a failure: count it.
  const extraFail = code !== 0 && c.fail === 0 ? 1 : 0;
  totals.passed += c.pass;
  totals.failed += c.fail + extraFail;
  totals.skipped += c.skip;
  lines.push(
    `${name}: ${c.pass} passed, ${c.fail + extraFail} failed, ${c.skip} skipped in ${((Date.now() - t0) / 1000).toFixed(1)}s` +
      (extraFail ? ` (tap exited ${code}: see above, e.g. coverage below threshold)` : ''),
  );
}

for (const suite of suites) {
  if (suite === 'typecheck') await check('typecheck', 'tsc', ['--noEmit', '-p', 'tsconfig.json']);
  else if (suite === 'lint') await check('lint', 'biome', ['lint']);
  else if (suite === 'unit') await tapSuite('unit', 'test/unit', []);
  else if (suite === 'e2e') {
    const files = testFiles('test/e2e');
    if (process.getuid?.() !== 0) {
      totals.skipped += files.length;
      lines.push(`e2e: ${files.length} file(s) skipped: they need root (real netns, cgroups, BPF); run sudo make test`);
      continue;
    }
    // Leftovers of a killed earlier run would collide with nothing (names are unique), but
    // they waste the machine: collect them first, and again after.
    await run('node', ['bin/skein.js', 'lab', 'gc']);
    await tapSuite('e2e', 'test/e2e', ['--jobs=1', '--disable-coverage', '--timeout=600']);
    await run('node', ['bin/skein.js', 'lab', 'gc']);
  } else {
    console.error(`unknown suite ${suite}; known: ${all.join(', ')}`);
    process.exit(2);
  }
}

console.log(`\n${lines.join('\n')}`);
console.log(`${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`);
process.exitCode = totals.failed > 0 ? 1 : 0;
