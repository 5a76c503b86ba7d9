/**
 * `skein agent --cleanup` on a node an agent left: real BPF programs attached to a cgroup
 * and a pod netns's sk_lookup link, pinned (the agent is gone, capture stays); skein-cni's
 * binary and conflist entry in CNI folders (temporary folders standing in for /opt/cni/bin
 * and /etc/cni/net.d). After --cleanup: no program on the cgroup, no link in the netns, no
 * pin folder, no skein-cni file or entry; exit 0, and 0 again on the clean node.
 */
import { closeSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { runAgent } from '../../../src/agent/main.js';
import { CaptureManager } from '../../../src/capture/capture-manager.js';
import { captureOutput } from '../../unit/cli/capture-output.js';
import { tempDir } from '../../unit/controller/helpers.js';
import { cgroupPrograms, makeCaptureLab, netnsLinks } from './fixture.js';

async function agent(args: string[]): Promise<{ code: number; out: string }> {
  const { result, out } = await captureOutput(() => runAgent(args));
  return { code: result, out };
}

t.test('--cleanup removes pinned links, maps and CNI files; idempotent', async (t) => {
  const lab = await makeCaptureLab(t, { joinCgroup: false });
  const capture = new CaptureManager({ pinRoot: lab.pinRoot, cgroupPath: lab.cgroupPath });
  await capture.start();
  const pod = await capture.enroll({ uid: 'shop/web-1', netnsPath: lab.path.a, ips: [lab.ip.a], excludeOutboundPorts: [], excludeInboundPorts: [] });
  const ino = statSync(lab.path.a, { bigint: true }).ino;
  // The listeners' fds are this process's (no agent serves them here).
  for (const fd of [pod.listeners.outbound, pod.listeners.inboundPlaintext, pod.listeners.tunnel]) closeSync(fd);
  await capture.close(); // the agent goes away; capture stays pinned
  t.equal(cgroupPrograms(lab.cgroupPath).length, 3, 'before: connect4, connect6, sock_ops attached');
  t.equal(netnsLinks(ino).length, 1, 'before: the pod\'s sk_lookup link');
  t.ok(existsSync(lab.pinRoot));

  const dir = tempDir(t, 'cleanup-cni');
  const binDir = join(dir, 'bin');
  const confDir = join(dir, 'net.d');
  mkdirSync(binDir);
  mkdirSync(confDir);
  writeFileSync(join(binDir, 'skein-cni'), '#!/bin/sh\n');
  writeFileSync(join(confDir, '10-ptp.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'pods', plugins: [{ type: 'ptp' }, { type: 'skein-cni' }] }));

  const args = ['--cleanup', '--pin-root', lab.pinRoot, '--cni-bin-dir', binDir, '--cni-conf-dir', confDir, '--log-level', 'warn'];
  const first = await agent(args);
  t.equal(first.code, 0, 'exit 0');
  t.match(first.out, `removed BPF links and pins under ${lab.pinRoot}`);
  t.match(first.out, 'removed the skein-cni binary');
  t.match(first.out, `removed skein-cni from ${join(confDir, '10-ptp.conflist')}`);
  t.same(cgroupPrograms(lab.cgroupPath), [], 'no program left on the cgroup');
  t.same(netnsLinks(ino), [], 'no sk_lookup link left in the pod netns');
  t.notOk(existsSync(lab.pinRoot), 'pin folder gone');
  t.notOk(existsSync(join(binDir, 'skein-cni')));
  t.same(JSON.parse(readFileSync(join(confDir, '10-ptp.conflist'), 'utf8')).plugins, [{ type: 'ptp' }], 'the node\'s network plugin stays');

  const second = await agent(args);
  t.equal(second.code, 0, 'again: exit 0');
  t.match(second.out, `no pins under ${lab.pinRoot}`);
  t.match(second.out, 'no skein-cni binary');
});
