/**
 * Header hygiene: hop-by-hop fields and the agents' reserved skein-* fields never cross the
 * proxy, in either direction, whatever their case; end-to-end fields keep order, case and
 * repeats.
 */
import fc from 'fast-check';
import t from 'tap';
import { endToEndH2Headers, endToEndRawHeaders } from '../../../../src/proxy/http/headers.js';

t.test('raw (HTTP/1) headers: hop-by-hop, fields named by Connection, and skein-* removed', async (t) => {
  const raw = [
    'Host', 'a', 'Connection', 'close, X-Hop', 'X-Hop', '1', 'Keep-Alive', 'timeout=5', 'TE', 'trailers, deflate',
    'Skein-Dst', '10.0.0.9:80', 'skein-proto', 'http1', 'SKEIN-Anything', 'x', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2', 'X-Skein', 'kept',
  ];
  t.same(endToEndRawHeaders(raw), ['Host', 'a', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2', 'X-Skein', 'kept']);
  t.same(endToEndRawHeaders(raw, { keepTeTrailers: true }), ['Host', 'a', 'TE', 'trailers', 'Set-Cookie', 'a=1', 'Set-Cookie', 'b=2', 'X-Skein', 'kept']);
});

t.test('HTTP/2 headers: skein-* and hop-by-hop removed, te: trailers kept', async (t) => {
  t.same(
    endToEndH2Headers({ ':path': '/', 'skein-dst': '1.2.3.4:5', 'skein-proto': 'http2', te: 'trailers', upgrade: 'x', 'x-a': ['1', '2'], 'x-skein': 'k' }),
    { ':path': '/', te: 'trailers', 'x-a': ['1', '2'], 'x-skein': 'k' },
  );
});

t.test('property: no skein-* field ever survives either filter', async () => {
  const name = fc.oneof(fc.constantFrom('skein-dst', 'Skein-Proto', 'SKEIN-X', 'skein-'), fc.stringMatching(/^[a-zA-Z][a-zA-Z0-9-]{0,12}$/));
  fc.assert(
    fc.property(fc.array(fc.tuple(name, fc.stringMatching(/^[ -~]{0,20}$/)), { maxLength: 20 }), (pairs) => {
      const raw = pairs.flat();
      const out = endToEndRawHeaders(raw, { keepChunked: true, keepTeTrailers: true });
      for (let i = 0; i < out.length; i += 2) if ((out[i] as string).toLowerCase().startsWith('skein-')) return false;
      const h2: Record<string, string> = {};
      for (const [k, v] of pairs) h2[k.toLowerCase()] = v;
      return Object.keys(endToEndH2Headers(h2)).every((k) => !k.startsWith('skein-'));
    }),
    { numRuns: 300 },
  );
});
