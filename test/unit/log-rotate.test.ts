// Log files: made root's alone in a folder made on demand, rotated past a size, kept to a count.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, existsSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { appendRotating } from '../../init/log.ts';

test('a log in a missing folder is made, root\'s alone, and appended to', () => {
  const file = join(mkdtempSync(join(tmpdir(), 'kiln-log-')), 'new/dir/svc.log');
  appendRotating(file, 'one\n');
  appendRotating(file, 'two\n');
  assert.is(readFileSync(file, 'utf8'), 'one\ntwo\n');
  assert.is(statSync(file).mode & 0o777, 0o600);
  assert.is(statSync(join(file, '..')).mode & 0o777, 0o700);
});

test('past the size the log moves to .1, .1 to .2, and no more than `keep` are kept', () => {
  const file = join(mkdtempSync(join(tmpdir(), 'kiln-log-')), 'svc.log');
  for (let i = 0; i < 5; i++) appendRotating(file, `line ${i} ${'x'.repeat(10)}\n`, 20, 3);
  assert.is(readFileSync(file, 'utf8'), `line 4 ${'x'.repeat(10)}\n`);
  assert.is(readFileSync(`${file}.1`, 'utf8'), `line 3 ${'x'.repeat(10)}\n`);
  assert.is(readFileSync(`${file}.3`, 'utf8'), `line 1 ${'x'.repeat(10)}\n`);
  assert.not.ok(existsSync(`${file}.4`));
});

test('a log an earlier release left readable to all is made root\'s alone', () => {
  const file = join(mkdtempSync(join(tmpdir(), 'kiln-log-')), 'old.log');
  writeFileSync(file, 'old\n');
  chmodSync(file, 0o644);
  appendRotating(file, 'new\n');
  assert.is(statSync(file).mode & 0o777, 0o600);
  assert.is(readFileSync(file, 'utf8'), 'old\nnew\n');
});

test.run();
