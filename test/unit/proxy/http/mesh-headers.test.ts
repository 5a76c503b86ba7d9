import fc from 'fast-check';
import t from 'tap';
import { decodePeer, encodePeer } from '../../../../src/proxy/http/mesh-headers.js';

t.test('skein-peer: round trip, and anything else is refused without throwing', async (t) => {
  const p = { workload: 'web-frontend', app: 'web', version: 'v1.2.3' };
  t.same(decodePeer(encodePeer(p)), p);
  t.same(decodePeer(encodePeer({ workload: 'w', app: '', version: '' })), { workload: 'w', app: '', version: '' }, 'empty labels');
  for (const bad of [undefined, ['a;b;c'], '', 'a;b', 'a;b;c;d', ';app;v', 'a%2Fb;x;y', 'a;%E0%A4%A;y', `${'x'.repeat(300)};a;b`, 'spaces here;a;b']) {
    t.equal(decodePeer(bad as string), undefined, `refused: ${JSON.stringify(bad)?.slice(0, 40)}`);
  }
  fc.assert(
    fc.property(fc.string({ maxLength: 300 }), (s) => {
      const d = decodePeer(s);
      return d === undefined || (d.workload.length > 0 && /^[A-Za-z0-9._-]*$/.test(d.workload + d.app + d.version));
    }),
    { numRuns: 2000 },
  );
});
