/**
 * Traces across two nodes, for real: a lab whose agents export spans over OTLP/gRPC to a test
 * receiver (the collector's TraceService from the official protos, test/support/) running in
 * the lab's underlay netns, where every node reaches it at the underlay gateway. curl in
 * shop/client-0 (node-a) calls the echo pod on node-b with a known `traceparent`; the receiver
 * gets the client span from node-a's agent (parent: the app's span, trace: the app's) and the
 * server span from node-b's agent (parent: the client span), with the standard attributes and
 * the peer identities; the echo app sees the server span as its parent. B3 multi-headers are
 * accepted; a request whose context says "not sampled" yields no span.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import t from 'tap';
import { labExecCaptured } from '../../../src/lab/lab.js';
import type { LabRecord } from '../../../src/lab/registry.js';
import type { ReceivedSpan } from '../../support/otlp-receiver.js';
import { isRoot, repo, startLab } from '../support/lab.js';
import { waitUntil } from '../support/mesh.js';

const opts = () => ({ skip: !isRoot() ? 'needs root (real BPF, netns, cgroups)' : false });

// The demo scenario's underlay is 172.20.0.0/16: its gateway (in the underlay netns) is .1.
const RECEIVER = '172.20.0.1:4317';
const CLIENT_ID = 'spiffe://cluster.local/ns/shop/sa/client';
const ECHO_ID = 'spiffe://cluster.local/ns/shop/sa/echo';
const SERVER = 2;
const CLIENT = 3;

/** The receiver inside the lab's underlay netns; its spans as they arrive. */
async function receiverIn(t: Parameters<typeof startLab>[0], rec: LabRecord): Promise<ReceivedSpan[]> {
  const spans: ReceivedSpan[] = [];
  const proc: ChildProcess = spawn('ip', ['netns', 'exec', rec.plan.underlayNetns, process.execPath, join(repo, 'test', 'support', 'otlp-receiver.ts'), RECEIVER], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  t.teardown(() => {
    proc.stdin?.end();
    proc.kill();
  });
  const lines = createInterface({ input: proc.stdout! });
  await new Promise<void>((resolve, reject) => {
    proc.once('exit', (code) => reject(new Error(`receiver exited (${code})`)));
    lines.on('line', (l) => {
      if (l.startsWith('listening')) resolve();
      else if (l.startsWith('{')) spans.push(JSON.parse(l) as ReceivedSpan);
    });
  });
  return spans;
}

t.test('a request across two nodes: client and server spans, parented, exported over OTLP', opts(), async (t) => {
  const rec = await startLab(t, undefined, { mesh: true, agentArgs: ['--otlp-endpoint', `http://${RECEIVER}`, '--trace-sampling', '0'] });
  const spans = await receiverIn(t, rec);
  const echoB = rec.plan.pods.find((p) => p.namespace === 'shop' && p.node === 'node-b' && p.name.startsWith('echo'));
  if (!echoB) throw new Error('no echo pod on node-b');
  const url = `http://${echoB.ip}:8080/headers`;
  const curl = async (headers: string[]): Promise<Record<string, string>> => {
    const r = await labExecCaptured(rec, 'shop/client-0', ['curl', '-sf', '--max-time', '10', ...headers.flatMap((h) => ['-H', h]), url], 20_000);
    if (r.code !== 0) throw new Error(`curl exited ${r.code}: ${r.stderr}`);
    const body = JSON.parse(r.stdout) as { headers?: Record<string, string> } & Record<string, string>;
    return body.headers ?? body;
  };
  const ofTrace = (trace: string) => spans.filter((s) => s.traceId === trace);
  const settle = async (trace: string, n: number) => {
    await waitUntil(async () => ofTrace(trace).length >= n, 20_000, 100).catch(() => {});
    return ofTrace(trace);
  };

  await t.test('W3C traceparent: both spans, parent/child, the trace id the app sent', async (t) => {
    const trace = '4bf92f3577b34da6a3ce929d0e0e4736';
    const app = '00f067aa0ba902b7';
    const seen = await curl([`traceparent: 00-${trace}-${app}-01`, 'x-request-id: e2e-rid-1']);
    const got = await settle(trace, 2);
    t.equal(got.length, 2, `two spans in the app's trace: ${JSON.stringify(got.map((s) => [s.kind, s.resource['k8s.node.name']]))}`);
    const client = got.find((s) => s.kind === CLIENT);
    const server = got.find((s) => s.kind === SERVER);
    if (!client || !server) throw new Error('missing span');
    t.equal(client.resource['k8s.node.name'], 'node-a', "client span from node-a's agent");
    t.equal(server.resource['k8s.node.name'], 'node-b', "server span from node-b's agent");
    t.equal(client.parentSpanId, app, "client span's parent: the app's span");
    t.equal(server.parentSpanId, client.spanId, "server span's parent: the client span");
    t.equal(seen.traceparent, `00-${trace}-${server.spanId}-01`, 'the echo app sees the server span as its parent');
    t.equal(seen['x-request-id'], 'e2e-rid-1', 'x-request-id passed through');
    for (const s of [client, server]) {
      t.match(
        s.attributes,
        {
          'http.request.method': 'GET',
          'url.path': '/headers',
          'http.response.status_code': 200,
          'server.address': echoB.ip,
          'network.protocol.name': 'http',
          'skein.source.principal': CLIENT_ID,
          'skein.destination.principal': ECHO_ID,
          'http.request.header.x-request-id': ['e2e-rid-1'],
        },
        `${s.kind === CLIENT ? 'client' : 'server'} span attributes`,
      );
      t.equal(s.status, 0, 'status unset (200)');
      t.equal(s.name, 'GET');
    }
    t.equal(client.attributes['network.protocol.version'], '1.1', 'client span: what the app spoke');
    t.equal(client.attributes['server.port'], 8080);
    t.equal(client.attributes['network.peer.address'], echoB.ip);
    t.equal(client.attributes['skein.source.workload'], 'shop/client-0');
    t.equal(server.attributes['skein.destination.workload'], `shop/${echoB.name}`);
  });

  await t.test('B3 multi headers are accepted as the parent', async (t) => {
    const trace = 'a3ce929d0e0e47364bf92f3577b34da6';
    const app = 'b7ad6b7169203331';
    const seen = await curl([`x-b3-traceid: ${trace}`, `x-b3-spanid: ${app}`, 'x-b3-sampled: 1']);
    const got = await settle(trace, 2);
    const client = got.find((s) => s.kind === CLIENT);
    const server = got.find((s) => s.kind === SERVER);
    t.equal(client?.parentSpanId, app, "client span's parent: the B3 span");
    t.equal(server?.parentSpanId, client?.spanId, "server span's parent: the client span");
    t.equal(seen['x-b3-spanid'], server?.spanId, 'the app sees the server span in B3 too');
  });

  await t.test('not sampled (flags 00): no span, traceparent passes unchanged', async (t) => {
    const trace = '0af7651916cd43dd8448eb211c80319c';
    const tp = `00-${trace}-b7ad6b7169203331-00`;
    const seen = await curl([`traceparent: ${tp}`]);
    t.equal(seen.traceparent, tp, 'the app sees the context as it was sent');
    // Spans of the requests above arrived within ~1 s (the export delay); wait longer here.
    await new Promise((r) => setTimeout(r, 3000));
    t.same(ofTrace(trace), [], 'no span exported');
  });
});
