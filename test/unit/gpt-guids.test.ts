// A node's own disk and partition GUIDs: the image's table rewritten with new GUIDs, both
// headers and both CRCs correct, everything else unchanged.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findTool } from '../../builder/tools.ts';
import { crc32 } from 'node:zlib';
import { buildGpt, guidFromBytes, randomGuid, readGpt, rewriteGuids, stableGuid, type GptPartition } from '../../init/disk/gpt.ts';
import { layoutFor } from '../../init/disk/layout.ts';

const MiB = 1024 * 1024;
const SIZE = 96 * MiB;

function image(sectorSize = 512) {
  const partitions: GptPartition[] = layoutFor('x86_64', SIZE, 16, 24).map((p) => ({ ...p, guid: stableGuid(`v1:${p.name}`) }));
  if (sectorSize === 4096) for (const p of partitions) { p.firstLba /= 8; p.lastLba = Math.floor((p.lastLba + 1) / 8) - 1; }
  partitions[1] = { ...partitions[1]!, attrs: (1n << 60n) | 1n };
  return { partitions, gpt: buildGpt({ diskSizeBytes: SIZE, sectorSize, diskGuid: stableGuid('v1:disk'), partitions }) };
}

const fresh = () => ({ disk: randomGuid(), parts: [randomGuid(), randomGuid(), randomGuid(), randomGuid()] });

test('rewriteGuids: the same bytes as a table built with the new GUIDs', () => {
  for (const ss of [512, 4096]) {
    const { partitions, gpt } = image(ss);
    const ids = fresh();
    const r = rewriteGuids(gpt.primary, SIZE, ids.disk, ids.parts);
    const want = buildGpt({ diskSizeBytes: SIZE, sectorSize: ss, diskGuid: ids.disk, partitions: partitions.map((p, i) => ({ ...p, guid: ids.parts[i]! })) });
    assert.ok(r.primary.equals(want.primary), `primary (${ss})`);
    assert.ok(r.backup.equals(want.backup), `backup (${ss})`);
    assert.is(r.backupOffset, want.backupOffset);
  }
});

test('rewriteGuids: only the GUIDs and the CRCs change; labels, types and LBAs stay', () => {
  const { gpt } = image();
  const ids = fresh();
  const r = rewriteGuids(gpt.primary, SIZE, ids.disk, ids.parts);
  const before = readGpt(gpt.primary), after = readGpt(r.primary);
  assert.is(after.diskGuid, ids.disk);
  assert.equal(after.partitions.map((p) => p.guid), ids.parts);
  assert.equal(after.partitions.map(({ guid: _g, ...rest }) => rest), before.partitions.map(({ guid: _g, ...rest }) => rest));
  // Byte by byte: disk GUID (header 56..72), entry GUIDs (entry +16..+32), the CRC fields.
  const allowed = new Set<number>();
  const add = (from: number, n: number) => { for (let i = 0; i < n; i++) allowed.add(from + i); };
  add(512 + 16, 4); add(512 + 56, 16); add(512 + 88, 4);
  for (let i = 0; i < 4; i++) add(1024 + i * 128 + 16, 16);
  const changed = [...r.primary.keys()].filter((i) => r.primary[i] !== gpt.primary[i]);
  assert.ok(changed.length > 0 && changed.every((i) => allowed.has(i)), `unexpected bytes changed: ${changed.filter((i) => !allowed.has(i)).slice(0, 8).join(', ')}`);
  // The backup: header in the disk's last sector, entries before it, both CRCs right.
  const disk = Buffer.alloc(SIZE);
  r.primary.copy(disk, 0); r.backup.copy(disk, r.backupOffset);
  const bh = disk.subarray(SIZE - 512);
  assert.is(bh.toString('latin1', 0, 8), 'EFI PART');
  const h = Buffer.from(bh.subarray(0, 92)); h.writeUInt32LE(0, 16);
  assert.is(crc32(h), bh.readUInt32LE(16), 'backup header CRC');
  assert.is(Number(bh.readBigUInt64LE(24)), SIZE / 512 - 1);
  assert.is(Number(bh.readBigUInt64LE(32)), 1);
  assert.is(guidFromBytes(bh.subarray(56, 72)), ids.disk);
  const elba = Number(bh.readBigUInt64LE(72));
  assert.is(crc32(disk.subarray(elba * 512, elba * 512 + 128 * 128)), bh.readUInt32LE(88), 'backup entries CRC');
  assert.ok(disk.subarray(elba * 512, elba * 512 + 128 * 128).equals(r.primary.subarray(1024, 1024 + 128 * 128)));
});

test('rewriteGuids: sfdisk verifies the rewritten disk and reads the new GUIDs', () => {
  const sfdisk = findTool('sfdisk');
  if (!sfdisk) { console.log('  (sfdisk not installed: skipped)'); return; }
  const { gpt } = image();
  const ids = fresh();
  const r = rewriteGuids(gpt.primary, SIZE, ids.disk, ids.parts);
  const img = join(mkdtempSync(join(tmpdir(), 'kiln-gpt-')), 'disk.img');
  const fd = openSync(img, 'w');
  try { ftruncateSync(fd, SIZE); writeSync(fd, r.primary, 0, r.primary.length, 0); writeSync(fd, r.backup, 0, r.backup.length, r.backupOffset); } finally { closeSync(fd); }
  assert.match(execFileSync(sfdisk, ['--verify', img]).toString(), /No errors detected/);
  const pt = JSON.parse(execFileSync(sfdisk, ['--json', img]).toString()).partitiontable;
  assert.is(pt.id, ids.disk);
  assert.equal(pt.partitions.map((p: { uuid: string; name: string }) => [p.name, p.uuid]), ['esp', 'kiln-root-a', 'kiln-root-b', 'kiln-data'].map((n, i) => [n, ids.parts[i]]));
});

test('rewriteGuids: refuses a wrong count, repeated GUIDs, a backup past the disk', () => {
  const { gpt } = image();
  assert.throws(() => rewriteGuids(gpt.primary, SIZE, randomGuid(), [randomGuid()]), /4 partitions need new GUIDs, got 1/);
  const g = randomGuid();
  assert.throws(() => rewriteGuids(gpt.primary, SIZE, g, [g, randomGuid(), randomGuid(), randomGuid()]), /not all different/);
  assert.throws(() => rewriteGuids(gpt.primary, SIZE - MiB, randomGuid(), fresh().parts), /backup GPT header at LBA \d+ is not on this/);
  assert.match(randomGuid(), /^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$/);
});


test('assignDiskIds: once per disk, marked on the data partition', async () => {
  const { assignDiskIds } = await import('../../init/grow.ts');
  const dir = mkdtempSync(join(tmpdir(), 'kiln-ids-'));
  const img = join(dir, 'disk.img'), marker = join(dir, 'data/var/lib/kiln/disk-ids');
  const { gpt } = image();
  const fd = openSync(img, 'w');
  try { ftruncateSync(fd, SIZE); writeSync(fd, gpt.primary, 0, gpt.primary.length, 0); writeSync(fd, gpt.backup, 0, gpt.backup.length, gpt.backupOffset); } finally { closeSync(fd); }
  const read = () => {
    const f = openSync(img, 'r'), head = Buffer.alloc(MiB), tail = Buffer.alloc(512);
    try { readSync(f, head, 0, MiB, 0); readSync(f, tail, 0, 512, SIZE - 512); } finally { closeSync(f); }
    return { t: readGpt(head), tail };
  };
  const before = read().t;
  const m = assignDiskIds(img, SIZE, marker);
  assert.match(m!, /has its own GUIDs now/);
  const { t: after, tail } = read();
  assert.is.not(after.diskGuid, before.diskGuid);
  assert.is(readFileSync(marker, 'utf8').trim(), after.diskGuid);
  assert.ok(after.partitions.every((p, i) => p.guid !== before.partitions[i]!.guid));
  assert.equal(after.partitions.map((p) => [p.name, p.typeGuid, p.firstLba, p.lastLba]), before.partitions.map((p) => [p.name, p.typeGuid, p.firstLba, p.lastLba]));
  // The backup at the disk's end carries the same new disk GUID.
  assert.is(guidFromBytes(tail.subarray(56, 72)), after.diskGuid);
  assert.is(assignDiskIds(img, SIZE, marker), undefined, 'the second boot leaves the disk alone');
  assert.is(read().t.diskGuid, after.diskGuid);
});

test.run();
