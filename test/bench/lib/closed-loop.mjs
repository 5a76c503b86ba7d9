/**
 * Closed-loop maximum throughput with the Debian load tools, and their output parsed:
 * wrk for HTTP/1.1 (also when the bytes cross an L4 proxy), h2load for gRPC over h2c.
 * Both commands are built here and run inside the client pod by the caller.
 *
 * Failures are never dropped: wrk's socket errors (connect/read/write/timeout) and non-2xx/3xx
 * answers, h2load's failed/errored/timed-out requests and non-2xx statuses are all returned.
 * h2load does not read gRPC trailers; a gRPC error with HTTP 200 is caught by the open-loop
 * runs of the same mode, which check grpc-status on every call.
 */

const UNIT_MS = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

function toMs(v, unit) {
  return Number(v) * (UNIT_MS[unit] ?? Number.NaN);
}

export function wrkCommand({ url, threads, connections, durationS, timeoutS = 2 }) {
  // wrk takes whole seconds only ("1.5s" is refused).
  const seconds = Math.max(1, Math.round(durationS));
  return ['wrk', '-t', String(threads), '-c', String(connections), '-d', `${seconds}s`, '--timeout', `${Math.max(1, Math.round(timeoutS))}s`, '--latency', url];
}

export function parseWrk(out) {
  const num = (re) => {
    const m = re.exec(out);
    return m ? Number(m[1]) : null;
  };
  const reqs = /(\d+) requests in ([\d.]+)(us|ms|s|m)\b/.exec(out);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const socketErrors = sock ? { connect: Number(sock[1]), read: Number(sock[2]), write: Number(sock[3]), timeout: Number(sock[4]) } : { connect: 0, read: 0, write: 0, timeout: 0 };
  const non2xx = num(/Non-2xx or 3xx responses: (\d+)/) ?? 0;
  const latency = {};
  for (const [, p, v, u] of out.matchAll(/^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$/gm)) latency[`p${p}`] = Number(toMs(v, u).toFixed(3));
  if (!reqs) throw new Error(`wrk printed no result:\n${out.slice(0, 800)}`);
  const requests = Number(reqs[1]);
  const failed = non2xx + socketErrors.connect + socketErrors.read + socketErrors.write + socketErrors.timeout;
  const errors = {};
  if (non2xx) errors.NON_2XX_3XX = non2xx;
  for (const [k, v] of Object.entries(socketErrors)) if (v) errors[`SOCKET_${k.toUpperCase()}`] = v;
  return {
    tool: 'wrk',
    requests,
    seconds: toMs(reqs[2], reqs[3]) / 1000,
    rps: num(/Requests\/sec:\s+([\d.]+)/),
    // wrk counts timed-out requests in `requests` too; a read/connect error has no request.
    ok: Math.max(0, requests - non2xx - socketErrors.timeout),
    failed,
    errors,
    latencyMs: latency,
  };
}

export function h2loadCommand({ url, clients, streams, threads, durationS, warmupS, dataFile, headers = [] }) {
  const cmd = ['h2load', '-t', String(threads), '-c', String(clients), '-m', String(streams), '-D', `${Math.round(durationS * 1000)}ms`, '--warm-up-time', `${Math.round(warmupS * 1000)}ms`];
  if (dataFile) cmd.push('-d', dataFile);
  for (const h of headers) cmd.push('-H', h);
  cmd.push(url);
  return cmd;
}

export function parseH2load(out) {
  const fin = /finished in ([\d.]+)(us|ms|s|m), ([\d.]+) req\/s/.exec(out);
  const req = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  if (!fin || !req) throw new Error(`h2load printed no result:\n${out.slice(0, 800)}`);
  const [total, started, done, succeeded, failed, errored, timeout] = req.slice(1).map(Number);
  const [c4, c5] = codes ? codes.slice(3).map(Number) : [0, 0];
  // h2load's words: `failed` includes non-2xx/3xx answers and `errored`, which includes
  // `timeout`; `succeeded` are the 2xx/3xx answers.
  const errors = {};
  if (c4) errors.HTTP_4XX = c4;
  if (c5) errors.HTTP_5XX = c5;
  if (errored - timeout > 0) errors.ERRORED = errored - timeout;
  if (timeout) errors.TIMEOUT = timeout;
  // The rest of `failed` are streams that closed without a final status (or with a 1xx):
  // requests nobody answered, failures like any other.
  const other = failed - c4 - c5 - errored;
  if (other > 0) errors.NO_RESPONSE = other;
  const lat = /time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)/.exec(out);
  return {
    tool: 'h2load',
    requests: total,
    started,
    done,
    seconds: toMs(fin[1], fin[2]) / 1000,
    rps: Number(fin[3]),
    ok: succeeded,
    failed,
    errors,
    latencyMs: lat ? { min: Number(toMs(lat[1], lat[2]).toFixed(3)), max: Number(toMs(lat[3], lat[4]).toFixed(3)), mean: Number(toMs(lat[5], lat[6]).toFixed(3)) } : {},
  };
}
