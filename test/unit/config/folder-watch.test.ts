import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { FolderWatch, listYamlFiles } from '../../../src/config/folder-watch.js';
import { silentLogger } from '../../../src/telemetry/log.js';

/** Write-then-rename, as the lab and most tools replace a file. */
function replace(file: string, text: string): void {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 10));
  }
  return true;
}

t.test('every rename-replaced file is seen without rescans, in subfolders made later too', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'skein-folder-watch-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'a.yaml'), 'v: start');
  let seen = '';
  const w = new FolderWatch({
    dir,
    debounceMs: 20,
    rescanMs: 0, // no safety net: only the watches can notice
    log: silentLogger(),
    read: async () => {
      seen = (await listYamlFiles(dir)).map((f) => readFileSync(f, 'utf8')).join('|');
    },
  });
  t.teardown(() => w.stop());
  await w.start();
  t.equal(seen, 'v: start', 'first read on start');
  let missed = 0;
  for (let i = 0; i < 15; i++) {
    replace(join(dir, 'a.yaml'), `v: ${i}`);
    if (!(await until(() => seen === `v: ${i}`, 2000))) missed++;
  }
  t.equal(missed, 0, 'no replacement of a top-level file was missed');
  mkdirSync(join(dir, 'sub'));
  replace(join(dir, 'sub', 'b.yaml'), 'w: 0');
  t.ok(await until(() => seen.endsWith('|w: 0'), 2000), 'a file in a new subfolder is seen');
  for (let i = 1; i < 6; i++) {
    replace(join(dir, 'sub', 'b.yaml'), `w: ${i}`);
    if (!(await until(() => seen.endsWith(`|w: ${i}`), 2000))) missed++;
  }
  t.equal(missed, 0, 'no replacement inside the subfolder was missed');
});

t.test('reads never overlap; a change during a read gets exactly one more read', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'skein-folder-watch-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  let active = 0;
  let overlapped = false;
  let reads = 0;
  const w = new FolderWatch({
    dir,
    debounceMs: 10,
    rescanMs: 0,
    watch: false,
    log: silentLogger(),
    read: async () => {
      active++;
      if (active > 1) overlapped = true;
      reads++;
      await new Promise((r) => setTimeout(r, 50));
      active--;
    },
  });
  await w.start();
  t.equal(reads, 1);
  await Promise.all([w.readNow(), w.readNow(), w.readNow()]);
  t.notOk(overlapped, 'never two reads at once');
  t.equal(reads, 3, 'the calls during the read coalesced into one more read');
  await w.stop();
});
