// Growing the last partition of a GPT disk (init/disk/gpt-grow.ts), checked byte by byte.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findTool, tool } from '../../builder/tools.ts';
import { crc32 } from 'node:zlib';
import { buildGpt, GPT_TYPES, layoutPartitions, readGpt, stableGuid, type GptPartition } from '../../init/disk/gpt.ts';
import { ext4Size, growLastPartition } from '../../init/disk/gpt-grow.ts';

const MiB = 1024 * 1024;
const OLD = 512 * MiB;
const NEW = 1024 * MiB + 7 * 512; // not a MiB multiple: any sector count must work
const newSectors = NEW / 512;

function disk(size: number, lastOf: (usable: number) => number = (u) => u, ss = 512) {
  const layout = layoutPartitions(size, [
    { name: 'esp', sizeBytes: 64 * MiB, type: GPT_TYPES.esp },
    { name: 'kiln-root-a', sizeBytes: 128 * MiB, type: GPT_TYPES.rootX86_64 },
    { name: 'kiln-root-b', sizeBytes: 128 * MiB, type: GPT_TYPES.rootX86_64 },
    { name: 'kiln-data', sizeBytes: 'rest', type: GPT_TYPES.linuxData },
  ], MiB, ss);
  const partitions: GptPartition[] = layout.map((p) => ({ ...p, guid: stableGuid(`g:${p.name}`) }));
  partitions[1] = { ...partitions[1]!, attrs: (1n << 60n) | 1n };
  partitions[3] = { ...partitions[3]!, lastLba: lastOf(partitions[3]!.lastLba) };
  return { partitions, gpt: buildGpt({ diskSizeBytes: size, sectorSize: ss, diskGuid: stableGuid('g:disk'), partitions }) };
}

const headerCrcOk = (h: Buffer) => { const z = Buffer.from(h.subarray(0, 92)); z.writeUInt32LE(0, 16); return crc32(z) === h.readUInt32LE(16); };
/** Offsets where two buffers differ, as [start, end) runs. */
function diffRuns(a: Buffer, b: Buffer): [number, number][] {
  const runs: [number, number][] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (a[i] === b[i]) continue;
    const last = runs[runs.length - 1];
    if (last && last[1] === i) last[1] = i + 1; else runs.push([i, i + 1]);
  }
  return runs;
}

test('grown tables: backup at the new end, only the last LBAs, MBR size and CRCs change', () => {
  const { gpt } = disk(OLD);
  const plan = growLastPartition(gpt.primary, NEW, 'kiln-data')!;
  assert.ok(plan);
  assert.is(plan.index, 4);
  assert.is(plan.oldLastLba, OLD / 512 - 34);
  assert.is(plan.newLastLba, newSectors - 34);
  assert.is(plan.primary.length, 34 * 512);
  assert.is(plan.backup.length, 33 * 512);
  assert.is(plan.backupOffset, (newSectors - 33) * 512);
  assert.is(plan.backupOffset + plan.backup.length, NEW, 'the backup header is the disk\'s last sector');

  // MBR: only the protective partition's size (LBA count - 1) changes
  assert.equal(diffRuns(gpt.primary.subarray(0, 512), plan.primary.subarray(0, 512)).map(([s]) => s >= 458 && s < 462), [true]);
  assert.is(plan.primary.readUInt32LE(446 + 12), newSectors - 1);

  // primary header: alternate LBA, last usable LBA and both CRCs, nothing else
  const oh = gpt.primary.subarray(512, 1024), nh = plan.primary.subarray(512, 1024);
  const allowed = [[16, 20], [32, 40], [48, 56], [88, 92]];
  const hdrRuns = diffRuns(oh, nh);
  assert.ok(hdrRuns.every(([s, e]) => allowed.some(([a, b]) => s >= a! && e <= b!)), `changed header bytes: ${JSON.stringify(hdrRuns)}`);
  assert.is(Number(nh.readBigUInt64LE(32)), newSectors - 1);
  assert.is(Number(nh.readBigUInt64LE(48)), newSectors - 34);
  assert.ok(headerCrcOk(nh));
  const entries = plan.primary.subarray(1024);
  assert.is(nh.readUInt32LE(88), crc32(entries.subarray(0, 128 * 128)));

  // entries: only the data partition's last LBA (entry 4, bytes 40..47)
  const runs = diffRuns(gpt.primary.subarray(1024), entries);
  assert.ok(runs.length > 0 && runs.every(([s, e]) => s >= 3 * 128 + 40 && e <= 3 * 128 + 48), `changed bytes: ${JSON.stringify(runs)}`);
  assert.is(Number(entries.readBigUInt64LE(3 * 128 + 40)), newSectors - 34);

  // backup: the same entries, then a header pointing back at LBA 1
  assert.ok(plan.backup.subarray(0, 32 * 512).equals(entries));
  const bh = plan.backup.subarray(32 * 512);
  assert.is(Number(bh.readBigUInt64LE(24)), newSectors - 1);
  assert.is(Number(bh.readBigUInt64LE(32)), 1);
  assert.is(Number(bh.readBigUInt64LE(72)), newSectors - 33);
  assert.is(bh.readUInt32LE(88), nh.readUInt32LE(88));
  assert.ok(headerCrcOk(bh));
});

test('the result is byte-identical to a table built for the larger disk', () => {
  const { gpt } = disk(OLD);
  const plan = growLastPartition(gpt.primary, NEW, 'kiln-data')!;
  const fresh = disk(NEW).gpt;
  assert.ok(plan.primary.equals(fresh.primary));
  assert.ok(plan.backup.equals(fresh.backup));
  assert.is(plan.backupOffset, fresh.backupOffset);
});

test('idempotent: nothing to do on a full disk, or after growing', () => {
  const { gpt } = disk(OLD);
  assert.is(growLastPartition(gpt.primary, OLD, 'kiln-data'), null);
  const plan = growLastPartition(gpt.primary, NEW, 'kiln-data')!;
  assert.is(growLastPartition(plan.primary, NEW, 'kiln-data'), null);
  // a data partition that stops short of the end is extended even when the backup is in place
  const short = disk(OLD, (u) => u - 2048).gpt;
  const p2 = growLastPartition(short.primary, OLD, 'kiln-data')!;
  assert.is(p2.newLastLba, OLD / 512 - 34);
  assert.is(p2.backupOffset, short.backupOffset);
});

test('refuses what it must not do', () => {
  const { gpt } = disk(OLD);
  assert.throws(() => growLastPartition(gpt.primary, OLD - MiB, 'kiln-data'), /smaller than its partition table says/);
  assert.throws(() => growLastPartition(gpt.primary, NEW, 'kiln-root-b'), /kiln-root-b is not the last partition/);
  assert.throws(() => growLastPartition(gpt.primary, NEW, 'nope'), /no partition named nope/);
  assert.throws(() => growLastPartition(gpt.primary, NEW + 100, 'kiln-data'), /not a multiple/);
  const bad = Buffer.from(gpt.primary); bad[1024 + 3 * 128 + 41] ^= 1;
  assert.throws(() => growLastPartition(bad, NEW, 'kiln-data'), /CRC mismatch/);
});

test('4096-byte sectors', () => {
  const size = 512 * MiB, bigger = 768 * MiB;
  const { gpt } = disk(size, undefined, 4096);
  const plan = growLastPartition(gpt.primary, bigger, 'kiln-data')!;
  assert.is(plan.sectorSize, 4096);
  assert.is(plan.backupOffset, bigger - 5 * 4096);
  assert.is(plan.newLastLba, bigger / 4096 - 6);
  const fresh = disk(bigger, undefined, 4096).gpt;
  assert.ok(plan.primary.equals(fresh.primary) && plan.backup.equals(fresh.backup));
});

test('sfdisk verifies a sparse disk grown in place (old backup left inside the data partition)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-grow-'));
  const img = join(dir, 'disk.img');
  try {
    const { gpt } = disk(OLD);
    const fd = openSync(img, 'w');
    ftruncateSync(fd, OLD);
    writeSync(fd, gpt.primary, 0, gpt.primary.length, 0);
    writeSync(fd, gpt.backup, 0, gpt.backup.length, gpt.backupOffset);
    ftruncateSync(fd, NEW);
    const plan = growLastPartition(readFileSync(img).subarray(0, MiB), NEW, 'kiln-data')!;
    writeSync(fd, plan.backup, 0, plan.backup.length, plan.backupOffset);
    writeSync(fd, plan.primary, 0, plan.primary.length, 0);
    closeSync(fd);
    const sfdisk = findTool('sfdisk') ?? 'sfdisk';
    assert.match(execFileSync(sfdisk, ['--verify', img]).toString(), /No errors detected/);
    const pt = JSON.parse(execFileSync(sfdisk, ['--json', img]).toString()).partitiontable;
    assert.is(pt.lastlba, newSectors - 34);
    assert.is(pt.partitions[3].start + pt.partitions[3].size - 1, newSectors - 34);
    assert.equal(readGpt(plan.primary).partitions.slice(0, 3), readGpt(gpt.primary).partitions.slice(0, 3));
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('ext4Size reads the block count from the superblock', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-ext4-'));
  try {
    const img = join(dir, 'fs.img');
    execFileSync(tool('mkfs.ext4'), ['-q', '-F', img, '48M']);
    assert.is(ext4Size(readFileSync(img).subarray(0, 4096)), 48 * MiB);
    assert.is(ext4Size(Buffer.alloc(4096)), undefined);
    // 64-bit filesystems keep the high half of the count at 0x150
    const sb = Buffer.alloc(2048);
    sb.writeUInt16LE(0xef53, 1024 + 0x38); sb.writeUInt32LE(2, 1024 + 0x18); sb.writeUInt32LE(0x80, 1024 + 0x60);
    sb.writeUInt32LE(1, 1024 + 0x04); sb.writeUInt32LE(1, 1024 + 0x150);
    assert.is(ext4Size(sb), (2 ** 32 + 1) * 4096);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test.run();
