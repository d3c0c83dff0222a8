// Byte-level tests of the Raspberry Pi image's own formats: MBR, boot.scr (U-Boot legacy
// script image) and uboot.env; plus the layout and the boot script's placeholders.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { buildMbr, growLastMbrPartition, MBR_TYPES, mbrPartUuid, readMbr } from '../../init/disk/mbr.ts';
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

test('MBR growth: only the last entry\'s size changes, to the disk\'s end; a full disk gives null', () => {
  const l = rpiLayout({ espMiB: 128, rootMiB: 320, dataMiB: 192 });
  const mbr = buildMbr({ diskSignature: 0xdeadbeef, partitions: [
    { type: 0x0c, bootable: true, ...l.boot }, { type: 0x83, ...l.rootA }, { type: 0x83, ...l.rootB }, { type: 0x83, ...l.data },
  ] });
  assert.equal(readMbr(mbr).partitions.map((p) => [p.number, p.type, p.startLba, p.sectors]), [
    [1, 0x0c, 2048, 262144], [2, 0x83, 264192, 655360], [3, 0x83, 919552, 655360], [4, 0x83, 1574912, 2097152 - 1574912],
  ]);
  assert.is(growLastMbrPartition(mbr, l.size, 4), null, 'an image-sized card needs nothing');
  const g = growLastMbrPartition(mbr, 32 * 1024 ** 3, 4)!;
  assert.is(g.oldSectors, 2097152 - 1574912);
  assert.is(g.newSectors, 32 * 1024 * 2048 - 1574912);
  const diff = [...g.sector].flatMap((b, i) => (b !== mbr[i] ? [i] : []));
  assert.ok(diff.every((i) => i >= 506 && i < 510), `only entry 4's size field (bytes 506-509) changed, not ${diff}`);
  assert.is(g.sector.readUInt32LE(506), g.newSectors);
  // 4 TiB card: MBR stops at 2^32 sectors.
  assert.is(growLastMbrPartition(mbr, 4 * 1024 ** 4, 4)!.newSectors, 0x1_0000_0000 - 1574912);
  assert.throws(() => growLastMbrPartition(mbr, 32 * 1024 ** 3, 2), /not the last one/);
  assert.throws(() => growLastMbrPartition(mbr, 512 * 1024 ** 2, 4), /smaller than the table/);
  const gpt = Buffer.alloc(512); gpt[446 + 4] = 0xee; gpt.writeUInt32LE(1, 446 + 8); gpt.writeUInt32LE(100, 446 + 12); gpt[510] = 0x55; gpt[511] = 0xaa;
  assert.throws(() => readMbr(gpt), /protective/);
  const sfdisk = findTool('sfdisk');
  if (!sfdisk) return;
  const f = join(mkdtempSync(join(tmpdir(), 'kiln-mbr-')), 'd.img');
  const fd = openSync(f, 'w');
  ftruncateSync(fd, 2 * l.size);
  writeSync(fd, growLastMbrPartition(mbr, 2 * l.size, 4)!.sector, 0, 512, 0);
  closeSync(fd);
  const t = JSON.parse(execFileSync(sfdisk, ['--json', f], { encoding: 'utf8' })).partitiontable;
  assert.equal(t.partitions.at(-1).start + t.partitions.at(-1).size, 2 * l.size / 512, 'sfdisk sees kiln-data end at the disk\'s end');
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
