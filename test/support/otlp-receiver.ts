/**
 * A test OTLP receiver: the collector's trace service
 * (opentelemetry.proto.collector.trace.v1.TraceService/Export, from the official protos vendored
 * beside this file) over @grpc/grpc-js. Every span received is printed as one JSON line on
 * stdout: ids as hex, kind, name, attributes as plain values, status, the resource's attributes.
 *
 *   node test/support/otlp-receiver.ts HOST:PORT      (prints "listening HOST:PORT" first)
 *
 * No relative imports, so Node runs it as it is (type stripping), e.g. inside a lab's netns.
 */
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as loader from '@grpc/proto-loader';

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  /** 1 internal, 2 server, 3 client (the proto's SpanKind). */
  kind: number;
  attributes: Record<string, unknown>;
  /** 0 unset, 1 ok, 2 error. */
  status: number;
  resource: Record<string, unknown>;
}

interface AnyValue {
  stringValue?: string;
  intValue?: string;
  boolValue?: boolean;
  doubleValue?: number;
  arrayValue?: { values: AnyValue[] };
  value?: string;
}
interface KeyValue {
  key: string;
  value: AnyValue;
}

function plain(v: AnyValue | undefined): unknown {
  if (!v) return undefined;
  switch (v.value) {
    case 'stringValue':
      return v.stringValue;
    case 'intValue':
      return Number(v.intValue);
    case 'boolValue':
      return v.boolValue;
    case 'doubleValue':
      return v.doubleValue;
    case 'arrayValue':
      return (v.arrayValue?.values ?? []).map(plain);
    default:
      return undefined;
  }
}

function attrs(kvs: KeyValue[] | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const kv of kvs ?? []) out[kv.key] = plain(kv.value);
  return out;
}

const hex = (b: Buffer | undefined): string => (b ? Buffer.from(b).toString('hex') : '');

/** Starts the receiver on `host:port` (port 0: any); `onSpan` gets every span. */
export async function startOtlpReceiver(address: string, onSpan: (s: ReceivedSpan) => void): Promise<{ server: grpc.Server; port: number }> {
  const def = loader.loadSync('opentelemetry/proto/collector/trace/v1/trace_service.proto', {
    includeDirs: [join(import.meta.dirname, 'opentelemetry-proto')],
    longs: String,
    defaults: true,
    oneofs: true,
  });
  // biome-ignore lint/suspicious/noExplicitAny: loaded from .proto at run time
  const pkg = grpc.loadPackageDefinition(def) as any;
  const server = new grpc.Server();
  server.addService(pkg.opentelemetry.proto.collector.trace.v1.TraceService.service, {
    // biome-ignore lint/suspicious/noExplicitAny: the request as proto-loader decodes it
    Export: (call: any, done: grpc.sendUnaryData<unknown>) => {
      for (const rs of call.request.resourceSpans ?? []) {
        const resource = attrs(rs.resource?.attributes);
        for (const ss of rs.scopeSpans ?? []) {
          for (const s of ss.spans ?? []) {
            onSpan({
              traceId: hex(s.traceId),
              spanId: hex(s.spanId),
              parentSpanId: hex(s.parentSpanId),
              name: s.name,
              kind: typeof s.kind === 'number' ? s.kind : Number(String(s.kind).match(/\d+/)?.[0] ?? 0) || kindByName(String(s.kind)),
              attributes: attrs(s.attributes),
              status: typeof s.status?.code === 'number' ? s.status.code : statusByName(String(s.status?.code ?? '')),
              resource,
            });
          }
        }
      }
      done(null, {});
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  return { server, port };
}

function kindByName(k: string): number {
  return ['SPAN_KIND_UNSPECIFIED', 'SPAN_KIND_INTERNAL', 'SPAN_KIND_SERVER', 'SPAN_KIND_CLIENT', 'SPAN_KIND_PRODUCER', 'SPAN_KIND_CONSUMER'].indexOf(k);
}

function statusByName(c: string): number {
  return Math.max(0, ['STATUS_CODE_UNSET', 'STATUS_CODE_OK', 'STATUS_CODE_ERROR'].indexOf(c));
}

if (import.meta.main) {
  const address = process.argv[2] ?? '127.0.0.1:4317';
  await startOtlpReceiver(address, (s) => process.stdout.write(`${JSON.stringify(s)}\n`));
  process.stdout.write(`listening ${address}\n`);
  process.stdin.resume();
  process.stdin.once('end', () => process.exit(0)); // the test closes stdin to stop it
}
