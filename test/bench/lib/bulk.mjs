#!/usr/bin/env node
/**
 * Bulk TCP throughput, both ends:
 *
 *   bulk.mjs sink --port 5201
 *     counts every byte of a connection; when the peer half-closes, answers the count as one
 *     ASCII line and closes. The count comes from the receiving end, so bytes still sitting in
 *     socket or proxy buffers when the sender stops are never counted as delivered.
 *
 *   bulk.mjs push --target HOST:PORT --streams N --duration S [--chunk BYTES] [--timeout S]
 *     N connections each write as fast as backpressure allows for S seconds, then half-close
 *     and wait for the sink's count. Prints one JSON line: bytes the sink confirmed, the time
 *     from the first connect to the last confirmation, Gbit/s, and failures by code.
 *
 * Runs inside a lab pod (the pusher through `lab exec`, the sink as a pod's program).
 */
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { parseArgs } from 'node:util';

const [, , role, ...rest] = process.argv;

if (role === 'sink') {
  const { values } = parseArgs({ args: rest, options: { port: { type: 'string', default: '5201' }, host: { type: 'string', default: '0.0.0.0' } } });
  const server = net.createServer({ allowHalfOpen: true }, (sock) => {
    let bytes = 0;
    sock.on('data', (c) => {
      bytes += c.length;
    });
    sock.on('end', () => sock.end(`${bytes}\n`));
    sock.on('error', () => sock.destroy());
  });
  server.listen(Number(values.port), values.host, () => {
    if (process.env.SKEIN_READY_FILE) writeFileSync(process.env.SKEIN_READY_FILE, `${process.pid}\n`);
  });
  const stop = () => server.close(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
} else if (role === 'push') {
  const { values } = parseArgs({
    args: rest,
    options: {
      target: { type: 'string' },
      streams: { type: 'string', default: '1' },
      duration: { type: 'string', default: '5' },
      chunk: { type: 'string', default: String(256 * 1024) },
      timeout: { type: 'string', default: '20' },
    },
  });
  const m = /^(.+):(\d+)$/.exec(values.target ?? '');
  if (!m) {
    process.stderr.write('push: --target HOST:PORT is required\n');
    process.exit(2);
  }
  const host = m[1];
  const port = Number(m[2]);
  const streams = Math.max(1, Math.min(256, Number(values.streams)));
  const durationMs = Math.max(100, Math.min(120_000, Number(values.duration) * 1000));
  const timeoutMs = Math.max(1000, Number(values.timeout) * 1000);
  const chunk = Buffer.alloc(Math.max(1024, Number(values.chunk)), 'bulk-');
  const t0 = performance.now();
  const stopAt = t0 + durationMs;

  const one = () =>
    new Promise((resolve) => {
      let written = 0;
      let reply = '';
      let settled = false;
      const sock = net.connect({ host, port, allowHalfOpen: true });
      const done = (r) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        sock.destroy();
        resolve({ ...r, written, at: performance.now() });
      };
      // The whole stream (send window plus the sink's answer) is bounded.
      const timer = setTimeout(() => done({ error: 'TIMEOUT' }), durationMs + timeoutMs);
      const pump = () => {
        while (performance.now() < stopAt) {
          written += chunk.length;
          if (!sock.write(chunk)) {
            sock.once('drain', pump);
            return;
          }
        }
        sock.end();
      };
      sock.on('connect', pump);
      sock.on('data', (c) => {
        reply += c.toString();
      });
      sock.on('end', () => {
        const n = Number.parseInt(reply, 10);
        if (!Number.isFinite(n)) return done({ error: 'NO_COUNT' });
        done({ confirmed: n });
      });
      sock.on('error', (err) => done({ error: err.code ?? err.message }));
    });

  const results = await Promise.all(Array.from({ length: streams }, one));
  const errors = {};
  let confirmed = 0;
  let written = 0;
  let last = t0;
  for (const r of results) {
    written += r.written;
    if (r.error) errors[r.error] = (errors[r.error] ?? 0) + 1;
    else {
      confirmed += r.confirmed;
      last = Math.max(last, r.at);
    }
  }
  const seconds = (last - t0) / 1000;
  const failed = Object.values(errors).reduce((a, b) => a + b, 0);
  process.stdout.write(
    `${JSON.stringify({
      target: values.target,
      streams,
      ok: streams - failed,
      failed,
      errors,
      bytesWritten: written,
      bytesConfirmed: confirmed,
      seconds: Number(seconds.toFixed(3)),
      gbps: seconds > 0 ? Number(((confirmed * 8) / seconds / 1e9).toFixed(3)) : 0,
    })}\n`,
  );
  process.exit(0);
} else {
  process.stderr.write('usage: bulk.mjs sink --port P | push --target H:P --streams N --duration S\n');
  process.exit(2);
}
