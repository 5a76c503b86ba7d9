import t from 'tap';
import { deadline, untilAborted } from '../../../src/proxy/deadline.js';

// The deadline's timer is unref'd (it must not keep an agent alive); hold the loop open here.
const keepAlive = setInterval(() => {}, 1000);
t.teardown(() => clearInterval(keepAlive));

t.test('a deadline aborts after its time, with the timeout reason', async (t) => {
  const d = deadline(20, undefined, { timeout: () => new Error('too slow') });
  t.teardown(() => d.done());
  await t.rejects(untilAborted(new Promise(() => {}), d.signal), /too slow/);
  t.ok(d.timedOut);
});

t.test("a deadline follows the caller's signal, with the caller's reason unless told otherwise", async (t) => {
  const caller = new AbortController();
  const d = deadline(10_000, caller.signal);
  t.teardown(() => d.done());
  caller.abort(new Error('caller gave up'));
  await t.rejects(untilAborted(new Promise(() => {}), d.signal), /caller gave up/);
  t.notOk(d.timedOut);
  const already = deadline(10_000, caller.signal, { aborted: () => new Error('mapped') });
  t.teardown(() => already.done());
  t.ok(already.signal.aborted, 'an already aborted caller aborts at once');
  t.match(String(already.signal.reason), /mapped/);
});

t.test('a result arriving after the abort is disposed of, not leaked', async (t) => {
  const ac = new AbortController();
  let resolveLate!: (v: string) => void;
  const late = new Promise<string>((r) => {
    resolveLate = r;
  });
  const disposed: string[] = [];
  const raced = untilAborted(late, ac.signal, (v) => disposed.push(v));
  ac.abort(new Error('gone'));
  await t.rejects(raced, /gone/);
  resolveLate('socket');
  await late;
  await new Promise((r) => setImmediate(r));
  t.same(disposed, ['socket']);
  t.equal(await untilAborted(Promise.resolve(7), new AbortController().signal), 7, 'in time: the result');
});
