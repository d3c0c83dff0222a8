// The clock floor: the newest of the RTC, the build time and the saved time, never backwards,
// garbage ignored; the files it reads and writes; what chronyc says and what `kiln status` shows.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { clockFloor, clockLine, parseBuildJson, parseEpoch, parseTracking, readFloorSources, saveClock, SAVED_CLOCK_FILE } from '../../init/clock.ts';

const BUILD = 1_780_000_000; // 2026-05-28
const DAY = 86400;

test('the floor is the newest source, and the clock is stepped only when below it', () => {
  assert.equal(clockFloor({ nowS: 0, rtcS: BUILD - DAY, buildS: BUILD, savedS: BUILD + 10 * DAY }), { floorS: BUILD + 10 * DAY, from: 'saved', step: true, ignored: [] });
  assert.equal(clockFloor({ nowS: 5, buildS: BUILD }), { floorS: BUILD, from: 'build', step: true, ignored: [] });
  // A good RTC (the kernel already set the clock from it) is the floor, and nothing moves.
  assert.equal(clockFloor({ nowS: BUILD + 40 * DAY, rtcS: BUILD + 40 * DAY, buildS: BUILD, savedS: BUILD + DAY }), { floorS: BUILD + 40 * DAY, from: 'rtc', step: false, ignored: [] });
  // The clock ahead of every source is never moved back.
  assert.is(clockFloor({ nowS: BUILD + 99 * DAY, buildS: BUILD, savedS: BUILD + DAY }).step, false);
});

test('an RTC a second ahead of the clock the kernel set from it moves nothing; two seconds do', () => {
  // The kernel set the clock to the RTC's whole second T at 0.7 s past it; 2.5 s later the clock
  // reads T + 2.5 and the RTC T + 3.
  const T = BUILD + 40 * DAY;
  assert.equal(clockFloor({ nowS: T + 2.5, rtcS: T + 3, buildS: BUILD }), { floorS: T + 3, from: 'rtc', step: false, ignored: [] });
  assert.is(clockFloor({ nowS: T + 1, rtcS: T + 2 }).step, false);
  assert.is(clockFloor({ nowS: T + 0.9, rtcS: T + 2 }).step, true);
  assert.is(clockFloor({ nowS: T, rtcS: T + 2, buildS: BUILD }).step, true);
});

test('garbage sources are ignored by name; no source at all is no floor', () => {
  const f = clockFloor({ nowS: 0, buildS: BUILD, savedS: 99_999_999_999, rtcS: Number.NaN });
  assert.is(f.floorS, BUILD);
  assert.is(f.from, 'build');
  assert.equal(f.ignored, ['rtc time NaN is not a plausible time', 'saved time 99999999999 is not a plausible time']);
  assert.equal(clockFloor({ nowS: 0 }), { step: false, ignored: [] });
  assert.equal(clockFloor({ nowS: 0, savedS: 0 }), { step: false, ignored: ['saved time 0 is not a plausible time'] });
});

test('epoch and build.json parsing', () => {
  assert.is(parseEpoch('1780000000\n'), 1780000000);
  assert.is(parseEpoch(' 12 '), 12);
  assert.is(parseEpoch('-5'), undefined);
  assert.is(parseEpoch('1e9'), undefined);
  assert.is(parseEpoch(''), undefined);
  assert.is(parseBuildJson('{"version":"1.0.0","built":"2026-05-28T20:26:40.000Z"}'), 1780000000);
  assert.is(parseBuildJson('{"built":"yesterday"}'), undefined);
  assert.is(parseBuildJson('{"built":5}'), undefined);
  assert.is(parseBuildJson('not json'), undefined);
});

test('the sources are read from the RTC, build.json and the saved file; an oversized file is ignored', () => {
  const root = mkdtempSync(join(tmpdir(), 'kiln-clock-'));
  assert.equal(readFloorSources(root, 7), { nowS: 7, rtcS: undefined, buildS: undefined, savedS: undefined });
  mkdirSync(join(root, 'sys/class/rtc/rtc0'), { recursive: true });
  mkdirSync(join(root, 'usr/lib/kiln'), { recursive: true });
  writeFileSync(join(root, 'sys/class/rtc/rtc0/since_epoch'), '978307200\n');
  writeFileSync(join(root, 'usr/lib/kiln/build.json'), JSON.stringify({ version: '1.0.0', built: new Date(BUILD * 1000).toISOString() }, null, 2));
  saveClock(BUILD + 3 * DAY + 0.7, join(root, SAVED_CLOCK_FILE));
  assert.is(readFileSync(join(root, SAVED_CLOCK_FILE), 'utf8'), `${BUILD + 3 * DAY}\n`);
  const s = readFloorSources(root, 7);
  assert.equal(s, { nowS: 7, rtcS: 978307200, buildS: BUILD, savedS: BUILD + 3 * DAY });
  assert.equal(clockFloor(s), { floorS: BUILD + 3 * DAY, from: 'saved', step: true, ignored: [] });
  writeFileSync(join(root, SAVED_CLOCK_FILE), `${'1'.repeat(10)}${' '.repeat(100)}\n`);
  assert.is(readFloorSources(root, 7).savedS, undefined);
});

// `chronyc -n -c tracking` as chrony 4.3 prints it, before and after it has set the clock.
const SYNCED = 'C0A80101,192.168.1.1,3,1780000123.456789012,-0.000012345,0.000001234,0.000023456,-5.432,0.001,0.045,0.012345678,0.000456789,64.4,Normal\n';
const UNSYNCED = '00000000,,0,0.000000000,0.000000000,0.000000000,0.000000000,0.000,0.000,0.000,1.000000000,1.000000000,0.0,Not synchronised\n';

test('chronyc tracking: synced only once chronyd has a reference and a leap status', () => {
  assert.equal(parseTracking(SYNCED), { synced: true, server: '192.168.1.1', stratum: 3, offsetS: -0.000012345 });
  assert.equal(parseTracking(UNSYNCED), { synced: false });
  assert.equal(parseTracking(''), { synced: false });
  assert.equal(parseTracking('506 Cannot talk to daemon\n'), { synced: false });
  assert.equal(parseTracking(SYNCED.replace('Normal', 'Not synchronised')), { synced: false });
});

test('the status line: synced, or floor only and from what', () => {
  const now = BUILD + 60;
  assert.is(clockLine({ tracking: parseTracking(SYNCED) }, now), 'clock: synced 2026-05-28T20:27:40Z (NTP 192.168.1.1, stratum 3, offset -0.000012 s)');
  assert.is(clockLine({ floor: { atS: BUILD, from: 'build', stepped: true }, tracking: { synced: false } }, now),
    'clock: floor only 2026-05-28T20:27:40Z, not synced (set 2026-05-28T20:26:40Z from the image build time)');
  assert.is(clockLine({ floor: { atS: BUILD, from: 'saved', stepped: false } }, now),
    'clock: floor only 2026-05-28T20:27:40Z, not synced (at or above 2026-05-28T20:26:40Z from the time saved on /data)');
  assert.is(clockLine({}, now), 'clock: not synced 2026-05-28T20:27:40Z (no floor known)');
});

test.run();
