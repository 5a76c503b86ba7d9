import t from 'tap';
import type { Endpoint } from '../../../src/config/model.js';
import { endpointPort, LeastRequest, RoundRobin } from '../../../src/routing/load-balancer.js';

const ep = (ip: string, ready = true): Endpoint => ({ ip, ready, ports: { http: 8080 }, meshEnabled: true, identity: 'spiffe://td/ns/a/sa/b' });

t.test('round robin cycles through the current list and survives changes', async (t) => {
  const rr = new RoundRobin(0);
  const list = [ep('10.0.0.1'), ep('10.0.0.2'), ep('10.0.0.3')];
  t.same([0, 1, 2, 3, 4, 5].map(() => rr.pick(list)?.ip), ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.1', '10.0.0.2', '10.0.0.3']);
  const shrunk = [ep('10.0.0.1'), ep('10.0.0.3')];
  const counts = new Map<string, number>();
  for (let i = 0; i < 100; i++) {
    const ip = rr.pick(shrunk)?.ip as string;
    counts.set(ip, (counts.get(ip) ?? 0) + 1);
  }
  t.same(Object.fromEntries(counts), { '10.0.0.1': 50, '10.0.0.3': 50 }, 'even after the set changed');
  t.equal(rr.pick([]), undefined);
});

t.test('least request: power of two choices prefers fewer in-flight', async (t) => {
  let seed = 1;
  const rand = (): number => {
    seed = (seed * 16807) % 2147483647;
    return seed / 2147483647;
  };
  const lr = new LeastRequest(rand);
  const a = ep('10.0.0.1');
  const b = ep('10.0.0.2');
  const c = ep('10.0.0.3');
  for (let i = 0; i < 10; i++) lr.start(a); // a is busy
  const counts = { a: 0, b: 0, c: 0 };
  for (let i = 0; i < 300; i++) {
    const p = lr.pick([a, b, c]);
    if (p === a) counts.a++;
    else if (p === b) counts.b++;
    else counts.c++;
  }
  t.equal(counts.a, 0, 'the busy endpoint never wins a pair against an idle one');
  t.ok(counts.b > 100 && counts.c > 100, `b=${counts.b} c=${counts.c}`);
  for (let i = 0; i < 10; i++) lr.end(a);
  t.equal(lr.inFlight(a.ip), 0, 'counts return to zero (and the entry is dropped)');
  t.equal(lr.pick([b]), b, 'single candidate');
  t.equal(lr.pick([]), undefined);
});

t.test('endpointPort resolves named and numeric target ports', async (t) => {
  t.equal(endpointPort(ep('1.1.1.1'), { name: 'http', port: 80, targetPort: 0 }), 8080);
  t.equal(endpointPort({ ...ep('1.1.1.1'), ports: {} }, { name: 'x', port: 80, targetPort: 9090 }), 9090);
  t.equal(endpointPort({ ...ep('1.1.1.1'), ports: {} }, { name: 'x', port: 80, targetPort: 0 }), undefined);
});
