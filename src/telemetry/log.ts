import pino, { type Logger } from 'pino';

export type { Logger } from 'pino';

export interface LogOptions {
  /** pino level; SKEIN_LOG_LEVEL overrides the default `info`. */
  level?: string;
  /** File to append JSON lines to; default stderr (fd 2). */
  file?: string;
  /** Fixed fields on every line, e.g. { component: 'agent', node: 'node-a' }. */
  base?: Record<string, unknown>;
}

/** The structured (JSON lines) logger every component uses. */
export function createLogger(opts: LogOptions = {}): Logger {
  const level = opts.level ?? process.env.SKEIN_LOG_LEVEL ?? 'info';
  const dest = opts.file
    ? pino.destination({ dest: opts.file, mkdir: true, sync: false })
    : pino.destination({ fd: 2, sync: true });
  return pino({ level, base: { pid: process.pid, ...opts.base }, timestamp: pino.stdTimeFunctions.isoTime }, dest);
}

/** A logger that drops everything (tests, library use without a logger). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
