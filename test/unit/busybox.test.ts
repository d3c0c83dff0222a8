import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { busyboxApplets } from '../../builder/busybox.ts';

test('the applet table read from the binary matches what busybox itself lists', () => {
  const bin = ['/bin/busybox', '/usr/bin/busybox'].find(existsSync);
  assert.ok(bin, 'busybox-static must be installed on the host for this test');
  const listed = execFileSync(bin!, ['--list']).toString().trim().split('\n');
  assert.equal(busyboxApplets(bin!), listed);
});

test('a file without an applet table is refused', () => {
  assert.throws(() => busyboxApplets(Buffer.from('not busybox at all')), /applet table not found/);
  assert.throws(() => busyboxApplets(Buffer.from('[\0[[\0zeta\0alpha\0\0')), /malformed/);
});

test.run();
