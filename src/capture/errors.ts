/** Native failures (errno-coded) turned into SkeinErrors with stable capture codes. */
import { SkeinError } from '../errors.js';

export interface NativeFailureFields {
  code?: string;
  errno?: number;
  syscall?: string;
}

function fieldsOf(err: unknown): NativeFailureFields {
  if (typeof err !== 'object' || err === null) return {};
  const e = err as Record<string, unknown>;
  return {
    code: typeof e.code === 'string' ? e.code : undefined,
    errno: typeof e.errno === 'number' ? e.errno : undefined,
    syscall: typeof e.syscall === 'string' ? e.syscall : undefined,
  };
}

/**
 * A SkeinError with `code`, whose details carry the native errno name, errno and syscall
 * (so logs keep what the kernel said) and whose cause is the original error.
 */
export function captureError(code: string, message: string, err: unknown, details: Record<string, unknown> = {}): SkeinError {
  const f = fieldsOf(err);
  const why = err instanceof Error ? err.message : String(err);
  return new SkeinError(
    code,
    `${message}: ${why}`,
    { ...details, nativeCode: f.code, errno: f.errno, syscall: f.syscall },
    { cause: err },
  );
}

/** The errno name of a native error ('ENOENT', ...), if it has one. */
export function errnoName(err: unknown): string | undefined {
  return fieldsOf(err).code;
}

/**
 * Load failures caused by pins another build made with other map shapes: libbpf refuses to
 * reuse an incompatible pinned map (EINVAL, "couldn't reuse pinned map").
 */
export function isIncompatiblePin(err: unknown): boolean {
  return err instanceof Error && /reuse pinned map|incompatible/i.test(err.message);
}
