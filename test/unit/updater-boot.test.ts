import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { world, type World } from './updater-harness.ts';
import { bootOrder, nextBootSlot } from '../../init/update/entries.ts';

let w: World;
test.after.each(async () => { await w?.close(); });

const L = (f: string) => join(w.esp, 'EFI/Linux', f);
/** What systemd-boot does when it boots a counting entry: one try used. */
const bootLoaderTries = (from: string, to: string) => renameSync(L(from), L(to));
const pendingFile = () => join(w.stateBase, 'stable/pending.json');
const bad = () => JSON.parse(readFileSync(w.stateFile(), 'utf8')).badVersions as string[];

/** v1 in slot a, v2 staged in slot b and "rebooted" (the loader took one try). */
async function stagedAndRebooted() {
  w = await world();
  await w.publish('2.0.0');
  const r = await w.updater().apply();
  assert.ok(r.ok, JSON.stringify(r));
  assert.is(w.reboots, 1);
  bootLoaderTries('kiln-b+3.efi', 'kiln-b+2-1.efi');
}

test('afterBoot in the same boot as apply (reboot not happened yet) does nothing', async () => {
  w = await world();
  await w.publish('2.0.0');
  await w.updater({ window: 'Sun 03:00-03:01' }).apply(); // outside the window: staged, no reboot
  const r = await w.updater().afterBoot(async () => true, 100);
  assert.is(r.outcome, 'not-rebooted');
  assert.ok(existsSync(pendingFile()));
  assert.equal(w.entries(), ['kiln-a.efi', 'kiln-b+3.efi']);
});

test('a poll after the reboot but before afterBoot judged the update changes nothing', async () => {
  await stagedAndRebooted();
  const u = w.updater({ bootedSlot: 'b', currentVersion: '2.0.0', bootId: 'boot-2' });
  await w.publish('2.0.1');
  const r = await u.apply();
  assert.is(!r.ok && r.stage, 'pending');
  assert.equal(w.entries(), ['kiln-a.efi', 'kiln-b+2-1.efi']);
  assert.ok(existsSync(pendingFile()));
});

test('afterBoot success: entry blessed, pending cleared, status says so', async () => {
  await stagedAndRebooted();
  const u = w.updater({ bootedSlot: 'b', currentVersion: '2.0.0', bootId: 'boot-2' });
  let probes = 0;
  const r = await u.afterBoot(async () => ++probes >= 3, 5000); // passes on the third probe
  assert.is(r.outcome, 'blessed', r.message);
  assert.is(probes, 3);
  assert.equal(w.entries(), ['kiln-a.efi', 'kiln-b.efi']);
  assert.not.ok(existsSync(pendingFile()));
  assert.is(w.reboots, 1, 'no extra reboot');
  assert.ok(u.status().some((l) => /update to 2\.0\.0 succeeded/.test(l)), u.status().join('\n'));
  assert.ok(u.status().includes('bad versions: none'));
  // And systemd-boot keeps choosing b (newer, blessed).
  assert.is(nextBootSlot([{ file: 'kiln-a.efi', version: '1.0.0' }, { file: 'kiln-b.efi', version: '2.0.0' }]), 'b');
});

test('afterBoot health failure: version recorded bad, entry demoted to +0, reboot called', async () => {
  await stagedAndRebooted();
  const u = w.updater({ bootedSlot: 'b', currentVersion: '2.0.0', bootId: 'boot-2' });
  let probes = 0;
  const r = await u.afterBoot(async () => { probes++; return false; }, 40);
  assert.is(r.outcome, 'failed');
  assert.ok(probes >= 2, `probed until the deadline (${probes})`);
  assert.equal(w.entries(), ['kiln-a.efi', 'kiln-b+0-1.efi']);
  assert.equal(bad(), ['2.0.0']);
  assert.is(w.reboots, 2);
  assert.not.ok(existsSync(pendingFile()));
  // After the demotion systemd-boot picks slot a even though b is newer.
  assert.is(nextBootSlot([{ file: 'kiln-a.efi', version: '1.0.0' }, { file: 'kiln-b+0-1.efi', version: '2.0.0' }]), 'a');
  // Back on slot a, the next check does not offer 2.0.0 again.
  const c = await w.updater({ bootId: 'boot-3' }).check();
  assert.is(c.action, 'none');
  assert.ok(c.action === 'none' && c.skipped.some((s) => s.version === '2.0.0' && /recorded bad/.test(s.why)));
});

test('a health check that throws counts as failing, not as a crash', async () => {
  await stagedAndRebooted();
  const r = await w.updater({ bootedSlot: 'b', currentVersion: '2.0.0', bootId: 'boot-2' }).afterBoot(async () => { throw new Error('k3s not up'); }, 20);
  assert.is(r.outcome, 'failed');
  assert.ok(w.logs.some((l) => /k3s not up/.test(l)));
});

test('slot b booted but it runs another version than staged: treated as a failed update', async () => {
  await stagedAndRebooted();
  const r = await w.updater({ bootedSlot: 'b', currentVersion: '1.9.0', bootId: 'boot-2' }).afterBoot(async () => true, 100);
  assert.is(r.outcome, 'failed');
  assert.match(r.message, /runs 1\.9\.0, not the staged 2\.0\.0/);
  assert.equal(bad(), ['2.0.0']);
});

test('fallback: the loader booted the old slot -> version recorded bad, status line, never picked again', async () => {
  await stagedAndRebooted();
  // Three failed tries later systemd-boot gave up on b and booted a.
  bootLoaderTries('kiln-b+2-1.efi', 'kiln-b+0-3.efi');
  const u = w.updater({ bootedSlot: 'a', currentVersion: '1.0.0', bootId: 'boot-5' });
  const r = await u.afterBoot(async () => true, 100);
  assert.is(r.outcome, 'fell-back');
  assert.is(r.message, 'update to 2.0.0 failed to boot; running 1.0.0 from slot a; 2.0.0 will not be retried');
  assert.equal(bad(), ['2.0.0']);
  assert.not.ok(existsSync(pendingFile()));
  assert.is(w.reboots, 1, 'no reboot on fallback');
  assert.ok(u.status().some((l) => l.includes('update to 2.0.0 failed to boot')), u.status().join('\n'));
  assert.ok(u.status().includes('bad versions: 2.0.0'));

  const c = await u.check();
  assert.is(c.action, 'none');
  const again = await u.apply();
  assert.is(again.ok, false);
  assert.equal(w.entries(), ['kiln-a.efi', 'kiln-b+0-3.efi'], 'nothing restaged');
  assert.is(w.reboots, 1);

  // A newer release is still taken.
  await w.publish('2.0.1');
  const next = await u.check();
  assert.is(next.action === 'install' && next.version, '2.0.1');
});

test('fallback chosen by hand in the menu: the new entry loses its remaining tries', async () => {
  await stagedAndRebooted(); // kiln-b+2-1.efi still has tries
  const r = await w.updater({ bootedSlot: 'a', currentVersion: '1.0.0', bootId: 'boot-2' }).afterBoot(async () => true, 100);
  assert.is(r.outcome, 'fell-back');
  assert.equal(w.entries(), ['kiln-a.efi', 'kiln-b+0-1.efi']);
});

test('rollback: to a blessed other slot by demoting the running one; refused without one', async () => {
  await stagedAndRebooted();
  await w.updater({ bootedSlot: 'b', currentVersion: '2.0.0', bootId: 'boot-2' }).afterBoot(async () => true, 100);
  assert.equal(w.entries(), ['kiln-a.efi', 'kiln-b.efi']);
  const u = w.updater({ bootedSlot: 'b', currentVersion: '2.0.0', bootId: 'boot-2' });
  const r = await u.rollback();
  assert.ok(r.ok, JSON.stringify(r));
  assert.equal(w.entries(), ['kiln-a.efi', 'kiln-b+0.efi']);
  assert.equal(bad(), ['2.0.0']);
  assert.is(w.reboots, 2);
  assert.is(nextBootSlot([{ file: 'kiln-a.efi', version: '1.0.0' }, { file: 'kiln-b+0.efi', version: '2.0.0' }]), 'a');

  // From slot a now; slot b is +0, so there is nothing good to go back to.
  const back = await w.updater({ bootedSlot: 'a', currentVersion: '1.0.0', bootId: 'boot-3' }).rollback();
  assert.is(back.ok, false);
  assert.match(back.ok ? '' : back.message, /slot b holds no blessed boot entry \(kiln-b\+0\.efi\)/);
  assert.equal(w.entries(), ['kiln-a.efi', 'kiln-b+0.efi']);
});

test('rollback with markBad: false keeps the version eligible', async () => {
  w = await world();
  writeFileSync(L('kiln-b.efi'), 'uki');
  const r = await w.updater({ bootedSlot: 'a' }).rollback({ markBad: false, reboot: false });
  assert.ok(r.ok);
  assert.equal(w.entries(), ['kiln-a+0.efi', 'kiln-b.efi']);
  assert.not.ok(existsSync(w.stateFile()));
  assert.is(w.reboots, 0);
});

test('boot order model follows the spec rules', () => {
  const order = (c: { file: string; version?: string }[]) => bootOrder(c).map((x) => x.file);
  // version beats file name
  assert.equal(order([{ file: 'kiln-b.efi', version: '1.0.0' }, { file: 'kiln-a.efi', version: '2.0.0' }]), ['kiln-a.efi', 'kiln-b.efi']);
  // bad (+0) entries go last whatever their version
  assert.equal(order([{ file: 'kiln-a+0-3.efi', version: '3.0.0' }, { file: 'kiln-b.efi', version: '1.0.0' }]), ['kiln-b.efi', 'kiln-a+0-3.efi']);
  // same version: file name descending (b before a)
  assert.equal(order([{ file: 'kiln-a.efi', version: '1.0.0' }, { file: 'kiln-b+3.efi', version: '1.0.0' }]), ['kiln-b+3.efi', 'kiln-a.efi']);
  // semver, not string, comparison: 1.10.0 > 1.9.0
  assert.equal(order([{ file: 'kiln-a.efi', version: '1.9.0' }, { file: 'kiln-b.efi', version: '1.10.0' }]), ['kiln-b.efi', 'kiln-a.efi']);
});

test.run();
