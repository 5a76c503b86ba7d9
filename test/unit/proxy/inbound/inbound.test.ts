/**
 * Inbound paths other than the tunnel: plaintext on :15006 (STRICT refuses, PERMISSIVE serves)
 * and the same-node entry `openLocal` (policy and telemetry without the TLS hop).
 */
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import t, { type Test } from 'tap';
import { hasCode } from '../../../../src/errors.js';
import { InboundProxy, type InboundProxyOptions } from '../../../../src/proxy/inbound/inbound-proxy.js';
import { PlaintextListener } from '../../../../src/proxy/inbound/plaintext-listener.js';
import { closedPort, echoHandler, LoopbackAppConnector, spiffe, tcpServer, waitFor, workload } from '../tunnel/fixtures.js';
import { appBehindInbound, readAll, sendPayload } from '../tunnel/harness.js';
import { TunnelCode } from '../../../../src/proxy/codes.js';

async function setup(t: Test, mode: 'STRICT' | 'PERMISSIVE', inboundOpts: Partial<InboundProxyOptions> = {}) {
  const { app, records, logger, lines, connector, inbound } = await appBehindInbound(t, undefined, inboundOpts);
  const pod = workload('web', ['127.0.0.1'], spiffe('default', 'web'), mode);
  // sk_lookup keeps the original destination as the socket's local port; on loopback without
  // it, the test maps every accepted connection to the app's port.
  let dstPort = app.port;
  const listener = new PlaintextListener({
    workload: pod,
    inbound,
    logger,
    originalDestination: (s) => ({ address: s.localAddress, port: dstPort }),
  });
  const addr = await listener.listen({ port: 0, host: '127.0.0.1' });
  t.teardown(() => listener.close());
  return {
    app,
    pod,
    records,
    lines,
    connector,
    inbound,
    listener,
    port: addr?.port ?? 0,
    setDstPort: (p: number) => {
      dstPort = p;
    },
  };
}

function dial(t: Test, port: number): Socket {
  const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  t.teardown(() => s.destroy());
  return s;
}

/** What the client experiences: data and EOF, or an error (ECONNRESET). */
function outcome(s: Socket): Promise<{ data: string; error?: string }> {
  return new Promise((resolve) => {
    let data = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      data += d;
    });
    s.once('end', () => resolve({ data }));
    s.once('error', (e: NodeJS.ErrnoException) => resolve({ data, error: e.code ?? e.message }));
  });
}

t.test('STRICT: plaintext is refused with a reset, logged and counted, the app never sees it', async (t) => {
  const x = await setup(t, 'STRICT');
  const s = dial(t, x.port);
  const out = outcome(s);
  s.write('GET / HTTP/1.1\r\nHost: web\r\n\r\n');
  const r = await out;
  t.equal(r.error, 'ECONNRESET', 'client gets a reset');
  t.equal(r.data, '', 'and no byte of response');
  t.equal(x.listener.stats.refusedStrict, 1);
  t.equal(x.connector.connects, 0, 'the app was never contacted');
  t.match(x.records[0], { transport: 'plaintext', status: 401, reason: /STRICT/ });
  t.ok(x.lines.some((l) => l.msg === 'inbound connection' && l.level === 40), 'logged at warn');
});

t.test('PERMISSIVE: plaintext is served (echo 1 MB intact), recorded without a source identity', async (t) => {
  const x = await setup(t, 'PERMISSIVE');
  const s = dial(t, x.port);
  await new Promise((r) => s.once('connect', r));
  const reading = readAll(s as unknown as Duplex);
  const sent = await sendPayload(s as unknown as Duplex, 1024 * 1024);
  const got = await reading;
  t.equal(got.sha256, sent);
  await waitFor(() => x.records.length === 1);
  t.match(x.records[0], { transport: 'plaintext', status: 200, port: x.app.port, bytesReceived: 1024 * 1024, bytesSent: 1024 * 1024 });
  t.equal(x.records[0]?.source, undefined, 'no identity for plaintext');
  t.equal(x.listener.stats.accepted, 1);
});

t.test('the mode is read per connection: PERMISSIVE -> STRICT applies to the next connection', async (t) => {
  const x = await setup(t, 'PERMISSIVE');
  const s1 = dial(t, x.port);
  const o1 = outcome(s1);
  s1.end('one');
  t.same(await o1, { data: 'one' });
  x.listener.updateWorkload({ ...x.pod, peerAuthentication: 'STRICT' });
  const s2 = dial(t, x.port);
  const o2 = outcome(s2);
  s2.write('two');
  t.equal((await o2).error, 'ECONNRESET');
});

t.test('PERMISSIVE with the app port closed: the client gets a reset, 503 recorded', async (t) => {
  const x = await setup(t, 'PERMISSIVE');
  x.setDstPort(await closedPort());
  const s = dial(t, x.port);
  const o = outcome(s);
  s.write('hello');
  t.equal((await o).error, 'ECONNRESET');
  await waitFor(() => x.records.length === 1);
  t.match(x.records[0], { status: 503 });
  t.equal(x.inbound.stats.unavailable, 1);
});

t.test('a connection to :15006 itself (not steered) is refused', async (t) => {
  const x = await setup(t, 'PERMISSIVE');
  x.setDstPort(x.port);
  const s = dial(t, x.port);
  const o = outcome(s);
  s.write('x');
  t.equal((await o).error, 'ECONNRESET');
  t.equal(x.listener.stats.refusedOther, 1);
  t.equal(x.connector.connects, 0);
});

t.test('openLocal: same-node path with identity, policy and telemetry, no TLS', async (t) => {
  const denied = spiffe('other', 'intruder');
  const x = await setup(t, 'STRICT', {
    authorize: (req) => (req.source === denied ? { allow: false, reason: 'deny intruder' } : { allow: true }),
  });
  const source = spiffe('client-ns', 'client');
  const s = await x.inbound.openLocal(source, x.pod, x.app.port, { headers: { traceparent: '00-abc-def-01' } });
  const reading = readAll(s);
  const sent = await sendPayload(s, 200_000);
  t.equal((await reading).sha256, sent, 'bytes intact through the in-memory hop');
  await waitFor(() => x.records.length === 1);
  t.match(x.records[0], { transport: 'local', source, status: 200, bytesReceived: 200_000, bytesSent: 200_000, end: 'complete' });
  const line = x.lines.find((l) => l.msg === 'inbound connection');
  t.match(line, { access: { transport: 'local', source } }, 'access log line names the source');

  const err = await x.inbound.openLocal(denied, x.pod, x.app.port).catch((e) => e);
  t.ok(hasCode(err, TunnelCode.SourceDenied), 'policy deny -> SKEIN_TUNNEL_SOURCE_DENIED');
  const err2 = await x.inbound.openLocal(source, x.pod, await closedPort()).catch((e) => e);
  t.ok(hasCode(err2, TunnelCode.AppUnreachable), 'closed app port -> SKEIN_TUNNEL_APP_UNREACHABLE');
  t.equal(x.connector.connects, 2, 'the denied connection never reached the app connector');
});

t.test('openLocal: half-close and app reset propagate through the in-memory hop', async (t) => {
  const app = await tcpServer((s) => {
    s.on('data', (d: Buffer) => {
      if (d.toString() === 'reset') s.resetAndDestroy();
    });
    s.on('end', () => setTimeout(() => s.end('bye after FIN'), 20));
  });
  t.teardown(() => app.close());
  const inbound = new InboundProxy({ app: new LoopbackAppConnector() });
  const pod = workload('web', ['127.0.0.1'], spiffe('default', 'web'));
  const src = spiffe('client-ns', 'client');
  const s1 = await inbound.openLocal(src, pod, app.port);
  const r1 = readAll(s1);
  s1.end('hello');
  t.equal((await r1).text, 'bye after FIN', 'reply after the client FIN');
  const s2 = await inbound.openLocal(src, pod, app.port);
  let ended = false;
  s2.on('end', () => {
    ended = true;
  });
  s2.on('error', () => {});
  s2.resume();
  const closed = new Promise((r) => s2.once('close', r));
  s2.write('reset');
  await closed;
  t.notOk(ended, 'no clean EOF: the reset reached the caller as an abort');
  t.ok(s2.destroyed);
});

t.test('authorizer that throws refuses (fail closed)', async (t) => {
  const app = await tcpServer(echoHandler);
  t.teardown(() => app.close());
  const inbound = new InboundProxy({
    app: new LoopbackAppConnector(),
    authorize: () => {
      throw new Error('policy engine broken');
    },
  });
  const pod = workload('web', ['127.0.0.1'], spiffe('default', 'web'));
  const err = await inbound.openLocal(spiffe('a', 'b'), pod, app.port).catch((e) => e);
  t.ok(hasCode(err, TunnelCode.SourceDenied));
  t.equal(inbound.stats.refused, 1);
});
