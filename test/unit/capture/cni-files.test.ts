// skein-cni's removal from a node's CNI folders (temporary folders standing in for
// /opt/cni/bin and /etc/cni/net.d): the chained entry comes out of the conflist, everything
// else stays byte-for-byte equivalent, a skein-only file goes, other files are untouched,
// and a second run changes nothing.
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { removeSkeinCni } from '../../../src/capture/cni-files.js';
import { tempDir } from '../controller/helpers.js';

t.test('removes the binary and skein-cni entries; keeps the rest; idempotent', async (t) => {
  const dir = tempDir(t, 'cni');
  const binDir = join(dir, 'bin');
  const confDir = join(dir, 'net.d');
  mkdirSync(binDir);
  mkdirSync(confDir);
  writeFileSync(join(binDir, 'skein-cni'), '#!/bin/sh\n');
  writeFileSync(join(binDir, 'ptp'), 'other plugin');
  const primary = {
    cniVersion: '1.0.0',
    name: 'k8s-pod-network',
    plugins: [
      { type: 'ptp', ipam: { type: 'host-local', ranges: [[{ subnet: '10.244.1.0/24' }]] } },
      { type: 'portmap', capabilities: { portMappings: true } },
      { type: 'skein-cni', agentSocket: '/var/run/skein/cni.sock', kubeconfig: '/etc/cni/net.d/skein-cni.kubeconfig' },
    ],
  };
  writeFileSync(join(confDir, '10-ptp.conflist'), JSON.stringify(primary));
  writeFileSync(join(confDir, '05-skein-only.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'x', plugins: [{ type: 'skein-cni' }] }));
  writeFileSync(join(confDir, '99-skein.conf'), JSON.stringify({ cniVersion: '0.4.0', name: 'y', type: 'skein-cni' }));
  const untouched = JSON.stringify({ cniVersion: '1.0.0', name: 'other', plugins: [{ type: 'bridge' }] });
  writeFileSync(join(confDir, '20-other.conflist'), untouched);
  writeFileSync(join(confDir, '30-broken.conflist'), '{ not json');
  writeFileSync(join(confDir, 'README'), 'not a conf');

  const r = removeSkeinCni({ binDir, confDir });
  t.equal(r.binaryRemoved, true);
  t.notOk(existsSync(join(binDir, 'skein-cni')));
  t.ok(existsSync(join(binDir, 'ptp')), 'other binaries stay');
  t.same(r.edited, [join(confDir, '10-ptp.conflist')]);
  t.same(r.removed, [join(confDir, '05-skein-only.conflist'), join(confDir, '99-skein.conf')]);
  t.same(r.skipped, [join(confDir, '30-broken.conflist')]);
  const after = JSON.parse(readFileSync(join(confDir, '10-ptp.conflist'), 'utf8'));
  t.same(after, { ...primary, plugins: primary.plugins.slice(0, 2) }, 'the primary network and its other plugins are as they were');
  t.equal(readFileSync(join(confDir, '20-other.conflist'), 'utf8'), untouched, 'a conflist without skein is not rewritten');
  t.equal(readFileSync(join(confDir, '30-broken.conflist'), 'utf8'), '{ not json', 'an unparsable file is left alone');
  t.notOk(readdirSync(confDir).some((f) => f.includes('skein-tmp')), 'no temporary file left');

  const again = removeSkeinCni({ binDir, confDir });
  t.same(again, { binaryRemoved: false, edited: [], removed: [], skipped: [join(confDir, '30-broken.conflist')] }, 'second run: nothing to do');
  t.same(removeSkeinCni({ binDir: join(dir, 'absent'), confDir: join(dir, 'absent') }), { binaryRemoved: false, edited: [], removed: [], skipped: [] }, 'absent folders: nothing to do');
});
