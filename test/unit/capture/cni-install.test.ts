/**
 * `skein cni install|uninstall` on temporary conf and bin dirs: skein-cni is chained last into
 * the first conflist (lexical order), the binary copied executable; again is a no-op; a
 * malformed conflist is refused with file, field and reason and left byte for byte; uninstall
 * removes exactly skein-cni's entry and the binary, and is a no-op the second time.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { installCni, uninstallCni } from '../../../src/capture/cni-install.js';
import { SkeinError } from '../../../src/errors.js';

function dirs(t: Test) {
  const root = mkdtempSync(join(tmpdir(), 'skein-cni-install-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const confDir = join(root, 'net.d');
  const binDir = join(root, 'bin');
  mkdirSync(confDir);
  mkdirSync(binDir);
  const binary = join(root, 'skein-cni-built');
  writeFileSync(binary, '#!/bin/sh\nexit 0\n');
  return { root, confDir, binDir, binary };
}

const calico = {
  name: 'k8s-pod-network',
  cniVersion: '0.3.1',
  plugins: [
    { type: 'calico', log_level: 'info', ipam: { type: 'calico-ipam' } },
    { type: 'portmap', snat: true, capabilities: { portMappings: true } },
  ],
};

const read = (f: string) => JSON.parse(readFileSync(f, 'utf8')) as typeof calico & { plugins: Record<string, unknown>[] };

t.test('install chains skein-cni last into the first conflist, idempotently; uninstall undoes it', async (t) => {
  const d = dirs(t);
  writeFileSync(join(d.confDir, '10-calico.conflist'), JSON.stringify(calico));
  writeFileSync(join(d.confDir, '20-other.conflist'), JSON.stringify({ ...calico, name: 'other' }));
  writeFileSync(join(d.confDir, '05-single.conf'), JSON.stringify({ cniVersion: '0.3.1', name: 'x', type: 'bridge' }));
  const r = installCni({ ...d, agentSocket: '/var/run/skein/cni.sock', timeoutMs: 20000, excludeNamespaces: ['kube-system'] });
  t.equal(r.conflist, join(d.confDir, '10-calico.conflist'), 'the first *.conflist in lexical order');
  t.ok(r.changed);
  const after = read(r.conflist);
  t.same(
    after.plugins.map((p) => p.type),
    ['calico', 'portmap', 'skein-cni'],
    'skein-cni last, the others unchanged in order',
  );
  t.same(after.plugins[2], { type: 'skein-cni', agent_socket: '/var/run/skein/cni.sock', timeout_ms: 20000, exclude_namespaces: ['kube-system'] });
  t.same(after.plugins.slice(0, 2), calico.plugins, 'the pod network plugins byte-for-byte the same objects');
  t.equal(after.name, calico.name);
  t.equal(after.cniVersion, calico.cniVersion);
  t.same(read(join(d.confDir, '20-other.conflist')).plugins.length, 2, 'other conflists untouched');
  t.equal(statSync(join(d.binDir, 'skein-cni')).mode & 0o777, 0o755, 'binary copied, executable');

  const again = installCni({ ...d, agentSocket: '/var/run/skein/cni.sock', timeoutMs: 20000, excludeNamespaces: ['kube-system'] });
  t.notOk(again.changed, 'installing again changes nothing');
  t.same(read(r.conflist).plugins.filter((p) => p.type === 'skein-cni').length, 1, 'one skein-cni entry');

  const moved = installCni({ ...d, agentSocket: '/run/other.sock' });
  t.ok(moved.changed, 'a new socket rewrites the entry');
  t.same(read(r.conflist).plugins.at(-1), { type: 'skein-cni', agent_socket: '/run/other.sock' }, 'still one entry, last, with the new settings');

  const u = uninstallCni(d);
  t.same(u.conflists, [r.conflist], 'removed from the conflist it was in');
  t.ok(u.binaryRemoved);
  t.same(read(r.conflist), calico, 'the conflist is what it was before install');
  t.notOk(existsSync(join(d.binDir, 'skein-cni')), 'binary gone');
  t.same(uninstallCni(d), { conflists: [], binaryRemoved: false }, 'uninstalling again is a no-op');
  t.same(readFileSync(join(d.confDir, '05-single.conf'), 'utf8'), JSON.stringify({ cniVersion: '0.3.1', name: 'x', type: 'bridge' }), 'single-plugin .conf files never touched');
});

t.test('install skein-cni moved in the middle: put back last', async (t) => {
  const d = dirs(t);
  const f = join(d.confDir, '10-calico.conflist');
  writeFileSync(f, JSON.stringify({ ...calico, plugins: [calico.plugins[0], { type: 'skein-cni', agent_socket: '/s' }, calico.plugins[1]] }));
  installCni({ ...d, agentSocket: '/s' });
  t.same(
    read(f).plugins.map((p) => p.type),
    ['calico', 'portmap', 'skein-cni'],
  );
});

t.test('refusals: no conflist, malformed conflists (file, field, reason), missing binary; nothing written', async (t) => {
  const d = dirs(t);
  t.throws(() => installCni({ ...d, agentSocket: '/s' }), { code: 'SKEIN_CAPTURE_CNI_NO_CONFLIST' }, 'an empty conf dir');
  t.throws(() => installCni({ ...d, confDir: join(d.root, 'nowhere'), agentSocket: '/s' }), { code: 'SKEIN_CAPTURE_CNI_NO_CONFLIST' }, 'a missing conf dir');
  const f = join(d.confDir, '10-bad.conflist');
  const cases: [string, string, RegExp][] = [
    ['{"name":', '(document)', /not JSON/],
    ['[]', '(document)', /JSON object/],
    [JSON.stringify({ name: 'n', plugins: [] }), 'cniVersion', /missing/],
    [JSON.stringify({ cniVersion: '1.0.0', plugins: [] }), 'name', /missing/],
    [JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: {} }), 'plugins', /not a list/],
    [JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: [{ type: 'ptp' }, 7] }), 'plugins[1]', /not an object/],
    [JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: [{ ipam: {} }] }), 'plugins[0].type', /missing/],
  ];
  for (const [text, field, reason] of cases) {
    writeFileSync(f, text);
    try {
      installCni({ ...d, agentSocket: '/s' });
      t.fail(`accepted ${text}`);
    } catch (err) {
      t.ok(err instanceof SkeinError);
      t.equal((err as SkeinError).code, 'SKEIN_CAPTURE_CNI_CONFLIST_INVALID', `${field}: refused`);
      t.match((err as SkeinError).details, { file: f, field, reason }, `names ${f}, ${field}`);
      t.match((err as SkeinError).message, f, 'the message names the file');
    }
    t.equal(readFileSync(f, 'utf8'), text, 'the malformed file is left as it was');
    t.notOk(existsSync(join(d.binDir, 'skein-cni')), 'no binary copied for a refused install');
    t.throws(() => uninstallCni(d), { code: 'SKEIN_CAPTURE_CNI_CONFLIST_INVALID' }, 'uninstall refuses it too');
  }
  rmSync(f);
  writeFileSync(join(d.confDir, '10-ok.conflist'), JSON.stringify(calico));
  t.throws(() => installCni({ ...d, binary: join(d.root, 'missing'), agentSocket: '/s' }), { code: 'SKEIN_CAPTURE_CNI_NO_CONFLIST' }, 'a missing binary');
  t.same(read(join(d.confDir, '10-ok.conflist')), calico, 'nothing written for it');
});
