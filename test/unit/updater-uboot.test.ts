// The updater on a U-Boot node (the Raspberry Pi): the same flow as on UEFI, but the slot's
// boot files are a kernel and an initrd on the FAT boot partition, and its state is
// BOOT_ORDER / BOOT_<slot>_LEFT in uboot.env. Real HTTP on loopback, plain files as devices.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeUbootEnv, encodeUbootEnv } from '../../init/bootctl/ubootenv.ts';
import { world, type World } from './updater-harness.ts';

let w: World;
test.after.each(async () => { await w?.close(); });
const env = () => decodeUbootEnv(readFileSync(join(w.esp, 'uboot.env')));
const file = (p: string) => readFileSync(join(w.esp, p));

test('v1 -> v2: slot b leaves BOOT_ORDER before its root is written, then gets the new kernel + initrd and 3 tries', async () => {
  w = await world('uboot');
  const v2 = await w.publish('2.0.0');
  // Slot b holds an older good system (the fall-back of an earlier update).
  writeFileSync(join(w.esp, 'uboot.env'), encodeUbootEnv({ ...env(), BOOT_ORDER: 'a b', BOOT_b_LEFT: '3' }));
  mkdirSync(join(w.esp, 'b'));
  writeFileSync(join(w.esp, 'b/vmlinuz'), 'old kernel of b');
  const slotA = readFileSync(w.slots.a);
  let envDuringWrite: Record<string, string> | undefined, filesDuringWrite: string[] = [];
  const u = w.updater({
    fetch: async (url, init) => {
      if (String(url).endsWith('.root.squashfs')) { envDuringWrite = env(); filesDuringWrite = readdirSync(join(w.esp, 'b')); }
      return fetch(url, init);
    },
  });
  const r = await u.apply();
  assert.ok(r.ok, JSON.stringify(r));
  assert.is(envDuringWrite?.BOOT_ORDER, 'a', 'while slot b is half-written, U-Boot would never pick it');
  assert.is(envDuringWrite?.BOOT_b_LEFT, '0');
  assert.equal(filesDuringWrite, [], 'and its old kernel is gone');
  assert.ok(readFileSync(w.slots.a).equals(slotA), 'the booted slot is untouched');
  assert.ok(readFileSync(w.slots.b).subarray(0, v2.root.length).equals(v2.root));
  assert.ok(file('b/vmlinuz').equals(v2.kernel));
  assert.ok(file('b/initrd').equals(v2.initrd));
  assert.ok(file('a/vmlinuz').equals(w.releases['1.0.0']!.kernel), 'slot a keeps its kernel: it is the fall-back');
  assert.equal(readdirSync(join(w.esp, 'b')).sort(), ['initrd', 'vmlinuz'], 'no temp files left');
  const e = env();
  assert.equal([e.BOOT_ORDER, e.BOOT_a_LEFT, e.BOOT_b_LEFT], ['b a', '3', '3']);
  assert.is(e.bootcmd, 'run distro_bootcmd', 'U-Boot\'s own variables are kept');
  assert.is(w.reboots, 1);
});

test('first boot of the update: healthy -> blessed (tries back, first in order); the old slot stays as the fall-back', async () => {
  w = await world('uboot');
  await w.publish('2.0.0');
  assert.ok((await w.updater().apply()).ok);
  // U-Boot took a try from b and booted it.
  writeFileSync(join(w.esp, 'uboot.env'), encodeUbootEnv({ ...env(), BOOT_b_LEFT: '2' }));
  const r = await w.updater({ bootedSlot: 'b', currentVersion: '2.0.0', bootId: 'boot-2' }).afterBoot(async () => true, 1000);
  assert.is(r.outcome, 'blessed', JSON.stringify(r));
  const e = env();
  assert.equal([e.BOOT_ORDER, e.BOOT_a_LEFT, e.BOOT_b_LEFT], ['b a', '3', '3']);
  assert.is(e.ethaddr, undefined, 'board facts are dropped when blessing');
  // And an operator can still go back to a.
  const rb = await w.updater({ bootedSlot: 'b', currentVersion: '2.0.0', bootId: 'boot-2' }).rollback();
  assert.ok(rb.ok, JSON.stringify(rb));
  assert.equal([env().BOOT_ORDER, env().BOOT_b_LEFT], ['a', '0']);
});

test('first boot of the update: unhealthy -> slot b demoted in uboot.env, version bad, reboot', async () => {
  w = await world('uboot');
  await w.publish('2.0.0');
  assert.ok((await w.updater().apply()).ok);
  const r = await w.updater({ bootedSlot: 'b', currentVersion: '2.0.0', bootId: 'boot-2' }).afterBoot(async () => false, 30);
  assert.is(r.outcome, 'failed', JSON.stringify(r));
  assert.equal([env().BOOT_ORDER, env().BOOT_b_LEFT], ['a', '0']);
  assert.is(w.reboots, 2);
  const c = await w.updater({ bootId: 'boot-3' }).check();
  assert.is(c.action, 'none', '2.0.0 is not offered again');
});

test('U-Boot fell back to a: the update is recorded bad and b stays out of BOOT_ORDER', async () => {
  w = await world('uboot');
  await w.publish('2.0.0');
  assert.ok((await w.updater().apply()).ok);
  // b spent its tries; boot.scr booted a.
  writeFileSync(join(w.esp, 'uboot.env'), encodeUbootEnv({ ...env(), BOOT_b_LEFT: '0', BOOT_a_LEFT: '2' }));
  const r = await w.updater({ bootId: 'boot-2' }).afterBoot(async () => true, 1000);
  assert.is(r.outcome, 'fell-back', JSON.stringify(r));
  assert.equal([env().BOOT_ORDER, env().BOOT_b_LEFT], ['a', '0']);
});

test('a Pi node takes only releases for its own target, and only with a kernel and an initrd', async () => {
  w = await world('uboot');
  await w.publish('2.0.0', { flavour: 'uefi' }); // the x86_64 build of 2.0.0: not for this node
  const c = await w.updater().check();
  assert.is(c.action, 'none', JSON.stringify(c));
  assert.not.ok(existsSync(join(w.esp, 'b')), 'nothing staged');
});

test('a kernel whose bytes differ from the signed manifest is refused; slot b stays unbootable, no temp file left', async () => {
  w = await world('uboot');
  await w.publish('2.0.0');
  const k = join(w.pub, 'stable/2.0.0/arm64_rpi/fixture-kiln-2.0.0-arm64.vmlinuz');
  const bytes = readFileSync(k); bytes[10] ^= 1; writeFileSync(k, bytes);
  const r = await w.updater().apply();
  assert.not.ok(r.ok);
  assert.is(!r.ok && r.stage, 'verify');
  assert.equal(readdirSync(join(w.esp, 'b')), []);
  assert.equal([env().BOOT_ORDER, env().BOOT_b_LEFT], ['a', '0']);
  assert.is(w.reboots, 0);
});

test.run();
