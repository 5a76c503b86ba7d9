/**
 * NetnsConnector without root: the socket factory and the fd-to-socket step are substituted
 * (a plain unconnected net.Socket, or one whose connect never completes, as towards an address
 * that drops SYNs); the connect logic is the production one.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import t from 'tap';
import { NetnsConnectCode, NetnsConnector } from '../../../src/capture/netns-connect.js';

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
  await t.rejects(c.connect('/run/netns/pod-a', '127.0.0.1', 1), { code: NetnsConnectCode.Failed }, 'refused port: coded failure');
  await t.rejects(c.connect('/run/netns/pod-a', 'not-an-ip', 80), { code: NetnsConnectCode.Failed });
});

t.test('a silent destination: timeout, abort at once, and a cap per netns', async (t) => {
  const made: SilentSocket[] = [];
  const c = new NetnsConnector(async () => 3, {
    maxConnectsPerNetns: 4,
    timeoutMs: 150,
    socketFromFd: () => {
      const s = new SilentSocket();
      made.push(s);
      return s as unknown as net.Socket;
    },
  });
  const started = performance.now();
  await t.rejects(c.connect('/run/netns/pod-a', '10.0.0.9', 80), { code: NetnsConnectCode.Timeout }, 'times out');
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

  // Four connects in progress for pod A: the fifth is refused at once; pod B is unaffected.
  const hanging = [1, 2, 3, 4].map(() => c.connect('/run/netns/pod-a', '10.0.0.9', 80, { timeoutMs: 300 }).catch((e) => e));
  await new Promise((r) => setImmediate(r));
  t.equal(c.connecting('/run/netns/pod-a'), 4);
  await t.rejects(c.connect('/run/netns/pod-a', '10.0.0.9', 80), { code: NetnsConnectCode.TooManyConnects }, 'over the cap: refused');
  const other = c.connect('/run/netns/pod-b', '10.0.0.9', 80, { timeoutMs: 300 }).catch((e) => e);
  await new Promise((r) => setImmediate(r));
  t.equal(c.connecting('/run/netns/pod-b'), 1, 'another pod has its own allowance');
  for (const e of await Promise.all([...hanging, other])) t.match(e, { code: NetnsConnectCode.Timeout });
  t.equal(c.connecting('/run/netns/pod-a'), 0, 'the allowance comes back');
  await t.rejects(c.connect('/run/netns/pod-a', '10.0.0.9', 80, { signal: AbortSignal.abort() }), { name: 'AbortError' }, 'already aborted: never starts');
});
