/** POSTs `body` on an HTTP/2 session, cut into DATA writes at `cuts`; resolves with the answer text. */
import type http2 from 'node:http2';

export function h2Post(session: http2.ClientHttp2Session, path: string, body: Buffer, cuts: number[] = [], timeoutMs = 20_000): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/octet-stream' });
    let s = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => {
      s += d;
    });
    req.on('end', () => resolve(s));
    req.on('error', reject);
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no response within ${timeoutMs} ms`)));
    let at = 0;
    for (const cut of [...cuts.filter((c) => c > 0 && c < body.length).sort((a, b) => a - b), body.length]) {
      if (cut > at) req.write(body.subarray(at, cut));
      at = Math.max(at, cut);
    }
    req.end();
  });
}
