/**
 * A real Prometheus for a lab (`skein lab up --prometheus`): Debian's `prometheus` binary,
 * run directly (never its system service) in the lab's underlay netns, where every node's
 * agent (:15020) and the controller (:15014) are reachable. Its config and TSDB live in the
 * lab's folder and go with `lab down`, as the process goes with the lab's cgroups.
 *
 * The host reaches it on a loopback port (per lab: the kernel picks a free one unless asked):
 * the lab opens that listening socket in the host netns and hands it (fd 3) to a forwarder
 * that runs in the underlay netns, so each accepted connection is relayed to Prometheus
 * there, as `kubectl port-forward` would. No host route to the lab's addresses is needed.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { startPortForward } from './port-forward.js';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { ComponentPort } from '../config/ports.js';
import { SkeinError } from '../errors.js';
import { LabCode } from './codes.js';
import { startInNetns } from './mesh.js';
import type { LabProcess, LabRecord } from './registry.js';
import { pidAlive } from './sys.js';

/** Where Prometheus listens inside the underlay netns (each lab has its own netns). */
export const PROMETHEUS_NETNS_PORT = 9090;
/** Scrape interval in the lab: short, so tests see a scrape within seconds. */
export const LAB_SCRAPE_INTERVAL = '1s';

export interface LabPrometheus {
  /** http://127.0.0.1:PORT on the host. */
  url: string;
  port: number;
  /** Config and TSDB folder (inside the lab's folder). */
  dir: string;
}

export interface PrometheusOptions {
  /** Host loopback port; 0 or absent: a free one. */
  port?: number;
  /** The binary (default: `prometheus` on PATH). */
  binary?: string;
}

/** The scrape config: every node's agent and the controller. */
export function prometheusConfig(rec: LabRecord): string {
  return stringify({
    global: { scrape_interval: LAB_SCRAPE_INTERVAL, scrape_timeout: LAB_SCRAPE_INTERVAL, evaluation_interval: LAB_SCRAPE_INTERVAL, external_labels: { lab: rec.id } },
    scrape_configs: [
      {
        job_name: 'skein-agent',
        metrics_path: '/metrics',
        static_configs: rec.plan.nodes.map((n) => ({ targets: [`${n.address}:${ComponentPort.AgentMetrics}`], labels: { node: n.name } })),
      },
      {
        job_name: 'skein-controller',
        metrics_path: '/metrics',
        static_configs: [{ targets: [`${rec.plan.underlayGateway}:${ComponentPort.ControllerMetrics}`] }],
      },
    ],
  });
}

function findBinary(binary: string | undefined): string {
  if (binary) return binary;
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const p = join(dir, 'prometheus');
    if (existsSync(p)) return p;
  }
  throw new SkeinError(LabCode.PrometheusMissing, 'prometheus is not installed: apt-get install -y prometheus (or make deps)');
}

/** Starts Prometheus and its host port forward; resolves once Prometheus answers through it. */
export async function startPrometheus(rec: LabRecord, opts: PrometheusOptions = {}, timeoutMs = 30_000): Promise<{ info: LabPrometheus; processes: LabProcess[] }> {
  const binary = findBinary(opts.binary);
  const dir = join(rec.dir, 'prometheus');
  mkdirSync(join(dir, 'data'), { recursive: true });
  const config = join(dir, 'prometheus.yml');
  writeFileSync(config, prometheusConfig(rec));
  const cg = `skein.lab/${rec.id}/control-plane`;
  const prom = startInNetns(rec, 'prometheus', 'prometheus', rec.plan.underlayNetns, `${cg}/prometheus`, [
    binary,
    `--config.file=${config}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    '--storage.tsdb.retention.time=2h',
    `--web.listen-address=127.0.0.1:${PROMETHEUS_NETNS_PORT}`,
    '--log.level=warn',
  ]);
  const processes = [prom];
  const forward = await startPortForward(rec, 'prometheus', rec.plan.underlayNetns, `${cg}/prometheus-forward`, `127.0.0.1:${PROMETHEUS_NETNS_PORT}`, opts.port ?? 0);
  processes.push(forward.process);
  const info: LabPrometheus = { url: `http://127.0.0.1:${forward.port}`, port: forward.port, dir };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const p of processes) {
      if (!pidAlive(p.pid)) throw new SkeinError(LabCode.ComponentExited, `${p.kind} ${p.name} exited while starting; see ${p.log}`, { log: p.log });
    }
    try {
      const r = await fetch(`${info.url}/-/ready`, { signal: AbortSignal.timeout(1000) });
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new SkeinError(LabCode.ComponentTimeout, `Prometheus not ready after ${timeoutMs} ms; see ${prom.log}`, { log: prom.log });
    await sleep(100);
  }
  return { info, processes };
}

/**
 * The forwarder (`skein lab forward-fd --to HOST:PORT`): accepts on the listening socket it was
 * given as fd 3 and relays each connection to HOST:PORT in its own netns. Runs until killed.
 */
export async function runForwardFd(to: string): Promise<number> {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(to);
  if (!m) throw new SkeinError(LabCode.ForwardFailed, `--to must be HOST:PORT, got ${to}`);
  const [host, port] = [m[1]!, Number(m[2])];
  const server = net.createServer((down) => {
    const up = net.connect({ host, port });
    down.on('error', () => up.destroy());
    up.on('error', () => down.destroy());
    down.pipe(up).pipe(down);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd: 3 }, () => resolve());
  });
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  server.close();
  return 0;
}
