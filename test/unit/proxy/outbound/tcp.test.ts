import net from 'node:net';
import type { Duplex } from 'node:stream';
import t from 'tap';
import type { Workload } from '../../../../src/config/model.js';
import type { LocalInbound } from '../../../../src/proxy/inbound/types.js';
import { BACKEND_IPS, directConnect, listenOn, snapshotFor, startProxy } from './fixtures/harness.js';

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** Connects and waits for the outcome; a reset may even beat the client's own 'connect'. */
function outcome(port: number): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    s.once('end', () => resolve('end'));
    s.resume();
  });
}

function readAll(s: net.Socket): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.once('end', () => resolve(Buffer.concat(chunks)));
  });
}

/** Echo with a twist: after the client half-closes, the server still sends a last line. */
async function halfCloseEcho(t: Tap): Promise<{ ip: string; port: number }> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => {
      s.write(Buffer.concat(chunks));
      s.end('|after-your-FIN');
    });
    s.on('error', () => {});
  });
  t.teardown(() => server.close());
  return listenOn(server, BACKEND_IPS[0] as string);
}
type Tap = { teardown: (fn: () => void) => void };

t.test('opaque TCP: bytes intact, half-close both ways', async (t) => {
  const b = await halfCloseEcho(t);
  const h = await startProxy(snapshotFor([b]));
  t.teardown(() => h.close());
  const s = await connect(h.port);
  const payload = Buffer.from('\x00\x01binary protocol, not HTTP\r\n'.repeat(1000));
  s.write(payload);
  s.end();
  const got = await readAll(s);
  t.equal(got.toString('latin1'), `${payload.toString('latin1')}|after-your-FIN`, 'reply after client FIN arrives');
  t.equal(h.proxy.stats().connections.tcp, 1);
  t.equal(h.tunnel.calls.length, 1, 'meshed endpoint on another node: one tunnel stream');
  await new Promise((r) => setTimeout(r, 20));
  t.match(h.records, [{ kind: 'tcp', status: 200, bytesSent: payload.length, bytesReceived: payload.length + 15, end: 'complete' }]);
});

t.test('server-speaks-first protocol is not stalled by detection', async (t) => {
  const server = net.createServer((s) => {
    s.write('220 smtp.example ESMTP ready\r\n');
    s.on('data', (d) => {
      if (d.toString().startsWith('QUIT')) s.end('221 bye\r\n');
    });
    s.on('error', () => {});
  });
  t.teardown(() => server.close());
  const b = await listenOn(server, BACKEND_IPS[0] as string);
  const detectTimeoutMs = 100;
  const h = await startProxy(snapshotFor([b]), { detectTimeoutMs });
  t.teardown(() => h.close());
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const started = performance.now();
    const s = await connect(h.port);
    const banner = await new Promise<string>((r) => s.once('data', (d) => r(d.toString())));
    times.push(Math.round(performance.now() - started));
    t.match(banner, /^220 /);
    s.write('QUIT\r\n');
    t.match((await readAll(s)).toString(), /221 bye/);
  }
  const worst = Math.max(...times);
  t.comment(`banner arrived after ${times.join(', ')} ms (detection wait ${detectTimeoutMs} ms)`);
  t.ok(worst < detectTimeoutMs + 150, 'banner within the detection wait plus connect time');

  // With appProtocol: tcp there is no wait at all.
  h.store.apply(snapshotFor([b], { appProtocol: 'tcp', version: '2' }));
  const started = performance.now();
  const s = await connect(h.port);
  await new Promise((r) => s.once('data', r));
  const declared = Math.round(performance.now() - started);
  t.comment(`declared tcp: banner after ${declared} ms`);
  t.ok(declared < detectTimeoutMs, 'declared tcp skips detection');
  s.destroy();
});

t.test('a reset from the upstream reaches the client as a reset', async (t) => {
  const server = net.createServer((s) => {
    s.once('data', () => s.resetAndDestroy());
    s.on('error', () => {});
  });
  t.teardown(() => server.close());
  const b = await listenOn(server, BACKEND_IPS[0] as string);
  const h = await startProxy(snapshotFor([b], { appProtocol: 'tcp' }));
  t.teardown(() => h.close());
  const s = await connect(h.port);
  s.write('boom');
  const err = await new Promise<NodeJS.ErrnoException | undefined>((r) => {
    s.once('error', r);
    s.once('end', () => r(undefined));
  });
  t.equal(err?.code, 'ECONNRESET');
});

t.test('unknown destinations: passthrough allowed or refused', async (t) => {
  const server = net.createServer((s) => {
    s.on('error', () => {});
    s.end('outside the mesh');
  });
  t.teardown(() => server.close());
  const outside = await listenOn(server, '127.0.0.9');
  const allow = await startProxy(snapshotFor([]), {}, { address: outside.ip, port: outside.port });
  t.teardown(() => allow.close());
  const s = await connect(allow.port);
  t.equal((await readAll(s)).toString(), 'outside the mesh');
  t.equal(allow.proxy.stats().connections.passthrough, 1);
  t.equal(allow.tunnel.calls.length, 0, 'no tunnel for passthrough');

  const refuse = await startProxy(snapshotFor([]), { passthroughUnknown: false }, { address: outside.ip, port: outside.port });
  t.teardown(() => refuse.close());
  t.equal(await outcome(refuse.port), 'ECONNRESET', 'refused with a reset');
  t.equal(refuse.proxy.refusalCount('SKEIN_OUTBOUND_PASSTHROUGH_REFUSED'), 1);
});

t.test('same-node endpoints go through the inbound proxy, non-mesh endpoints direct', async (t) => {
  const b = await halfCloseEcho(t);
  const opened: { source: string; workload: string; port: number }[] = [];
  const inbound: LocalInbound = {
    async openLocal(source: string, workload: Workload, port: number): Promise<Duplex> {
      opened.push({ source, workload: workload.name, port });
      return directConnect(workload, workload.ips[0] as string, port);
    },
  };
  const snap = snapshotFor([b], { appProtocol: 'tcp' });
  // Put the endpoint (and its pod) on this agent's node.
  const svc = snap.services[0];
  if (svc?.endpoints[0]) svc.endpoints[0].node = 'node-a';
  const pod = snap.workloads.find((w) => w.name === 'server-0');
  if (pod) pod.node = 'node-a';
  const h = await startProxy(snap, { inbound });
  t.teardown(() => h.close());
  const s = await connect(h.port);
  s.end('local');
  t.equal((await readAll(s)).toString(), 'local|after-your-FIN');
  t.same(opened, [{ source: 'spiffe://cluster.local/ns/apps/sa/client', workload: 'server-0', port: b.port }]);
  t.equal(h.tunnel.calls.length, 0, 'no TLS hop on the same node');

  // Out of the mesh: plain connect, no tunnel, no inbound.
  const plain = snapshotFor([b], { appProtocol: 'tcp', version: '2' });
  for (const e of plain.services[0]?.endpoints ?? []) e.meshEnabled = false;
  for (const w of plain.workloads) if (w.name === 'server-0') w.meshEnabled = false;
  h.store.apply(plain);
  const s2 = await connect(h.port);
  s2.end('plain');
  t.equal((await readAll(s2)).toString(), 'plain|after-your-FIN');
  t.equal(h.tunnel.calls.length, 0);
  t.equal(opened.length, 1);
});

t.test('no ready endpoint: TCP client is reset and it is counted', async (t) => {
  const h = await startProxy(snapshotFor([{ ip: BACKEND_IPS[0] as string, port: 9 }], { appProtocol: 'tcp', notReady: [BACKEND_IPS[0] as string] }));
  t.teardown(() => h.close());
  t.equal(await outcome(h.port), 'ECONNRESET');
  t.equal(h.proxy.refusalCount('SKEIN_OUTBOUND_NO_HEALTHY_UPSTREAM'), 1);
});
