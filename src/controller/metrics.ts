/**
 * The controller's own metrics (config pushes, agents, push latency; the CA's are registered
 * by the CA on the same registry) and the HTTP endpoint that serves them: GET /metrics.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { ComponentPort } from '../config/ports.js';
import type { Logger } from '../telemetry/log.js';

/** The controller's metrics port (istiod's monitoring port). */
export const DEFAULT_CONTROLLER_METRICS_PORT = ComponentPort.ControllerMetrics;

export interface ConfigPushEvent {
  full: boolean;
  resources: number;
  removed: number;
  bytes: number;
}

export interface ConfigAnswerEvent {
  result: 'ack' | 'nack';
  /** From the response sent to the agent's answer. */
  seconds: number;
}

/** What the config server reports, as it happens. */
export interface ConfigServerMetrics {
  pushed(e: ConfigPushEvent): void;
  answered(e: ConfigAnswerEvent): void;
}

/** What is read at scrape time. */
export interface ControllerMetricsSources {
  agents: () => number;
  version: () => string;
  resources: () => number;
  refusals: () => number;
}

export function controllerMetrics(registry: Registry, src: ControllerMetricsSources): ConfigServerMetrics {
  const pushes = new Counter({
    name: 'skein_controller_config_pushes_total',
    help: 'Config responses sent to agents, by kind: full (a whole node view) or delta',
    labelNames: ['kind'] as const,
    registers: [registry],
  });
  const pushBytes = new Counter({ name: 'skein_controller_config_push_bytes_total', help: 'Approximate bytes of config sent to agents', registers: [registry] });
  const pushResources = new Counter({ name: 'skein_controller_config_pushed_resources_total', help: 'Resources sent to agents (added or changed, and removed)', labelNames: ['change'] as const, registers: [registry] });
  const answers = new Counter({
    name: 'skein_controller_config_answers_total',
    help: 'Agents\' answers to config responses: ack (applied) or nack (refused whole)',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'skein_controller_config_push_duration_seconds',
    help: 'From a config response sent to the agent\'s ACK or NACK of it (the agent applied it, or refused it)',
    labelNames: ['result'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  new Gauge({
    name: 'skein_controller_agents_connected',
    help: 'Agents holding a config stream now',
    registers: [registry],
    collect() {
      this.set(src.agents());
    },
  });
  new Gauge({
    name: 'skein_controller_resources',
    help: 'Mesh resources in the index (workloads, services, routes, policies, nodes)',
    registers: [registry],
    collect() {
      this.set(src.resources());
    },
  });
  new Gauge({
    name: 'skein_controller_refused_objects',
    help: 'Objects refused now (see skein status for the field and reason of each)',
    registers: [registry],
    collect() {
      this.set(src.refusals());
    },
  });
  new Gauge({
    name: 'skein_controller_config_version_info',
    help: 'The config version the controller serves (value 1, the version as a label)',
    labelNames: ['version'] as const,
    registers: [registry],
    collect() {
      this.reset();
      this.set({ version: src.version() }, 1);
    },
  });
  return {
    pushed(e) {
      pushes.inc({ kind: e.full ? 'full' : 'delta' });
      pushBytes.inc(e.bytes);
      if (e.resources > 0) pushResources.inc({ change: 'upsert' }, e.resources);
      if (e.removed > 0) pushResources.inc({ change: 'remove' }, e.removed);
    },
    answered(e) {
      answers.inc({ result: e.result });
      latency.observe({ result: e.result }, e.seconds);
    },
  };
}

/**
 * Serves GET /metrics from `registry` on `host:port` (and whatever `extra` answers: the graph
 * page); resolves with the port bound and a stop function.
 */
export async function serveMetrics(
  registry: Registry,
  host: string,
  port: number,
  log: Logger,
  extra?: (req: http.IncomingMessage, res: http.ServerResponse) => boolean,
): Promise<{ port: number; stop: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    if (extra?.(req, res)) return;
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('see /metrics\n');
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: unknown) => {
        log.error({ err }, 'metrics collection failed');
        res.writeHead(500).end();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    stop: () => new Promise<void>((r) => server.close(() => r())),
  };
}
