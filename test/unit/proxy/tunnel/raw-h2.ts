/**
 * A deliberately minimal HTTP/2 client that writes frames by hand (RFC 9113 framing, HPACK
 * literals without Huffman) — to send exactly what an attacker sends, e.g. HEADERS followed
 * at once by RST_STREAM, without a well-behaved client library in the way — and reports the
 * frames the server sends back (GOAWAY code, RST_STREAM, HEADERS).
 */
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export const FrameType = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8 } as const;

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h.writeUInt8(type, 3);
  h.writeUInt8(flags, 4);
  h.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}

/** HPACK "literal header field without indexing", name from the static table (index < 15), value < 127 bytes. */
function literal(staticIndex: number, value: string): Buffer {
  const v = Buffer.from(value, 'latin1');
  if (staticIndex >= 15 || v.length >= 127) throw new Error('raw-h2: literal too large for this tiny encoder');
  return Buffer.concat([Buffer.from([staticIndex, v.length]), v]);
}

/** HEADERS block for `GET <path>` over h2c (static table: 1 :authority, 2 :method, 4 :path, 6 :scheme). */
export function getHeaders(authority: string, path: string): Buffer {
  return Buffer.concat([literal(2, 'GET'), literal(4, path), literal(6, 'http'), literal(1, authority)]);
}

/** HEADERS block for `CONNECT <authority>` (static table: 1 = :authority, 2 = :method). */
export function connectHeaders(authority: string): Buffer {
  return Buffer.concat([literal(2, 'CONNECT'), literal(1, authority)]);
}

export interface RawH2 {
  /** Error code of the first GOAWAY received, if any. */
  goaway: number | undefined;
  /** Error codes of every GOAWAY received, in order. */
  goaways: number[];
  /** Last-stream-id of every GOAWAY received, in order (RFC 9113 §6.8: may never increase). */
  goawayLastStreamIds: number[];
  rstStreams: number;
  headers: number;
  closed: boolean;
  write(b: Buffer): Promise<void>;
}

/** Speak HTTP/2 over an established TLS socket (ALPN h2) or a TCP socket (h2c): preface, SETTINGS, ACKs. */
export function rawH2(tls: TLSSocket | Socket): RawH2 {
  const state: RawH2 = {
    goaway: undefined,
    goaways: [],
    goawayLastStreamIds: [],
    rstStreams: 0,
    headers: 0,
    closed: false,
    write: (b) =>
      new Promise<void>((resolve, reject) => {
        if (tls.destroyed) {
          reject(new Error('socket closed'));
          return;
        }
        tls.write(b, (err) => (err ? reject(err) : resolve()));
      }),
  };
  let buf = Buffer.alloc(0);
  tls.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3);
      if (buf.length < 9 + len) break;
      const type = buf.readUInt8(3);
      const flags = buf.readUInt8(4);
      const payload = buf.subarray(9, 9 + len);
      buf = buf.subarray(9 + len);
      if (type === FrameType.SETTINGS && (flags & 1) === 0) tls.write(frame(FrameType.SETTINGS, 1, 0));
      else if (type === FrameType.GOAWAY) {
        const code = payload.readUInt32BE(4);
        state.goaways.push(code);
        state.goawayLastStreamIds.push(payload.readUInt32BE(0) & 0x7fffffff);
        state.goaway ??= code;
      }
      else if (type === FrameType.RST_STREAM) state.rstStreams++;
      else if (type === FrameType.HEADERS) state.headers++;
    }
  });
  tls.on('close', () => {
    state.closed = true;
  });
  tls.on('error', () => {});
  tls.write(Buffer.concat([PREFACE, frame(FrameType.SETTINGS, 0, 0)]));
  return state;
}
