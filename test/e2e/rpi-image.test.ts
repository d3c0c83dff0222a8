// Inspects the Raspberry Pi SD image as built (no VM): MBR partition types and sizes, the
// boot partition's files, config.txt, boot.scr's header and script, the root and data
// partitions, the .xz; and that the format is refused where it cannot work.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeSync, mkdtempSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { $ } from 'zx';
import { build } from '../../builder/build.ts';
import { crc32 } from 'node:zlib';
import { UIMAGE_MAGIC } from '../../builder/formats/uimage.ts';
import { createLogger } from '../../builder/log.ts';
import { bootFile, bootList } from './pi-vm.ts';
import { testRpiImage } from './image.ts';

const pi = await testRpiImage();
const tmp = mkdtempSync(join(tmpdir(), 'kiln-rpi-inspect-'));

function readAt(file: string, offset: number, length: number): Buffer {
  const fd = openSync(file, 'r');
  try { const b = Buffer.alloc(length); readSync(fd, b, 0, length, offset); return b; } finally { closeSync(fd); }
}

test('MBR: FAT32 (0x0c, bootable) + three Linux partitions; the image is a power of two', async () => {
  const size = statSync(pi.img).size;
  assert.ok(size > 0 && (size & (size - 1)) === 0, `size ${size} is a power of two`);
  const t = JSON.parse((await $({ quiet: true })`sfdisk --json ${pi.img}`).stdout).partitiontable;
  assert.is(t.label, 'dos');
  assert.equal(t.partitions.map((p: any) => p.type), ['c', '83', '83', '83']);
  assert.equal(t.partitions.map((p: any) => !!p.bootable), [true, false, false, false]);
  assert.is(t.partitions[0].start, 2048);
  const last = t.partitions[3];
  assert.is((last.start + last.size) * 512, size, 'kiln-data ends at the end of the image');
});

test('boot partition: firmware, config.txt, U-Boot, boot.scr, device trees, slot a; no uboot.env', async () => {
  const top = await bootList(pi.img);
  for (const f of ['bootcode.bin', 'start.elf', 'fixup.dat', 'start4.elf', 'fixup4.dat', 'config.txt', 'u-boot.bin', 'boot.scr',
    'bcm2837-rpi-3-b.dtb', 'bcm2837-rpi-3-b-plus.dtb', 'bcm2711-rpi-4-b.dtb', 'a', 'broadcom']) assert.ok(top.includes(f), `${f} on p1 (${top.join(' ')})`);
  assert.not.ok(top.includes('uboot.env'), 'U-Boot must start from its default environment');
  assert.not.ok(top.includes('b'), 'slot b is empty on a fresh card');
  assert.equal(await bootList(pi.img, 'a'), ['initrd', 'vmlinuz']);
  const vmlinuz = readFileSync(await bootFile(pi.img, 'a/vmlinuz', join(tmp, 'vmlinuz')));
  assert.is(vmlinuz.subarray(56, 60).toString('latin1'), 'ARM\x64', 'an arm64 Image (booti)');
  const initrd = readFileSync(await bootFile(pi.img, 'a/initrd', join(tmp, 'initrd')));
  assert.is(initrd.readUInt32LE(0), 0xfd2fb528, 'a zstd stage-1 initramfs');
});

test('config.txt: 64-bit, U-Boot as the kernel, UART on, mainline device tree names', async () => {
  const text = readFileSync(await bootFile(pi.img, 'config.txt', join(tmp, 'config.txt')), 'utf8');
  const keys = Object.fromEntries(text.split('\n').filter((l) => /^\w+=/.test(l)).map((l) => l.split('=')));
  assert.equal(keys, { arm_64bit: '1', kernel: 'u-boot.bin', enable_uart: '1', upstream_kernel: '1' });
});

test('boot.scr: valid legacy header and CRCs; the A/B script inside', async () => {
  const img = readFileSync(await bootFile(pi.img, 'boot.scr', join(tmp, 'boot.scr')));
  const h = img.subarray(0, 64), data = img.subarray(64);
  assert.is(h.readUInt32BE(0), UIMAGE_MAGIC);
  assert.is(h.readUInt32BE(12), data.length);
  assert.is(h.readUInt32BE(24), crc32(data));
  const z = Buffer.from(h); z.writeUInt32BE(0, 4);
  assert.is(h.readUInt32BE(4), crc32(z));
  assert.is(h[30], 6, 'type script');
  const script = data.subarray(8, 8 + data.readUInt32BE(0)).toString();
  for (const s of ['saveenv', 'setexpr BOOT_a_LEFT ${BOOT_a_LEFT} - 1', 'kiln.slot=${kiln_slot}', '${kiln_slot}/vmlinuz', 'booti', 'kiln.root=PARTUUID=']) assert.ok(script.includes(s), s);
  assert.not.match(script, /@[A-Z]+@/);
  // fdt_addr is cleared before every saveenv (the lab's trap).
  const lines = script.split('\n');
  const firstSave = lines.findIndex((l) => l.trim() === 'saveenv');
  assert.ok(lines.slice(0, firstSave).some((l) => /setenv fdt_addr$/.test(l.trim())));
});

test('root a is the root image, root b is empty, data is ext4 labelled kiln-data', async () => {
  const t = JSON.parse((await $({ quiet: true })`sfdisk --json ${pi.img}`).stdout).partitiontable.partitions;
  const root = join(pi.out, pi.rec.outputs.find((o) => o.kind === 'root')!.file);
  assert.equal(readAt(pi.img, t[1].start * 512, 65536), readFileSync(root).subarray(0, 65536));
  assert.ok(readAt(pi.img, t[2].start * 512, 65536).every((b) => b === 0));
  const sb = readAt(pi.img, t[3].start * 512 + 1024, 256);
  assert.is(sb.readUInt16LE(56), 0xef53);
  assert.is(sb.subarray(120, 136).toString('latin1').replace(/\0+$/, ''), 'kiln-data');
  assert.is(sb.readUInt32LE(4) * (1024 << sb.readUInt32LE(24)), t[3].size * 512, 'the file system fills the partition');
});

test('.rpi.img.xz: the same image, for flashing tools', async () => {
  const xz = join(pi.out, pi.rec.outputs.find((o) => o.kind === 'rpi.xz')!.file);
  const r = (await $({ quiet: true })`xz --robot --list ${xz}`).stdout;
  const totals = r.split('\n').find((l) => l.startsWith('totals'))!.split('\t');
  assert.is(Number(totals[4]), statSync(pi.img).size);
});

test('refused where it cannot work: x86_64, and a profile with the cloud kernel', async () => {
  const log = createLogger({ quiet: true });
  try { await build({ arches: ['x86_64'], formats: ['rpi'], out: join(tmp, 'x'), log }); assert.unreachable(); } catch (e) { assert.match((e as Error).message, /cannot be made for x86_64: the Raspberry Pi 3\/4 boots 64-bit Arm only/); }
  try { await build({ arches: ['arm64'], formats: ['rpi'], out: join(tmp, 'y'), log }); assert.unreachable(); } catch (e) { assert.match((e as Error).message, /generic arm64 kernel.*images\/rpi\.yaml/); }
});

test.run();
