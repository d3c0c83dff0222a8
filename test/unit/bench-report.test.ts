// npm run bench's pure parts: the timings line's contract fields, the critical path from the
// task times line against the real plan, and the goal table.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { bootCriticalPath, formatPath, goalTable, median, parseTimings } from '../../bench/report.ts';
import { timingsLine } from '../../init/boot/plan.ts';
import { taskTimesLine, type TaskResult } from '../../init/sequencer.ts';

test('the timings line gives ready, init start and RSS, as init prints it', () => {
  const r = (phase: string, task: string, at: number): TaskResult => ({ phase, task, ok: true, ms: 1, start: at - 1, at });
  const line = timingsLine([r('config', 'apply', 1200), r('k3s', 'start', 3000)], 3456, 2.5, 48.25 * 1048576);
  assert.equal(parseTimings(`kiln: ${line}\r`), { readyS: 3.46, initStartS: 2.5, rssMiB: 48.3 });
  assert.is(parseTimings('kiln: something else'), undefined);
});

test('the critical path runs through the real plan\'s needs', () => {
  const r = (id: string, start: number, at: number): TaskResult => ({ phase: id.split('/')[0], task: id.split('/')[1], ok: true, ms: at - start, start, at });
  const line = taskTimesLine([
    r('mount/base filesystems', 0, 50), r('modules/load', 0, 900), r('data/esp', 900, 1000), r('config/devices', 900, 1400),
    r('data/machine id', 0, 20), r('config/choose', 1400, 2000), r('config/apply', 2000, 2300), r('network/links', 2300, 4000),
    r('data/logs', 0, 10), r('mount/protect init', 50, 60),
  ]);
  const path = bootCriticalPath(`kiln: ${line}`);
  assert.equal(path.map((s) => s.id), ['modules/load', 'config/devices', 'config/choose', 'config/apply', 'network/links']);
  assert.is(formatPath(path.slice(0, 2)), 'modules/load 0.00-0.90 -> config/devices 0.90-1.40');
});

test('the goal table lines up its columns', () => {
  assert.is(goalTable([{ measure: 'kiln --help', goal: '<= 0.4 s', now: '0.13 s', floor: '0.08 s', note: '+0.05 s' }]), [
    'measure     | goal     | now    | floor  | over the floor / note',
    '------------|----------|--------|--------|---------',
    'kiln --help | <= 0.4 s | 0.13 s | 0.08 s | +0.05 s',
  ].join('\n'));
  assert.is(median([3, 1, 2]), 2);
  assert.is(median([4, 1, 2, 3]), 2.5);
  assert.is(median([]), undefined);
});

test.run();
