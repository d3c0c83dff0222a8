import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { compareVersions, parseVersion, satisfies } from '../../builder/debian/version.ts';

// [a, b, expected sign of compare(a, b)], checked against dpkg --compare-versions semantics.
const TABLE: [string, string, -1 | 0 | 1][] = [
  ['1.0', '1.0', 0],
  ['1.0', '1.1', -1],
  ['1.10', '1.9', 1],
  ['1.0', '1.0-0', 0],
  ['1.0', '1.0-1', -1],
  ['0:1.0', '1.0', 0],
  ['1:0.1', '2.0', 1],
  ['1:1.35.0-4+deb12u1+b1', '1:1.35.0-4+deb12u1', 1],
  ['1.0~rc1', '1.0', -1],
  ['1.0~~', '1.0~', -1],
  ['1.0~', '1.0', -1],
  ['1.0-1~bpo12+1', '1.0-1', -1],
  ['1.0a', '1.0', 1],
  ['1.0a', '1.0.1', -1], // letters sort before other non-digits
  ['1.0+b1', '1.0', 1],
  ['1.0-a', '1.0-1', 1],
  ['01.2.3', '1.2.3', 0],
  ['6.1.119-1', '6.1.123-1', -1],
  ['6.1.192-2', '6.1.192-1', 1],
  ['2.36-9+deb12u10', '2.36-9+deb12u9', 1],
  ['252.39-1~deb12u2', '252.39-1', -1],
  ['1.2-3-4', '1.2-3-5', -1], // hyphens in upstream, revision after the last one
  ['10000000000000000000001', '10000000000000000000000', 1], // beyond Number precision
];

test('compareVersions matches the dpkg ordering table', () => {
  for (const [a, b, want] of TABLE) {
    assert.is(Math.sign(compareVersions(a, b)), want, `${a} vs ${b}`);
    assert.is(Math.sign(compareVersions(b, a)), -want || 0, `${b} vs ${a}`);
  }
});

test('sorting a list gives the Debian order', () => {
  const list = ['1.0', '1.0~rc1', '1:0.9', '1.0-1', '1.0+b1', '0.9', '1.0~~'];
  assert.equal([...list].sort(compareVersions), ['0.9', '1.0~~', '1.0~rc1', '1.0', '1.0-1', '1.0+b1', '1:0.9']);
});

test('parseVersion splits epoch, upstream and revision', () => {
  assert.equal(parseVersion('2:1.2-3-4'), { epoch: 2, upstream: '1.2-3', revision: '4' });
  assert.equal(parseVersion('1.0'), { epoch: 0, upstream: '1.0', revision: '' });
  assert.throws(() => parseVersion('a:1.0'), /epoch/);
  assert.throws(() => parseVersion(''), /invalid/);
  assert.throws(() => parseVersion('1.0 2'), /invalid/);
});

test('satisfies handles Depends relations', () => {
  assert.ok(satisfies('6.1.119-1', '=', '6.1.119-1'));
  assert.not.ok(satisfies('6.1.119-1', '=', '6.1.119-2'));
  assert.ok(satisfies('2.0', '>>', '1.9'));
  assert.not.ok(satisfies('1.9', '>>', '1.9'));
  assert.ok(satisfies('1.9', '>=', '1.9'));
  assert.ok(satisfies('1.0~rc1', '<<', '1.0'));
  assert.throws(() => satisfies('1', '!=', '1'), /relation/);
});

test.run();
