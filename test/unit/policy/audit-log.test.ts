/**
 * The audit trail's hash chain: written, continued across restarts and rotation, and every
 * kind of tampering (edit, removal, insertion, reordering, a cut head) named by line.
 */
import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { AuditLog, type AuditRecord, verifyAuditChain } from '../../../src/policy/audit-log.js';

function dir(t: Test): string {
  const d = mkdtempSync(join(tmpdir(), 'skein-audit-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

const rec = (i: number): AuditRecord => ({
  time: `2026-11-29T00:00:${String(i).padStart(2, '0')}Z`,
  decision: i % 3 === 0 ? 'audit' : 'deny',
  policy: 'shop/deny-admin',
  rule: 0,
  source: 'spiffe://cluster.local/ns/shop/sa/client',
  workload: 'shop/echo-1',
  port: 8080,
  method: 'GET',
  path: `/admin/${i}`,
});

function writeN(file: string, from: number, n: number): void {
  const log = new AuditLog(file);
  for (let i = from; i < from + n; i++) log.write(rec(i));
  log.close();
}

const check = (files: string[], continued = false) => verifyAuditChain(files.map((f) => ({ name: f, text: readFileSync(f, 'utf8') })), { continued });
const lines = (f: string) => readFileSync(f, 'utf8').trimEnd().split('\n');
const put = (f: string, ls: string[]) => writeFileSync(f, `${ls.join('\n')}\n`);

t.test('a chain written, and continued by a restarted agent, verifies', async (t) => {
  const f = join(dir(t), 'audit.log');
  writeN(f, 0, 5);
  writeN(f, 5, 5); // a new AuditLog on the same file continues the chain
  t.same(check([f]), { ok: true, lines: 10 });
  t.match(JSON.parse(lines(f)[0] as string), { seq: 1, prev: '0'.repeat(64), decision: 'audit', path: '/admin/0' });
});

t.test('tampering is named by file and line', async (t) => {
  const d = dir(t);
  const f = join(d, 'audit.log');
  writeN(f, 0, 8);
  const orig = lines(f);

  put(f, orig.map((l, i) => (i === 3 ? l.replace('/admin/3', '/public') : l)));
  t.match(check([f]).problem, { file: f, line: 4, reason: /altered/ }, 'an edited line');

  put(f, orig.filter((_, i) => i !== 5));
  t.match(check([f]).problem, { line: 6, reason: /broken link/ }, 'a removed line: the one after it is named');

  const swapped = [...orig];
  [swapped[2], swapped[3]] = [swapped[3] as string, swapped[2] as string];
  put(f, swapped);
  t.match(check([f]).problem, { line: 3, reason: /broken link/ }, 'two lines swapped');

  put(f, orig.slice(2));
  t.match(check([f]).problem, { line: 1, reason: /does not start here/ }, 'the head cut off');
  t.same(check([f], true), { ok: true, lines: 6 }, '--continued accepts a later part of a chain');

  put(f, [...orig.slice(0, 4), orig[1] as string, ...orig.slice(4)]);
  t.match(check([f]).problem, { line: 5, reason: /broken link/ }, 'a line inserted (replayed)');
});

t.test('rotation: the chain goes on in the new file and verifies across both', async (t) => {
  const d = dir(t);
  const f = join(d, 'audit.log');
  const log = new AuditLog(f);
  for (let i = 0; i < 4; i++) log.write(rec(i));
  renameSync(f, `${f}.1`); // logrotate
  for (let i = 4; i < 7; i++) log.write(rec(i));
  log.close();
  t.same(check([`${f}.1`, f]), { ok: true, lines: 7 }, 'old then new: one chain');
  t.notOk(check([f]).ok, 'the new file alone does not start the chain');
  t.ok(check([f], true).ok, 'but is a valid continuation');
  t.match(check([f, `${f}.1`]).problem, { reason: /does not start here|broken link/ }, 'files in the wrong order are caught');
});

t.test('a torn last line stops the agent from continuing a chain that could not verify', async (t) => {
  const f = join(dir(t), 'audit.log');
  writeN(f, 0, 2);
  writeFileSync(f, `${readFileSync(f, 'utf8')}{"time":"2026`, { flag: 'w' });
  t.throws(() => new AuditLog(f), { code: 'SKEIN_POLICY_AUDIT_LOG_UNREADABLE' });
});
