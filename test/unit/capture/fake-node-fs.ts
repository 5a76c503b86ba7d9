// A node's cgroup v2 tree and /proc, recorded as files in a temp dir, for pod -> netns
// discovery tests. A namespace is a file; every /proc/PID/ns/net of a process in it is a hard
// link to that file, so they share an inode as nsfs ones do.
import { linkSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Test } from 'tap';
import { PodNetnsDiscovery } from '../../../src/capture/pod-netns-discovery.js';

export const UID = '2f6b5a4e-8c1d-4e0b-9a55-0d6c3f7e1a2b';
export const U_ = UID.replaceAll('-', '_');
export const SANDBOX = 'a3c1f0b2d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5061728394a5b6c7d8e9';
export const APP = '7e9d2c4b6a8f0e1d3c5b7a9f8e6d4c2b0a1f3e5d7c9b8a6f4e2d0c1b3a5f7e9d';

function fibTrie(ips: string[]): string {
  // The shape of /proc/net/fib_trie: a leaf line per address, its route type under it.
  const leaves = ['127.0.0.1', ...ips.filter((ip) => ip.includes('.'))]
    .map((ip) => `     |-- ${ip}\n        /32 host LOCAL\n`)
    .join('');
  const table = `  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.0\n              /8 host LOCAL\n${leaves}     |-- 169.254.1.1\n        /32 link UNICAST\n`;
  return `Main:\n${table}Local:\n${table}`;
}

function ifInet6(ips: string[]): string {
  const hex = (ip: string) => {
    const [head = '', tail = ''] = ip.split('::');
    const h = head ? head.split(':') : [];
    const r = tail ? tail.split(':') : [];
    const groups = [...h, ...new Array(8 - h.length - r.length).fill('0'), ...r];
    return groups.map((g) => g.padStart(4, '0')).join('');
  };
  return ['::1', ...ips.filter((ip) => ip.includes(':'))].map((ip, i) => `${hex(ip)} ${String(i + 1).padStart(2, '0')} 80 10 80       eth0\n`).join('');
}

/** A node's /sys/fs/cgroup and /proc, in a temp dir. */
export class FakeNode {
  readonly root = mkdtempSync(join(tmpdir(), 'skein-netns-'));
  readonly cgroup = join(this.root, 'sys/fs/cgroup');
  readonly proc = join(this.root, 'proc');
  private readonly netnsIps = new Map<string, string[]>();

  constructor() {
    mkdirSync(this.cgroup, { recursive: true });
    this.netns('host', ['172.20.0.2']);
    this.process('self', 'host', 'skein-agent');
  }

  netns(name: string, ips: string[]): void {
    const file = join(this.root, 'nsfs', name);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, name);
    this.netnsIps.set(name, ips);
  }

  process(pid: number | 'self', netns: string, comm: string): void {
    const dir = join(this.proc, String(pid));
    mkdirSync(join(dir, 'ns'), { recursive: true });
    mkdirSync(join(dir, 'net'), { recursive: true });
    rmSync(join(dir, 'ns', 'net'), { force: true });
    linkSync(join(this.root, 'nsfs', netns), join(dir, 'ns', 'net'));
    const ips = this.netnsIps.get(netns) ?? [];
    writeFileSync(join(dir, 'net', 'fib_trie'), fibTrie(ips));
    writeFileSync(join(dir, 'net', 'if_inet6'), ifInet6(ips));
    writeFileSync(join(dir, 'comm'), `${comm}\n`);
  }

  /** A cgroup directory (relative to the mount) holding these PIDs. */
  cg(rel: string, pids: number[] = []): string {
    const dir = join(this.cgroup, rel);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'cgroup.procs'), pids.map((p) => `${p}\n`).join(''));
    return dir;
  }

  discovery(kubeletRoots?: string[]): PodNetnsDiscovery {
    return new PodNetnsDiscovery({ cgroupRoot: this.cgroup, procRoot: this.proc, ...(kubeletRoots ? { kubeletRoots } : {}) });
  }

  remove(): void {
    rmSync(this.root, { recursive: true, force: true });
  }
}

export function node(t: Test): FakeNode {
  const n = new FakeNode();
  t.teardown(() => n.remove());
  return n;
}

/** A pod of one sandbox (pause) and one app container, both in netns `pod`. PIDs wrap: the sandbox's is the higher here. */
export function runningPod(n: FakeNode, podDir: string, names: { sandbox: string; app: string }, ips = ['10.244.1.10']): void {
  n.netns('pod', ips);
  n.process(4190, 'pod', 'pause');
  n.process(4101, 'pod', 'node');
  n.cg(podDir);
  n.cg(`${podDir}/${names.sandbox}`, [4190]);
  n.cg(`${podDir}/${names.app}`, [4101]);
}

