/**
 * NetnsConnector without root: the socket factory and the fd-to-socket step are substituted
 * (a plain unconnected net.Socket, or one whose connect never completes, as towards an address
 * that drops SYNs); the connect logic is the production one.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import t from 'tap';
import { CaptureCode } from '../../../src/capture/codes.js';
import { NetnsConnector } from '../../../src/capture/netns-connect.js';

/** A socket whose SYNs vanish: connect() never completes; records whether it was destroyed. */
class SilentSocket extends EventEmitter {
  destroyed = false;
  connect(): this {
    return this;
  }
  destroy(): this {
    this.destroyed = true;
    return this;
  }
}

t.test('connects from the socket the factory made; the cap counts connects in progress', async (t) => {
  const server = net.createServer((s) => s.end('hello\n'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  const asked: Array<[string, number]> = [];
  const c = new NetnsConnector(
    async (path, family) => {
      asked.push([path, family]);
      return 3;
    },
    { socketFromFd: () => new net.Socket() },
  );
  const s = await c.connect('/run/netns/pod-a', '127.0.0.1', port);
  const line = await new Promise<string>((r) => s.once('data', (d) => r(String(d).trim())));
  s.destroy();
  t.equal(line, 'hello');
  t.same(asked, [['/run/netns/pod-a', 4]], 'socket made in the pod netns, family from the address');
  t.equal(c.connecting('/run/netns/pod-a'), 0, 'nothing left in progress');
  await t.rejects(c.connect('/run/netns/pod-a', '127.0.0.1', 1), { code: CaptureCode.ConnectFailed }, 'refused port: coded failure');
  await t.rejects(c.connect('/run/netns/pod-a', 'not-an-ip', 80), { code: CaptureCode.ConnectFailed });
});

t.test('a silent destination: timeout, abort at once, a cap per netns with a bounded queue', async (t) => {
  const made: SilentSocket[] = [];
  const c = new NetnsConnector(async () => 3, {
    maxConnectsPerNetns: 4,
    maxQueuedPerNetns: 2,
    timeoutMs: 150,
    socketFromFd: () => {
      const s = new SilentSocket();
      made.push(s);
      return s as unknown as net.Socket;
    },
  });
  const started = performance.now();
  await t.rejects(c.connect('/run/netns/pod-a', '10.0.0.9', 80), { code: CaptureCode.ConnectTimeout }, 'times out');
  t.ok(performance.now() - started < 1000, 'within the timeout');
  t.ok(made[0]?.destroyed, 'the timed-out socket is closed');

  const ac = new AbortController();
  const pending = c.connect('/run/netns/pod-a', '10.0.0.9', 80, { signal: ac.signal, timeoutMs: 60_000 });
  await new Promise((r) => setImmediate(r));
  const abortedAt = performance.now();
  ac.abort(new Error('downstream went away'));
  await t.rejects(pending, { message: 'downstream went away' }, 'rejects with the abort reason');
  t.ok(performance.now() - abortedAt < 100, 'at once');
  t.ok(made[1]?.destroyed, 'the aborted socket is closed');

  // Four in progress for pod A, two more wait, the seventh is refused at once; pod B is unaffected.
  const hanging = [1, 2, 3, 4].map(() => c.connect('/run/netns/pod-a', '10.0.0.9', 80, { timeoutMs: 300 }).catch((e) => e));
  await new Promise((r) => setImmediate(r));
  t.equal(c.connecting('/run/netns/pod-a'), 4);
  const waitingAc = new AbortController();
  const waiting = [
    c.connect('/run/netns/pod-a', '10.0.0.9', 80, { timeoutMs: 60_000, signal: waitingAc.signal }).catch((e) => e),
    c.connect('/run/netns/pod-a', '10.0.0.9', 80, { timeoutMs: 100 }).catch((e) => e),
  ];
  t.equal(c.queued('/run/netns/pod-a'), 2, 'over the cap: they wait');
  await t.rejects(c.connect('/run/netns/pod-a', '10.0.0.9', 80), { code: CaptureCode.TooManyConnects }, 'over cap and queue: refused at once');
  const other = c.connect('/run/netns/pod-b', '10.0.0.9', 80, { timeoutMs: 300 }).catch((e) => e);
  await new Promise((r) => setImmediate(r));
  t.equal(c.connecting('/run/netns/pod-b'), 1, 'another pod has its own allowance');
  t.match(await waiting[1], { code: CaptureCode.ConnectTimeout }, 'a waiter times out within its own timeout');
  waitingAc.abort(new Error('gone'));
  t.match(await waiting[0], { message: 'gone' }, 'a waiter can be aborted');
  for (const e of await Promise.all([...hanging, other])) t.match(e, { code: CaptureCode.ConnectTimeout });
  t.equal(c.connecting('/run/netns/pod-a'), 0, 'the allowance comes back');
  t.equal(c.queued('/run/netns/pod-a'), 0);
  await t.rejects(c.connect('/run/netns/pod-a', '10.0.0.9', 80, { signal: AbortSignal.abort() }), { name: 'AbortError' }, 'already aborted: never starts');
  // Every failure counted by its code (1 + 4 + 1 + 1 timeouts, 1 refusal); aborts are the caller's, not counted.
  t.same(c.stats(), { inProgress: 0, queued: 0, refusals: { [CaptureCode.ConnectTimeout]: 7, [CaptureCode.TooManyConnects]: 1 } }, 'stats by code');
});

t.test('defaults: 64 connects in progress per pod, 1024 waiting', async (t) => {
  const c = new NetnsConnector(async () => 3, { timeoutMs: 200, socketFromFd: () => new SilentSocket() as unknown as net.Socket });
  const all = Array.from({ length: 64 + 1024 + 1 }, () => c.connect('/run/netns/pod-a', '10.0.0.9', 80).catch((e: { code?: string }) => e.code));
  await new Promise((r) => setImmediate(r));
  t.same(c.stats().inProgress, 64);
  t.same(c.stats().queued, 1024);
  const codes = await Promise.all(all);
  t.equal(codes.filter((x) => x === CaptureCode.TooManyConnects).length, 1, 'the one beyond is refused');
  t.equal(codes.filter((x) => x === CaptureCode.ConnectTimeout).length, 64 + 1024, 'the rest time out (one deadline, queue wait included)');
});

t.test('a waiter takes the slot a finished connect frees', async (t) => {
  const server = net.createServer((s) => s.end('hi\n'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  let n = 0;
  const c = new NetnsConnector(async () => 3, {
    maxConnectsPerNetns: 1,
    socketFromFd: () => (n++ === 0 ? (new SilentSocket() as unknown as net.Socket) : new net.Socket()),
  });
  const first = c.connect('/run/netns/pod-a', '10.0.0.9', 80, { timeoutMs: 200 }).catch((e) => e);
  const second = c.connect('/run/netns/pod-a', '127.0.0.1', port, { timeoutMs: 2000 });
  t.equal(c.queued('/run/netns/pod-a'), 1);
  t.match(await first, { code: CaptureCode.ConnectTimeout });
  const s = await second;
  t.equal(await new Promise<string>((r) => s.once('data', (d) => r(String(d).trim()))), 'hi', 'the waiter connected once the slot was free');
  s.destroy();
});
