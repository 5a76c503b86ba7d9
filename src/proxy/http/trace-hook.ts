/**
 * The request-start hook of the source agent's forwarders: the request id (Envoy's
 * `x-request-id`: the app's passes through; one is generated when it sent none) and, when
 * tracing is on and the request is sampled, the client span whose context the request then
 * carries (telemetry/tracing.ts). Both are written on the request before it is routed, so
 * every way it leaves (plain, managed, retried, translated, upgraded) carries them.
 */
import { randomUUID } from 'node:crypto';
import { type HeaderBag, type RequestSpan, setHeader, type Tracing, traceIdOf } from '../../telemetry/tracing.js';

/** The trace fields of an access-log record. */
export interface TraceFields {
  /** Trace id: the request's span's, or the one the app sent on an unsampled request. */
  traceId?: string;
  /** This agent's span for the request (sampled requests only). */
  spanId?: string;
  /** x-request-id. */
  requestId?: string;
}

export class TraceHook {
  constructor(
    readonly tracing: Tracing | undefined,
    /** Generate x-request-id when the app sent none. */
    private readonly requestIds: boolean,
  ) {}

  /** At request start: `h` (and `raw`, an HTTP/1 request's raw header list) get what is sent on. */
  start(h: HeaderBag, raw?: string[]): RequestSpan | undefined {
    if (this.requestIds && h['x-request-id'] === undefined) setHeader(h, raw, 'x-request-id', randomUUID());
    return this.tracing?.startClient(h, raw);
  }
}

/** Fills `rec`'s trace fields from the request's headers and its span. */
export function traceFields(rec: TraceFields, h: HeaderBag, span: RequestSpan | undefined): void {
  const rid = h['x-request-id'];
  if (typeof rid === 'string') rec.requestId = rid;
  if (span) {
    rec.traceId = span.traceId;
    rec.spanId = span.spanId;
    return;
  }
  const t = traceIdOf(h);
  if (t !== undefined) rec.traceId = t;
}
