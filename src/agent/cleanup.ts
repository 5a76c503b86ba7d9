/**
 * `skein agent --cleanup`: what an uninstall leaves on a node, removed — the BPF links
 * (cgroup hooks at the cgroup v2 root, every pod's sk_lookup link) and maps pinned under the
 * pin root, and skein-cni's binary and configuration entries. Run with no agent serving on
 * the node (after `skein uninstall | kubectl delete -f -`, or on a host that ran one by hand):
 * from then on nothing is captured. Idempotent: a clean node gives exit 0 and "nothing".
 */
import { existsSync } from 'node:fs';
import { CaptureManager } from '../capture/capture-manager.js';
import { type CniRemoval, removeSkeinCni } from '../capture/cni-files.js';
import type { Logger } from '../telemetry/log.js';

export interface CleanupReport {
  pinRoot: string;
  /** The pin root existed (links detached, pins removed). */
  pinsRemoved: boolean;
  cni: CniRemoval;
}

export async function cleanupNode(o: { pinRoot: string; cniBinDir: string; cniConfDir: string; log: Logger }): Promise<CleanupReport> {
  const existed = existsSync(o.pinRoot);
  // Without start(): nothing is loaded or attached; uninstall detaches every pinned link
  // (cgroup and sk_lookup) and removes the pin folder, maps included.
  const capture = new CaptureManager({ pinRoot: o.pinRoot }, { logger: o.log });
  await capture.uninstall();
  const cni = removeSkeinCni({ binDir: o.cniBinDir, confDir: o.cniConfDir });
  const report = { pinRoot: o.pinRoot, pinsRemoved: existed, cni };
  o.log.info(report, 'node cleaned up');
  return report;
}

export function describeCleanup(r: CleanupReport): string {
  const lines = [
    r.pinsRemoved ? `removed BPF links and pins under ${r.pinRoot}` : `no pins under ${r.pinRoot}`,
    r.cni.binaryRemoved ? 'removed the skein-cni binary' : 'no skein-cni binary',
    ...r.cni.edited.map((f) => `removed skein-cni from ${f}`),
    ...r.cni.removed.map((f) => `removed ${f}`),
    ...r.cni.skipped.map((f) => `left ${f} (not JSON)`),
  ];
  return lines.map((l) => `skein agent --cleanup: ${l}\n`).join('');
}
