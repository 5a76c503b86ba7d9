/** Running the system tools the lab drives (ip, nft), with errors that say what failed. */
import { execFile, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { findCgroup2Root, parseMountinfo } from '../capture/host.js';
import { SkeinError } from '../errors.js';
import { LabCode } from './codes.js';

export interface RunOptions {
  /** Written to the command's stdin (e.g. `ip -batch -`, `nft -f -`). */
  input?: string;
  /** Exit codes that are not failures (e.g. "already gone" during cleanup). */
  allowFailure?: boolean;
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion; throws SKEIN_LAB_COMMAND_FAILED with its stderr unless allowed. */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, { maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
      if (err && !opts.allowFailure) {
        const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
        reject(
          new SkeinError(
            missing ? LabCode.ToolMissing : LabCode.CommandFailed,
            missing ? `${cmd} is not installed (run make deps)` : `${cmd} ${args.join(' ')} failed (exit ${code}): ${String(stderr).trim() || String(stdout).trim()}`,
            { cmd, args, code, stderr: String(stderr) },
          ),
        );
        return;
      }
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** `ip -batch -` in a netns (or the current one): many link/addr/route changes for one exec. */
export async function ipBatch(netns: string | null, lines: string[]): Promise<void> {
  if (lines.length === 0) return;
  await run('ip', [...(netns ? ['-n', netns] : []), '-batch', '-'], { input: `${lines.join('\n')}\n` });
}

/** Runs a command inside a netns (`ip netns exec`), e.g. sysctl or nft. */
export function inNetns(netns: string, cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return run('ip', ['netns', 'exec', netns, cmd, ...args], opts);
}

/** Network namespaces that exist (`ip netns list`), names only. */
export async function listNetns(): Promise<string[]> {
  const { stdout } = await run('ip', ['netns', 'list'], { allowFailure: true });
  return stdout
    .split('\n')
    .map((l) => l.split(' ')[0]!.trim())
    .filter(Boolean);
}

/** True when a process with this pid exists (signal 0). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Where the cgroup v2 hierarchy is mounted: `/sys/fs/cgroup` on unified hosts,
 * `/sys/fs/cgroup/unified` on hybrid ones. Read from mountinfo, never assumed.
 */
export function cgroup2Root(mountinfo = '/proc/self/mountinfo'): string {
  const root = findCgroup2Root(parseMountinfo(readFileSync(mountinfo, 'utf8')));
  if (!root) throw new SkeinError(LabCode.Cgroup2Missing, 'no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)');
  return root;
}

/** Spawns a detached command whose output goes to `logFd`; returns its pid. */
/** `extraFds` become the child's fds 3, 4, ... (a listening socket handed over, say). */
export function spawnDetached(cmd: string, args: string[], env: NodeJS.ProcessEnv, logFd: number, extraFds: number[] = []): number {
  const child = spawn(cmd, args, { detached: true, stdio: ['ignore', logFd, logFd, ...extraFds], env });
  child.unref();
  if (child.pid === undefined) throw new SkeinError(LabCode.SpawnFailed, `could not start ${cmd}`);
  return child.pid;
}
