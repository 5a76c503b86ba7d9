/**
 * One HBONE stream on an open tunnel session: CONNECT with :authority = the destination pod
 * address, the caller's extra headers minus what could smuggle framing, and the peer's answer
 * turned into the stream (2xx) or a TunnelCode named after why it refused.
 */
import { constants as h2c, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2';
import type { Duplex } from 'node:stream';
import { SkeinError } from '../../errors.js';
import { TunnelCode } from '../codes.js';
import { formatAuthority } from '../../config/address.js';
import { toTunnelError } from './tunnel-errors.js';
import { guardWritev } from './writev-guard.js';
import type { TunnelTarget } from './types.js';
import { noop } from '../noop.js';

/** Hop-by-hop and pseudo headers a caller may not smuggle into the CONNECT request. */
const FORBIDDEN_HEADERS = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'te',
  'host',
  'content-length',
]);

/** The TunnelCode of a refusal, from the status the peer answered the CONNECT with. */
function codeOfRefusal(status: number): string {
  switch (status) {
    case 400:
      return TunnelCode.RequestMalformed;
    case 401:
      return TunnelCode.SourceDenied;
    case 403:
      return TunnelCode.WrongDestination;
    case 503:
      return TunnelCode.AppUnreachable;
    default:
      return TunnelCode.UnexpectedStatus;
  }
}

/** Opens the CONNECT stream; resolves once the peer answered 2xx. `release` runs when the stream closes. */
export function openConnectStream(
  session: ClientHttp2Session,
  tunnelAuthority: string,
  target: TunnelTarget,
  extra: Record<string, string> | undefined,
  signal: AbortSignal | undefined,
  responseTimeoutMs: number,
  release: () => void,
): Promise<Duplex> {
  const authority = formatAuthority(target.address, target.port);
  // HBONE: CONNECT with :authority only; no :scheme, no :path (RFC 9113 §8.5).
  const headers: Record<string, string> = { ':method': 'CONNECT', ':authority': authority };
  if (extra) {
    for (const [k, v] of Object.entries(extra)) {
      const name = k.toLowerCase();
      if (name.startsWith(':') || FORBIDDEN_HEADERS.has(name)) continue;
      headers[name] = v;
    }
  }
  let stream: ClientHttp2Stream;
  try {
    // Writers of this stream include Node's HTTP/1 client: see writev-guard.ts.
    stream = guardWritev(session.request(headers, { endStream: false }));
  } catch (err) {
    // e.g. the session received GOAWAY between pick and request.
    throw toTunnelError(err, tunnelAuthority, target.identity);
  }
  stream.once('close', release);
  return new Promise<Duplex>((resolve, reject) => {
    let done = false;
    const cleanup = (): void => {
      done = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      stream.removeListener('response', onResponse);
      stream.removeListener('error', onError);
      stream.removeListener('close', onClose);
    };
    const failWith = (err: SkeinError): void => {
      if (done) return;
      cleanup();
      if (!stream.destroyed) stream.close(h2c.NGHTTP2_CANCEL);
      reject(err);
    };
    const onResponse = (h: Record<string, unknown>): void => {
      const status = Number(h[':status']);
      if (status >= 200 && status < 300) {
        cleanup();
        resolve(stream);
        return;
      }
      failWith(
        new SkeinError(codeOfRefusal(status), `tunnel CONNECT to ${authority} answered ${status}`, {
          status,
          authority,
          identity: target.identity,
        }),
      );
    };
    const onError = (err: Error): void => failWith(toTunnelError(err, tunnelAuthority, target.identity));
    const onClose = (): void =>
      failWith(
        new SkeinError(TunnelCode.StreamFailed, `tunnel stream to ${authority} closed before a response`, {
          rstCode: stream.rstCode,
          authority,
        }),
      );
    const onAbort = (): void => failWith(new SkeinError(TunnelCode.Aborted, 'tunnel connect aborted'));
    const timer = setTimeout(
      () => failWith(new SkeinError(TunnelCode.Timeout, `no CONNECT response from ${authority}`)),
      responseTimeoutMs,
    );
    timer.unref();
    stream.on('response', onResponse);
    stream.on('error', onError);
    stream.on('close', onClose);
    signal?.addEventListener('abort', onAbort, { once: true });
  }).then((s) => {
    // Errors after this point belong to whoever pipes the stream; keep a listener so one
    // arriving before they attach theirs cannot crash the process.
    s.on('error', noop);
    return s;
  });
}
