// The benchmark's open-loop generator counts a gRPC call OK only when it got an answer: a
// stream that ends without a response, or an "OK" with no reply message, is a failure.
import { execFile } from 'node:child_process';
import http2 from 'node:http2';
import type net from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t, { type Test } from 'tap';

const LOADGEN = join(import.meta.dirname, '../../bench/lib/loadgen.mjs');
const exec = promisify(execFile);

interface LoadgenOut {
  ok: number;
  failed: number;
  errors: Record<string, number>;
  measured: number;
}

async function h2Server(t: Test, onStream: (s: http2.ServerHttp2Stream) => void): Promise<number> {
  const server = http2.createServer();
  server.on('stream', (s) => {
    s.on('error', () => {});
    onStream(s);
  });
  server.on('session', (s) => s.on('error', () => {}));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as net.AddressInfo).port;
}

async function loadgen(port: number): Promise<LoadgenOut> {
  const args = [LOADGEN, '--protocol', 'grpc', '--target', `127.0.0.1:${port}`, '--rate', '40', '--duration', '0.5', '--warmup', '0', '--connections', '1', '--timeout', '2000'];
  const { stdout } = await exec(process.execPath, args, { timeout: 20_000 });
  return JSON.parse(stdout.trim().split('\n').pop()!) as LoadgenOut;
}

/** A gRPC reply frame: uncompressed, 4-byte big-endian length, then the message bytes. */
function frame(message: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

function grpcAnswer(s: http2.ServerHttp2Stream, message: Buffer | null): void {
  s.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
  s.on('wantTrailers', () => s.sendTrailers({ 'grpc-status': '0' }));
  s.resume();
  s.on('end', () => (message ? s.end(frame(message)) : s.end()));
}

t.test('grpc: answered calls are OK', async (t) => {
  const port = await h2Server(t, (s) => grpcAnswer(s, Buffer.from([0x0a, 0x02, 0x68, 0x69])));
  const out = await loadgen(port);
  t.equal(out.measured, 20);
  t.equal(out.ok, 20, JSON.stringify(out.errors));
  t.equal(out.failed, 0);
});

t.test('grpc: grpc-status 0 without a reply message is a failure', async (t) => {
  const port = await h2Server(t, (s) => grpcAnswer(s, null));
  const out = await loadgen(port);
  t.equal(out.ok, 0);
  t.same(out.errors, { GRPC_NO_MESSAGE: 20 });
});

t.test('grpc: a stream reset before any response is a failure', async (t) => {
  const port = await h2Server(t, (s) => s.close(http2.constants.NGHTTP2_NO_ERROR));
  const out = await loadgen(port);
  t.equal(out.ok, 0);
  t.same(out.errors, { NO_RESPONSE: 20 });
});
