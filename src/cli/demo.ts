/**
 * `skein lab demo`: the demo cluster up, every client pod calls every Service over each
 * protocol its ports declare, a summary table of what answered, then down (unless --keep).
 */
import { labDown, labExecCaptured, labUp } from '../lab/lab.js';
import type { LabRecord } from '../lab/registry.js';
import type { ClientSummary } from '../lab/workloads/client.js';
import type { Logger } from '../telemetry/log.js';
import { formatStatus, table } from './lab-format.js';
import { labStatus } from '../lab/lab.js';

export interface DemoOptions {
  scenarioFile: string;
  keep: boolean;
  log: Logger;
  progress: (line: string) => void;
}

const PROTOCOL_OF: Record<string, 'http1' | 'h2c' | 'grpc' | 'tcp'> = {
  http: 'http1',
  http2: 'h2c',
  h2c: 'h2c',
  'kubernetes.io/h2c': 'h2c',
  grpc: 'grpc',
  tcp: 'tcp',
};

export async function runDemo(opts: DemoOptions): Promise<number> {
  const rec = await labUp({ scenarioFile: opts.scenarioFile, log: opts.log, progress: opts.progress });
  let failed = 0;
  let stopping = false;
  const onSignal = () => {
    stopping = true;
  };
  process.once('SIGINT', onSignal);
  try {
    process.stdout.write(`${formatStatus(labStatus(rec))}\n`);
    const rows = [['FROM', 'TO', 'PROTOCOL', 'OK', 'FAILED', 'ANSWERED BY (node: requests)', 'P50 ms', 'P99 ms']];
    for (const client of clientPods(rec)) {
      for (const svc of rec.plan.services) {
        for (const port of svc.ports) {
          if (stopping) break;
          const protocol = PROTOCOL_OF[port.appProtocol ?? 'http'] ?? 'http1';
          const host = `${svc.name}.${svc.namespace}.svc.${rec.plan.clusterDomain}`;
          const args = ['skein', 'workload', 'client', '--protocol', protocol, '--target', `${host}:${port.port}`, '--count', '20', '--concurrency', '4'];
          // kube-proxy balances per connection: a fresh connection per HTTP/1.1 request shows it.
          if (protocol === 'http1') args.push('--new-connection');
          opts.progress(`demo: ${client} -> ${host}:${port.port} (${protocol})`);
          const r = await labExecCaptured(rec, client, args, 60_000);
          let s: ClientSummary | undefined;
          try {
            s = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as ClientSummary;
          } catch {
            s = undefined;
          }
          if (!s) {
            failed += 1;
            rows.push([client, `${svc.namespace}/${svc.name}:${port.port}`, protocol, '0', 'error', r.stderr.trim().split('\n').pop() ?? `exit ${r.code}`, '-', '-']);
            continue;
          }
          if (s.failed > 0) failed += 1;
          rows.push([
            client,
            `${svc.namespace}/${svc.name}:${port.port}`,
            protocol,
            String(s.ok),
            s.failed ? `${s.failed} ${JSON.stringify(s.errors)}` : '0',
            Object.entries(s.byNode)
              .map(([n, c]) => `${n}: ${c}`)
              .join(', '),
            String(s.latencyMs.p50),
            String(s.latencyMs.p99),
          ]);
        }
      }
    }
    process.stdout.write(`\n${table(rows)}\n\n`);
    process.stdout.write(failed === 0 ? 'demo: every call succeeded\n' : `demo: ${failed} call group(s) had failures\n`);
  } finally {
    process.off('SIGINT', onSignal);
    if (opts.keep) opts.progress(`demo: lab ${rec.id} kept running (skein lab status / skein lab down --lab ${rec.id})`);
    else {
      await labDown(rec);
      opts.progress(`demo: lab ${rec.id} removed`);
    }
  }
  return failed === 0 ? 0 : 1;
}

function clientPods(rec: LabRecord): string[] {
  return rec.plan.pods.filter((p) => p.container.image === 'skein/client').map((p) => `${p.namespace}/${p.name}`);
}
