/**
 * The peer: HAProxy (the Debian package) doing skein's job between the two lab nodes.
 *
 *   client pod ──▶ HAProxy on node A ══ mTLS (TLS 1.3, ECDSA P-256) ══▶ HAProxy on node B ──▶ server pods
 *
 * Node A listens on its node address (plaintext, like skein's capture point) and originates
 * mTLS with a client certificate; node B terminates it (client certificate required, from
 * the bench CA) and forwards to the pods. HTTP mode for L7 (HTTP/1.1 and gRPC), TCP mode for
 * L4; between the nodes the L7 frontends share pooled HTTP/2 connections (`http-reuse
 * always`, ALPN h2), as skein's tunnel pools its HTTP/2 CONNECT streams.
 *
 * Each HAProxy runs in the foreground (-db) inside its node's netns (nsenter --net), as our
 * child; a stats socket per instance lets the bench prove the requests went through it.
 */
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** Ports of the peer. A: plaintext frontends on node A; B: mTLS frontends on node B. */
export const PEER_PORTS = {
  a: { http: 18080, l4: 18081, grpc: 18090, bulk: 15201 },
  b: { http: 28443, l4: 28444, grpc: 28445, bulk: 28446 },
};

const SERVER_NAME = 'haproxy-b.bench.skein.test';

function openssl(args, cwd) {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * A throwaway CA and two leaves (ECDSA P-256): node B's server certificate and node A's client
 * certificate. HAProxy wants certificate and key in one PEM file.
 */
export function makePeerCertificates(dir, nodeBAddress) {
  const days = '2';
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key'], dir);
  openssl(['req', '-x509', '-new', '-key', 'ca.key', '-sha256', '-days', days, '-subj', '/CN=skein bench peer CA', '-out', 'ca.pem'], dir);
  const leaf = (name, cn, ext) => {
    openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', `${name}.key`], dir);
    openssl(['req', '-new', '-key', `${name}.key`, '-subj', `/CN=${cn}`, '-out', `${name}.csr`], dir);
    writeFileSync(join(dir, `${name}.ext`), ext);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', days, '-sha256', '-extfile', `${name}.ext`, '-out', `${name}.crt`], dir);
    const pem = execFileSync('cat', [`${name}.crt`, `${name}.key`], { cwd: dir, encoding: 'utf8' });
    writeFileSync(join(dir, `${name}.pem`), pem, { mode: 0o600 });
  };
  leaf('node-b', SERVER_NAME, `subjectAltName=DNS:${SERVER_NAME},IP:${nodeBAddress}\nextendedKeyUsage=serverAuth\n`);
  leaf('node-a', 'haproxy-a.bench.skein.test', 'subjectAltName=DNS:haproxy-a.bench.skein.test\nextendedKeyUsage=clientAuth\n');
  return { ca: join(dir, 'ca.pem'), nodeA: join(dir, 'node-a.pem'), nodeB: join(dir, 'node-b.pem') };
}

const GLOBAL = (sock) => `global
  maxconn 4096
  stats socket ${sock} mode 600 level admin
  ssl-default-bind-options ssl-min-ver TLSv1.3
  ssl-default-server-options ssl-min-ver TLSv1.3

defaults
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  timeout client-fin 5s
  timeout server-fin 5s
  timeout http-keep-alive 30s
`;

/** Node A: plaintext in from the client pod, mTLS out to node B. */
export function renderNodeA({ sock, certs, nodeA, nodeB }) {
  const { a, b } = PEER_PORTS;
  const tls = `ssl verify required ca-file ${certs.ca} crt ${certs.nodeA} sni str(${SERVER_NAME}) verifyhost ${SERVER_NAME}`;
  return `${GLOBAL(sock)}
frontend l7_http
  mode http
  bind ${nodeA}:${a.http}
  default_backend to_b_http

backend to_b_http
  mode http
  http-reuse always
  server node-b ${nodeB}:${b.http} ${tls} alpn h2

frontend l7_grpc
  mode http
  bind ${nodeA}:${a.grpc} proto h2
  default_backend to_b_grpc

backend to_b_grpc
  mode http
  http-reuse always
  server node-b ${nodeB}:${b.grpc} ${tls} alpn h2

frontend l4_http
  mode tcp
  bind ${nodeA}:${a.l4}
  default_backend to_b_l4

backend to_b_l4
  mode tcp
  server node-b ${nodeB}:${b.l4} ${tls}

frontend l4_bulk
  mode tcp
  bind ${nodeA}:${a.bulk}
  default_backend to_b_bulk

backend to_b_bulk
  mode tcp
  server node-b ${nodeB}:${b.bulk} ${tls}
`;
}

/** Node B: mTLS in from node A (client certificate required), plaintext to the pods. */
export function renderNodeB({ sock, certs, nodeB, echoPods, sinkPods }) {
  const { b } = PEER_PORTS;
  const tls = `ssl crt ${certs.nodeB} ca-file ${certs.ca} verify required`;
  const servers = (pods, port, extra = '') => pods.map((ip, i) => `  server pod${i} ${ip}:${port}${extra}`).join('\n');
  return `${GLOBAL(sock)}
frontend in_http
  mode http
  bind ${nodeB}:${b.http} ${tls} alpn h2
  default_backend pods_http

backend pods_http
  mode http
  balance roundrobin
  http-reuse always
${servers(echoPods, 8080)}

frontend in_grpc
  mode http
  bind ${nodeB}:${b.grpc} ${tls} alpn h2
  default_backend pods_grpc

backend pods_grpc
  mode http
  balance roundrobin
  http-reuse always
${servers(echoPods, 9090, ' proto h2')}

frontend in_l4
  mode tcp
  bind ${nodeB}:${b.l4} ${tls}
  default_backend pods_l4

backend pods_l4
  mode tcp
  balance roundrobin
${servers(echoPods, 8080)}

frontend in_bulk
  mode tcp
  bind ${nodeB}:${b.bulk} ${tls}
  default_backend pods_bulk

backend pods_bulk
  mode tcp
  balance roundrobin
${servers(sinkPods, 5201)}
`;
}

/** Checks a configuration with `haproxy -c` (throws with HAProxy's words on error). */
export function checkConfig(file) {
  try {
    execFileSync('haproxy', ['-c', '-q', '-f', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    throw new Error(`haproxy -c ${file}: ${String(err.stderr ?? err.message).trim()}`);
  }
}

/**
 * Starts HAProxy in the foreground inside `netns`, as our child (nsenter execs, so the child's
 * pid is HAProxy's). Resolves once its stats socket answers.
 */
export async function startHaproxy({ netns, config, sock, logFile }) {
  const fd = openSync(logFile, 'a');
  const child = spawn('nsenter', [`--net=/var/run/netns/${netns}`, 'haproxy', '-db', '-f', config], { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (exited) throw new Error(`haproxy in ${netns} exited (${JSON.stringify(exited)}): ${tail(logFile)}`);
    try {
      await showStat(sock);
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`haproxy in ${netns} did not answer on ${sock} within 10 s; see ${logFile}`);
      }
      await sleep(50);
    }
  }
  return {
    pid: child.pid,
    child,
    alive: () => exited === null,
    async stop() {
      if (exited) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await gone;
      clearTimeout(t);
    },
  };
}

function tail(file) {
  if (!existsSync(file)) return '(no log)';
  return readFileSync(file, 'utf8').trim().split('\n').slice(-5).join(' | ');
}

/** Sends one command to a stats socket; resolves with the whole answer. */
function statsCommand(sock, command) {
  return new Promise((resolve, reject) => {
    const c = net.connect({ path: sock });
    let out = '';
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error(`stats socket ${sock}: no answer`));
    }, 3000);
    c.on('connect', () => c.write(`${command}\n`));
    c.on('data', (d) => {
      out += d.toString();
    });
    c.on('end', () => {
      clearTimeout(timer);
      resolve(out);
    });
    c.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/**
 * `show stat` as { "<proxy>/<FRONTEND|BACKEND|server>": { stot, req_tot, bin, bout, ... } }.
 * Numbers where HAProxy gives numbers.
 */
export async function showStat(sock) {
  const csv = await statsCommand(sock, 'show stat');
  const lines = csv.split('\n').filter((l) => l.length > 0);
  if (!lines[0]?.startsWith('# ')) throw new Error(`stats socket ${sock}: unexpected answer`);
  const header = lines[0].slice(2).split(',');
  const rows = {};
  for (const line of lines.slice(1)) {
    const cells = line.split(',');
    const row = {};
    header.forEach((h, i) => {
      if (!h) return;
      const v = cells[i] ?? '';
      row[h] = v !== '' && /^-?\d+$/.test(v) ? Number(v) : v;
    });
    rows[`${row.pxname}/${row.svname}`] = row;
  }
  return rows;
}
