// Slot state in U-Boot's environment (the Pi): blessing, fall-back detection, staging and
// the atomic rewrite of uboot.env; plus picking the boot loader from what is on /efi.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detectBootLoader, blessBooted } from '../../init/bootctl/index.ts';
import { blessedEnv, blessUboot, demotedEnv, fellBackFrom, readUbootEnv, stagedEnv, writeUbootEnv } from '../../init/bootctl/uboot.ts';
import { decodeUbootEnv, encodeUbootEnv } from '../../init/bootctl/ubootenv.ts';
import { RPI_TRIES } from '../../builder/rpi.ts';
import { UBOOT_TRIES } from '../../init/bootctl/uboot.ts';
import { partitionBySpec, siblingPartition } from '../../init/bootctl/devices.ts';
import { buildMbr } from '../../init/disk/mbr.ts';

const dir = () => mkdtempSync(join(tmpdir(), 'kiln-uboot-'));
/** What the boot script's first saveenv leaves: U-Boot's own variables plus ours. */
const INITIAL_ENV = { BOOT_ORDER: 'a', BOOT_a_LEFT: '3', BOOT_b_LEFT: '0', bootcmd: 'run distro_bootcmd', bootdelay: '2' };

test('the node and the builder agree on the tries', () => { assert.is(UBOOT_TRIES, RPI_TRIES); });

test('bless restores the booted slot\'s tries; a fresh card stays as it is otherwise', () => {
  const after = blessedEnv({ ...INITIAL_ENV, BOOT_a_LEFT: '2', board: 'x' }, 'a');
  assert.equal(after, { ...INITIAL_ENV, BOOT_a_LEFT: '3', board: 'x' });
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
  assert.equal(staged, { ...INITIAL_ENV, BOOT_ORDER: 'b a', BOOT_a_LEFT: '3', BOOT_b_LEFT: '3' });
  assert.equal(blessedEnv({ ...staged, BOOT_b_LEFT: '2' }, 'b'), staged);
  assert.equal(demotedEnv(staged, 'b'), { ...INITIAL_ENV, BOOT_ORDER: 'a', BOOT_a_LEFT: '3', BOOT_b_LEFT: '0' });
});

test('blessUboot rewrites uboot.env whole, same size, valid CRC, no temp file left', () => {
  const d = dir();
  writeFileSync(join(d, 'uboot.env'), encodeUbootEnv({ BOOT_ORDER: 'b a', BOOT_a_LEFT: '2', BOOT_b_LEFT: '0', bootcmd: 'run distro_bootcmd', kiln_fdt_addr: '2eff2e00', ethaddr: 'b8:27:eb:00:00:01', fdt_addr: '2eff2e00' }));
  const msg = blessUboot(d, 'a');
  assert.match(msg, /blessed slot a/);
  assert.match(msg, /fell back from slot b/);
  const raw = readFileSync(join(d, 'uboot.env'));
  assert.is(raw.length, 16384);
  // Board facts (MAC, device tree address) are dropped: they must not follow the card.
  assert.equal(decodeUbootEnv(raw), { BOOT_ORDER: 'a', BOOT_a_LEFT: '3', BOOT_b_LEFT: '0', bootcmd: 'run distro_bootcmd' });
  assert.equal(readdirSync(d), ['uboot.env']);
  assert.is(blessUboot(d, 'a'), 'slot a already blessed');
});

test('a corrupt or missing uboot.env is left for U-Boot: a file from here would lack its bootcmd', () => {
  const d = dir();
  const bad = encodeUbootEnv({ BOOT_ORDER: 'a', bootcmd: 'x' }); bad[20] ^= 0xff;
  writeFileSync(join(d, 'uboot.env'), bad);
  assert.match(blessUboot(d, 'a'), /not blessed: uboot\.env unusable \(.*CRC/);
  assert.equal(readFileSync(join(d, 'uboot.env')), bad);
  assert.match(blessUboot(dir(), 'a'), /not blessed: uboot\.env unusable \(missing\)/);
  assert.throws(() => writeUbootEnv(dir(), { BOOT_ORDER: 'a' }), /without bootcmd/);
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
  writeFileSync(join(pi, 'boot.scr'), 'script');
  assert.is(detectBootLoader(pi), 'uboot');
  assert.match(await blessBooted('a', pi), /blessed slot a \(U-Boot/);
  assert.is(detectBootLoader(dir()), undefined);
  const fresh = dir(); writeFileSync(join(fresh, 'boot.scr'), 'script');
  assert.is(detectBootLoader(fresh), 'uboot', 'a fresh card has boot.scr but no uboot.env yet');
});

test('partitions by PARTUUID (MBR signature + number) and their siblings, from sysfs', () => {
  const root = dir();
  const sys = join(root, 'class/block'), dev = join(root, 'dev');
  mkdirSync(sys, { recursive: true }); mkdirSync(dev);
  for (const [disk, sig] of [['mmcblk0', 0x1f65ff1b], ['sda', 0x11111111]] as const) {
    const d = join(root, 'devices/x', disk);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'uevent'), `DEVNAME=${disk}\nDEVTYPE=disk\n`);
    symlinkSync(d, join(sys, disk));
    writeFileSync(join(dev, disk), buildMbr({ diskSignature: sig, partitions: [{ type: 0x0c, startLba: 2048, sectors: 100 }] }));
    for (const n of [1, 2, 3, 4]) {
      const name = disk === 'sda' ? `sda${n}` : `${disk}p${n}`;
      mkdirSync(join(d, name));
      writeFileSync(join(d, name, 'uevent'), `DEVNAME=${name}\nDEVTYPE=partition\nPARTN=${n}\n`);
      writeFileSync(join(d, name, 'partition'), `${n}\n`);
      symlinkSync(join(d, name), join(sys, name));
    }
  }
  assert.is(partitionBySpec('PARTUUID=1f65ff1b-01', sys, dev), 'mmcblk0p1');
  assert.is(partitionBySpec('PARTUUID=1F65FF1B-04', sys, dev), 'mmcblk0p4');
  assert.is(partitionBySpec('PARTUUID=11111111-02', sys, dev), 'sda2');
  assert.is(partitionBySpec('PARTUUID=22222222-02', sys, dev), undefined);
  assert.is(partitionBySpec(undefined, sys, dev), undefined);
  assert.is(siblingPartition('mmcblk0p1', 3, sys), 'mmcblk0p3');
  assert.is(siblingPartition('sda1', 2, sys), 'sda2');
});

test.run();
