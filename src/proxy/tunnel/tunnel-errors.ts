/** How the tunnel client reports failures: every error becomes a SkeinError with a TunnelCode. */
import type { SpiffeId } from '../../config/model.js';
import { messageOf, SkeinError } from '../../errors.js';
import { TunnelCode } from '../codes.js';
import { deadline, untilAborted } from '../deadline.js';

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new SkeinError(TunnelCode.Aborted, 'tunnel connect aborted');
}

export function toTunnelError(err: unknown, peer: string, identity: SpiffeId): SkeinError {
  if (err instanceof SkeinError) return err;
  const code = (err as { code?: string }).code;
  const tlsish =
    typeof code === 'string' &&
    (code.startsWith('ERR_SSL') || code.includes('CERT') || code.startsWith('ERR_TLS') || code === 'DEPTH_ZERO_SELF_SIGNED_CERT');
  const connectFailed = code === 'ECONNREFUSED' || code === 'EHOSTUNREACH' || code === 'ENETUNREACH' || code === 'EADDRNOTAVAIL';
  return new SkeinError(
    tlsish ? TunnelCode.TlsFailed : connectFailed ? TunnelCode.ConnectFailed : TunnelCode.StreamFailed,
    `tunnel to ${peer} failed: ${messageOf(err)}`,
    { peer, identity, cause: code },
    { cause: err },
  );
}

/** Await `p`, but give up after `ms` (SKEIN_TUNNEL_TIMEOUT) or when `signal` aborts (SKEIN_TUNNEL_ABORTED). */
export async function withDeadline<T>(p: Promise<T>, ms: number, signal: AbortSignal | undefined, what: string): Promise<T> {
  const d = deadline(ms, signal, {
    timeout: () => new SkeinError(TunnelCode.Timeout, `${what} timed out`),
    aborted: () => new SkeinError(TunnelCode.Aborted, 'tunnel connect aborted'),
  });
  try {
    return await untilAborted(p, d.signal);
  } finally {
    d.done();
  }
}
