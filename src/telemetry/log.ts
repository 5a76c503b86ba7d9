import pino, { type Logger } from 'pino';

export type { Logger } from 'pino';

export interface LogOptions {
  /** pino level; SKEIN_LOG_LEVEL overrides the default `info`. */
  level?: string;
  /** File to append JSON lines to; default stderr (fd 2). */
  file?: string;
  /** Fixed fields on every line, e.g. { component: 'agent', node: 'node-a' }. */
  base?: Record<string, unknown>;
  /**
   * Log file only: bytes buffered before a write (one write per many lines under load, not one
   * per access-log line), flushed at least every `flushMs` and on exit. Default 8192 (below sonic-boom's maxWrite).
   */
  bufferBytes?: number;
  /** Log file only: longest a buffered line waits (ms). Default 500. */
  flushMs?: number;
}

/** The structured (JSON lines) logger every component uses. */
export function createLogger(opts: LogOptions = {}): Logger {
  const level = opts.level ?? process.env.SKEIN_LOG_LEVEL ?? 'info';
  if (!opts.file) {
    return pino({ level, base: { pid: process.pid, ...opts.base }, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ fd: 2, sync: true }));
  }
  const dest = pino.destination({ dest: opts.file, mkdir: true, sync: false, minLength: opts.bufferBytes ?? 8192 });
  // minLength holds lines until that many bytes: a quiet agent's lines must still show up.
  const timer = setInterval(() => {
    try {
      dest.flush();
    } catch {
      // a write in flight or the file closed: the next tick retries
    }
  }, opts.flushMs ?? 500);
  timer.unref();
  process.once('exit', () => {
    try {
      dest.flushSync();
    } catch {
      // nothing more can be done while exiting
    }
  });
  return pino({ level, base: { pid: process.pid, ...opts.base }, timestamp: pino.stdTimeFunctions.isoTime }, dest);
}

/** A logger that drops everything (tests, library use without a logger). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

type LoggerInternals = Logger & Record<symbol, unknown>;
const LEVEL_VALUE = { info: 30, warn: 40 } as const;

/**
 * One access-log line (one per request or connection: the hot path), written straight to the
 * logger's destination with the same shape pino gives `log[level]({ access: rec }, msg)`:
 * level, time, the logger's bindings, msg, and `access`. pino's generic serializer for a
 * nested object was a tenth of the agent's CPU under load; a record of plain fields needs only
 * JSON.stringify.
 */
export function writeAccessLine(log: Logger, level: 'info' | 'warn', msg: string, rec: object): void {
  if (!log.isLevelEnabled(level)) return;
  const l = log as LoggerInternals;
  const stream = l[pino.symbols.streamSym] as { write(s: string): unknown } | undefined;
  const bindings = l[pino.symbols.chindingsSym];
  if (!stream || typeof bindings !== 'string') {
    log[level]({ access: rec }, msg);
    return;
  }
  stream.write(`{"level":${LEVEL_VALUE[level]},"time":"${new Date().toISOString()}"${bindings},"access":${JSON.stringify(rec)},"msg":${JSON.stringify(msg)}}\n`);
}

/** Which access-log lines an agent writes: none when off; a fraction of successful ones when sampled (failures always). */
export interface AccessLogPolicy {
  enabled: boolean;
  /** Probability that a successful request's line is written (0..1); failed ones always are. */
  sampling: number;
}

/** Whether this line is written under `policy` (absent: every line). */
export function accessLogAdmits(policy: AccessLogPolicy | undefined, failed: boolean): boolean {
  if (!policy) return true;
  if (!policy.enabled) return false;
  return failed || policy.sampling >= 1 || Math.random() < policy.sampling;
}
