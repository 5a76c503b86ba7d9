/**
 * A tiny lab of its own for the capture e2e tests (the real lab lives in src/lab): three
 * network namespaces with unique names wired by veth pairs, a cgroup v2 directory that this
 * test process moves into (the cgroup programs attach there, not at the root, so nothing
 * else on the machine is hooked), and a unique bpffs pin folder. Everything is removed by
 * t.teardown, also when a test fails.
 *
 *   pod A (client)  10.77.1.1/24 fd77:1::1/64 ── veth ── 10.77.1.2/24 fd77:1::2/64  pod B (server)
 *   pod C (client)  10.77.2.1/24              ── veth ── 10.77.2.2/24               pod B
 *   B also holds 10.96.0.7 (VIP-looking) and 203.0.113.7 (external-looking) on lo; A and C
 *   route everything via B.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { findCgroup2Root, parseMountinfo } from '../../../src/capture/host.js';
import { loadNative } from '../../../src/capture/native.js';

export interface Teardown {
  teardown(fn: () => unknown): void;
}

export interface CaptureLab {
  id: string;
  netns: { a: string; b: string; c: string };
  path: { a: string; b: string; c: string };
  cgroupPath: string;
  pinRoot: string;
  ip: { a: string; b: string; bFromC: string; c: string; a6: string; b6: string; vip: string; external: string };
}

export function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function ipn(ns: string, ...args: string[]): void {
  sh('ip', ['-n', ns, ...args]);
}

export function ensureBpffs(): void {
  const mounts = parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'));
  if (!mounts.some((m) => m.fsType === 'bpf' && m.mountPoint === '/sys/fs/bpf')) loadNative().mountBpffs('/sys/fs/bpf');
}

export function cgroup2Root(): string {
  const root = findCgroup2Root(parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')));
  if (!root) throw new Error('no cgroup2 mount');
  return root;
}

/** This process's cgroup v2 path relative to the cgroup2 root. */
function ownCgroup(): string {
  const line = readFileSync('/proc/self/cgroup', 'utf8')
    .split('\n')
    .find((l) => l.startsWith('0::'));
  return line ? line.slice(3) : '/';
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The owner pid of a lab id (`<pid base36><4 hex>`), for sweeping leftovers of killed runs. */
export function ownerPidOf(id: string): number {
  return Number.parseInt(id.slice(0, -4), 36);
}

/**
 * Removes what killed earlier runs left (their teardown never ran): netns skc-<id>-*, cgroup
 * dirs skein-capture-test-<id>, pin folders /sys/fs/bpf/skein-test-<id> whose owner is dead.
 */
export function sweepStaleLabs(): void {
  const dead = (id: string) => !pidAlive(ownerPidOf(id));
  const attempt = (fn: () => void) => {
    try {
      fn();
    } catch {
      // best effort
    }
  };
  for (const name of sh('ip', ['netns', 'list']).split('\n').map((l) => l.split(' ')[0] ?? '')) {
    const m = /^skc-([0-9a-z]+)-[abc]$/.exec(name);
    if (m?.[1] && dead(m[1])) attempt(() => sh('ip', ['netns', 'del', name]));
  }
  if (existsSync('/sys/fs/bpf')) {
    for (const name of readdirSync('/sys/fs/bpf')) {
      const m = /^skein-test-([0-9a-z]+)$/.exec(name);
      if (!m?.[1] || !dead(m[1])) continue;
      const links = join('/sys/fs/bpf', name, 'links');
      if (existsSync(links)) for (const l of readdirSync(links)) attempt(() => sh('bpftool', ['link', 'detach', 'pinned', join(links, l)]));
      attempt(() => rmSync(join('/sys/fs/bpf', name), { recursive: true, force: true }));
    }
  }
  const root = cgroup2Root();
  for (const name of readdirSync(root)) {
    const m = /^skein-capture-test-([0-9a-z]+)$/.exec(name);
    if (m?.[1] && dead(m[1])) attempt(() => rmdirSync(join(root, name)));
  }
}

export async function makeCaptureLab(t: Teardown, opts: { joinCgroup?: boolean } = {}): Promise<CaptureLab> {
  const id = `${process.pid.toString(36)}${randomBytes(2).toString('hex')}`;
  const netns = { a: `skc-${id}-a`, b: `skc-${id}-b`, c: `skc-${id}-c` };
  const path = { a: `/var/run/netns/${netns.a}`, b: `/var/run/netns/${netns.b}`, c: `/var/run/netns/${netns.c}` };
  const root = cgroup2Root();
  const cgroupPath = join(root, `skein-capture-test-${id}`);
  ensureBpffs();
  sweepStaleLabs();
  const pinRoot = `/sys/fs/bpf/skein-test-${id}`;
  const lab: CaptureLab = {
    id,
    netns,
    path,
    cgroupPath,
    pinRoot,
    ip: {
      a: '10.77.1.1',
      b: '10.77.1.2',
      bFromC: '10.77.2.2',
      c: '10.77.2.1',
      a6: 'fd77:1::1',
      b6: 'fd77:1::2',
      vip: '10.96.0.7',
      external: '203.0.113.7',
    },
  };

  const previousCgroup = ownCgroup();
  // Every step on its own: one failing must not leave the others undone.
  const attempt = (fn: () => void) => {
    try {
      fn();
    } catch {
      // best effort
    }
  };
  t.teardown(() => {
    const links = join(pinRoot, 'links');
    if (existsSync(links)) {
      for (const name of readdirSync(links)) attempt(() => sh('bpftool', ['link', 'detach', 'pinned', join(links, name)]));
    }
    attempt(() => rmSync(pinRoot, { recursive: true, force: true }));
    if (opts.joinCgroup !== false) {
      attempt(() => writeFileSync(join(root, previousCgroup, 'cgroup.procs'), String(process.pid)));
    }
    for (const ns of Object.values(netns)) attempt(() => sh('ip', ['netns', 'del', ns]));
    attempt(() => existsSync(cgroupPath) && rmdirSync(cgroupPath));
  });

  for (const ns of Object.values(netns)) {
    sh('ip', ['netns', 'add', ns]);
    ipn(ns, 'link', 'set', 'lo', 'up');
  }
  const va = `ska${id}`.slice(0, 15);
  const vc = `skc${id}`.slice(0, 15);
  sh('ip', ['link', 'add', va, 'netns', netns.a, 'type', 'veth', 'peer', 'name', 'eth-a', 'netns', netns.b]);
  sh('ip', ['link', 'add', vc, 'netns', netns.c, 'type', 'veth', 'peer', 'name', 'eth-c', 'netns', netns.b]);
  ipn(netns.a, 'link', 'set', va, 'name', 'eth0');
  ipn(netns.c, 'link', 'set', vc, 'name', 'eth0');
  ipn(netns.a, 'addr', 'add', `${lab.ip.a}/24`, 'dev', 'eth0');
  ipn(netns.a, 'addr', 'add', `${lab.ip.a6}/64`, 'dev', 'eth0', 'nodad');
  ipn(netns.b, 'addr', 'add', `${lab.ip.b}/24`, 'dev', 'eth-a');
  ipn(netns.b, 'addr', 'add', `${lab.ip.b6}/64`, 'dev', 'eth-a', 'nodad');
  ipn(netns.b, 'addr', 'add', `${lab.ip.bFromC}/24`, 'dev', 'eth-c');
  ipn(netns.c, 'addr', 'add', `${lab.ip.c}/24`, 'dev', 'eth0');
  ipn(netns.b, 'addr', 'add', `${lab.ip.vip}/32`, 'dev', 'lo');
  ipn(netns.b, 'addr', 'add', `${lab.ip.external}/32`, 'dev', 'lo');
  for (const [ns, dev] of [
    [netns.a, 'eth0'],
    [netns.b, 'eth-a'],
    [netns.b, 'eth-c'],
    [netns.c, 'eth0'],
  ] as const) {
    ipn(ns, 'link', 'set', dev, 'up');
  }
  ipn(netns.a, 'route', 'add', 'default', 'via', lab.ip.b);
  ipn(netns.c, 'route', 'add', 'default', 'via', lab.ip.bFromC);
  sh('ip', ['netns', 'exec', netns.b, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  ipn(netns.a, 'route', 'add', '10.77.2.0/24', 'via', lab.ip.b);

  mkdirSync(cgroupPath);
  if (opts.joinCgroup !== false) writeFileSync(join(cgroupPath, 'cgroup.procs'), String(process.pid));
  return lab;
}

/** A plain server on a listening fd; records what it accepted and answers with a tag. */
export interface TaggedServer {
  server: net.Server;
  accepted: net.Socket[];
  close(): Promise<void>;
}

export async function serveFd(t: Teardown, fd: number, tag: string, onAccept?: (s: net.Socket) => void): Promise<TaggedServer> {
  const accepted: net.Socket[] = [];
  const server = net.createServer((s) => {
    accepted.push(s);
    s.on('error', () => undefined);
    onAccept?.(s);
    s.end(`${tag}\n`);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd }, () => resolve());
  });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    for (const s of accepted) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  };
  t.teardown(close);
  return { server, accepted, close };
}

/** Connect from inside a netns with an unmarked socket (as an app in the pod would) and read the first line. */
export async function fetchLine(nsPath: string, host: string, port: number, timeoutMs = 2000, mark = 0): Promise<string> {
  const fd = await loadNative().openSocket(nsPath, net.isIPv6(host) ? 6 : 4, mark);
  return readLine(new net.Socket({ fd }), host, port, timeoutMs);
}

export function readLine(sock: net.Socket, host: string, port: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`timeout reading from ${host}:${port}`));
    }, timeoutMs);
    sock.on('data', (d) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        sock.destroy();
        resolve(buf.slice(0, nl));
      }
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    sock.connect(port, host);
  });
}

/** Programs attached at a cgroup directory, as bpftool lists them. */
export function cgroupPrograms(cgroupPath: string): Array<{ id: number; attach_type: string; name: string }> {
  return JSON.parse(sh('bpftool', ['-j', 'cgroup', 'show', cgroupPath]).trim() || '[]');
}

/** netns links (sk_lookup) of the namespace with this inode. */
export function netnsLinks(netnsIno: bigint): unknown[] {
  const links = JSON.parse(sh('bpftool', ['-j', 'link', 'show'])) as Array<Record<string, unknown>>;
  return links.filter((l) => l.type === 'netns' && BigInt(Number(l.netns_ino ?? -1)) === netnsIno);
}
