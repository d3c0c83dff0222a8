// The boot sequencer: plan checking (needs met by earlier tasks only) and running a plan in
// list order, where a failing task is logged and the rest still run.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { setConsole } from '../../init/log.ts';
import { checkPlan, runPlan, type BootTask } from '../../init/sequencer.ts';

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

test('runs in list order; a failing task is logged and the rest still run', async () => {
  const lines: string[] = [];
  const ran: string[] = [];
  const was = process.env.KILN_DEBUG;
  process.env.KILN_DEBUG = '1';
  setConsole((s) => lines.push(s));
  try {
    const results = await runPlan([
      task('mount', 'x', [], { run: () => { ran.push('x'); return 'note x'; } }),
      task('mount', 'y', [], { run: async () => { ran.push('y'); throw new Error('no luck'); } }),
      task('late', 'z', [], { run: async () => { ran.push('z'); } }),
    ]);
    assert.equal(ran, ['x', 'y', 'z']);
    assert.equal(results.map((r) => [r.phase, r.task, r.ok, r.error]), [['mount', 'x', true, undefined], ['mount', 'y', false, 'no luck'], ['late', 'z', true, undefined]]);
    assert.ok(results.every((r, i) => r.ms >= 0 && r.at >= (results[i - 1]?.at ?? 0)));
    // The same lines as ever: one start and one done line per phase, the failure on the console.
    const text = lines.map((l) => l.replace(/done in \d+ ms/, 'done in N ms'));
    assert.equal(text, [
      'kiln: (debug) phase mount: start\n',
      'kiln: (debug) mount/x: note x\n',
      'kiln: mount/y failed: no luck\n',
      'kiln: (debug) phase mount: done in N ms\n',
      'kiln: (debug) phase late: start\n',
      'kiln: (debug) phase late: done in N ms\n',
    ]);
  } finally {
    setConsole((s) => { process.stdout.write(s); });
    if (was === undefined) delete process.env.KILN_DEBUG; else process.env.KILN_DEBUG = was;
  }
});

test.run();
