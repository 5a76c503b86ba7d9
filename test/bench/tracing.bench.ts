/**
 * Per-request cost of tracing on the hot path, in process (no I/O): the source agent's hook at
 * request start (TraceHook.start: x-request-id, trace context) plus its record fields, for
 * - no hook at all (tracing off, --request-id passthrough): the baseline, 0;
 * - request ids only (the default: tracing off, x-request-id generated);
 * - tracing on, the app's traceparent says not sampled (flags 00);
 * - tracing on, no context, sampling 0 (no trace started);
 * - tracing on, sampled: span started, headers rewritten, span ended with its attributes and
 *   handed to the batch processor (the exporter drops them: export cost is off the request path).
 *
 *   node --import tsx test/bench/tracing.bench.ts   (QUICK=1: fewer rounds)
 */
import type { ReadableSpan, SpanExporter } from '@opentelemetry/sdk-trace';
import { TraceHook, traceFields } from '../../src/proxy/http/trace-hook.js';
import { type ClientSpanFacts, Tracing } from '../../src/telemetry/tracing.js';

const N = process.env.QUICK === '1' ? 20_000 : 100_000;
const dropping: SpanExporter = {
  export: (_s: ReadableSpan[], done) => done({ code: 0 }),
  shutdown: () => Promise.resolve(),
};
const tracing = new Tracing({ sampling: 0, exporter: dropping, maxQueueSize: 100_000, exportDelayMs: 5 });
const facts: ClientSpanFacts = {
  source: 'spiffe://cluster.local/ns/shop/sa/client',
  sourceWorkload: 'shop/client-0',
  destination: '10.96.0.7:80',
  upstream: '10.244.2.5:8080',
  destinationPrincipal: 'spiffe://cluster.local/ns/shop/sa/echo',
  method: 'GET',
  path: '/headers',
  authority: 'echo.shop',
  protocol: 'http1',
  status: 200,
  requestBytes: 0,
  responseBytes: 120,
};
const TP = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7';

function headers(tp?: string): Record<string, string> {
  const h: Record<string, string> = { host: 'echo.shop', 'user-agent': 'curl/8', accept: '*/*', 'x-request-id': 'abc' };
  if (tp) h.traceparent = tp;
  return h;
}

/** Best of 5 rounds of N requests, timed in chunks of 1000 (the batch processor drains between chunks, off the clock). */
async function time(hook: TraceHook | undefined, make: () => Record<string, string>): Promise<number> {
  const chunk = (n: number): bigint => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) {
      const h = make();
      const span = hook?.start(h);
      const rec: { traceId?: string; spanId?: string; requestId?: string } = {};
      if (hook) traceFields(rec, h, span);
      if (span) tracing.endClient(span, facts);
    }
    return process.hrtime.bigint() - t0;
  };
  let best = Number.POSITIVE_INFINITY;
  for (let round = 0; round < 6; round++) {
    let total = 0n;
    for (let done = 0; done < N; done += 1000) {
      total += chunk(1000);
      await new Promise((r) => setImmediate(r));
    }
    if (round > 0) best = Math.min(best, Number(total) / N); // round 0 warms up
  }
  await tracing.flush();
  return best;
}

const noIds = (): Record<string, string> => {
  const h = headers();
  delete h['x-request-id'];
  return h;
};
const cases: [string, TraceHook, () => Record<string, string>][] = [
  ['request ids only (the default): one generated', new TraceHook(undefined, true), noIds],
  ['tracing on, no context, sampling 0', new TraceHook(tracing, false), () => headers()],
  ['tracing on, traceparent flags 00 (unsampled)', new TraceHook(tracing, false), () => headers(`${TP}-00`)],
  ['tracing on, traceparent flags 01 (sampled: a span)', new TraceHook(tracing, false), () => headers(`${TP}-01`)],
];
process.stdout.write('added per request, against the same request with no hook:\n');
for (const [name, hook, make] of cases) {
  const base = await time(undefined, make);
  const ns = (await time(hook, make)) - base;
  process.stdout.write(`  ${name.padEnd(52)} ${ns.toFixed(0).padStart(6)} ns\n`);
}
await tracing.shutdown();
