/**
 * Steady, bounded load for the reliability suite: N req/s of HTTP/1, h2c or gRPC from a lab
 * pod through the mesh (the lab's own client workload, open loop, so a stall shows up as
 * latency instead of hiding), every failure recorded with when it was sent and its reason.
 * Bounded in count (rate × duration, at most MAX_REQUESTS per stream) and in time (duration,
 * at most MAX_DURATION_S; the client is killed if it overruns by a minute).
 *
 * Also what the suite measures around the load: the short/long form switch
 * (SKEIN_RELIABILITY=long), a process's RSS and open fds from /proc, an agent's Prometheus
 * metrics read inside its node's netns.
 */
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { labExecCaptured } from '../../../src/lab/lab.js';
import type { LabRecord } from '../../../src/lab/registry.js';
import type { ClientProtocol, ClientSummary } from '../../../src/lab/workloads/client.js';

const execFileP = promisify(execFile);

/** The long form runs the issue's durations; the default short form fits CI. */
export const LONG = process.env.SKEIN_RELIABILITY === 'long';
export function form<T>(short: T, long: T): T {
  return LONG ? long : short;
}
export const FORM_NAME = LONG ? 'long' : 'short';

const MAX_REQUESTS = 1_000_000;
const MAX_DURATION_S = 3600;

export interface LoadStream {
  protocol: Exclude<ClientProtocol, 'tcp' | 'ws'>;
  /** host:port, e.g. echo.shop:80 */
  target: string;
  rate: number;
  /** Per-request timeout (s); default 5. */
  timeoutS?: number;
  /** Extra client arguments (headers, paths). */
  extra?: string[];
}

export interface LoadResult extends ClientSummary {
  stream: LoadStream;
  /** Failures with absolute send times (ms since the epoch). */
  failuresAt: { at: number; reason: string }[];
}

export interface RunningLoad {
  /** When the load was asked to start (host clock, ms since the epoch). */
  launchedAt: number;
  done: Promise<LoadResult[]>;
}

/** Starts one client per stream in `pod`, all for `durationS` seconds; resolves with every summary. */
export function steadyLoad(rec: LabRecord, pod: string, streams: LoadStream[], durationS: number): RunningLoad {
  const dur = Math.min(MAX_DURATION_S, durationS);
  const launchedAt = Date.now();
  const done = Promise.all(
    streams.map(async (stream) => {
      const count = Math.min(MAX_REQUESTS, Math.ceil(stream.rate * dur));
      const args = [
        'skein', 'workload', 'client',
        '--protocol', stream.protocol,
        '--target', stream.target,
        '--rate', String(stream.rate),
        '--count', String(count),
        '--duration', String(dur),
        '--timeout', String(stream.timeoutS ?? 5),
        // Several connections so one slow connection does not serialise the rest (h2c, gRPC).
        ...(stream.protocol === 'http1' ? ['--concurrency', '8'] : ['--connections', '2']),
        ...(stream.extra ?? []),
      ];
      const r = await labExecCaptured(rec, pod, args, (dur + 60) * 1000);
      const last = r.stdout.trim().split('\n').pop() ?? '';
      let s: ClientSummary;
      try {
        s = JSON.parse(last) as ClientSummary;
      } catch {
        throw new Error(`load client in ${pod} (${stream.protocol} ${stream.target}) printed no summary (exit ${r.code}): ${r.stderr.slice(-2000) || r.stdout.slice(-2000)}`);
      }
      const base = s.startedAtMs ?? launchedAt;
      return { ...s, stream, failuresAt: (s.failures ?? []).map((f) => ({ at: base + f.atMs, reason: f.reason })) };
    }),
  );
  // A test that fails before awaiting `done` tears the lab down under the clients: their
  // rejection must not surface as an unhandled one (the failure is already reported).
  done.catch(() => {});
  return { launchedAt, done };
}

/** Totals over several streams' results. */
export function total(results: LoadResult[]): { requests: number; ok: number; failed: number; errors: Record<string, number>; p99: number } {
  const errors: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
  return {
    requests: results.reduce((a, r) => a + r.requests, 0),
    ok: results.reduce((a, r) => a + r.ok, 0),
    failed: results.reduce((a, r) => a + r.failed, 0),
    errors,
    p99: Math.max(0, ...results.map((r) => r.latencyMs.p99)),
  };
}

/** One line per stream for test output: protocol, rate, ok/requests, p50/p99, errors. */
export function describe(results: LoadResult[]): string {
  return results
    .map((r) => `${r.stream.protocol} ${r.stream.target} @${r.stream.rate}/s: ${r.ok}/${r.requests} ok, p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms${r.failed ? ` errors ${JSON.stringify(r.errors)}` : ''}`)
    .join('; ');
}

/** Every recorded failure (absolute time, reason), in time order. */
export function failureTimes(results: LoadResult[]): { at: number; reason: string }[] {
  return results.flatMap((r) => r.failuresAt).sort((a, b) => a.at - b.at);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A process's resident memory (kB, VmRSS) and open file descriptors, from /proc. */
export function footprint(pid: number): { rssKb: number; fds: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1] ?? Number.NaN);
  return { rssKb, fds: readdirSync(`/proc/${pid}/fd`).length };
}

/** The agent process of `node` (the lab execs it in place of its launcher, so the pid is the agent's). */
export function agentPid(rec: LabRecord, node: string): number {
  const p = rec.processes.find((x) => x.kind === 'agent' && x.name === node);
  if (!p) throw new Error(`no agent for ${node}`);
  const cmd = readFileSync(`/proc/${p.pid}/cmdline`, 'utf8');
  if (!cmd.includes('agent')) throw new Error(`pid ${p.pid} is not ${node}'s agent: ${cmd.replaceAll('\0', ' ')}`);
  return p.pid;
}

const inspectorOpened = new Set<number>();

/**
 * Forces a full GC in `node`'s agent: SIGUSR1 opens its inspector (127.0.0.1:9229 inside the
 * node's netns; once per process), gc-probe.mjs asks it for HeapProfiler.collectGarbage. So
 * RSS samples taken after it compare what the agent keeps, not where V8's heap stands between
 * major GCs (a 2-minute run can see RSS climb 120 MiB and fall back at one GC). A test aid:
 * a production agent is never run with its inspector open.
 */
export async function agentCollectGarbage(rec: LabRecord, node: string): Promise<void> {
  const n = rec.plan.nodes.find((x) => x.name === node);
  if (!n) throw new Error(`no node ${node}`);
  const pid = agentPid(rec, node);
  if (!inspectorOpened.has(pid)) {
    process.kill(pid, 'SIGUSR1');
    inspectorOpened.add(pid);
    await sleep(1000);
  }
  await execFileP('nsenter', [`--net=/var/run/netns/${n.netns}`, process.execPath, join(import.meta.dirname, 'gc-probe.mjs'), '9229'], { timeout: 20_000 });
}

/** An agent's /metrics (Prometheus text), read inside its node's netns. */
export async function agentMetrics(rec: LabRecord, node: string, port = 15020): Promise<string> {
  const n = rec.plan.nodes.find((x) => x.name === node);
  if (!n) throw new Error(`no node ${node}`);
  const { stdout } = await execFileP('nsenter', [`--net=/var/run/netns/${n.netns}`, 'curl', '-sS', '--max-time', '5', `http://127.0.0.1:${port}/metrics`]);
  return stdout;
}

/** Sum of a metric family's samples whose labels contain every `labels` pair. */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const ls = m[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => ls.includes(`${k}="${v}"`))) sum += Number(m[3]);
  }
  return sum;
}
