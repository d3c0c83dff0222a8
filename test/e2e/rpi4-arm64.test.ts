// The Raspberry Pi SD image in QEMU 10's raspi4b (TCG), the same card as the Pi 3 test: U-Boot
// from the card (rpi_arm64) loads our boot.scr, which takes a try from slot a and boots the
// slot's kernel with the Pi 4 device tree; the node comes up and blesses the slot. Then the
// fall-back: slot b preferred with one try and no root, its stage 1 fails and reboots (the
// bcm2711 watchdog), U-Boot finds b spent and boots a. The device tree QEMU hands over is the
// card's bcm2711-rpi-4-b.dtb less the devices QEMU lacks (RASPI4B_DT_EDITS in pi-vm.ts).
// NOT covered here: the VideoCore firmware (start4.elf, config.txt), the card on the Pi 4's
// EMMC2 controller (QEMU puts it on the other SD host), the mini-UART under Linux, HDMI,
// Ethernet (GENET) and USB (behind PCIe).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, statSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeUbootEnv } from '../../init/bootctl/ubootenv.ts';
import { bootFile, expectFallbackFromEmptySlotB, PiVm, qemuRaspi4b } from './pi-vm.ts';
import { READY, scratchCopy, testRpiImage, TEST_VERSION } from './image.ts';

const PI_BOOT_TIMEOUT = 600_000; // TCG, 4 emulated cores, 33 MB kernel read through U-Boot's FAT driver
const qemu = qemuRaspi4b();
if ('missing' in qemu) {
  // .ci/run unpacks QEMU 10, so in CI its absence is a failure, never a skip.
  if (process.env.CI) throw new Error(qemu.missing);
  console.log(`  skipped: ${qemu.missing}`);
  test.skip('boots the Pi 4 card through U-Boot to ready (needs QEMU 10)', () => {});
  test.run();
} else {
  const tmp = mkdtempSync(join(tmpdir(), 'kiln-rpi4-e2e-'));
  const pi = await testRpiImage();
  const disk = await scratchCopy(pi.img, 'sd.img');
  truncateSync(disk, 2 * statSync(disk).size); // a power of two, as QEMU's SD model wants
  const env = async () => decodeUbootEnv(readFileSync(await bootFile(disk, 'uboot.env', join(tmp, `env-${Date.now()}`))));

  test('raspi4b: boots through U-Boot and boot.scr to ready on slot a, then blesses slot a in uboot.env', async () => {
    const vm = await PiVm.start(disk, { board: 'raspi4b' });
    try {
      await vm.waitFor(/RPI 4 Model B/, 120_000);
      await vm.waitFor(/kiln: booting slot a \(tries left a=2 b=0\)/, 180_000);
      const m = await vm.waitFor(READY, PI_BOOT_TIMEOUT);
      assert.equal([m[1], m[2], m[3]], [TEST_VERSION, 'a', 'arm64']);
      console.log(`  ready after ${vm.elapsed().toFixed(1)} s (QEMU start to ready line)`);
      assert.match(vm.output, /kiln-stage1: root PARTUUID=[0-9a-f]{8}-02 is \/dev\/mmcblk0p2/);
      assert.match(vm.output, /kiln: data partition grown to \d+ MiB/);
      await vm.waitFor(/kiln: blessed slot a \(U-Boot: BOOT_ORDER=a, BOOT_a_LEFT=3\)/, 180_000);
    } finally { await vm.kill(); }
    const e = await env();
    assert.is(e.BOOT_ORDER, 'a');
    assert.is(e.BOOT_a_LEFT, '3');
    assert.is(e.fdt_addr, undefined, 'fdt_addr is never saved');
  });

  test('raspi4b: falls back to slot a when slot b spends its try, and the node reports it', async () => {
    await expectFallbackFromEmptySlotB(disk, 'raspi4b', { bootTimeoutMs: PI_BOOT_TIMEOUT, slow: 1.5 });
  });

  test.run();
}
