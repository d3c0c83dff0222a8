// Slot state in U-Boot's environment (the Pi): blessing, fall-back detection, staging and
// the atomic rewrite of uboot.env; plus picking the boot loader from what is on /efi.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectBootLoader, blessBooted } from '../../init/bootctl/index.ts';
import { blessedEnv, blessUboot, demotedEnv, fellBackFrom, readUbootEnv, stagedEnv, writeUbootEnv } from '../../init/bootctl/uboot.ts';
import { decodeUbootEnv, encodeUbootEnv } from '../../init/bootctl/ubootenv.ts';
import { INITIAL_ENV, RPI_TRIES } from '../../builder/rpi.ts';
import { UBOOT_TRIES } from '../../init/bootctl/uboot.ts';

const dir = () => mkdtempSync(join(tmpdir(), 'kiln-uboot-'));

test('the node and the builder agree on the tries', () => { assert.is(UBOOT_TRIES, RPI_TRIES); });

test('bless restores the booted slot\'s tries; a fresh card stays as it is otherwise', () => {
  const after = blessedEnv({ ...INITIAL_ENV, BOOT_a_LEFT: '2', board: 'x' }, 'a');
  assert.equal(after, { BOOT_ORDER: 'a', BOOT_a_LEFT: '3', BOOT_b_LEFT: '0', board: 'x' });
});

test('fall-back: b was preferred with no tries left and a booted', () => {
  const env = { BOOT_ORDER: 'b a', BOOT_a_LEFT: '2', BOOT_b_LEFT: '0' };
  assert.is(fellBackFrom(env, 'a'), 'b');
  assert.is(fellBackFrom(env, 'b'), undefined);
  assert.is(fellBackFrom({ BOOT_ORDER: 'b a', BOOT_a_LEFT: '3', BOOT_b_LEFT: '2' }, 'a'), undefined, 'b had tries: picked by hand, not a fall-back');
  assert.equal(blessedEnv(env, 'a'), { BOOT_ORDER: 'a', BOOT_a_LEFT: '3', BOOT_b_LEFT: '0' }, 'the failed slot leaves the order');
});

test('an update in b: staged first with tries, blessed keeps a as the fall-back', () => {
  const staged = stagedEnv({ ...INITIAL_ENV }, 'b');
  assert.equal(staged, { BOOT_ORDER: 'b a', BOOT_a_LEFT: '3', BOOT_b_LEFT: '3' });
  assert.equal(blessedEnv({ ...staged, BOOT_b_LEFT: '2' }, 'b'), { BOOT_ORDER: 'b a', BOOT_a_LEFT: '3', BOOT_b_LEFT: '3' });
  assert.equal(demotedEnv(staged, 'b'), { BOOT_ORDER: 'a', BOOT_a_LEFT: '3', BOOT_b_LEFT: '0' });
});

test('blessUboot rewrites uboot.env whole, same size, valid CRC, no temp file left', () => {
  const d = dir();
  writeFileSync(join(d, 'uboot.env'), encodeUbootEnv({ BOOT_ORDER: 'b a', BOOT_a_LEFT: '2', BOOT_b_LEFT: '0', kiln_fdt_addr: '2eff2e00' }));
  const msg = blessUboot(d, 'a');
  assert.match(msg, /blessed slot a/);
  assert.match(msg, /fell back from slot b/);
  const raw = readFileSync(join(d, 'uboot.env'));
  assert.is(raw.length, 16384);
  assert.equal(decodeUbootEnv(raw), { BOOT_ORDER: 'a', BOOT_a_LEFT: '3', BOOT_b_LEFT: '0', kiln_fdt_addr: '2eff2e00' });
  assert.equal(readdirSync(d), ['uboot.env']);
  assert.is(blessUboot(d, 'a'), 'slot a already blessed');
});

test('a corrupt uboot.env (U-Boot used its defaults) is replaced by a good one', () => {
  const d = dir();
  const bad = encodeUbootEnv({ BOOT_ORDER: 'a' }); bad[20] ^= 0xff;
  writeFileSync(join(d, 'uboot.env'), bad);
  assert.match(blessUboot(d, 'a'), /CRC.*rewrote it/);
  assert.equal(readUbootEnv(d), { BOOT_ORDER: 'a', BOOT_a_LEFT: '3' });
});

test('detects the boot loader from the mounted boot partition; systemd-boot path unchanged', async () => {
  const esp = dir();
  mkdirSync(join(esp, 'EFI/Linux'), { recursive: true });
  writeFileSync(join(esp, 'EFI/Linux/kiln-a+3.efi'), 'uki');
  assert.is(detectBootLoader(esp), 'systemd-boot');
  assert.is(await blessBooted('a', esp), 'blessed slot a');
  assert.equal(readdirSync(join(esp, 'EFI/Linux')), ['kiln-a.efi']);
  const pi = dir();
  writeUbootEnv(pi, { ...INITIAL_ENV, BOOT_a_LEFT: '2' });
  assert.is(detectBootLoader(pi), 'uboot');
  assert.match(await blessBooted('a', pi), /blessed slot a \(U-Boot/);
  assert.is(detectBootLoader(dir()), undefined);
});

test.run();
