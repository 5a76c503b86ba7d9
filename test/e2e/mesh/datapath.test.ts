/**
 * The data path in a real 2-node lab: real clients in pods, captured by eBPF, carried by the
 * agents (HBONE mTLS tunnels between nodes, same-node without TLS), delivered to real servers.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { annotateNamespace, scaleDeployment } from '../../../src/lab/mutate.js';
import { labExecCaptured } from '../../../src/lab/lab.js';
import { client, isRoot, startLab } from '../support/lab.js';
import { agentGet, waitUntil } from '../support/mesh.js';

const exec = promisify(execFile);
const opts = () => ({ skip: isRoot() ? false : 'needs root (real BPF, netns, cgroups)' });

t.test('data path in the lab', opts(), async (t) => {
  const keylog = `/tmp/skein-e2e-keylog-${process.pid}-${Date.now()}.txt`;
  t.teardown(() => exec('rm', ['-f', keylog]));
  const rec = await startLab(t, undefined, { mesh: true, agentEnv: { NODE_OPTIONS: `--tls-keylog=${keylog}` } });
  const from = 'shop/client-0'; // node-a
  const svc = 'echo.shop.svc.cluster.local';
  const echo0 = rec.plan.pods.find((p) => p.namespace === 'shop' && p.name === 'echo-0')!; // node-a: same node
  const echo1 = rec.plan.pods.find((p) => p.namespace === 'shop' && p.name === 'echo-1')!; // node-b: across

  await t.test('the underlay carries only TLS for enrolled traffic, naming SPIFFE identities', async (t) => {
    const pcap = `/tmp/skein-e2e-${process.pid}-${Date.now()}.pcap`;
    const cap = spawn('ip', ['netns', 'exec', rec.plan.underlayNetns, 'tshark', '-q', '-i', rec.plan.underlayBridge, '-a', 'duration:8', '-f', 'tcp', '-w', pcap], { stdio: 'ignore' });
    t.teardown(() => exec('rm', ['-f', pcap]));
    await new Promise((r) => setTimeout(r, 1500));
    await client(rec, from, ['--protocol', 'http1', '--target', `${echo1.ip}:8080`, '--count', '20', '--new-connection']);
    await client(rec, from, ['--protocol', 'grpc', '--target', `${echo1.ip}:9090`, '--count', '10']);
    await new Promise((r) => cap.once('exit', r));
    const read = (args: string[]) => exec('tshark', ['-r', pcap, ...args], { encoding: 'utf8', maxBuffer: 64 << 20 }).then((r) => r.stdout);
    const tcpPackets = Number((await read(['-Y', 'tcp.len > 0', '-T', 'fields', '-e', 'frame.number'])).trim().split('\n').filter(Boolean).length);
    t.ok(tcpPackets > 20, `captured ${tcpPackets} payload packets`);
    t.equal((await read(['-Y', 'http || http2 || grpc'])).trim(), '', 'no plaintext HTTP, HTTP/2 or gRPC on the underlay');
    const raw = await read(['-x']);
    t.notMatch(raw, /x-skein-pod|skein-client-/, 'no application bytes in clear');
    const hello = await read(['-d', 'tcp.port==15008,tls', '-Y', 'tls.handshake.type == 1', '-T', 'fields', '-e', 'tls.handshake.extensions_alpn_str', '-e', 'tls.handshake.extensions.supported_version']);
    t.match(hello, /h2/, 'TLS ClientHellos to 15008 offer ALPN h2');
    // TLS 1.3 encrypts the certificates: decrypt with the agents' key log (node --tls-keylog)
    // to read the SPIFFE URIs both sides presented.
    const uris = await read(['-o', `tls.keylog_file:${keylog}`, '-d', 'tcp.port==15008,tls', '-Y', 'tls.handshake.certificate', '-T', 'fields', '-e', 'x509ce.uniformResourceIdentifier']);
    t.match(uris, 'spiffe://cluster.local/ns/shop/sa/echo', 'the server certificate names the destination workload');
    t.match(uris, 'spiffe://cluster.local/ns/shop/sa/client', 'the client certificate names the source workload');
  });

  await t.test('every protocol, across nodes and on the same node, bodies intact', async (t) => {
    for (const [where, ip] of [
      ['across nodes', echo1.ip],
      ['same node', echo0.ip],
    ] as const) {
      for (const [proto, port, extra] of [
        ['http1', 8080, []],
        ['h2c', 8080, []],
        ['grpc', 9090, ['--grpc-call', 'unary']],
        ['grpc', 9090, ['--grpc-call', 'server-stream']],
        ['grpc', 9090, ['--grpc-call', 'client-stream']],
        ['grpc', 9090, ['--grpc-call', 'bidi']],
        ['ws', 8080, []],
        ['tcp', 7070, []],
      ] as const) {
        for (const size of proto === 'grpc' || proto === 'ws' ? [0, 65536] : [0, 1_000_000]) {
          const r = await client(rec, from, ['--protocol', proto, '--target', `${ip}:${port}`, '--count', '3', '--size', String(size), ...extra]);
          t.equal(r.ok, 3, `${where}: ${proto} ${extra.join(' ')} ${size} B: ${JSON.stringify(r.errors)}`);
        }
      }
    }
    for (const [proto, port] of [
      ['http1', 8080],
      ['tcp', 7070],
    ] as const) {
      const r = await client(rec, from, ['--protocol', proto, '--target', `${echo1.ip}:${port}`, '--count', '1', '--size', String(100_000_000), '--timeout', '120'], 180_000);
      t.equal(r.ok, 1, `100 MB over ${proto} across nodes, checksum equal ${JSON.stringify(r.errors)}`);
    }
    // curl and nghttp, real third-party clients, through the Service name.
    const curl = await labExecCaptured(rec, from, ['curl', '-sS', '--max-time', '10', `http://${svc}/hello`]);
    t.match(curl.stdout, '"protocol":"http/1.1"', `curl: ${curl.stderr}`);
    const nghttp = await labExecCaptured(rec, from, ['nghttp', '-v', `http://${svc}:8081/h2`]);
    t.match(nghttp.stdout, ':status: 200', 'nghttp (h2c prior knowledge) answered');
  });

  await t.test('3 endpoints, 3000 requests over one HTTP/2 connection: each within 5%', async (t) => {
    await scaleDeployment(rec, 'shop/echo', 3);
    // The client's agent must know the third endpoint as ready before the count starts.
    const ms = await waitUntil(async () => {
      const d = await agentGet<{ snapshot: { services: { namespace: string; name: string; endpoints: { ready: boolean }[] }[] } | null }>(rec, 'node-a', '/config_dump');
      return (d.snapshot?.services.find((s) => s.namespace === 'shop' && s.name === 'echo')?.endpoints.filter((e) => e.ready).length ?? 0) === 3;
    }, 15_000);
    t.comment(`node-a's agent had 3 ready endpoints ${ms} ms after the scale returned`);
    const r = await client(rec, from, ['--protocol', 'h2c', '--target', `${svc}:8081`, '--count', '3000', '--concurrency', '16', '--connections', '1'], 120_000);
    t.equal(r.ok, 3000, JSON.stringify(r.errors));
    const counts = Object.values(r.byPod);
    t.equal(counts.length, 3, `all three answered ${JSON.stringify(r.byPod)}`);
    for (const c of counts) t.ok(Math.abs(c - 1000) <= 50, `${c} within 5% of 1000`);
  });

  await t.test('a non-mesh client: STRICT refuses it, PERMISSIVE serves it', async (t) => {
    const strict = await client(rec, 'legacy/client-0', ['--protocol', 'http1', '--target', `${echo0.ip}:8080`, '--count', '2', '--new-connection', '--timeout', '3']);
    t.equal(strict.ok, 0, 'STRICT refused');
    // h2c too: the refusal ends streams without a :status, which once counted as "OK".
    const strictH2 = await client(rec, 'legacy/client-0', ['--protocol', 'h2c', '--target', `${echo0.ip}:8080`, '--count', '8', '--concurrency', '4', '--timeout', '3']);
    t.equal(strictH2.ok, 0, `STRICT refused h2c ${JSON.stringify(strictH2.errors)}`);
    t.equal(strictH2.failed, 8, 'every refused stream counted failed');
    t.same(strictH2.byPod, {}, 'nobody is said to have answered');
    await annotateNamespace(rec, 'shop', ['skein.io/peer-authentication=PERMISSIVE']);
    await new Promise((r) => setTimeout(r, 1500));
    const permissive = await client(rec, 'legacy/client-0', ['--protocol', 'http1', '--target', `${echo0.ip}:8080`, '--count', '5', '--new-connection']);
    t.equal(permissive.ok, 5, `PERMISSIVE served ${JSON.stringify(permissive.errors)}`);
  });
});
