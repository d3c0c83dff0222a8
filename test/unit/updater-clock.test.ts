// The clock floor against a future-dated manifest (a publisher whose clock ran ahead): refused
// by a node with a trusted clock, and never stored as the floor, so later manifests with the
// right dates keep working.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync } from 'node:fs';
import { NOW, world, type World } from './updater-harness.ts';

let w: World;
test.after.each(async () => { await w?.close(); });

const DAY = 86400_000;
const state = () => JSON.parse(readFileSync(w.stateFile(), 'utf8'));

test('trusted clock: a manifest issued 30 days ahead is refused (future) and nothing is stored', async () => {
  w = await world();
  await w.publish('2.0.0', { now: new Date(NOW.getTime() + 30 * DAY) });
  const c = await w.updater().check(); // the node's clock: NOW + 1 h, above its build time
  assert.is(c.action === 'refused' && c.reason, 'future', JSON.stringify(c));
  assert.match(c.message, /issued 2030-01-31T00:00:00Z, more than 24 h ahead/);
  assert.not.ok(existsSync(w.stateFile()), 'a refused manifest moves no floor');
  assert.ok(w.logs.some((l) => /refused the stable manifest \(future\)/.test(l)));

  // The publisher fixes its clock: the next manifest (serial 3, expiring in 10 days) installs.
  await w.publish('2.1.0', { expiresDays: 10 });
  const next = await w.updater().check();
  assert.is(next.action, 'install', JSON.stringify(next));
  assert.is(next.action === 'install' && next.version, '2.1.0');
});

test('untrusted clock (1970): a future-dated manifest is accepted but does not become the floor', async () => {
  w = await world();
  await w.publish('2.0.0', { now: new Date(NOW.getTime() + 30 * DAY) });
  const early = await w.updater({ now: () => new Date(0) }).check();
  assert.is(early.action, 'install', JSON.stringify(early));
  assert.is(state().serials.stable.serial, 2);
  assert.is(state().lastIssued, null, 'issued 61 days after the build is no evidence of the time');

  // Once the clock is right, a correctly dated manifest that expires before the bogus date works.
  await w.publish('2.1.0', { expiresDays: 10 });
  const c = await w.updater().check();
  assert.is(c.action, 'install', JSON.stringify(c));
  assert.is(state().lastIssued, '2030-01-01T00:00:00Z');
  assert.is(state().serials.stable.serial, 3);
});

// The trusted-clock notion is the NTP sync (clock.ts): the floor set at boot is only a lower
// bound of the time. A rollout judged at the floor says so rather than "throttled" forever.

test('unsynced clock: a rollout the floor cannot reach says "clock not synced", not "throttled"', async () => {
  w = await world();
  await w.publish('2.0.0', { rolloutHours: 48 }); // rollout starts at NOW; the node's floor is its build time
  const canary = { wariness: 0, clockSynced: () => false, now: () => new Date(0) };
  const u = w.updater(canary);
  const c = await u.check();
  assert.is(c.action === 'none' && c.reason, 'clock-not-synced', JSON.stringify(c));
  assert.match(c.message, /^clock not synced: the rollout cannot be judged until NTP sets the clock \(clock floor 2029-12-01T00:00:00\.000Z\)/);
  assert.ok(u.status().some((l) => /^last check: .*: none \(clock-not-synced\): clock not synced/.test(l)), u.status().join('\n'));
  // Synced, the same node goes (canary) or waits its turn (throttled), as before.
  const synced = await w.updater({ wariness: 0, clockSynced: () => true }).check();
  assert.is(synced.action, 'install', JSON.stringify(synced));
  const late = await w.updater({ wariness: 0.99, clockSynced: () => true }).check();
  assert.is(late.action === 'none' && late.reason, 'throttled');
});

test('unsynced clock: a rollout the floor already reaches installs (the true time is later still)', async () => {
  w = await world();
  await w.publish('2.0.0', { rolloutHours: 48 });
  // A good RTC, no NTP yet: the floor is the RTC's time, 47 h into the rollout.
  const c = await w.updater({ wariness: 0.5, clockSynced: () => false, now: () => new Date(NOW.getTime() + 47 * 3600_000) }).check();
  assert.is(c.action, 'install', JSON.stringify(c));
});

test('unsynced clock: expiry is still judged at the floor', async () => {
  w = await world();
  await w.publish('2.0.0', { expiresDays: 1 });
  const c = await w.updater({ clockSynced: () => false, now: () => new Date(0), buildTime: new Date(NOW.getTime() + 3 * DAY) }).check();
  assert.is(c.action === 'refused' && c.reason, 'expired');
});

test('unsynced clock above the build time: a future-dated manifest cannot be judged, and does not move the floor', async () => {
  w = await world();
  await w.publish('2.0.0', { now: new Date(NOW.getTime() + 30 * DAY) });
  // NOW + 1 h is above the build time (the old notion called that trusted), but it is only a floor.
  const c = await w.updater({ clockSynced: () => false }).check();
  assert.is(c.action, 'install', JSON.stringify(c));
  assert.is(state().lastIssued, null);
  // Once synced, the node judges it: more than a day ahead of its clock.
  const synced = await w.updater({ clockSynced: () => true }).check();
  assert.is(synced.action === 'refused' && synced.reason, 'future');
});

test.run();
