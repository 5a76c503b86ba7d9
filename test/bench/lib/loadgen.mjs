#!/usr/bin/env node
/**
 * Open-loop load at a constant rate, latency measured from each request's *intended* send
 * time (wrk2's correction for coordinated omission): when the path stalls, requests keep
 * their schedule and the waiting shows up in the percentiles instead of being hidden.
 *
 *   loadgen.mjs --protocol http1|grpc --target HOST:PORT --rate R --duration S
 *               [--warmup S] [--path P] [--connections N] [--timeout MS]
 *
 * http1: GET <path> on keep-alive connections (at most N, FIFO queue when all are busy).
 * grpc:  unary skein.lab.v1.Echo/Unary with an empty message over N h2c connections
 *        (round-robin); success means HTTP 200, a reply message and grpc-status 0. A stream
 *        that ends without a response is a failure (NO_RESPONSE), never an answer.
 *
 * Requests scheduled during the warmup are sent but not recorded. Every request ends as ok,
 * failed (by code) or TIMEOUT; none is dropped. Prints one JSON line. Runs inside a lab pod.
 */
import http2 from 'node:http2';
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    protocol: { type: 'string', default: 'http1' },
    target: { type: 'string' },
    path: { type: 'string', default: '/bytes/64' },
    rate: { type: 'string', default: '1000' },
    duration: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '1' },
    connections: { type: 'string', default: '64' },
    timeout: { type: 'string', default: '2000' },
  },
});

const m = /^(.+):(\d+)$/.exec(values.target ?? '');
if (!m) {
  process.stderr.write('loadgen: --target HOST:PORT is required\n');
  process.exit(2);
}
const host = m[1];
const port = Number(m[2]);
const protocol = values.protocol;
const rate = Number(values.rate);
const durationMs = Math.min(120_000, Number(values.duration) * 1000);
const warmupMs = Math.min(30_000, Number(values.warmup) * 1000);
const connections = Math.max(1, Number(values.connections));
const timeoutMs = Math.max(10, Number(values.timeout));
if (!(rate > 0) || !(durationMs > 0)) {
  process.stderr.write('loadgen: --rate and --duration must be positive\n');
  process.exit(2);
}

/**
 * A sender starts one request and calls back exactly once: (null) on success, (code) on failure;
 * it returns a function that cancels the request (used on timeout).
 *
 * HTTP/1.1 is spoken directly on sockets rather than through node:http: the generator must cost
 * far less than what it measures, and node:http's per-request objects cost several times more
 * than a prebuilt request and a minimal response parser (status line, content-length or
 * chunked body, connection: close).
 */
function http1Sender() {
  const request = Buffer.from(`GET ${values.path} HTTP/1.1\r\nhost: ${host}:${port}\r\nuser-agent: skein-bench\r\n\r\n`, 'latin1');
  const idle = [];
  const queue = []; // requests waiting for a connection, FIFO
  let open = 0;

  const pump = () => {
    while (queue.length > 0) {
      const job = queue[0];
      if (job.cancelled) {
        queue.shift();
        continue;
      }
      let conn = idle.pop();
      if (!conn) {
        if (open >= connections) return;
        conn = connect();
      }
      queue.shift();
      conn.start(job);
    }
  };

  const connect = () => {
    open++;
    const sock = new net.Socket();
    sock.setNoDelay(true);
    let job = null;
    let buf = null;
    let closed = false;
    const conn = {
      start(j) {
        job = j;
        j.conn = conn;
        buf = null;
        sock.write(request);
      },
      destroy() {
        sock.destroy();
      },
    };
    const finish = (err, reusable) => {
      const j = job;
      job = null;
      buf = null;
      if (reusable && !closed) idle.push(conn);
      else sock.destroy();
      j?.cb(err);
      pump();
    };
    sock.on('data', (chunk) => {
      if (!job) {
        sock.destroy(); // bytes nobody asked for: the connection is out of step
        return;
      }
      buf = buf ? Buffer.concat([buf, chunk]) : chunk;
      const r = parseResponse(buf);
      if (r === null) return; // incomplete
      if (r.error) return finish(r.error, false);
      finish(r.status >= 200 && r.status < 400 ? null : `HTTP_${r.status}`, r.keepAlive);
    });
    const gone = (code) => {
      if (closed) return;
      closed = true;
      open--;
      const i = idle.indexOf(conn);
      if (i >= 0) idle.splice(i, 1);
      if (job) {
        const j = job;
        job = null;
        j.cb(code);
      }
      pump();
    };
    sock.on('error', (e) => gone(e.code ?? 'SOCKET_ERROR'));
    sock.on('close', () => gone('CONNECTION_CLOSED'));
    sock.connect(port, host);
    return conn;
  };

  const send = (cb) => {
    const job = { cb, cancelled: false, conn: null };
    queue.push(job);
    pump();
    // On timeout a request still queued here is never sent; one on the wire is left to finish
    // (its late answer is ignored), as wrk2 does: closing connections or resetting streams
    // would add reconnect churn and reset floods that the measured path would then pay for.
    return () => {
      job.cancelled = true;
    };
  };
  return {
    send,
    close: () => {
      for (const c of idle) c.destroy();
    },
  };
}

const CRLFCRLF = Buffer.from('\r\n\r\n');

/** null while incomplete; else { status, keepAlive } or { error }. */
function parseResponse(buf) {
  const end = buf.indexOf(CRLFCRLF);
  if (end < 0) return buf.length > 65536 ? { error: 'HEADERS_TOO_LARGE' } : null;
  const head = buf.toString('latin1', 0, end).toLowerCase();
  const status = Number(head.slice(9, 12));
  if (!head.startsWith('http/1.') || !(status >= 100)) return { error: 'BAD_RESPONSE' };
  const keepAlive = !/\r\nconnection:[^\r]*close/.test(head) && head.startsWith('http/1.1');
  const bodyStart = end + 4;
  const cl = /\r\ncontent-length:\s*(\d+)/.exec(head);
  if (cl) {
    const need = bodyStart + Number(cl[1]);
    if (buf.length < need) return null;
    return buf.length === need ? { status, keepAlive } : { error: 'EXTRA_BYTES' };
  }
  if (/\r\ntransfer-encoding:[^\r]*chunked/.test(head)) {
    let at = bodyStart;
    for (;;) {
      const eol = buf.indexOf('\r\n', at, 'latin1');
      if (eol < 0) return null;
      const size = Number.parseInt(buf.toString('latin1', at, eol), 16);
      if (!Number.isFinite(size)) return { error: 'BAD_CHUNK' };
      if (size === 0) {
        // no trailers expected: the last chunk ends with an empty line
        if (buf.length < eol + 4) return null;
        return { status, keepAlive };
      }
      at = eol + 2 + size + 2;
      if (buf.length < at) return null;
    }
  }
  if (status === 204 || status === 304) return { status, keepAlive };
  return { error: 'NO_LENGTH' }; // a body delimited by close: not what the echo server sends
}

const GRPC_EMPTY_MESSAGE = Buffer.from([0, 0, 0, 0, 0]); // uncompressed, length 0: EchoRequest{}

function grpcSender() {
  const sessions = [];
  let rr = 0;
  const session = () => {
    const k = rr++ % connections;
    let s = sessions[k];
    if (!s || s.closed || s.destroyed) {
      s = http2.connect(`http://${host}:${port}`);
      s.on('error', () => {});
      sessions[k] = s;
    }
    return s;
  };
  const send = (cb) => {
    let finished = false;
    const finish = (err) => {
      if (finished) return;
      finished = true;
      cb(err);
    };
    let status = 0;
    let grpcStatus;
    let stream;
    try {
      stream = session().request({
        ':method': 'POST',
        ':path': '/skein.lab.v1.Echo/Unary',
        'content-type': 'application/grpc',
        te: 'trailers',
      });
    } catch (e) {
      finish(e.code ?? 'SESSION_ERROR');
      return () => {};
    }
    stream.on('response', (h) => {
      status = Number(h[':status']);
      if (h['grpc-status'] !== undefined) grpcStatus = String(h['grpc-status']);
    });
    stream.on('trailers', (t) => {
      if (t['grpc-status'] !== undefined) grpcStatus = String(t['grpc-status']);
    });
    let bytes = 0;
    stream.on('data', (c) => {
      bytes += c.length;
    });
    stream.on('end', () => {
      if (status === 0) return finish('NO_RESPONSE');
      if (status !== 200) return finish(`HTTP_${status}`);
      if (grpcStatus !== '0') return finish(`GRPC_${grpcStatus ?? 'NO_STATUS'}`);
      // A unary OK carries exactly one message (5-byte frame header at least): an OK without
      // it is not an answer to the call.
      if (bytes < 5) return finish('GRPC_NO_MESSAGE');
      finish(null);
    });
    stream.on('close', () => finish(stream.rstCode ? `RST_${stream.rstCode}` : 'CLOSED_EARLY'));
    stream.on('error', (e) => finish(e.code ?? 'STREAM_ERROR'));
    stream.end(GRPC_EMPTY_MESSAGE);
    return () => {}; // see http1Sender: a timed-out stream is left to finish, not reset
  };
  return {
    send,
    close: () => {
      for (const s of sessions) s?.destroy();
    },
  };
}

const sender = protocol === 'grpc' ? grpcSender() : protocol === 'http1' ? http1Sender() : null;
if (!sender) {
  process.stderr.write(`loadgen: --protocol must be http1 or grpc, not ${protocol}\n`);
  process.exit(2);
}

const total = Math.floor(((warmupMs + durationMs) * rate) / 1000);
const warmupCount = Math.floor((warmupMs * rate) / 1000);
const interval = 1000 / rate;
const latencies = new Float64Array(total);
const lags = new Float64Array(total);
let recorded = 0;
let sent = 0;
let ok = 0;
let failed = 0;
let okAll = 0; // including the warmup: what a proxy on the path must have carried
const errors = {};
const inflight = new Map(); // id -> { intended, cancel }
let nextId = 0;

function complete(id, intended, err) {
  if (!inflight.delete(id)) return; // already timed out
  const now = performance.now();
  const measured = id >= warmupCount;
  if (!err) okAll++;
  if (err) {
    if (measured) {
      failed++;
      errors[err] = (errors[err] ?? 0) + 1;
    }
  } else if (measured) {
    ok++;
    latencies[recorded++] = now - intended;
  }
}

// One sweep for timeouts instead of a timer per request: cheap at thousands of requests/s.
const sweeper = setInterval(() => {
  const limit = performance.now() - timeoutMs;
  for (const [id, r] of inflight) {
    if (r.intended > limit) break; // insertion order = intended order
    inflight.delete(id);
    r.cancel();
    if (id >= warmupCount) {
      failed++;
      errors.TIMEOUT = (errors.TIMEOUT ?? 0) + 1;
    }
  }
}, 50);

const t0 = performance.now() + 20;
const measureStart = t0 + warmupMs;

function dispatchDue() {
  const now = performance.now();
  while (nextId < total) {
    const intended = t0 + nextId * interval;
    if (intended > now) break;
    const id = nextId++;
    sent++;
    if (id >= warmupCount) lags[id - warmupCount] = now - intended;
    const r = { intended, cancel: () => {} };
    inflight.set(id, r);
    r.cancel = sender.send((err) => complete(id, intended, err));
  }
  if (nextId < total) {
    // Timers fire at millisecond granularity: requests due in between go out together, each
    // keeping its own intended time, so the lag is counted in its latency rather than lost.
    const wait = t0 + nextId * interval - performance.now();
    setTimeout(dispatchDue, Math.max(0, Math.floor(wait)));
  } else {
    finishWhenDrained();
  }
}

function finishWhenDrained() {
  const check = setInterval(() => {
    if (inflight.size > 0) return;
    clearInterval(check);
    clearInterval(sweeper);
    report();
  }, 10);
}

function pct(arr, n, p) {
  if (n === 0) return null;
  const i = Math.min(n - 1, Math.max(0, Math.ceil(p * n) - 1));
  return Number(arr[i].toFixed(3));
}

function report() {
  const end = performance.now();
  const lat = latencies.subarray(0, recorded).sort();
  const measuredCount = total - warmupCount;
  const lag = lags.subarray(0, measuredCount).sort();
  let sum = 0;
  for (const v of lat) sum += v;
  sender.close();
  process.stdout.write(
    `${JSON.stringify({
      protocol,
      target: `${host}:${port}`,
      rate,
      warmupMs,
      durationMs,
      sentTotal: sent,
      measured: measuredCount,
      ok,
      failed,
      errors,
      okIncludingWarmup: okAll,
      achievedRate: Number(((ok * 1000) / (end - measureStart)).toFixed(1)),
      latencyMs: {
        p50: pct(lat, recorded, 0.5),
        p90: pct(lat, recorded, 0.9),
        p99: pct(lat, recorded, 0.99),
        p999: pct(lat, recorded, 0.999),
        max: pct(lat, recorded, 1),
        mean: recorded ? Number((sum / recorded).toFixed(3)) : null,
      },
      sendLagMs: { p50: pct(lag, measuredCount, 0.5), p99: pct(lag, measuredCount, 0.99), max: pct(lag, measuredCount, 1) },
    })}\n`,
  );
  process.exit(0);
}

setTimeout(dispatchDue, 20);
