/**
 * Errors with stable codes. Every error skein raises on purpose is a SkeinError whose `code`
 * never changes once released (operators grep logs and alerts for it); the message is for
 * people and may change. Codes are SKEIN_<AREA>_<WHAT>.
 */
export class SkeinError extends Error {
  readonly code: string;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: string, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SkeinError';
    this.code = code;
    this.details = details;
  }
}

/** True when `err` carries the given stable code (SkeinError, or a Node/system error). */
export function hasCode(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}

/** The message of anything thrown, for logs. */
export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
