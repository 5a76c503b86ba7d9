import t from 'tap';
import { parseB3Multi, parseB3Single, parseTraceparent, readParent, setHeader, traceIdOf } from '../../../src/telemetry/tracing.js';

const TR = '4bf92f3577b34da6a3ce929d0e0e4736';
const SP = '00f067aa0ba902b7';

t.test('traceparent', async (t) => {
  t.same(parseTraceparent(`00-${TR}-${SP}-01`), { traceId: TR, spanId: SP, sampled: true });
  t.same(parseTraceparent(`00-${TR}-${SP}-00`)?.sampled, false);
  t.same(parseTraceparent(`00-${TR}-${SP}-03`)?.sampled, true, 'other flag bits ignored');
  t.equal(parseTraceparent(`00-${TR}-${SP}-01-extra`), undefined, 'version 00 has exactly 55 characters');
  t.same(parseTraceparent(`01-${TR}-${SP}-01-extra`)?.traceId, TR, 'a later version is read as 00 says');
  t.equal(parseTraceparent(`ff-${TR}-${SP}-01`), undefined, 'version ff is invalid');
  t.equal(parseTraceparent(`00-${'0'.repeat(32)}-${SP}-01`), undefined, 'zero trace id');
  t.equal(parseTraceparent(`00-${TR}-${'0'.repeat(16)}-01`), undefined, 'zero span id');
  t.equal(parseTraceparent(`00-${TR.toUpperCase()}-${SP}-01`), undefined, 'upper case is invalid');
  t.equal(parseTraceparent('garbage'), undefined);
});

t.test('B3', async (t) => {
  t.same(parseB3Single(`${TR}-${SP}-1`), { traceId: TR, spanId: SP, sampled: true, b3: 'single' });
  t.same(parseB3Single(`${TR}-${SP}-0`)?.sampled, false);
  t.same(parseB3Single(`${TR}-${SP}`)?.sampled, true, 'no sampling state: the parent decides (sampled)');
  t.same(parseB3Single(`${SP}-${SP}-d`)?.traceId, `${'0'.repeat(16)}${SP}`, '64-bit trace id widened');
  t.equal(parseB3Single('0'), undefined, 'a bare deny has no ids');
  t.same(parseB3Multi({ 'x-b3-traceid': TR, 'x-b3-spanid': SP, 'x-b3-sampled': '0' }), { traceId: TR, spanId: SP, sampled: false, b3: 'multi' });
  t.same(parseB3Multi({ 'x-b3-traceid': TR, 'x-b3-spanid': SP, 'x-b3-flags': '1' })?.sampled, true, 'debug flag samples');
  t.equal(parseB3Multi({ 'x-b3-traceid': TR }), undefined);
});

t.test('readParent: traceparent first, then b3, then x-b3-*; tracestate with traceparent', async (t) => {
  t.same(readParent({ traceparent: `00-${TR}-${SP}-01`, tracestate: 'a=1', b3: `${SP}${SP}-${SP}-1` }), { traceId: TR, spanId: SP, sampled: true, tracestate: 'a=1' });
  t.same(readParent({ traceparent: 'bad', b3: `${TR}-${SP}-1` })?.b3, 'single', 'an invalid traceparent falls back to B3');
  t.equal(readParent({}), undefined);
  t.equal(traceIdOf({ traceparent: `00-${TR}-${SP}-00` }), TR);
  t.equal(traceIdOf({ 'x-b3-traceid': TR, 'x-b3-spanid': SP }), TR);
});

t.test('setHeader: the parsed view and the raw list (every value replaced once)', async (t) => {
  const h: Record<string, string> = { traceparent: 'old' };
  const raw = ['Host', 'x', 'TraceParent', 'old', 'traceparent', 'old2'];
  setHeader(h, raw, 'traceparent', 'new');
  setHeader(h, raw, 'x-request-id', 'r');
  t.same(raw, ['Host', 'x', 'TraceParent', 'new', 'x-request-id', 'r']);
  t.same(h, { traceparent: 'new', 'x-request-id': 'r' });
});
