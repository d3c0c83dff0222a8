import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { pickRelease, rolloutThrottle, wariness, type Manifest, type Release, type Rollout } from '../../channels/manifest.ts';

const art = (v: string) => ({ x86_64: { root: { url: `${v}/x86_64/fixture-root.img`, size: 1, sha256: 'a'.repeat(64) } } });
const rel = (version: string, extra: Partial<Release> = {}): Release => ({ version, artifacts: art(version), ...extra });
const man = (...releases: Release[]): Manifest => ({
  schema: 'kiln-channel/1', channel: 'stable', serial: 1, issued: '2030-01-01T00:00:00Z', expires: '2031-01-01T00:00:00Z', releases,
});
const NOW = Date.parse('2030-06-01T00:00:00Z');
const base = { current: '1.0.0', arch: 'x86_64', wariness: 0.5, now: NOW };
const ids = Array.from({ length: 10_000 }, (_, i) => `fixture-machine-${i.toString(16).padStart(32, '0')}`);

test('wariness is stable, in [0,1), and spread evenly', () => {
  assert.is(wariness('abc'), wariness('abc'));
  assert.is(wariness('ABC\n'), wariness('abc'), 'machine-id file formatting does not matter');
  assert.is.not(wariness('abc'), wariness('abd'));
  const w = ids.map(wariness);
  assert.ok(w.every((x) => x >= 0 && x < 1));
  const buckets = new Array(10).fill(0);
  for (const x of w) buckets[Math.floor(x * 10)]++;
  for (const b of buckets) assert.ok(b > 850 && b < 1150, `bucket of ${b} out of 10000 is uneven`);
});

test('throttle follows start_value + (1-start_value)*(now-start)/duration, clamped', () => {
  const r: Rollout = { start_value: 0.1, start_epoch: 1000, duration_s: 100 };
  assert.is(rolloutThrottle(r, 1000_000), 0.1);
  assert.ok(Math.abs(rolloutThrottle(r, 1050_000) - 0.55) < 1e-12);
  assert.is(rolloutThrottle(r, 1100_000), 1);
  assert.is(rolloutThrottle(r, 5000_000), 1);
  assert.is(rolloutThrottle(r, 0), 0, 'clamped at 0 well before the start');
  assert.is(rolloutThrottle(undefined, 0), 1, 'no rollout: everyone');
  assert.is(rolloutThrottle({ start_value: 0, start_epoch: 1000, duration_s: 0 }, 999_000), 0);
  assert.is(rolloutThrottle({ start_value: 0, start_epoch: 1000, duration_s: 0 }, 1000_000), 1);
});

test('rollout: the fraction of 10,000 machines updating tracks the throttle, and only grows', () => {
  const start = Math.floor(NOW / 1000);
  const rollout: Rollout = { start_value: 0.05, start_epoch: start, duration_s: 10 * 3600 };
  const m = man(rel('1.1.0', { rollout }));
  const w = ids.map(wariness);
  let prev = new Set<number>();
  for (let h = 0; h <= 11; h++) {
    const now = (start + h * 3600) * 1000;
    const throttle = rolloutThrottle(rollout, now);
    const updating = new Set<number>();
    w.forEach((x, i) => { if (pickRelease(m, { ...base, wariness: x, now }).ok) updating.add(i); });
    const frac = updating.size / ids.length;
    assert.ok(Math.abs(frac - throttle) < 0.02, `at hour ${h}: ${frac} of nodes updating, throttle ${throttle}`);
    for (const i of prev) assert.ok(updating.has(i), `node ${i} was updating at hour ${h - 1} but not at ${h}`);
    prev = updating;
  }
  assert.is(prev.size, ids.length, 'everyone by the end');
});

test('throttled nodes wait; a throttle of 0 holds everyone', () => {
  const start = Math.floor(NOW / 1000);
  const r = pickRelease(man(rel('1.1.0', { rollout: { start_value: 0, start_epoch: start, duration_s: 3600 } })), { ...base, wariness: 0 });
  assert.ok(!r.ok && r.reason === 'throttled', JSON.stringify(r));
  // A throttled newer release never turns into a downgrade.
  const r2 = pickRelease(man(rel('1.1.0', { rollout: { start_value: 0, start_epoch: start + 99, duration_s: 1 } }), rel('0.9.0', { downgrade: true })), base);
  assert.ok(!r2.ok && r2.reason === 'throttled');
});

test('picks the newest eligible release; up to date when current is the newest', () => {
  const r = pickRelease(man(rel('1.0.0'), rel('1.2.0'), rel('1.1.0')), base);
  assert.ok(r.ok && r.release.version === '1.2.0');
  const same = pickRelease(man(rel('1.0.0')), base);
  assert.ok(!same.ok && same.reason === 'up-to-date');
  const other = pickRelease(man(rel('1.2.0')), { ...base, arch: 'arm64' });
  assert.ok(!other.ok && other.reason === 'no-release-for-arch');
});

test('versions recorded bad are skipped, falling back to the next one', () => {
  const r = pickRelease(man(rel('1.2.0'), rel('1.1.0')), { ...base, badVersions: ['1.2.0'] });
  assert.ok(r.ok && r.release.version === '1.1.0');
  const none = pickRelease(man(rel('1.2.0')), { ...base, badVersions: ['1.2.0'] });
  assert.ok(!none.ok && none.reason === 'none-eligible' && /bad/.test(none.message));
});

test('downgrades are refused unless the release is flagged downgrade', () => {
  const refused = pickRelease(man(rel('0.9.0')), base);
  assert.ok(!refused.ok && /downgrade/.test(refused.skipped[0]!.why));
  const flagged = pickRelease(man(rel('0.9.0', { downgrade: true })), base);
  assert.ok(flagged.ok && flagged.release.version === '0.9.0');
  // Flagged, but the current version is still offered: stay.
  const stay = pickRelease(man(rel('1.0.0'), rel('0.9.0', { downgrade: true })), base);
  assert.ok(!stay.ok && stay.reason === 'up-to-date');
});

test('min_from: too-old nodes take the stepping stone first', () => {
  const m = man(rel('2.0.0', { min_from: '1.5.0' }), rel('1.5.0'));
  const r = pickRelease(m, base);
  assert.ok(r.ok && r.release.version === '1.5.0');
  const r2 = pickRelease(m, { ...base, current: '1.5.0' });
  assert.ok(r2.ok && r2.release.version === '2.0.0');
  const none = pickRelease(man(rel('2.0.0', { min_from: '1.5.0' })), base);
  assert.ok(!none.ok && /min_from/.test(none.message));
});

test.run();
