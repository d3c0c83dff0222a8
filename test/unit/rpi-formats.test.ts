// Byte-level tests of the Raspberry Pi image's own formats: MBR, boot.scr (U-Boot legacy
// script image) and uboot.env; plus the layout and the boot script's placeholders.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from '../../builder/formats/crc32.ts';
import { buildMbr, MBR_TYPES, mbrPartUuid } from '../../builder/formats/mbr.ts';
import { scriptImage, UIMAGE_MAGIC } from '../../builder/formats/uimage.ts';
import { bootScriptText, rpiLayout, rpiCmdline } from '../../builder/rpi.ts';
import { findTool } from '../../builder/tools.ts';
import { decodeUbootEnv, encodeUbootEnv } from '../../init/bootctl/ubootenv.ts';

test('MBR: signature, entries, boot flag and 0x55AA at the documented offsets', () => {
  const b = buildMbr({ diskSignature: 0x12345678, partitions: [
    { type: MBR_TYPES.fat32Lba, startLba: 2048, sectors: 262144, bootable: true },
    { type: MBR_TYPES.linux, startLba: 264192, sectors: 1000 },
  ] });
  assert.is(b.length, 512);
  assert.equal([...b.subarray(440, 444)], [0x78, 0x56, 0x34, 0x12]);
  assert.is(b[446], 0x80);
  assert.is(b[446 + 4], 0x0c);
  assert.is(b.readUInt32LE(446 + 8), 2048);
  assert.is(b.readUInt32LE(446 + 12), 262144);
  assert.is(b[462], 0);
  assert.is(b[462 + 4], 0x83);
  assert.is(b.readUInt32LE(462 + 8), 264192);
  assert.ok(b.subarray(478, 510).every((x) => x === 0), 'unused entries are zero');
  assert.equal([b[510], b[511]], [0x55, 0xaa]);
  assert.is(mbrPartUuid(0x12345678, 2), '12345678-02');
  assert.throws(() => buildMbr({ diskSignature: 1, partitions: [{ type: 0x83, startLba: 2048, sectors: 10 }, { type: 0x83, startLba: 2050, sectors: 10 }] }), /overlap/);
});

test('MBR: sfdisk reads back the same table', () => {
  const sfdisk = findTool('sfdisk');
  if (!sfdisk) { console.log('  (sfdisk not installed: skipped the cross-check)'); return; }
  const f = join(mkdtempSync(join(tmpdir(), 'kiln-mbr-')), 'd.img');
  const l = rpiLayout({ espMiB: 128, rootMiB: 320, dataMiB: 192 });
  const fd = openSync(f, 'w');
  ftruncateSync(fd, l.size);
  writeSync(fd, buildMbr({ diskSignature: 0xdeadbeef, partitions: [
    { type: 0x0c, bootable: true, ...l.boot }, { type: 0x83, ...l.rootA }, { type: 0x83, ...l.rootB }, { type: 0x83, ...l.data },
  ] }), 0, 512, 0);
  closeSync(fd);
  const t = JSON.parse(execFileSync(sfdisk, ['--json', f], { encoding: 'utf8' })).partitiontable;
  assert.is(t.label, 'dos');
  assert.is(t.id, '0xdeadbeef');
  assert.equal(t.partitions.map((p: any) => [p.start, p.size, p.type, !!p.bootable]), [
    [2048, 262144, 'c', true], [264192, 655360, '83', false], [919552, 655360, '83', false], [1574912, 2097152 - 1574912, '83', false],
  ]);
});

test('layout: the card image is a power of two and kiln-data takes the rest', () => {
  const l = rpiLayout({ espMiB: 128, rootMiB: 320, dataMiB: 192 });
  assert.is(l.size, 1024 * 1024 * 1024);
  assert.is(l.data.startLba + l.data.sectors, l.size / 512);
  assert.is(rpiLayout({ espMiB: 128, rootMiB: 320, dataMiB: 256 }).size, 2048 * 1024 * 1024);
});

test('boot.scr: 64-byte header, both CRC32s, the script after its length table', () => {
  const script = 'echo hello\n';
  const img = scriptImage(script, { name: 'kiln A/B', time: 1700000000 });
  const h = img.subarray(0, 64), data = img.subarray(64);
  assert.is(h.readUInt32BE(0), UIMAGE_MAGIC);
  assert.is(h.readUInt32BE(8), 1700000000);
  assert.is(h.readUInt32BE(12), data.length);
  assert.is(data.length, 8 + script.length);
  assert.is(data.readUInt32BE(0), script.length);
  assert.is(data.readUInt32BE(4), 0);
  assert.is(data.subarray(8).toString(), script);
  assert.is(h.readUInt32BE(24), crc32(data));
  assert.equal([h[28], h[29], h[30], h[31]], [5, 22, 6, 0]); // linux, arm64, script, none
  assert.is(h.subarray(32, 64).toString('latin1').replace(/\0+$/, ''), 'kiln A/B');
  const zeroed = Buffer.from(h); zeroed.writeUInt32BE(0, 4);
  assert.is(h.readUInt32BE(4), crc32(zeroed));
  // Known answer, so a change to the layout cannot pass by changing both sides.
  assert.is(h.readUInt32BE(24).toString(16), crc32(Buffer.concat([Buffer.from([0, 0, 0, 11, 0, 0, 0, 0]), Buffer.from(script)])).toString(16));
});

test('uboot.env: CRC32 little-endian over the rest, sorted entries, double NUL, padding', () => {
  const b = encodeUbootEnv({ BOOT_b_LEFT: '0', BOOT_ORDER: 'a b', BOOT_a_LEFT: '3' });
  assert.is(b.length, 16384);
  assert.is(b.readUInt32LE(0), crc32(b.subarray(4)));
  const body = 'BOOT_ORDER=a b\0BOOT_a_LEFT=3\0BOOT_b_LEFT=0\0\0';
  assert.is(b.subarray(4, 4 + body.length).toString('latin1'), body);
  assert.ok(b.subarray(4 + body.length).every((x) => x === 0));
  assert.equal(decodeUbootEnv(b), { BOOT_ORDER: 'a b', BOOT_a_LEFT: '3', BOOT_b_LEFT: '0' });
  // An empty value deletes the variable, as `setenv NAME` does.
  assert.equal(decodeUbootEnv(encodeUbootEnv({ a: '1', fdt_addr: '' })), { a: '1' });
  const bad = Buffer.from(b); bad[10] ^= 1;
  assert.throws(() => decodeUbootEnv(bad), /CRC/);
  assert.throws(() => encodeUbootEnv({ x: 'y'.repeat(20000) }), /16384/);
  assert.throws(() => encodeUbootEnv({ 'a=b': '1' }), /=/);
});

test('boot script: placeholders filled, refuses a command line that would break the script', () => {
  const s = bootScriptText(rpiCmdline('quiet panic=10'));
  assert.not.match(s, /@[A-Z]+@/);
  assert.match(s, /setenv bootargs "console=ttyAMA0,115200 console=ttyS1,115200 quiet panic=10 kiln\.slot=\$\{kiln_slot\}/);
  assert.match(s, /setenv fdt_addr\n/, 'fdt_addr is deleted before saveenv');
  assert.throws(() => bootScriptText('a"b'), /quotes/);
});

test.run();
