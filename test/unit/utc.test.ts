// isoUtc against Date#toISOString, which it stands in for on the way to ready.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isoUtc, isoUtcS } from '../../init/utc.ts';

test('the same text as Date#toISOString on edges: epoch, leap days, century rules, year ends, the last millisecond', () => {
  const at = ['1970-01-01T00:00:00.000Z', '1972-02-29T23:59:59.999Z', '1999-12-31T23:59:59.999Z', '2000-02-29T12:00:00.000Z',
    '2000-03-01T00:00:00.000Z', '2038-01-19T03:14:08.000Z', '2100-02-28T23:59:59.999Z', '2100-03-01T00:00:00.000Z',
    '2400-02-29T00:00:00.001Z', '9999-12-31T23:59:59.999Z'];
  for (const s of at) assert.is(isoUtc(Date.parse(s)), s);
});

test('the same text as Date#toISOString for 200,000 instants from 1970 to 9999, and for fractions of a millisecond', () => {
  let x = 0x2545f491;
  const rnd = () => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return (x >>> 0) / 2 ** 32; };
  for (let i = 0; i < 200_000; i++) {
    const ms = Math.floor(rnd() * 253402300800000);
    const want = new Date(ms).toISOString();
    if (isoUtc(ms) !== want) assert.is(isoUtc(ms), want, `at ${ms}`);
  }
  assert.is(isoUtc(1796144189123.9), new Date(1796144189123.9).toISOString());
});

test('outside 1970 to 9999 it is Date’s own text, and an invalid time throws as Date does', () => {
  for (const ms of [-1, -86400000 * 366, 253402300800000, 8.64e15]) assert.is(isoUtc(ms), new Date(ms).toISOString());
  assert.throws(() => isoUtc(NaN), RangeError);
  assert.throws(() => isoUtc(Infinity), RangeError);
});

test('whole seconds without the milliseconds', () => {
  assert.is(isoUtcS(1796144189), '2026-12-01T16:56:29Z');
  assert.is(isoUtcS(1796144189.5), '2026-12-01T16:56:29.500Z');
});

test.run();
