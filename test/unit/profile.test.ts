import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadProfile, ProfileError, profileHelp } from '../../builder/profile.ts';
import { checkLock, LockError, lockRequest, type Lock } from '../../builder/lock.ts';
import { parseArch } from '../../builder/arch.ts';

const write = (text: string) => { const d = mkdtempSync(join(tmpdir(), 'kiln-prof-')); const f = join(d, 'p.yaml'); writeFileSync(f, text); return f; };

test('the default profile loads with its defaults filled in', () => {
  const p = loadProfile();
  assert.is(p.name, 'default');
  assert.equal(p.arches, ['x86_64', 'arm64']);
  assert.is(p.kernel.flavour, 'cloud');
  assert.is(p.root.filesystem, 'squashfs');
  assert.ok(p.lockFile.endsWith('images/default.lock.json'));
  assert.is(p.kernel.module_signatures, 'auto');
  const k = write('name: x\nkernel:\n  module_signatures: strip\n');
  assert.throws(() => loadProfile(k), (e: Error) => e.message.includes(`${k}: kernel.module_signatures: 'strip' is not valid (valid: auto, keep)`));
});

test('unknown keys and bad values are named with the valid choices', () => {
  const f = write('name: x\nkernel:\n  flavor: cloud\n');
  assert.throws(() => loadProfile(f), (e: Error) => e instanceof ProfileError && e.message.includes(`${f}: kernel.flavor: unknown key (valid: flavour, cmdline, module_signatures)`));
  const g = write('name: x\narches: [x86_64, riscv64]\n');
  assert.throws(() => loadProfile(g), (e: Error) => e.message.includes(`${g}: arches.1: 'riscv64' is not valid (valid: x86_64, arm64)`));
  assert.throws(() => loadProfile('/nonexistent/p.yaml'), /not found/);
});

test('help is derived from the schema', () => {
  const h = profileHelp();
  assert.match(h, /kernel\.flavour\s+cloud\|generic \(default "cloud"\)/);
  assert.match(h, /disk\.esp_mib\s+integer/);
});

test('a lock that does not match the profile says how to fix it', () => {
  const p = loadProfile();
  assert.throws(() => checkLock(p, undefined, ['x86_64']), (e: Error) => e instanceof LockError && /kiln lock/.test(e.message));
  const lock = { schema: 1, profile: 'default', request: { ...lockRequest(p), node: '^22' }, arches: {} } as Lock;
  assert.throws(() => checkLock(p, lock, ['x86_64']), /node changed since the lock was written/);
  const lock2 = { schema: 1, profile: 'default', request: lockRequest(p), arches: {} } as Lock;
  assert.throws(() => checkLock(p, lock2, ['arm64']), /no inputs for arm64/);
});

test('arch names and their aliases', () => {
  assert.is(parseArch('amd64'), 'x86_64');
  assert.is(parseArch('aarch64'), 'arm64');
  assert.throws(() => parseArch('mips'), /unknown arch 'mips' \(valid: x86_64, arm64\)/);
});

test.run();
