/**
 * `skein lab demo`: the demo cluster up, every client pod calls every Service over each
 * protocol its ports declare, a summary table of what answered, then down (unless --keep).
 */
import { labDown, labExecCaptured, labUp } from '../lab/lab.js';
import { agentAdminGet } from '../lab/mesh.js';
import type { LabRecord } from '../lab/registry.js';
import type { ClientSummary } from '../lab/workloads/client.js';
import type { Logger } from '../telemetry/log.js';
import { runCanaryPart } from './demo-canary.js';
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
    const rows = [['FROM', 'TO', 'PROTOCOL', 'PATH', 'OK', 'FAILED', 'ANSWERED BY (node: requests)', 'P50 ms', 'P99 ms']];
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
          const node = rec.plan.pods.find((p) => `${p.namespace}/${p.name}` === client)!.node;
          const before = await agentConnections(rec, node);
          const r = await labExecCaptured(rec, client, args, 60_000);
          const after = await agentConnections(rec, node);
          // Whether the client's connections went through its node's agent, read off the agent.
          const path = before === undefined || after === undefined ? 'no mesh' : after > before ? 'skein' : 'direct';
          let s: ClientSummary | undefined;
          try {
            s = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as ClientSummary;
          } catch {
            s = undefined;
          }
          const refusalExpected = expectsRefusal(rec, client, svc.namespace);
          if (!s) {
            failed += 1;
            rows.push([client, `${svc.namespace}/${svc.name}:${port.port}`, protocol, path, '0', 'error', r.stderr.trim().split('\n').pop() ?? `exit ${r.code}`, '-', '-']);
            continue;
          }
          // A call behaves when it succeeds, or when STRICT refuses a client from outside the mesh.
          // The client counts a request OK only when a response arrived; every echo answer names
          // its pod, so an OK that nobody answered is a miscount, not a success.
          const unanswered = (s.byNode.unknown ?? 0) + (s.byPod.unknown ?? 0);
          if ((refusalExpected ? s.ok > 0 : s.failed > 0) || unanswered > 0) failed += 1;
          rows.push([
            client,
            `${svc.namespace}/${svc.name}:${port.port}`,
            protocol,
            path,
            String(s.ok),
            s.failed ? `${s.failed} ${refusalExpected ? `(refused: STRICT, ${errorCodes(s.errors)})` : JSON.stringify(s.errors)}` : '0',
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
    process.stdout.write(
      'PATH skein: through the client node\'s agent (mTLS tunnel across nodes); direct: the namespace is not in the mesh.\n' +
        'Calls from outside the mesh into a meshed namespace are refused (STRICT): legacy -> shop fails on purpose.\n\n',
    );
    if (!stopping) failed += (await runCanaryPart(rec, opts.progress, (text) => process.stdout.write(text))).problems;
    for (const n of rec.plan.nodes) {
      const certs = await agentJson<{ certificates: { identity: string; notAfter?: string }[] }>(rec, n.name, '/certs');
      if (certs) process.stdout.write(`agent ${n.name}: certificates ${certs.certificates.map((c) => c.identity).join(', ') || 'none'}\n`);
    }
    process.stdout.write(failed === 0 ? '\ndemo: every call behaved as expected\n' : `\ndemo: ${failed} call group(s) did not behave as expected\n`);
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

/** `ECONNRESET 20` or `NO_RESPONSE 12, TIMEOUT 8`: how the refusals showed up at the client. */
function errorCodes(errors: Record<string, number>): string {
  return Object.entries(errors)
    .map(([code, n]) => `${code} ${n}`)
    .join(', ');
}

/** A client outside the mesh calling a STRICT meshed namespace is refused, on purpose. */
function expectsRefusal(rec: LabRecord, client: string, serviceNamespace: string): boolean {
  if (!rec.processes.some((p) => p.kind === 'agent')) return false;
  const ns = (name: string) => rec.scenario.namespaces.find((n) => n.name === name);
  const meshed = (name: string) => ns(name)?.labels['skein.io/mesh'] === 'enabled';
  const strict = ns(serviceNamespace)?.annotations['skein.io/peer-authentication'] !== 'PERMISSIVE';
  return !meshed(client.split('/')[0]!) && meshed(serviceNamespace) && strict;
}

async function agentJson<T>(rec: LabRecord, node: string, path: string): Promise<T | undefined> {
  const n = rec.plan.nodes.find((x) => x.name === node);
  if (!n || !rec.processes.some((p) => p.kind === 'agent' && p.name === node)) return undefined;
  return agentAdminGet<T>(rec, n.name, path);
}

async function agentConnections(rec: LabRecord, node: string): Promise<number | undefined> {
  const s = await agentJson<{ outbound: { connections: Record<string, number> } }>(rec, node, '/stats');
  return s ? Object.values(s.outbound.connections).reduce((a, b) => a + b, 0) : undefined;
}

function clientPods(rec: LabRecord): string[] {
  return rec.plan.pods.filter((p) => p.container.image === 'skein/client').map((p) => `${p.namespace}/${p.name}`);
}
