/**
 * `skein top`: the mesh's traffic as the controller summarises it from the agents' reports —
 * per workload (requests in, success rate, p50/p99, rate out) and per edge — refreshed live
 * like `linkerd viz stat`/`top`, or once.
 *
 *   skein top [--lab ID] [--once] [--json] [--namespace NS] [--interval S]
 *   skein top --controller H:P --token-file F --roots F [...]
 */
import { parseArgs } from 'node:util';
import type { TrafficEdge, TrafficResponse, TrafficWorkload } from '../api/config-wire.js';
import { fetchControllerTraffic } from '../controller/status-client.js';
import { CONTROLLER_OPTIONS, reachController } from './controller-access.js';
import { table } from './lab-format.js';

const USAGE =
  'usage: skein top [--lab ID] [--once] [--json] [--namespace NS] [--interval S]\n' +
  '       skein top --controller HOST:PORT --token-file FILE --roots FILE [...]\n' +
  '  --once        print one view and exit (--json implies it)\n' +
  '  --json        the controller\'s figures as JSON (edges, workloads, window)\n' +
  '  --namespace   only workloads and edges of this namespace (as source or destination)\n' +
  '  --interval S  refresh every S seconds (default 2)\n';

export async function topCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...CONTROLLER_OPTIONS,
      once: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
      namespace: { type: 'string' },
      interval: { type: 'string', default: '2' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const own = [...(values.once ? ['--once'] : []), ...(values.json ? ['--json'] : []), ...(values.namespace ? ['--namespace', values.namespace] : []), '--interval', values.interval];
  const target = reachController('top', values, own, USAGE);
  if (typeof target === 'number') return target;
  const interval = Math.max(0.5, Number(values.interval) || 2);
  for (;;) {
    const traffic = filterNamespace(await fetchControllerTraffic(target), values.namespace);
    if (values.json) {
      process.stdout.write(`${JSON.stringify(traffic, null, 2)}\n`);
      return 0;
    }
    const text = renderTop(traffic, new Date());
    if (values.once) {
      process.stdout.write(text);
      return 0;
    }
    // Live: redraw in place on a terminal, append otherwise.
    process.stdout.write(process.stdout.isTTY ? `\x1b[H\x1b[2J${text}` : `${text}\n`);
    await new Promise((r) => setTimeout(r, interval * 1000));
  }
}

/** Only what touches `ns` (as source or destination). */
export function filterNamespace(t: TrafficResponse, ns: string | undefined): TrafficResponse {
  if (!ns) return t;
  const inNs = (name: string) => name.startsWith(`${ns}/`);
  return { ...t, edges: t.edges.filter((e) => inNs(e.source) || inNs(e.destination)), workloads: t.workloads.filter((w) => inNs(w.name)) };
}

export function formatRate(rps: number): string {
  return rps < 10 ? rps.toFixed(2) : rps.toFixed(1);
}

export function formatMs(ms: number): string {
  if (ms === 0) return '-';
  return ms < 10 ? `${ms.toFixed(2)}ms` : ms < 100 ? `${ms.toFixed(1)}ms` : `${ms.toFixed(0)}ms`;
}

export function formatSuccess(rate: number, requests: number): string {
  if (requests === 0) return '-';
  return `${(rate * 100).toFixed(rate === 1 ? 0 : 2)}%`;
}

function workloadRow(w: TrafficWorkload): string[] {
  return [w.name, formatRate(w.rps), formatSuccess(w.success_rate, w.requests), formatMs(w.p50_ms), formatMs(w.p99_ms), formatRate(w.outbound_rps), String(w.denials), w.requests === 0 ? '-' : w.mtls ? 'yes' : 'no'];
}

function edgeRow(e: TrafficEdge): string[] {
  return [
    e.source,
    e.destination,
    e.destination_service,
    e.protocol,
    e.mtls ? 'yes' : 'no',
    formatRate(e.rps),
    formatSuccess(e.success_rate, e.requests),
    formatMs(e.p50_ms),
    formatMs(e.p99_ms),
    String(e.requests),
    String(e.denials),
  ];
}

/** The text `skein top` prints. */
export function renderTop(t: TrafficResponse, at: Date): string {
  const out = [
    `skein top — ${at.toISOString().slice(11, 19)} — the last ${Math.round(t.window_seconds)} s, from ${t.nodes.length ? t.nodes.join(', ') : 'no agent'}${t.dropped ? ` (${t.dropped} records over a cap not counted)` : ''}`,
    '',
  ];
  if (t.edges.length === 0) {
    out.push('no traffic in the window');
    return `${out.join('\n')}\n`;
  }
  out.push(table([['WORKLOAD', 'RPS IN', 'SUCCESS', 'P50', 'P99', 'RPS OUT', 'DENIED', 'MTLS'], ...t.workloads.map(workloadRow)]), '');
  out.push(table([['SOURCE', 'DESTINATION', 'SERVICE', 'PROTO', 'MTLS', 'RPS', 'SUCCESS', 'P50', 'P99', 'REQUESTS', 'DENIED'], ...t.edges.map(edgeRow)]));
  return `${out.join('\n')}\n`;
}
