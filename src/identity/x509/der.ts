/**
 * The little DER skein writes itself: the TBSCertificate of a workload leaf. Building it
 * directly (instead of through a generic ASN.1 object model) makes signing several times
 * faster; every byte layout here follows RFC 5280 and is checked by parsing the result
 * back in the tests. Untrusted input (CSRs, peer certificates) is parsed by @peculiar/x509
 * and Node; the readers here only take out byte ranges (bounds-checked) of a structure that
 * was already parsed by them: a certificate's subject, a CSR's signed part.
 */

function lengthBytes(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  const out: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) out.unshift(v & 0xff);
  return Buffer.from([0x80 | out.length, ...out]);
}

/** One tag-length-value. */
export function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), lengthBytes(body.length), body]);
}

export const seq = (...c: Buffer[]) => tlv(0x30, ...c);
export const octets = (b: Buffer) => tlv(0x04, b);
export const bitString = (b: Buffer) => tlv(0x03, Buffer.from([0]), b);

/** OID from dotted form. */
export function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const bytes: number[] = [40 * (parts[0] as number) + (parts[1] as number)];
  for (const p of parts.slice(2)) {
    const chunk: number[] = [p & 0x7f];
    for (let v = Math.floor(p / 128); v > 0; v = Math.floor(v / 128)) chunk.unshift(0x80 | (v & 0x7f));
    bytes.push(...chunk);
  }
  return tlv(0x06, Buffer.from(bytes));
}

/** UTCTime through 2049, GeneralizedTime after (RFC 5280 4.1.2.5); whole seconds. */
export function time(d: Date): Buffer {
  const iso = new Date(Math.floor(d.getTime() / 1000) * 1000).toISOString(); // YYYY-MM-DDTHH:MM:SS.000Z
  const digits = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  const year = d.getUTCFullYear();
  return year >= 1950 && year < 2050 ? tlv(0x17, Buffer.from(digits.slice(2), 'ascii')) : tlv(0x18, Buffer.from(digits, 'ascii'));
}

/** A positive INTEGER from big-endian magnitude bytes. */
export function positiveInteger(magnitude: Buffer): Buffer {
  let m = magnitude;
  while (m.length > 1 && m[0] === 0 && ((m[1] as number) & 0x80) === 0) m = m.subarray(1);
  if (((m[0] as number) & 0x80) !== 0) m = Buffer.concat([Buffer.from([0]), m]);
  return tlv(0x02, m);
}

/** An extension: SEQUENCE { extnID, [critical TRUE], extnValue OCTET STRING }. */
export function extension(extnId: string, critical: boolean, value: Buffer): Buffer {
  return seq(oid(extnId), ...(critical ? [Buffer.from([0x01, 0x01, 0xff])] : []), octets(value));
}

interface Tlv {
  tag: number;
  /** Offset of the tag byte. */
  start: number;
  valueStart: number;
  end: number;
}

function readTlv(buf: Buffer, offset: number): Tlv {
  const tag = buf[offset];
  let len = buf[offset + 1];
  if (tag === undefined || len === undefined) throw new Error('DER: truncated');
  let p = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4) throw new Error('DER: unsupported length');
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + (buf[p + i] as number);
    p += n;
  }
  if (p + len > buf.length) throw new Error('DER: length past end');
  return { tag, start: offset, valueStart: p, end: p + len };
}

/** The subject Name (raw DER, byte for byte) of a certificate: the issuer of what it signs. */
export function subjectOfCertificate(certDer: Buffer): Buffer {
  const cert = readTlv(certDer, 0);
  const tbs = readTlv(certDer, cert.valueStart);
  let field = readTlv(certDer, tbs.valueStart);
  if (field.tag === 0xa0) field = readTlv(certDer, field.end); // explicit version
  // serial, signature algorithm, issuer, validity, then subject
  for (let i = 0; i < 4; i++) field = readTlv(certDer, field.end);
  if (field.tag !== 0x30) throw new Error('DER: subject is not a SEQUENCE');
  return certDer.subarray(field.start, field.end);
}

/** The first element (raw DER) inside the outer SEQUENCE: a CSR's or certificate's signed part. */
export function firstElement(der: Buffer): Buffer {
  const outer = readTlv(der, 0);
  if (outer.tag !== 0x30) throw new Error('DER: not a SEQUENCE');
  const first = readTlv(der, outer.valueStart);
  if (first.end > outer.end) throw new Error('DER: element past its container');
  return der.subarray(first.start, first.end);
}
