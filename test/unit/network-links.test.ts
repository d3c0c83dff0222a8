// Link state from sysfs: a link that is up already (stage 1 brings up lo) costs no spawn.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isUp, linkUp } from '../../init/network.ts';

const sysNet = (links: Record<string, string | undefined>) => {
  const sys = mkdtempSync(join(tmpdir(), 'kiln-net-'));
  for (const [n, flags] of Object.entries(links)) {
    mkdirSync(join(sys, n));
    if (flags !== undefined) writeFileSync(join(sys, n, 'flags'), `${flags}\n`);
  }
  return sys;
};

test('IFF_UP is read from the sysfs flags (hex)', () => {
  const sys = sysNet({ lo: '0x9', eth0: '0x1003', eth1: '0x1002', odd: 'garbage', bare: undefined });
  assert.equal(['lo', 'eth0', 'eth1', 'odd', 'bare', 'missing'].map((n) => isUp(n, sys)), [true, true, false, false, false, false]);
});

test('linkUp runs nothing for a link that is up, and reports ip\'s error for one that is not', async () => {
  // No link of this name exists on the host, so `ip link set` can only fail.
  const sys = sysNet({ kilnnone0: '0x1003', kilnnone1: '0x1002' });
  await linkUp('kilnnone0', sys);
  let error = '';
  try { await linkUp('kilnnone1', sys); } catch (e) { error = (e as Error).message; }
  assert.match(error, /ip link set kilnnone1 up/);
});

test.run();
