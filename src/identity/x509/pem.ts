import { X509Certificate } from 'node:crypto';
import { SkeinError } from '../../errors.js';

const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?-----END \1-----/g;

/** Every `-----BEGIN <label>-----` block of a PEM text, in order (normalised, newline-ended). */
export function pemBlocks(text: string, label = 'CERTIFICATE'): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(PEM_BLOCK)) {
    if (m[1] === label) out.push(`${m[0].trim()}\n`);
  }
  return out;
}

/** PEM text of one DER certificate. */
export function derToPem(der: Uint8Array | ArrayBuffer, label = 'CERTIFICATE'): string {
  const b64 = Buffer.from(der instanceof ArrayBuffer ? new Uint8Array(der) : der).toString('base64');
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** Parses each certificate of a PEM text; throws a SkeinError with `code` on bad input. */
export function parseCertificates(pem: string | string[], code: string): X509Certificate[] {
  const blocks = (Array.isArray(pem) ? pem : [pem]).flatMap((p) => pemBlocks(p));
  if (blocks.length === 0) throw new SkeinError(code, 'no PEM certificate found');
  return blocks.map((b) => {
    try {
      return new X509Certificate(b);
    } catch (err) {
      throw new SkeinError(code, 'unparseable PEM certificate', undefined, { cause: err });
    }
  });
}

/** True when the certificate is self-issued and its signature verifies with its own key. */
export function isSelfSigned(cert: X509Certificate): boolean {
  return cert.checkIssued(cert) && cert.verify(cert.publicKey);
}
