// The boot sequencer: plan checking (needs met by earlier tasks only), running a plan as a
// dependency graph (independent tasks overlap, needs are waited for, a failing task is logged
// and its dependants still run), and the critical path read back from the results.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { setConsole } from '../../init/log.ts';
import { checkPlan, criticalPath, parseTaskTimes, runPlan, taskTimesLine, type BootTask, type TaskResult } from '../../init/sequencer.ts';

const task = (phase: string, name: string, needs: string[] = [], extra: Partial<BootTask> = {}): BootTask => ({ phase, name, needs, run: () => undefined, ...extra });

test('a plan whose needs all name earlier tasks or facts is sound', () => {
  assert.equal(checkPlan([
    task('a', 'one', [], { gives: ['fact'] }),
    task('a', 'two', ['a/one']),
    task('b', 'three', ['fact', 'a/two']),
  ]), []);
});

test('unknown names, later tasks, itself, names given twice and split phases are reported', () => {
  assert.equal(checkPlan([task('a', 'one', ['nowhere'])]), ["a/one needs 'nowhere', which no task is or gives"]);
  // A need on a later task is a cycle or an order the list cannot run.
  assert.equal(checkPlan([task('a', 'one', ['a/two']), task('a', 'two', ['a/one'])]), ["a/one needs 'a/two', which comes later in the plan"]);
  assert.equal(checkPlan([task('a', 'one', ['late']), task('a', 'two', [], { gives: ['late'] })]), ["a/one needs 'late', which comes later in the plan"]);
  assert.equal(checkPlan([task('a', 'one', ['a/one'])]), ["a/one needs 'a/one', itself"]);
  assert.equal(checkPlan([task('a', 'one', ['f'], { gives: ['f'] })]), ["a/one needs 'f', itself"]);
  assert.equal(checkPlan([task('a', 'one'), task('a', 'one')]), ["a/one: 'a/one' is named twice"]);
  assert.equal(checkPlan([task('a', 'one', [], { gives: ['f'] }), task('a', 'two', [], { gives: ['f'] })]), ["a/two: 'f' is named twice"]);
  assert.equal(checkPlan([task('a', 'one'), task('b', 'two'), task('a', 'three')]), ['a/three: phase a is split by other phases']);
});

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
/** Captures console lines (debug included) while fn runs. */
async function capture<T>(fn: () => Promise<T>): Promise<{ value: T; lines: string[] }> {
  const lines: string[] = [];
  const was = process.env.KILN_DEBUG;
  process.env.KILN_DEBUG = '1';
  setConsole((s) => lines.push(s));
  try { return { value: await fn(), lines }; } finally {
    setConsole((s) => { process.stdout.write(s); });
    if (was === undefined) delete process.env.KILN_DEBUG; else process.env.KILN_DEBUG = was;
  }
}
const byId = (results: TaskResult[]) => Object.fromEntries(results.map((r) => [`${r.phase}/${r.task}`, r]));

test('independent tasks overlap; a task starts only once its needs have ended', async () => {
  const { value: results } = await capture(() => runPlan([
    task('a', 'slow', [], { run: () => sleep(150) }),
    task('b', 'other', [], { run: () => sleep(150), gives: ['fact'] }),
    task('c', 'after both', ['a/slow', 'fact'], { run: () => sleep(20) }),
    task('c', 'after one', ['fact']),
  ]));
  const r = byId(results);
  // Both 150 ms tasks ran at once.
  assert.ok(r['b/other'].start < r['a/slow'].at, 'b started before a ended');
  assert.ok(r['c/after both'].start >= r['a/slow'].at && r['c/after both'].start >= r['b/other'].at);
  assert.ok(r['c/after one'].start >= r['b/other'].at);
  // Results in list order, each with its own start and end.
  assert.equal(results.map((x) => x.task), ['slow', 'other', 'after both', 'after one']);
  assert.ok(results.every((x) => x.ok && x.at >= x.start && Math.abs(x.ms - (x.at - x.start)) < 1e-6));
});

test('a chain runs in order even when later tasks are quicker', async () => {
  const ran: string[] = [];
  await capture(() => runPlan([
    task('a', 'one', [], { run: async () => { await sleep(40); ran.push('one'); } }),
    task('a', 'two', ['a/one'], { run: async () => { await sleep(10); ran.push('two'); } }),
    task('b', 'three', ['a/two'], { run: () => { ran.push('three'); } }),
    task('b', 'free', [], { run: () => { ran.push('free'); } }),
  ]));
  assert.equal(ran, ['free', 'one', 'two', 'three']);
});

test('a failing task is logged and its dependants still run; lines per phase and per task', async () => {
  const ran: string[] = [];
  const { value: results, lines } = await capture(() => runPlan([
    task('mount', 'x', [], { run: () => { ran.push('x'); return 'note x'; } }),
    task('mount', 'y', ['mount/x'], { run: () => { ran.push('y'); throw new Error('no luck'); } }),
    task('late', 'z', ['mount/y'], { run: async () => { ran.push('z'); } }),
  ]));
  assert.equal(ran, ['x', 'y', 'z']);
  assert.equal(results.map((r) => [r.phase, r.task, r.ok, r.error]), [['mount', 'x', true, undefined], ['mount', 'y', false, 'no luck'], ['late', 'z', true, undefined]]);
  // The lines as ever (phase start and done, the note, the failure on the console), plus a
  // start and end for each task.
  const text = lines.map((l) => l.replace(/\d+ ms/, 'N ms'));
  assert.equal(text, [
    'kiln: (debug) phase mount: start\n',
    'kiln: (debug) task mount/x: start\n',
    'kiln: (debug) mount/x: note x\n',
    'kiln: (debug) task mount/x: end after N ms\n',
    'kiln: (debug) task mount/y: start\n',
    'kiln: mount/y failed: no luck\n',
    'kiln: (debug) task mount/y: end after N ms (failed)\n',
    'kiln: (debug) phase mount: done in N ms\n',
    'kiln: (debug) phase late: start\n',
    'kiln: (debug) task late/z: start\n',
    'kiln: (debug) task late/z: end after N ms\n',
    'kiln: (debug) phase late: done in N ms\n',
  ]);
});

test('a plan that cannot go on (a cycle) still runs every task, in list order, with a warning', async () => {
  const ran: string[] = [];
  const { value: results, lines } = await capture(() => runPlan([
    task('a', 'one', ['a/two'], { run: () => { ran.push('one'); } }),
    task('a', 'two', ['a/one'], { run: () => { ran.push('two'); } }),
    task('a', 'free', ['nowhere'], { run: () => { ran.push('free'); } }),
  ]));
  assert.equal(ran, ['free', 'one', 'two']);
  assert.ok(results.every((r) => r.ok));
  assert.ok(lines.includes('kiln: boot plan: a/one, a/two wait on each other; running them in list order\n'));
});

test('an empty plan ends at once', async () => {
  assert.equal(await runPlan([]), []);
});

test('the critical path follows the need that ended last, back from the last task', () => {
  const plan = [
    task('a', 'mount'), task('a', 'modules', [], { gives: ['drivers'] }),
    task('b', 'config', ['a/mount', 'drivers']), task('b', 'side', ['a/mount']),
    task('c', 'k3s', ['b/config', 'b/side']),
  ];
  const r = (id: string, start: number, at: number, ok = true) => ({ phase: id.split('/')[0], task: id.split('/')[1], ok, start, at });
  const results = [r('a/mount', 0, 100), r('a/modules', 0, 300), r('b/config', 310, 900, false), r('b/side', 100, 950), r('c/k3s', 950, 1000)];
  assert.equal(criticalPath(plan, results), [
    { id: 'a/mount', start: 0, at: 100, ok: true, waited: 0 },
    { id: 'b/side', start: 100, at: 950, ok: true, waited: 0 },
    { id: 'c/k3s', start: 950, at: 1000, ok: true, waited: 0 },
  ]);
  // Up to a chosen task; a fact leads to the task that gives it.
  assert.equal(criticalPath(plan, results, 'b/config').map((s) => [s.id, s.waited, s.ok]), [['a/modules', 0, true], ['b/config', 10, false]]);
  assert.equal(criticalPath(plan, []), []);
});

test('the task times line reads back into results the critical path can use', () => {
  const results: TaskResult[] = [
    { phase: 'config', task: 'ssh keys (cached)', ok: true, ms: 5, start: 1234, at: 1239 },
    { phase: 'late', task: 'user-data scripts', ok: false, ms: 10, error: 'x', start: 2000, at: 12010 },
  ];
  const line = taskTimesLine(results);
  assert.is(line, 'task times (s since init start): config/ssh keys (cached) 1.23-1.24, late/user-data scripts 2.00-12.01 failed');
  assert.equal(parseTaskTimes(`kiln: ${line}`), [
    { phase: 'config', task: 'ssh keys (cached)', start: 1230, at: 1240, ok: true },
    { phase: 'late', task: 'user-data scripts', start: 2000, at: 12010, ok: false },
  ]);
  assert.equal(parseTaskTimes('task times (s since init start): '), []);
});

test.run();
