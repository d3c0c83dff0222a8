// npm run bench's pure parts: the timings line's contract fields, the critical path from the
// task times line against the real plan, and the goal table.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { smallestThatWorks, bootCriticalPath, floorLine, floorsOverGoal, formatPath, goalTable, median, parseStart, parseTimings, roundsOf } from '../../bench/report.ts';
import { startLine, timingsLine } from '../../init/boot/plan.ts';
import { taskTimesLine, type TaskResult } from '../../init/sequencer.ts';

test('the timings line gives ready, init start and RSS, as init prints it', () => {
  const r = (phase: string, task: string, at: number): TaskResult => ({ phase, task, ok: true, ms: 1, start: at - 1, at });
  const line = timingsLine([r('config', 'apply', 1200), r('k3s', 'start', 3000)], 3456, 2.5, 48.25 * 1048576);
  assert.equal(parseTimings(`kiln: ${line}\r`), { readyS: 3.46, initStartS: 2.5, rssMiB: 48.3 });
  const split = timingsLine([], 3456, 2.5, 48.25 * 1048576, { anonMiB: 17.46, fileMiB: 30.79 });
  assert.equal(parseTimings(`kiln: ${split}\r`), { readyS: 3.46, initStartS: 2.5, rssMiB: 48.3, anonMiB: 17.5, fileMiB: 30.8 });
  assert.is(parseTimings('kiln: something else'), undefined);
  assert.equal(parseStart(`kiln: ${startLine(1.534, 2.061)}\r`), { codeS: 1.53, loadedS: 2.06 });
  assert.is(parseStart('kiln: cpu at ready (s): init 4.30'), undefined);
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

test('a figure from several rounds is their median, with each round in order', () => {
  assert.equal(roundsOf([6.52, 6.1, 6.31]), { median: 6.31, text: '6.31 s (median of 3: 6.52 / 6.10 / 6.31)' });
  // A round that gave no figure is shown and left out of the median.
  assert.equal(roundsOf([6.5, undefined, 6.1]), { median: 6.3, text: '6.30 s (median of 2: 6.50 / - / 6.10)' });
  assert.equal(roundsOf([4.8]), { median: 4.8, text: '4.80 s' });
  assert.equal(roundsOf([undefined]), { text: '-' });
});

test("the node floors' line from stage 1 gives their time and RSS", () => {
  // The very program stage 1 runs for kiln.floor=node and kiln.floor=modules, run here (it
  // idles after its line).
  const sh = readFileSync(new URL('../../builder/stage1/init.sh', import.meta.url), 'utf8');
  const js = /^NODE_FLOOR='([^']*)'$/m.exec(sh)?.[1];
  assert.ok(js, 'stage 1 has the node floor program');
  for (const kind of ['node', 'modules'] as const) {
    assert.match(sh, new RegExp(`^  ${kind}\\) KILN_FLOOR=${kind} exec switch_root .*"\\$NODE_FLOOR"`, 'm'));
    const out = spawnSync(process.execPath, ['-e', js!], { encoding: 'utf8', timeout: 2000, env: { ...process.env, KILN_FLOOR: kind } }).stdout;
    const f = floorLine(out);
    assert.ok(f && f.kind === kind && f.readyS > 0 && f.rssMiB! > 5 && f.rssMiB! < 500 && f.heapLimitMiB! > 8, out);
    // The split adds up to the RSS it splits (to the rounding of three figures).
    assert.ok(Math.abs(f!.anonMiB! + f!.fileMiB! - f!.rssMiB!) < 0.5 && f!.anonMiB! > 1 && f!.fileMiB! > 1, out);
    // When Node's own code began: what is left of its line's time is Node's own start.
    assert.ok(f!.initStartS! > 0 && f!.readyS - f!.initStartS! > 0 && f!.readyS - f!.initStartS! < 2, out);
    // The process began (by /proc/self/stat, in 10 ms ticks) before Node's own code did.
    assert.ok(f!.processStartS! > 0 && f!.processStartS! <= f!.initStartS! + 0.01 && f!.initStartS! - f!.processStartS! < 2, out);
  }
  // The modules floor runs it once more (`again`), so the first run must end after its line;
  // the second runs in the background of the shell (which would otherwise exec it as its last
  // command), so /proc/self/stat dates its own start, not the shell's.
  assert.match(sh, /KILN_FLOOR_ONCE=1 \/usr\/bin\/node -e "\$1"; KILN_FLOOR=again \/usr\/bin\/node -e "\$1" & wait'/);
  const once = spawnSync(process.execPath, ['-e', js!], { encoding: 'utf8', timeout: 5000, env: { ...process.env, KILN_FLOOR: 'again', KILN_FLOOR_ONCE: '1' } });
  assert.is(once.status, 0, 'with KILN_FLOOR_ONCE the floor program exits after its line');
  assert.is(floorLine(once.stdout)?.kind, 'again');
  assert.equal(floorLine('kiln-floor: sh ready 1.93 s after the kernel\r'), { kind: 'sh', readyS: 1.93 });
  assert.equal(floorLine('kiln-floor: kernel ready 2.61 s after the kernel\r'), { kind: 'kernel', readyS: 2.61 });
  assert.is(floorLine('kiln: ready version=1'), undefined);
});

test('a floor over the goal is named, and none when all are under it', () => {
  assert.is(floorsOverGoal(6, [[{ readyS: 2.3 }, 'sh'], [{ readyS: 4.1 }, 'node -e 0'], [undefined, 'node -e 0 after the modules']]), undefined);
  assert.is(floorsOverGoal(6, [[{ readyS: 2.3 }, 'sh'], [{ readyS: 6.5 }, 'node -e 0'], [{ readyS: 7.33 }, 'node -e 0 after the modules']]),
    'the floor alone is over the goal here: node -e 0 6.50 s, node -e 0 after the modules 7.33 s');
  // At the goal is not over it.
  assert.is(floorsOverGoal(6, [[{ readyS: 6 }, 'sh']]), undefined);
});

test('the smallest size that works, the goal size first, then one size at a time toward the answer', async () => {
  const sizes = [64, 80, 96, 112, 128, 160, 192, 256];
  const tries = async (smallest: number, first?: number) => {
    const tried: number[] = [];
    const got = await smallestThatWorks(sizes, async (m) => { tried.push(m); return m >= smallest; }, first);
    return { got, tried };
  };
  // The answer beside the goal's size, above or below it: two boots.
  assert.equal(await tries(160, 4), { got: 160, tried: [128, 160] });
  assert.equal(await tries(128, 4), { got: 128, tried: [128, 112] });
  // Further away, a step at a time: a size far below the answer is never tried.
  assert.equal(await tries(96, 4), { got: 96, tried: [128, 112, 96, 80] });
  assert.equal(await tries(999, 4), { got: undefined, tried: [128, 160, 192, 256] });
  assert.equal(await tries(0, 4), { got: 64, tried: [128, 112, 96, 80, 64] });
  // The node floor: 64 MiB, where the kernel never starts under SeaBIOS (x86_64), is not tried,
  // nor 48 where arm64's answer is 80.
  const floor = [48, 64, 80, 96, 112, 128];
  for (const [answer, expected] of [[96, [96, 80]], [80, [96, 80, 64]]] as const) {
    const tried: number[] = [];
    assert.is(await smallestThatWorks(floor, async (m) => { tried.push(m); return m >= answer; }, 3), answer);
    assert.equal(tried, expected);
  }
  // Against a plain scan, for every answer and every first guess (or none: a bisection): the
  // same result, and no size tried twice.
  for (const smallest of [...sizes, 999]) {
    for (const first of [undefined, ...sizes.keys()]) {
      const { got, tried: t } = await tries(smallest, first);
      assert.is(got, sizes.find((m) => m >= smallest), `smallest ${smallest}, first ${first}`);
      assert.is(new Set(t).size, t.length, `${t}`);
      if (first === undefined) assert.ok(t.length <= 4, `bisection: ${t}`);
    }
  }
});

test.run();
