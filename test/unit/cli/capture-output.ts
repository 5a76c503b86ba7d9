/** Runs a CLI command in this process with its stdout and stderr captured. */
export async function captureOutput<T>(fn: () => T | Promise<T>): Promise<{ result: T; out: string; err: string }> {
  let out = '';
  let err = '';
  const w = process.stdout.write.bind(process.stdout);
  const e = process.stderr.write.bind(process.stderr);
  process.stdout.write = ((s: string) => {
    out += s;
    return true;
  }) as typeof process.stdout.write;
  process.stderr.write = ((s: string) => {
    err += s;
    return true;
  }) as typeof process.stderr.write;
  try {
    const result = await fn();
    return { result, out, err };
  } finally {
    process.stdout.write = w;
    process.stderr.write = e;
  }
}
