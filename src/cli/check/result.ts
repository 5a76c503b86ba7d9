/** One line of `skein check`: a named check, passed or failed, what was found, and a hint. */
export interface CheckResult {
  /** Stable name (JSON consumers key on it): kernel, btf, cgroup2, bpffs, capabilities, ... */
  name: string;
  ok: boolean;
  /** What was found (both ways). */
  detail: string;
  /** What to do about a failure. */
  hint?: string;
}

export const pass = (name: string, detail: string): CheckResult => ({ name, ok: true, detail });
export const fail = (name: string, detail: string, hint: string): CheckResult => ({ name, ok: false, detail, hint });

/** Runs `fn`; an exception is the check's failure (with the error's message), not a crash. */
export async function guarded(name: string, hint: string, fn: () => CheckResult | Promise<CheckResult>): Promise<CheckResult> {
  try {
    return await fn();
  } catch (err) {
    const e = err as { code?: string; message?: string };
    return fail(name, `${e.code ? `${e.code}: ` : ''}${e.message ?? String(err)}`, hint);
  }
}
