import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, copyFileSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkSharedLibraries, parseNeeded } from '../../builder/elfdeps.ts';

test('readelf -d output of several files', () => {
  const text = `
File: usr/sbin/dropbear

Dynamic section at offset 0x6cd60 contains 29 entries:
  Tag        Type                         Name/Value
 0x0000000000000001 (NEEDED)             Shared library: [libtomcrypt.so.1]
 0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]

File: bin/busybox

There is no dynamic section in this file.
`;
  assert.equal([...parseNeeded(text)], [['usr/sbin/dropbear', ['libtomcrypt.so.1', 'libc.so.6']], ['bin/busybox', []]]);
});

test('a program whose library is absent from the root is an error naming both and the fix', async () => {
  // The host's own /bin/true and its libc, laid into a fake root without libc.
  const root = mkdtempSync(join(tmpdir(), 'kiln-elf-'));
  mkdirSync(join(root, 'bin'));
  copyFileSync('/bin/true', join(root, 'bin/true'));
  let err: Error | undefined;
  try { await checkSharedLibraries(root, 'x86_64-linux-gnu'); } catch (e) { err = e as Error; }
  assert.ok(err, 'missing libc must be reported');
  assert.match(err!.message, /\/bin\/true needs libc\.so\.6/);
  assert.match(err!.message, /debian\.packages/);
  // With the library present (as a symlink, like Debian's), the check passes.
  mkdirSync(join(root, 'lib/x86_64-linux-gnu'), { recursive: true });
  symlinkSync('/lib/x86_64-linux-gnu/libc.so.6', join(root, 'lib/x86_64-linux-gnu/libc.so.6'));
  await checkSharedLibraries(root, 'x86_64-linux-gnu');
});

test.run();
