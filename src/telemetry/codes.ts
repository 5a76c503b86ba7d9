/**
 * Stable error codes of the telemetry room (SKEIN_<AREA>_<CAUSE>); see test/unit/error-codes.test.ts.
 */
export const TelemetryCode = {
  /** A batch of spans could not be exported to the OTLP endpoint (dropped; traffic is unaffected). */
  TraceExportFailed: 'SKEIN_TELEMETRY_TRACE_EXPORT_FAILED',
  /** A tracing option is out of range (sampling outside 0..1, an unknown OTLP protocol, a bad endpoint). */
  TracingConfig: 'SKEIN_TELEMETRY_TRACING_CONFIG',
} as const;
