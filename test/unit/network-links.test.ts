// Link state from sysfs: a link that is up already (stage 1 brings up lo) costs no spawn.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isUp, linkUp, waitForLease } from '../../init/network.ts';

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

test('a lease written as the hook writes it (a rename into the folder) ends the wait at once', async () => {
  const dir = join(mkdtempSync(join(tmpdir(), 'kiln-lease-')), 'net');
  // The slow poll comes only after a minute: a wait that ends sooner was woken by the watch.
  const t0 = Date.now();
  const waiting = waitForLease('eth0', 60_000, dir, 60_000);
  setTimeout(() => { writeFileSync(join(dir, 'eth0.tmp'), 'ip=10.0.2.15\nmask=24\nrouter=10.0.2.2\n'); renameSync(join(dir, 'eth0.tmp'), join(dir, 'eth0')); }, 150);
  const got = await waiting;
  assert.equal(got?.ip, '10.0.2.15');
  assert.equal(got?.router, '10.0.2.2');
  assert.ok(Date.now() - t0 < 30_000, `took ${Date.now() - t0} ms`);
});

test('no lease: the wait ends at its timeout with nothing, and a lease already there is read at once', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-lease-'));
  assert.equal(await waitForLease('eth0', 300, dir), undefined);
  writeFileSync(join(dir, 'eth1'), 'ip=192.168.1.7\nmask=24\n');
  assert.equal((await waitForLease('eth1', 300, dir))?.ip, '192.168.1.7');
  // A lease file whose ip= line is empty is not a lease.
  writeFileSync(join(dir, 'eth2'), 'ip=\nmask=24\n');
  assert.equal(await waitForLease('eth2', 200, dir), undefined);
});

test.run();
