// The per-output-folder build lock: a second builder waits, a dead owner's lock is taken over.
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { withBuildLock } from '../../builder/buildlock.ts';

test('two builds of one folder run one after the other, never interleaved', async () => {
  const out = mkdtempSync(join(tmpdir(), 'kiln-lock-'));
  const events: string[] = [];
  const job = (name: string) => withBuildLock(out, async () => {
    events.push(`${name} start`);
    await new Promise((r) => setTimeout(r, 60));
    events.push(`${name} end`);
  }, { pollMs: 10 });
  await Promise.all([job('one'), job('two')]);
  assert.equal(events, ['one start', 'one end', 'two start', 'two end']);
  assert.not.ok(existsSync(join(out, '.build.lock')), 'the lock is released');
});

test('a lock left by a process that no longer exists is taken over', async () => {
  const out = mkdtempSync(join(tmpdir(), 'kiln-lock-'));
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString();
  mkdirSync(join(out, '.build.lock'));
  writeFileSync(join(out, '.build.lock', 'pid'), dead);
  assert.is(await withBuildLock(out, async () => 'built', { pollMs: 10 }), 'built');
});

test('the lock is released when the build throws', async () => {
  const out = mkdtempSync(join(tmpdir(), 'kiln-lock-'));
  await withBuildLock(out, async () => { throw new Error('boom'); }).catch(() => undefined);
  assert.not.ok(existsSync(join(out, '.build.lock')));
});

test.run();
