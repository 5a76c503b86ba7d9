/**
 * `skein tap`: live sampled requests from the agents, through the controller (like `linkerd
 * viz tap` and `hubble observe`): time, which side saw it (out: the source's agent, in: the
 * destination's), source -> destination, method, path (never its query), status, latency,
 * mTLS and both identities. Never bodies, never other header values.
 *
 *   skein tap [--lab ID] [--namespace NS] [--from W] [--to W] [--path P] [--max N] [--duration S] [--rate R] [--json]
 */
import { parseArgs } from 'node:util';
import type { TapEvent } from '../api/config-wire.js';
import { tapController } from '../controller/status-client.js';
import { CONTROLLER_OPTIONS, reachController } from './controller-access.js';

const USAGE =
  'usage: skein tap [--lab ID] [--namespace NS] [--from W] [--to W] [--path PREFIX] [--max N] [--duration S] [--rate R] [--json]\n' +
  '       skein tap --controller HOST:PORT --token-file FILE --roots FILE [...]\n' +
  '  --namespace NS  requests whose source or destination is in NS\n' +
  '  --from W        source workload: NAME or NAMESPACE/NAME\n' +
  '  --to W          destination workload or Service: NAME or NAMESPACE/NAME\n' +
  '  --path PREFIX   HTTP/gRPC paths starting with PREFIX\n' +
  '  --max N         stop after N requests          --duration S  stop after S seconds (the controller caps it at 600)\n' +
  '  --rate R        requests per second per agent at most (default 20, at most 100)\n' +
  '  --json          one JSON object a line\n';

export async function tapCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      ...CONTROLLER_OPTIONS,
      namespace: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      path: { type: 'string' },
      max: { type: 'string' },
      duration: { type: 'string' },
      rate: { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const own: string[] = [];
  for (const k of ['namespace', 'from', 'to', 'path', 'max', 'duration', 'rate'] as const) if (values[k] !== undefined) own.push(`--${k}`, values[k]);
  if (values.json) own.push('--json');
  const target = reachController('tap', values, own, USAGE);
  if (typeof target === 'number') return target;
  const session = tapController(
    target,
    {
      filter: { namespace: values.namespace ?? '', from: values.from ?? '', to: values.to ?? '', path: values.path ?? '' },
      max_per_second: Number(values.rate ?? 0) || 0,
      max_events: Number(values.max ?? 0) || 0,
      duration_seconds: Number(values.duration ?? 0) || 0,
    },
    (e) => process.stdout.write(values.json ? `${JSON.stringify(e)}\n` : `${formatTapEvent(e)}\n`),
  );
  const stop = () => session.stop();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    await session.done;
    return 0;
  } catch (err) {
    process.stderr.write(`skein tap: ${(err as { details?: string }).details ?? String(err)}\n`);
    return 1;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}

/** One line per sampled request. */
export function formatTapEvent(e: TapEvent): string {
  const side = e.reporter === 'source' ? 'out' : 'in ';
  const what = e.protocol === 'tcp' ? 'tcp connection' : `${e.protocol} ${e.method} ${e.path}`;
  const status = e.protocol === 'tcp' ? (e.response_flags === '-' ? 'ok' : 'refused') : `${e.status}${e.grpc_status !== '' ? ` grpc=${e.grpc_status}` : ''}`;
  const flags = e.response_flags && e.response_flags !== '-' ? ` flags=${e.response_flags}` : '';
  return `${e.at.slice(11, 23)} ${side} ${e.node} ${e.source_namespace}/${e.source_workload} -> ${e.destination_namespace}/${e.destination_workload} ${what} ${status} ${e.duration_ms.toFixed(2)}ms${flags} tls=${e.mtls ? 'mtls' : 'none'} src=${e.source_principal} dst=${e.destination_principal}`;
}
