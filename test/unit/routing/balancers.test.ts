import fc from 'fast-check';
import t from 'tap';
import type { Endpoint } from '../../../src/config/model.js';
import { fnv1a64, hash32 } from '../../../src/routing/hash.js';
import { ConsistentHash, createLoadBalancer, maglevTable, PeakEwma } from '../../../src/routing/load-balancer.js';

const ep = (ip: string): Endpoint => ({ ip, ready: true, ports: { http: 8080 }, meshEnabled: true });
const eps = (n: number, from = 1): Endpoint[] => Array.from({ length: n }, (_, i) => ep(`10.0.${Math.floor((i + from) / 250)}.${(i + from) % 250}`));
const seeded = (seed: number) => () => {
  seed = (seed * 16807) % 2147483647;
  return seed / 2147483647;
};

t.test('FNV-1a 64 matches the reference vectors', async (t) => {
  const hex = (s: string) => Array.from(fnv1a64(s), (w) => w.toString(16).padStart(8, '0')).join('');
  t.equal(hex(''), 'cbf29ce484222325');
  t.equal(hex('a'), 'af63dc4c8601ec8c');
  t.equal(hex('foobar'), '85944171f73967e8');
  t.ok(hash32('é') !== hash32('e'), 'non-Latin-1 code units feed both bytes');
});

t.test('createLoadBalancer maps every algorithm', async (t) => {
  for (const a of ['ROUND_ROBIN', 'LEAST_REQUEST', 'PEAK_EWMA', 'CONSISTENT_HASH'] as const) t.equal(createLoadBalancer(a).algorithm, a);
});

t.test('peak EWMA: slow endpoints lose at once, recover with decay; in-flight counts; new endpoints get a default', async (t) => {
  let now = 0;
  const lb = new PeakEwma({ now: () => now, random: seeded(7), decayMs: 10_000, defaultLatencyMs: 50 });
  const [a, b, c] = eps(3);
  t.equal(lb.latency(a!.ip), 50, 'unknown endpoint: the default estimate');
  lb.start(a!);
  lb.end(a!, 1000);
  t.equal(lb.latency(a!.ip), 1000, 'a peak replaces the estimate immediately');
  lb.start(b!);
  lb.end(b!, 10);
  const counts = new Map<string, number>();
  for (let i = 0; i < 300; i++) {
    const p = lb.pick([a!, b!, c!])!;
    counts.set(p.ip, (counts.get(p.ip) ?? 0) + 1);
  }
  t.equal(counts.get(a!.ip) ?? 0, 0, 'the slow endpoint never wins a pair');
  now = 1000;
  lb.start(a!);
  lb.end(a!, 100);
  t.ok(lb.latency(a!.ip) > 100 && lb.latency(a!.ip) < 1000, `a faster answer moves the estimate by the decay (${lb.latency(a!.ip).toFixed(1)})`);
  now = 100_000;
  t.ok(lb.latency(a!.ip) < 1, 'idle estimates decay, so a once-slow endpoint gets tried again');
  const idle = lb.cost(b!.ip);
  for (let i = 0; i < 5; i++) lb.start(b!);
  t.equal(lb.cost(b!.ip), idle * 6, 'cost = latency x (in-flight + 1)');
  t.equal(lb.inFlight(b!.ip), 5);
  lb.retain(new Set([b!.ip]));
  t.equal(lb.latency(a!.ip), 50, 'retain drops gone endpoints');
  t.equal(lb.pick([]), undefined);
  t.equal(lb.pick([c!]), c);
});

t.test('peak EWMA spreads load among equal endpoints', async (t) => {
  const lb = new PeakEwma({ now: () => 0, random: seeded(3) });
  const list = eps(4);
  const counts = new Map<string, number>();
  for (let i = 0; i < 4000; i++) {
    const p = lb.pick(list)!;
    lb.start(p);
    counts.set(p.ip, (counts.get(p.ip) ?? 0) + 1);
    if (i % 2 === 0) lb.end(p, 20);
  }
  for (const n of counts.values()) t.ok(n > 700 && n < 1300, `balanced: ${n}`);
});

t.test('Maglev: every slot filled, shares even, table cached per list', async (t) => {
  const ips = eps(7).map((e) => e.ip);
  const table = maglevTable(ips);
  const share = new Array(7).fill(0);
  for (const i of table) share[i]++;
  t.ok(table.every((i) => i >= 0 && i < 7));
  const ideal = table.length / 7;
  for (const s of share) t.ok(Math.abs(s - ideal) / ideal < 0.02, `slot share ${s} ~ ${ideal.toFixed(0)}`);
  const lb = new ConsistentHash(0);
  const list = eps(3);
  t.equal(lb.tableFor(list), lb.tableFor(list), 'same list: same table');
  t.equal(lb.tableFor([...list]), lb.tableFor(list), 'same members: reused');
});

t.test('consistent hash: stable keys, 3 -> 4 moves ~25%, removal moves only the removed endpoint keys (nearly)', async (t) => {
  const lb = new ConsistentHash(0);
  const keys = Array.from({ length: 10_000 }, (_, i) => `user-${i}`);
  const three = eps(3);
  const four = [...three, ep('10.9.9.9')];
  const at = (list: Endpoint[]) => keys.map((k) => lb.pick(list, k)!.ip);
  const a = at(three);
  const again = at([...three]);
  const same = a.filter((ip, i) => ip === again[i]).length / keys.length;
  t.ok(same >= 0.99, `repeated keys hit the same endpoint: ${(same * 100).toFixed(2)}%`);
  const b = at(four);
  const moved = a.filter((ip, i) => ip !== b[i]).length / keys.length;
  t.ok(moved <= 0.4, `3 -> 4 endpoints remaps ${(moved * 100).toFixed(1)}% (ideal 25%)`);
  const movedTo = b.filter((ip, i) => ip !== a[i]);
  const toNew = movedTo.filter((ip) => ip === '10.9.9.9').length / movedTo.length;
  t.ok(toNew > 0.95, `moved keys went to the new endpoint: ${(toNew * 100).toFixed(1)}% (Maglev is near-minimal)`);
  const five = eps(5);
  const before = at(five);
  const after = at(five.filter((_, i) => i !== 2));
  const removed = five[2]!.ip;
  const collateral = before.filter((ip, i) => ip !== removed && ip !== after[i]).length / keys.length;
  t.ok(collateral < 0.05, `removal: keys of other endpoints moved ${(collateral * 100).toFixed(2)}%`);
  t.ok(before.filter((ip, i) => ip === removed && after[i] === removed).length === 0, 'keys of the removed endpoint all moved');
});

t.test('consistent hash: no key -> round robin; property: a key maps to one endpoint of the list', async (t) => {
  const lb = new ConsistentHash(0);
  const list = eps(3);
  t.same([0, 1, 2].map(() => lb.pick(list)!.ip), list.map((e) => e.ip));
  t.equal(lb.pick([], 'k'), undefined);
  fc.assert(
    fc.property(fc.string(), fc.integer({ min: 1, max: 30 }), (key, n) => {
      const l = eps(n);
      const p = lb.pick(l, key);
      return p !== undefined && l.includes(p) && lb.pick(l, key) === p;
    }),
  );
});
