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

test.run();
