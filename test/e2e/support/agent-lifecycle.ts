/**
 * What the agent restart and upgrade tests look at: the load they run (steady-load.ts in a
 * pod), the underlay on the wire (tshark), and the BPF programs attached in the kernel
 * (bpftool), each scoped to one lab: other labs on the machine attach skein programs too.
 */
import { execFile, spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { labExecCaptured } from '../../../src/lab/lab.js';
import { pinRootOf } from '../../../src/lab/mesh.js';
import type { LabRecord } from '../../../src/lab/registry.js';
import { repo } from './lab.js';
import { type LoadSummary, parseLoadSummary } from './steady-load.js';

const exec = promisify(execFile);

/** SKEIN_RELIABILITY=long: `make test-reliability`'s long form (README figures); else the short CI form. */
export function longForm(): boolean {
  return process.env.SKEIN_RELIABILITY === 'long';
}

/** Runs steady-load.ts inside `pod` and returns its summary. */
export async function steadyLoad(rec: LabRecord, pod: string, args: string[], durationMs: number): Promise<LoadSummary> {
  const script = join(repo, 'test', 'e2e', 'support', 'steady-load.ts');
  const r = await labExecCaptured(rec, pod, [process.execPath, '--import', 'tsx', script, ...args, '--duration-ms', String(durationMs)], durationMs + 60_000);
  try {
    return parseLoadSummary(r.stdout);
  } catch {
    throw new Error(`steady-load in ${pod} printed no summary (exit ${r.code}): ${r.stderr.slice(-2000)}`);
  }
}

/** The node's agent answers 200 on its readiness port. */
export async function agentReady(rec: LabRecord, node: string): Promise<boolean> {
  const n = rec.plan.nodes.find((x) => x.name === node)!;
  const r = await exec('ip', ['netns', 'exec', n.netns, 'curl', '-sf', '-o', '/dev/null', '--max-time', '1', 'http://127.0.0.1:15021/healthz/ready']).then(
    () => true,
    () => false,
  );
  return r;
}

export const CGROUP_HOOKS = ['connect4', 'connect6', 'sock_ops'] as const;

/** Program id behind each of a node's pinned cgroup links. */
export async function pinnedPrograms(rec: LabRecord, node: string): Promise<Record<(typeof CGROUP_HOOKS)[number], number>> {
  const out = {} as Record<(typeof CGROUP_HOOKS)[number], number>;
  for (const hook of CGROUP_HOOKS) {
    const { stdout } = await exec('bpftool', ['-j', 'link', 'show', 'pinned', `${pinRootOf(rec, node)}/links/${hook}`], { encoding: 'utf8' });
    out[hook] = (JSON.parse(stdout) as { prog_id: number }).prog_id;
  }
  return out;
}

/** Ids of the skein programs attached at the cgroup root (every lab's). */
export async function attachedAtRoot(rec: LabRecord): Promise<number[]> {
  const { stdout } = await exec('bpftool', ['-j', 'cgroup', 'show', rec.cgroupRoot], { encoding: 'utf8' });
  return (JSON.parse(stdout) as { id: number; name?: string }[]).filter((p) => p.name?.startsWith('skein_')).map((p) => p.id);
}

/** sk_lookup links attached in a netns (by its inode). */
export async function skLookupLinks(netnsIno: string): Promise<number> {
  const { stdout } = await exec('bpftool', ['-j', 'link', 'show'], { encoding: 'utf8' });
  return (JSON.parse(stdout) as { type: string; netns_ino?: number }[]).filter((l) => l.type === 'netns' && String(l.netns_ino) === netnsIno).length;
}

export async function netnsInode(netns: string): Promise<string> {
  return (await exec('stat', ['-Lc', '%i', `/var/run/netns/${netns}`], { encoding: 'utf8' })).stdout.trim();
}

/**
 * A packet capture of the lab's underlay (every byte between nodes) until stop().
 * `plaintext()` lists what would betray traffic leaving a node in clear: payload on any TCP
 * port but the tunnel (15008) and the controller's TLS ports (15010, 15012), and anything
 * tshark decodes as HTTP, HTTP/2 or gRPC.
 */
export function captureUnderlay(rec: LabRecord, maxSeconds: number) {
  const pcap = `/tmp/skein-e2e-${process.pid}-${Date.now()}.pcap`;
  const cap = spawn('ip', ['netns', 'exec', rec.plan.underlayNetns, 'tshark', '-q', '-i', rec.plan.underlayBridge, '-a', `duration:${maxSeconds}`, '-f', 'tcp', '-w', pcap], { stdio: 'ignore' });
  const exited = new Promise<void>((r) => cap.once('exit', () => r()));
  const read = (args: string[]) => exec('tshark', ['-r', pcap, ...args], { encoding: 'utf8', maxBuffer: 256 << 20 }).then((r) => r.stdout);
  return {
    async stop(): Promise<void> {
      cap.kill('SIGINT');
      await exited;
    },
    async payloadPackets(): Promise<number> {
      return (await read(['-Y', 'tcp.len > 0', '-T', 'fields', '-e', 'frame.number'])).trim().split('\n').filter(Boolean).length;
    },
    async tunnelTlsRecords(): Promise<number> {
      return (await read(['-d', 'tcp.port==15008,tls', '-Y', 'tcp.port == 15008 && tls.record', '-T', 'fields', '-e', 'frame.number'])).trim().split('\n').filter(Boolean).length;
    },
    async plaintext(): Promise<{ offPorts: string; http: string }> {
      const offPorts = (await read(['-Y', 'tcp.len > 0 && !(tcp.port == 15008 || tcp.port == 15010 || tcp.port == 15012)', '-T', 'fields', '-e', 'ip.src', '-e', 'tcp.srcport', '-e', 'ip.dst', '-e', 'tcp.dstport'])).trim();
      const http = (await read(['-Y', 'http || http2 || grpc'])).trim();
      return { offPorts, http };
    },
    remove(): void {
      rmSync(pcap, { force: true });
    },
  };
}
