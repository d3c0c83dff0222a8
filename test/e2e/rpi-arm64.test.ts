// The Raspberry Pi SD image in QEMU's raspi3b (TCG): U-Boot from the image loads our
// boot.scr, which takes a try from slot a, saves uboot.env and boots the slot's kernel; the
// node comes up, and blesses the slot by giving it its tries back in uboot.env. Then a
// fall-back: slot b preferred with one try and no root, so its stage 1 fails and reboots
// (bcm2835 watchdog), U-Boot finds b spent and boots a, and the node says it fell back.
// NOT covered here (QEMU starts U-Boot itself): the VideoCore firmware reading config.txt,
// the Pi 4, power loss during saveenv.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, statSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readMbr } from '../../init/disk/mbr.ts';
import { decodeUbootEnv } from '../../init/bootctl/ubootenv.ts';
import { bootFile, expectFallbackFromEmptySlotB, PiVm } from './pi-vm.ts';
import { READY, scratchCopy, testRpiImage, TEST_VERSION } from './image.ts';

const PI_BOOT_TIMEOUT = 480_000; // TCG, 33 MB kernel read through U-Boot's FAT driver, shared cores
const tmp = mkdtempSync(join(tmpdir(), 'kiln-rpi-e2e-'));
const pi = await testRpiImage();
const disk = await scratchCopy(pi.img, 'sd.img');
// A card twice the image's size (QEMU's SD model wants a power of two): kiln-data grows into it.
const cardBytes = 2 * statSync(disk).size;
truncateSync(disk, cardBytes);

function firstSector(file: string): Buffer {
  const b = Buffer.alloc(512), fd = openSync(file, 'r');
  try { readSync(fd, b, 0, 512, 0); } finally { closeSync(fd); }
  return b;
}

async function env(): Promise<Record<string, string>> {
  return decodeUbootEnv(readFileSync(await bootFile(disk, 'uboot.env', join(tmp, `env-${Date.now()}`))));
}

test('boots through U-Boot and boot.scr to ready on slot a, grows kiln-data to the card, then blesses slot a in uboot.env', async () => {
  const vm = await PiVm.start(disk);
  try {
    await vm.waitFor(/kiln: boot\.scr: order/, 120_000);
    await vm.waitFor(/kiln: booting slot a \(tries left a=2 b=0\)/, 60_000);
    const m = await vm.waitFor(READY, PI_BOOT_TIMEOUT);
    assert.equal([m[1], m[2], m[3]], [TEST_VERSION, 'a', 'arm64']);
    const g = /kiln: data partition grown to (\d+) MiB/.exec(vm.output);
    assert.ok(g, 'the first boot grew kiln-data');
    const data = readMbr(firstSector(disk)).partitions.find((p) => p.number === 4)!;
    assert.is(data.startLba + data.sectors, cardBytes / 512, 'the MBR entry reaches the card\'s end');
    assert.is(Number(g![1]), Math.floor(data.sectors / 2048));
    console.log(`  ready after ${vm.elapsed().toFixed(1)} s (QEMU start to ready line)`);
    assert.match(vm.output, /kiln-stage1: root PARTUUID=[0-9a-f]{8}-02 is \/dev\/mmcblk0p2/);
    await vm.waitFor(/kiln: blessed slot a \(U-Boot: BOOT_ORDER=a, BOOT_a_LEFT=3\)/, 120_000);
  } finally { await vm.kill(); }
  const e = await env();
  assert.is(e.BOOT_ORDER, 'a');
  assert.is(e.BOOT_a_LEFT, '3');
  assert.ok(e.bootcmd, 'U-Boot\'s own environment is kept');
  assert.is(e.fdt_addr, undefined, 'fdt_addr is never saved');
  assert.is(e.ethaddr, undefined, 'the MAC does not follow the card (dropped when blessing)');
});

test('falls back to slot a when slot b spends its try, and the node reports it', async () => {
  await expectFallbackFromEmptySlotB(disk, 'raspi3b', { bootTimeoutMs: PI_BOOT_TIMEOUT });
});

test.run();
