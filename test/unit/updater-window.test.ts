import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { inWindow, nextWindowStart, parseWindows } from '../../init/update/window.ts';
import { world } from './updater-harness.ts';

// Local-time dates: 2030-01-05 is a Saturday.
const at = (day: number, h: number, m = 0) => new Date(2030, 0, day, h, m);
const SAT = 5, SUN = 6, MON = 7, FRI = 4, WED = 2;

const TABLE: [spec: string, when: Date, inside: boolean][] = [
  ['Sat 02:00-04:00', at(SAT, 2, 0), true],
  ['Sat 02:00-04:00', at(SAT, 3, 59), true],
  ['Sat 02:00-04:00', at(SAT, 4, 0), false], // end is exclusive
  ['Sat 02:00-04:00', at(SAT, 1, 59), false],
  ['Sat 02:00-04:00', at(SUN, 2, 30), false],
  ['sat 2:00-4:00', at(SAT, 3), true], // case and one-digit hours
  ['Saturday 02:00-04:00', at(SAT, 3), true],
  ['Mon-Fri 22:00-23:30', at(WED, 22, 15), true],
  ['Mon-Fri 22:00-23:30', at(SAT, 22, 15), false],
  ['Fri-Mon 01:00-02:00', at(SUN, 1, 30), true], // range wrapping the week
  ['Fri-Mon 01:00-02:00', at(WED, 1, 30), false],
  ['Sat,Sun 03:00-05:00', at(SUN, 4), true],
  ['Fri 23:00-01:00', at(SAT, 0, 30), true], // past midnight belongs to the start day
  ['Fri 23:00-01:00', at(SUN, 0, 30), false],
  ['Sat 23:00-01:00', at(SUN, 0, 59), true], // Sat -> Sun wrap across the week boundary
  ['02:00-03:00', at(WED, 2, 30), true], // no days: every day
  ['daily 00:00-24:00', at(MON, 13, 37), true],
  ['Sun 01:00-02:00; Wed 12:00-13:00', at(WED, 12, 30), true],
  ['Sun 01:00-02:00; Wed 12:00-13:00', at(WED, 13, 30), false],
];

test('maintenance window table', () => {
  for (const [spec, when, inside] of TABLE) {
    assert.is(inWindow(parseWindows(spec), when), inside, `${spec} at ${when.toString()}`);
  }
});

test('malformed windows are refused with a reason', () => {
  const bad: [string, RegExp][] = [
    ['', /empty/],
    ['Sat', /expected/],
    ['Sat 02:00', /expected/],
    ['Caturday 02:00-04:00', /'Caturday' is not a day/],
    ['Sat 25:00-26:00', /not a valid time/],
    ['Sat 02:60-03:00', /not a valid time/],
    ['Sat 24:00-02:00', /not a valid time/],
    ['Sat 02:00-02:00', /the same/],
    ['Sat 2-4', /expected/],
  ];
  for (const [spec, re] of bad) assert.throws(() => parseWindows(spec), re, spec);
});

test('next window start', () => {
  const w = parseWindows('Sat 02:00-04:00');
  assert.is(nextWindowStart(w, at(WED, 12))!.getTime(), at(SAT, 2).getTime());
  assert.is(nextWindowStart(w, at(SAT, 3))!.getTime(), at(SAT, 3).getTime(), 'inside: now');
  assert.is(nextWindowStart(w, at(SAT, 5))!.getTime(), at(SAT + 7, 2).getTime(), 'just missed: next week');
  assert.is(nextWindowStart(parseWindows('Mon 01:00-02:00; Thu 01:00-02:00'), at(WED, 12))!.getTime(), at(WED + 1, 1).getTime());
});

test('updater: outside the window the update is staged but the reboot waits; inside it goes', async () => {
  const w = await world();
  try {
    await w.publish('2.0.0');
    let now = at(WED, 12);
    const u = w.updater({ window: 'Sat 02:00-04:00', now: () => now });
    const r = await u.apply();
    assert.ok(r.ok, JSON.stringify(r));
    assert.is(r.ok && r.reboot.waiting, 'window');
    assert.is(w.reboots, 0);
    assert.ok(u.status().includes('maintenance window: Sat 02:00-04:00'));
    now = at(SAT, 1, 59);
    await u.pollOnce();
    assert.is(w.reboots, 0);
    now = at(SAT, 2, 1);
    await u.pollOnce();
    assert.is(w.reboots, 1);
  } finally { await w.close(); }
});

test('updater: a malformed window fails at construction, not by rebooting at any hour', async () => {
  const w = await world();
  try { assert.throws(() => w.updater({ window: 'weekends' }), /expected/); } finally { await w.close(); }
});

test.run();
