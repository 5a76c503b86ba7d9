/**
 * LoadShare: each pod's share of a contended agent. The controller is stepped by hand with a
 * given utilization and lag; pausing is checked on real loopback sockets (a stopped socket
 * delivers nothing until it is read again).
 */
import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';
import t from 'tap';
import { LoadShare, type PodLoad } from '../../../src/proxy/load-share.js';

const BUSY = { utilization: 0.9, lagMs: 0 };
const CALM = { utilization: 0.1, lagMs: 0 };

/** A loopback server and `n` client connections; the server side of each is returned in order. */
async function socketPairs(t: Tap.Test, n: number): Promise<Array<{ server: Socket; client: Socket }>> {
  const accepted: Socket[] = [];
  const server: Server = createServer((s) => accepted.push(s));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  const pairs: Array<{ server: Socket; client: Socket }> = [];
  for (let i = 0; i < n; i++) {
    const client = connect(port, '127.0.0.1');
    await once(client, 'connect');
    while (accepted.length <= i) await new Promise((r) => setImmediate(r));
    pairs.push({ server: accepted[i]!, client });
  }
  t.teardown(() => {
    for (const p of pairs) {
      p.client.destroy();
      p.server.destroy();
    }
    server.close();
  });
  return pairs;
}

/** Five contended intervals in which `heavy` does 100 units and `light` one: `heavy` is slowed. */
function slowHeavy(share: LoadShare, heavy: PodLoad, light: PodLoad): void {
  for (let i = 0; i < 5; i++) {
    for (let r = 0; r < 100; r++) heavy.chargeRequest(0, undefined);
    light.chargeRequest(0, undefined);
    share.tick(BUSY);
  }
}

/** Whether `s` delivers what its peer writes within `ms`. */
async function delivers(s: Socket, peer: Socket, ms = 100): Promise<boolean> {
  let got = false;
  const on = () => {
    got = true;
  };
  s.on('data', on);
  peer.write('x');
  await new Promise((r) => setTimeout(r, ms));
  s.off('data', on);
  return got;
}

t.test('one pod alone is never slowed, however busy the loop', async (t) => {
  const share = new LoadShare({ intervalMs: 1e9 });
  t.teardown(() => share.stop());
  const heavy = share.pod('a/heavy');
  for (let i = 0; i < 20; i++) {
    for (let r = 0; r < 500; r++) heavy.chargeRequest(100, undefined);
    share.tick(BUSY);
  }
  t.equal(heavy.allowance, Number.POSITIVE_INFINITY);
  t.equal(heavy.pauses, 0);
  t.same(share.stats().pods, {});
});

t.test('contended: the pod above the mean is slowed and paused, the light one never', async (t) => {
  const share = new LoadShare({ intervalMs: 1e9 });
  t.teardown(() => share.stop());
  const [h, l] = await socketPairs(t, 2);
  const heavy = share.pod('a/heavy');
  const light = share.pod('a/light');
  for (let i = 0; i < 5; i++) {
    for (let r = 0; r < 200; r++) heavy.chargeRequest(0, h!.server);
    light.chargeRequest(0, l!.server);
    share.tick(BUSY);
  }
  t.ok(heavy.allowance < 200, `heavy slowed to ${heavy.allowance.toFixed(1)} units an interval`);
  t.equal(light.allowance, Number.POSITIVE_INFINITY, 'light never slowed');
  // Over its allowance within the interval: paused, and the socket that brought the request stops being read.
  for (let r = 0; r <= heavy.allowance + 1; r++) heavy.chargeRequest(0, h!.server);
  t.ok(heavy.paused, 'heavy paused once over its allowance');
  t.notOk(await delivers(h!.server, h!.client), "the paused pod's socket is not read");
  light.chargeRequest(0, l!.server);
  t.ok(await delivers(l!.server, l!.client), "the light pod's socket still is");
  // Its debt paid off by the next intervals' allowance, it is read again (what waited in the kernel arrives).
  let ticks = 0;
  const got = new Promise<void>((resolve) => h!.server.once('data', () => resolve()));
  while (heavy.paused && ticks < 100) {
    share.tick({ utilization: 0.4, lagMs: 0 });
    ticks++;
  }
  t.notOk(heavy.paused, `resumed after ${ticks} interval(s)`);
  await got;
  t.ok(share.stats().pods['a/heavy']!.pauses >= 1, 'pauses counted');
  t.notOk(share.stats().pods['a/light'], 'the light pod has no entry');
});

t.test('a timer firing late counts as contended too', async (t) => {
  const share = new LoadShare({ intervalMs: 1e9, maxLagMs: 5 });
  t.teardown(() => share.stop());
  const heavy = share.pod('a/heavy');
  const light = share.pod('a/light');
  for (let i = 0; i < 5; i++) {
    for (let r = 0; r < 100; r++) heavy.chargeRequest(0, undefined);
    light.chargeRequest(0, undefined);
    share.tick({ utilization: 0.2, lagMs: 20 });
  }
  t.ok(heavy.allowance < 100);
});

t.test('new connections of a paused pod wait, in order, and are served at its resume; beyond the queue they are refused', async (t) => {
  const share = new LoadShare({ intervalMs: 1e9, maxQueued: 2 });
  t.teardown(() => share.stop());
  const pairs = await socketPairs(t, 4);
  const heavy = share.pod('a/heavy');
  const light = share.pod('a/light');
  slowHeavy(share, heavy, light);
  while (!heavy.paused) heavy.chargeRequest(0, undefined);
  const served: number[] = [];
  t.ok(heavy.admit(pairs[0]!.server, () => served.push(0)));
  t.ok(heavy.admit(pairs[1]!.server, () => served.push(1)));
  t.notOk(heavy.admit(pairs[2]!.server, () => served.push(2)), 'the third is refused: the queue holds 2');
  t.ok(heavy.refuseNew(), 'and the listener is told to refuse the next before making a Socket of it');
  t.notOk(light.refuseNew(), 'not another pod');
  t.same(served, [], 'nothing served while paused');
  t.notOk(await delivers(pairs[0]!.server, pairs[0]!.client), 'a waiting connection is not read');
  t.equal(share.stats().pods['a/heavy']!.refused, 2);
  for (let i = 0; i < 100 && heavy.paused; i++) share.tick({ utilization: 0.4, lagMs: 0 });
  t.same(served, [0, 1], 'served oldest first at the resume');
  // A connection of a pod that is not paused is served at once.
  t.ok(light.admit(pairs[3]!.server, () => served.push(3)));
  t.same(served, [0, 1, 3]);
});

t.test('calm: a slowed pod gets more, then is lifted when it no longer uses its allowance or is alone', async (t) => {
  const share = new LoadShare({ intervalMs: 1e9 });
  t.teardown(() => share.stop());
  const heavy = share.pod('a/heavy');
  const light = share.pod('a/light');
  slowHeavy(share, heavy, light);
  for (let i = 0; i < 20 && heavy.paused; i++) share.tick({ utilization: 0.4, lagMs: 0 }); // neither busy nor calm: the debt is paid
  t.notOk(heavy.paused);
  const slowed = heavy.allowance;
  for (let r = 0; r < Math.floor(slowed * 0.6); r++) heavy.chargeRequest(0, undefined); // uses most of it
  light.chargeRequest(0, undefined);
  share.tick(CALM);
  t.ok(heavy.allowance > slowed, `grew ${slowed.toFixed(1)} -> ${heavy.allowance.toFixed(1)}`);
  light.chargeRequest(0, undefined);
  share.tick(CALM); // heavy did nothing this interval: lifted
  t.equal(heavy.allowance, Number.POSITIVE_INFINITY);

  const share2 = new LoadShare({ intervalMs: 1e9 });
  t.teardown(() => share2.stop());
  const a = share2.pod('a/a');
  const b = share2.pod('a/b');
  slowHeavy(share2, a, b);
  t.ok(a.allowance < 100);
  b.close(); // the other pod left: nobody to be fair to
  for (let r = 0; r < 100; r++) a.chargeRequest(0, undefined);
  share2.tick(BUSY);
  t.equal(a.allowance, Number.POSITIVE_INFINITY, 'alone again: lifted even while busy');
});

t.test('busy 1 turns the share off; close() closes what waits and reads what was stopped', async (t) => {
  const off = new LoadShare({ busy: 1 });
  t.teardown(() => off.stop());
  const p = off.pod('a/p');
  for (let r = 0; r < 1000; r++) p.chargeRequest(100, undefined);
  t.notOk(p.paused);

  const share = new LoadShare({ intervalMs: 1e9 });
  t.teardown(() => share.stop());
  const pairs = await socketPairs(t, 2);
  const heavy = share.pod('a/heavy');
  const light = share.pod('a/light');
  slowHeavy(share, heavy, light);
  while (!heavy.paused) heavy.chargeRequest(0, pairs[0]!.server);
  heavy.chargeRequest(0, pairs[0]!.server); // stopped
  t.ok(heavy.admit(pairs[1]!.server, () => t.fail('never served')));
  const closed = once(pairs[1]!.client, 'close');
  heavy.close();
  await closed;
  t.pass('the waiting connection was closed');
  t.ok(await delivers(pairs[0]!.server, pairs[0]!.client), 'the stopped one is read again');
});

t.test("out of debt, a pod's stopped sockets are read again only as far as its credit goes, oldest first", async (t) => {
  const share = new LoadShare({ intervalMs: 1e9 });
  t.teardown(() => share.stop());
  const pairs = await socketPairs(t, 10);
  const heavy = share.pod('a/heavy');
  const light = share.pod('a/light');
  slowHeavy(share, heavy, light);
  while (!heavy.paused) heavy.chargeRequest(0, undefined);
  for (const p of pairs) heavy.chargeRequest(0, p.server); // each brought a request while paused: stopped
  // Hold the allowance at 3 units (one per request here): each interval reads 3 sockets again.
  heavy.setAllowance(3);
  heavy.credit = 0;
  share.tick({ utilization: 0.4, lagMs: 0 });
  const reading = await Promise.all(pairs.map((p) => delivers(p.server, p.client, 50)));
  t.same(reading, [true, true, true, false, false, false, false, false, false, false], 'the three stopped first are read again, the rest wait');
});
