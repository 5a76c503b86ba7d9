/**
 * Property tests of protocol detection (issue 15: every parser skein owns): any bytes are
 * classified or wait for more, never throw; what a client really sends is recognised.
 */
import { METHODS } from 'node:http';
import fc from 'fast-check';
import t from 'tap';
import { classify, HTTP2_PREFACE } from '../../../../src/proxy/detect/sniff.js';

const target = fc.stringMatching(/^\/[\x21-\x7e]{0,60}$/);

t.test('any bytes: a protocol or "need more", never an exception; more bytes never turn a verdict into "need more"', async () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), fc.uint8Array({ maxLength: 50 }), (a, more) => {
      const first = classify(Buffer.from(a));
      if (first && !['http1', 'http2', 'tcp'].includes(first.protocol)) return false;
      const longer = classify(Buffer.concat([Buffer.from(a), Buffer.from(more)]));
      return first === undefined || longer !== undefined;
    }),
    { numRuns: 5000 },
  );
});

t.test('every HTTP/1.x request line is HTTP/1; the HTTP/2 preface is HTTP/2, whatever follows', async () => {
  fc.assert(
    fc.property(fc.constantFrom(...METHODS), target, fc.constantFrom('1.0', '1.1'), fc.uint8Array({ maxLength: 64 }), (m, p, v, rest) => {
      const r = classify(Buffer.concat([Buffer.from(`${m} ${p} HTTP/${v}\r\n`, 'latin1'), Buffer.from(rest)]));
      return r?.protocol === 'http1';
    }),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (rest) => classify(Buffer.concat([HTTP2_PREFACE, Buffer.from(rest)]))?.protocol === 'http2'),
  );
});

t.test('a request line longer than the limit without its end is opaque TCP, not a wait forever', async () => {
  fc.assert(
    fc.property(fc.integer({ min: 64, max: 2048 }), (limit) => classify(Buffer.from(`GET /${'a'.repeat(limit)}`, 'latin1'), limit)?.protocol === 'tcp'),
  );
});
