/**
 * L4 pipe over real loopback sockets: client -> [proxy: pipeBidirectional] -> app.
 */
import { once } from 'node:events';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { duplexPair } from 'node:stream';
import t, { type Test } from 'tap';
import { type PipeResult, pipeBidirectional } from '../../../../src/proxy/tcp/l4-pipe.js';

interface Rig {
  client: Socket;
  /** Proxy's socket towards the client, and towards the app. */
  down: Socket;
  up: Socket;
  /** The app's socket. */
  app: Socket;
  result: Promise<PipeResult>;
}

async function listen(t: Test, onConn: (s: Socket) => void): Promise<number> {
  const sockets = new Set<Socket>();
  const srv: Server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    onConn(s);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        srv.close(() => r());
      }),
  );
  return (srv.address() as AddressInfo).port;
}

async function rig(t: Test, idleTimeoutMs?: number): Promise<Rig> {
  let appResolve!: (s: Socket) => void;
  const appConn = new Promise<Socket>((r) => {
    appResolve = r;
  });
  const appPort = await listen(t, (s) => appResolve(s));
  let resultResolve!: (r: PipeResult) => void;
  const result = new Promise<PipeResult>((r) => {
    resultResolve = r;
  });
  let proxiedResolve!: (x: { down: Socket; up: Socket }) => void;
  const proxied = new Promise<{ down: Socket; up: Socket }>((r) => {
    proxiedResolve = r;
  });
  const proxyPort = await listen(t, (down) => {
    const up = connect({ host: '127.0.0.1', port: appPort, allowHalfOpen: true });
    up.on('error', () => {});
    t.teardown(() => up.destroy());
    up.once('connect', () => {
      pipeBidirectional(down, up, { idleTimeoutMs, onDone: resultResolve });
      proxiedResolve({ down, up });
    });
  });
  const client = connect({ host: '127.0.0.1', port: proxyPort, allowHalfOpen: true });
  client.on('error', () => {});
  t.teardown(() => client.destroy());
  const { down, up } = await proxied;
  const app = await appConn;
  return { client, down, up, app, result };
}

function collect(s: Socket): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      text += d;
    });
    s.once('end', () => resolve(text));
  });
}

t.test('half-close: client FIN reaches the app, the app keeps sending afterwards', async (t) => {
  const r = await rig(t);
  const appGot = collect(r.app);
  r.client.end('hello');
  t.equal(await appGot, 'hello', 'app read the request and then EOF');
  t.notOk(r.app.destroyed, 'app side still open for writing after the client FIN');
  const clientGot = collect(r.client);
  r.app.write('world, ');
  await new Promise((res) => setTimeout(res, 50));
  r.app.end('after your FIN');
  t.equal(await clientGot, 'world, after your FIN', 'client received everything sent after its FIN');
  const res = await r.result;
  t.equal(res.reason, 'complete');
  t.equal(res.bytesAtoB, 5);
  t.equal(res.bytesBtoA, 'world, after your FIN'.length);
});

t.test('reset by the app propagates to the client as a reset', async (t) => {
  const r = await rig(t);
  r.app.once('data', () => r.app.resetAndDestroy());
  const err = once(r.client, 'error');
  r.client.write('x');
  const [e] = (await err) as [NodeJS.ErrnoException];
  t.equal(e.code, 'ECONNRESET', 'client saw ECONNRESET, not a clean EOF');
  const res = await r.result;
  t.equal(res.reason, 'reset');
  t.equal(res.resetBy, 'b');
});

t.test('reset by the client propagates to the app as a reset', async (t) => {
  const r = await rig(t);
  let sawEnd = false;
  r.app.on('end', () => {
    sawEnd = true;
  });
  const err = once(r.app, 'error');
  r.app.resume();
  r.client.write('x');
  await new Promise((res) => setTimeout(res, 20));
  r.client.resetAndDestroy();
  const [e] = (await err) as [NodeJS.ErrnoException];
  t.equal(e.code, 'ECONNRESET');
  t.notOk(sawEnd, 'no clean EOF before the reset');
  const res = await r.result;
  t.equal(res.reason, 'reset');
  t.equal(res.resetBy, 'a');
});

t.test('idle timeout closes both sides', async (t) => {
  const r = await rig(t, 150);
  const started = Date.now();
  const res = await r.result;
  t.equal(res.reason, 'idle-timeout');
  t.ok(Date.now() - started >= 100, 'not before the timeout');
  if (!r.client.closed) await once(r.client, 'close');
  t.ok(r.client.destroyed, 'client connection closed by the proxy');
});

t.test('traffic keeps the idle timer from firing', async (t) => {
  const r = await rig(t, 200);
  r.app.pipe(r.app);
  let echoed = 0;
  r.client.on('data', (d: Buffer) => {
    echoed += d.length;
  });
  for (let i = 0; i < 6; i++) {
    r.client.write('ping');
    await new Promise((res) => setTimeout(res, 80));
  }
  t.equal(echoed, 24, 'all pings echoed across 480 ms with a 200 ms idle timeout');
  t.notOk(r.client.destroyed);
  r.client.end();
  const res = await r.result;
  t.equal(res.reason, 'complete');
});

t.test('backpressure: a reader that stops reading stalls the writer, the proxy does not buffer', async (t) => {
  const r = await rig(t);
  r.app.pause();
  const chunk = Buffer.alloc(64 * 1024, 7);
  let written = 0;
  const deadline = Date.now() + 3_000;
  // Write until the client's own buffer holds 8 MiB (the pipe stopped taking data) or time runs out.
  while (r.client.writableLength < 8 * 1024 * 1024 && Date.now() < deadline) {
    r.client.write(chunk);
    written += chunk.length;
    if (written % (1024 * 1024) === 0) await new Promise((res) => setImmediate(res));
  }
  await new Promise((res) => setTimeout(res, 200));
  const proxyBuffered = r.down.readableLength + r.up.writableLength;
  t.ok(r.client.writableLength >= 4 * 1024 * 1024, `writer stalled with ${r.client.writableLength} bytes queued at the client`);
  t.ok(proxyBuffered < 2 * 1024 * 1024, `proxy holds only ${proxyBuffered} bytes in user space`);
  t.ok(r.down.isPaused(), 'proxy paused reading from the client');
  // Resume: everything arrives.
  let got = 0;
  r.app.on('data', (d: Buffer) => {
    got += d.length;
  });
  r.app.resume();
  r.client.end();
  await once(r.app, 'end');
  t.equal(got, written, 'every byte delivered once the reader resumed');
});

t.test('in-memory duplexes: counters, half-close and destroy propagation', async (t) => {
  const [a1, a2] = duplexPair();
  const [b1, b2] = duplexPair();
  let result: PipeResult | undefined;
  const h = pipeBidirectional(a2, b1, {
    onDone: (r) => {
      result = r;
    },
  });
  const got: Buffer[] = [];
  b2.on('data', (d: Buffer) => got.push(d));
  a1.write('abc');
  a1.write('def');
  await new Promise((res) => setImmediate(res));
  t.equal(h.bytesAtoB, 6, 'live counter');
  t.equal(Buffer.concat(got).toString(), 'abcdef');
  b2.on('error', () => {});
  a1.on('error', () => {});
  // duplexPair passes a destroy to its twin only when it carries an error.
  a1.destroy(new Error('peer vanished'));
  if (!b2.closed) await once(b2, 'close');
  t.ok(b2.destroyed, 'far side destroyed after the near side vanished');
  t.notOk(b2.readableEnded, 'without a clean EOF: its reader sees an abort, not an end');
  await new Promise((res) => setImmediate(res));
  t.equal(result?.reason, 'reset');
});

t.test('a side that ended before the pipe started still passes its FIN on (found by the byte-path property test)', async (t) => {
  // A client that connects and sends FIN with no byte while the upstream is being opened:
  // its readable side has ended, and 'end' will not fire again for the pipe.
  const [client, down] = duplexPair();
  const [up, app] = duplexPair();
  down.on('data', () => {});
  client.end();
  await once(down, 'end');
  t.ok(down.readableEnded, 'the downstream side has already ended');
  const done = new Promise<PipeResult>((resolve) => pipeBidirectional(down, up, { onDone: resolve }));
  app.resume();
  await once(app, 'end');
  t.pass('the app saw the FIN');
  app.end();
  client.resume();
  await once(client, 'end');
  const r = await done;
  t.equal(r.reason, 'complete');
  t.equal(r.bytesAtoB, 0);
});
