/**
 * What a proxy costs, read from /proc: CPU seconds (utime + stime of every process of the
 * proxy, all threads included) and resident memory (VmRSS sampled, VmHWM at the end).
 *
 * A proxy is a named group of processes found anew on every read (a cgroup's processes, or
 * fixed pids), so helpers a proxy forks are counted with it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

let ticksPerSecond;

function clockTicks() {
  if (!ticksPerSecond) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/** utime + stime of one process in seconds (all its threads), or null when it is gone. */
export function cpuSecondsOf(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which may itself hold spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    return (Number(fields[11]) + Number(fields[12])) / clockTicks();
  } catch {
    return null;
  }
}

/** VmRSS and VmHWM of one process in bytes, or null when it is gone. */
export function memoryOf(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
  } catch {
    return null;
  }
}

export function pidsOfCgroup(dir) {
  const file = join(dir, 'cgroup.procs');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map(Number);
}

/**
 * A proxy made of processes: `pids()` lists them at the time of the call.
 * @param {string} name
 * @param {() => number[]} pids
 */
export function processGroup(name, pids) {
  return {
    name,
    pids,
    cpuSeconds() {
      let s = 0;
      for (const pid of pids()) s += cpuSecondsOf(pid) ?? 0;
      return s;
    },
    memory() {
      let rss = 0;
      let hwm = 0;
      for (const pid of pids()) {
        const m = memoryOf(pid);
        if (m) {
          rss += m.rss;
          hwm += m.hwm;
        }
      }
      return { rss, hwm };
    },
  };
}

/**
 * Samples the summed VmRSS of some groups every `intervalMs` until stopped; returns the peak
 * per group (bytes). Cheap: a few /proc reads per sample.
 */
export function startRssSampler(groups, intervalMs = 200) {
  const peak = Object.fromEntries(groups.map((g) => [g.name, 0]));
  const sample = () => {
    for (const g of groups) peak[g.name] = Math.max(peak[g.name], g.memory().rss);
  };
  sample();
  const timer = setInterval(sample, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      sample();
      return peak;
    },
  };
}
