import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findTool } from '../../builder/tools.ts';
import { crc32 as zlibCrc32 } from 'node:zlib';
import { crc32 } from '../../init/disk/crc32.ts';
import { buildGpt, guidFromBytes, guidToBytes, GPT_TYPES, layoutPartitions, readGpt, stableGuid, type GptPartition } from '../../init/disk/gpt.ts';

/** A bitwise table CRC-32, written from the polynomial: the reference zlib's is held to. */
const TABLE = Uint32Array.from({ length: 256 }, (_, n) => { let c = n; for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1; return c >>> 0; });
function crc32Table(data: Uint8Array, crc = 0): number {
  let c = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < data.length; i++) c = TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const MiB = 1024 * 1024;
const SIZE = 512 * MiB;
const sectors = SIZE / 512;

function sample() {
  const layout = layoutPartitions(SIZE, [
    { name: 'esp', sizeBytes: 128 * MiB, type: GPT_TYPES.esp },
    { name: 'kiln-root-a', sizeBytes: 128 * MiB, type: GPT_TYPES.rootX86_64 },
    { name: 'kiln-root-b', sizeBytes: 128 * MiB, type: GPT_TYPES.rootArm64 },
    { name: 'kiln-data', sizeBytes: 'rest', type: GPT_TYPES.linuxData },
  ]);
  const partitions: GptPartition[] = layout.map((p) => ({ ...p, guid: stableGuid(`t:${p.name}`) }));
  partitions[1] = { ...partitions[1]!, attrs: 1n << 60n };
  return { layout, partitions, gpt: buildGpt({ diskSizeBytes: SIZE, diskGuid: stableGuid('t:disk'), partitions }) };
}

test('crc32 matches the standard check value', () => {
  assert.is(crc32(Buffer.from('123456789')), 0xcbf43926);
  assert.is(crc32(Buffer.from('6789'), crc32(Buffer.from('12345'))), 0xcbf43926);
  assert.is(crc32(Buffer.alloc(0)), 0);
  assert.is(crc32(Buffer.alloc(0), 0xcbf43926), 0xcbf43926);
  const data = Buffer.from(Array.from({ length: 5000 }, (_, i) => (i * 131 + 7) & 0xff));
  for (const f of [crc32, crc32Table, zlibCrc32]) assert.is(f(Buffer.from('123456789')), 0xcbf43926);
  assert.is(crc32(data), crc32Table(data));
  assert.is(crc32(data.subarray(1000), crc32(data.subarray(0, 1000))), crc32Table(data));
});

test('crc32 (eight bytes a turn) agrees with zlib and the bytewise table at every length and offset', () => {
  // Lengths around the eight-byte steps, views that start at odd offsets of a larger buffer,
  // bytes with the top bit set (the sign of the packed word), and a GPT entry array's size.
  let seed = 7;
  const rnd = Buffer.from(Array.from({ length: 20_000 }, () => { seed = (seed * 1103515245 + 12345) >>> 0; return seed >>> 24; }));
  for (const buf of [rnd, Buffer.alloc(20_000, 0xff), Buffer.alloc(20_000)]) {
    for (let len = 0; len <= 40; len++) {
      for (const off of [0, 1, 3, 7]) {
        const v = buf.subarray(off, off + len);
        assert.is(crc32(v), zlibCrc32(v), `length ${len} at ${off}`);
        assert.is(crc32(v), crc32Table(v));
        assert.is(crc32(v, 0x12345678), zlibCrc32(v, 0x12345678), `continued, length ${len} at ${off}`);
      }
    }
    for (const len of [92, 512, 128 * 128, 128 * 128 + 5, 19_999]) {
      const v = buf.subarray(1, 1 + len);
      assert.is(crc32(v), zlibCrc32(v), `length ${len}`);
      assert.is(crc32(v.subarray(777), crc32(v.subarray(0, 777))), zlibCrc32(v));
    }
  }
  // A Uint8Array that is not a Buffer, as the pure modules pass.
  assert.is(crc32(new Uint8Array(rnd.buffer, rnd.byteOffset + 3, 1000)), zlibCrc32(rnd.subarray(3, 1003)));
});

test('GUID text becomes mixed-endian bytes and back', () => {
  assert.is(guidToBytes(GPT_TYPES.esp).toString('hex'), '28732ac11ff8d211ba4b00a0c93ec93b');
  assert.is(guidFromBytes(guidToBytes('0fc63daf-8483-4772-8e79-3d69d8477de4')), GPT_TYPES.linuxData);
  assert.throws(() => guidToBytes('not-a-guid'), /not a GUID/);
});

test('stableGuid is fixed per seed and carries version 4 / RFC 4122 variant bits', () => {
  const a = stableGuid('seed-1');
  assert.is(stableGuid('seed-1'), a);
  assert.is.not(stableGuid('seed-2'), a);
  assert.match(a, /^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$/);
});

test('layoutPartitions aligns starts to 1 MiB and runs "rest" to the last usable LBA', () => {
  const { layout } = sample();
  assert.equal(layout.map((p) => [p.firstLba, p.lastLba]), [
    [2048, 2048 + 262144 - 1], [264192, 264192 + 262144 - 1], [526336, 526336 + 262144 - 1], [788480, sectors - 34],
  ]);
  assert.throws(() => layoutPartitions(SIZE, [{ name: 'huge', sizeBytes: SIZE, type: GPT_TYPES.esp }]), /'huge' does not fit/);
  assert.throws(() => layoutPartitions(SIZE, [{ name: 'r', sizeBytes: 'rest', type: GPT_TYPES.esp }, { name: 'x', sizeBytes: MiB, type: GPT_TYPES.esp }]), /only allowed for the last/);
  assert.throws(() => layoutPartitions(SIZE, [{ name: 'odd', sizeBytes: 1000, type: GPT_TYPES.esp }]), /multiple of 512/);
});

test('protective MBR and header fields are byte-exact, CRCs verify', () => {
  const { gpt } = sample();
  const p = gpt.primary;
  assert.is(p.length, 34 * 512);
  assert.is(p.subarray(446, 462).toString('hex'), '000002' + '00' + 'ee' + 'ffffff' + '01000000' + Buffer.from(new Uint32Array([sectors - 1]).buffer).toString('hex'));
  assert.is(p.readUInt16LE(510), 0xaa55);
  assert.ok(p.subarray(0, 446).every((b) => b === 0));
  const h = p.subarray(512, 1024);
  assert.is(h.toString('latin1', 0, 8), 'EFI PART');
  assert.is(h.readUInt32LE(8), 0x00010000);
  assert.is(h.readUInt32LE(12), 92);
  const z = Buffer.from(h.subarray(0, 92)); z.writeUInt32LE(0, 16);
  assert.is(h.readUInt32LE(16), crc32(z));
  assert.is(Number(h.readBigUInt64LE(24)), 1);
  assert.is(Number(h.readBigUInt64LE(32)), sectors - 1);
  assert.is(Number(h.readBigUInt64LE(40)), 34);
  assert.is(Number(h.readBigUInt64LE(48)), sectors - 34);
  assert.is(guidFromBytes(h.subarray(56, 72)), stableGuid('t:disk'));
  assert.is(Number(h.readBigUInt64LE(72)), 2);
  assert.is(h.readUInt32LE(80), 128);
  assert.is(h.readUInt32LE(84), 128);
  assert.is(h.readUInt32LE(88), crc32(p.subarray(1024, 1024 + 128 * 128)));
  assert.ok(h.subarray(92).every((b) => b === 0));
  // backup: same entries, header pointing the other way
  assert.is(gpt.backupOffset, (sectors - 33) * 512);
  assert.is(gpt.backup.length, 33 * 512);
  assert.ok(gpt.backup.subarray(0, 32 * 512).equals(p.subarray(1024)));
  const b = gpt.backup.subarray(32 * 512);
  assert.is(Number(b.readBigUInt64LE(24)), sectors - 1);
  assert.is(Number(b.readBigUInt64LE(32)), 1);
  assert.is(Number(b.readBigUInt64LE(72)), sectors - 33);
  const zb = Buffer.from(b.subarray(0, 92)); zb.writeUInt32LE(0, 16);
  assert.is(b.readUInt32LE(16), crc32(zb));
  // first entry: ESP type GUID in on-disk byte order, name in UTF-16LE
  assert.is(p.subarray(1024, 1040).toString('hex'), '28732ac11ff8d211ba4b00a0c93ec93b');
  assert.is(p.subarray(1024 + 56, 1024 + 62).toString('utf16le'), 'esp');
});

test('sfdisk reads and verifies the table written to a sparse file', () => {
  const { partitions, gpt } = sample();
  const dir = mkdtempSync(join(tmpdir(), 'kiln-gpt-'));
  const img = join(dir, 'disk.img');
  try {
    const fd = openSync(img, 'w');
    ftruncateSync(fd, SIZE);
    writeSync(fd, gpt.primary, 0, gpt.primary.length, 0);
    writeSync(fd, gpt.backup, 0, gpt.backup.length, gpt.backupOffset);
    closeSync(fd);
    const sfdisk = findTool('sfdisk') ?? 'sfdisk';
    const pt = JSON.parse(execFileSync(sfdisk, ['--json', img]).toString()).partitiontable;
    assert.is(pt.label, 'gpt');
    assert.is(pt.id, stableGuid('t:disk'));
    assert.is(pt.firstlba, 34);
    assert.is(pt.lastlba, sectors - 34);
    assert.equal(pt.partitions.map((q: any) => [q.name, q.type, q.uuid, q.start, q.size, q.attrs ?? '']), partitions.map((q) => [
      q.name, q.typeGuid, q.guid, q.firstLba, q.lastLba - q.firstLba + 1, q.attrs ? 'GUID:60' : '',
    ]));
    // --verify exits non-zero on any problem (bad CRC, overlap, missing backup)
    const out = execFileSync(sfdisk, ['--verify', img]).toString();
    assert.match(out, /No errors detected/);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('readGpt returns what buildGpt wrote and rejects corruption', () => {
  const { partitions, gpt } = sample();
  const r = readGpt(gpt.primary);
  assert.is(r.sectorSize, 512);
  assert.is(r.diskGuid, stableGuid('t:disk'));
  assert.is(r.firstUsableLba, 34);
  assert.is(r.lastUsableLba, sectors - 34);
  assert.equal(r.partitions.map((p) => ({ name: p.name, typeGuid: p.typeGuid, guid: p.guid, firstLba: p.firstLba, lastLba: p.lastLba, attrs: p.attrs })),
    partitions.map((p) => ({ name: p.name, typeGuid: p.typeGuid, guid: p.guid, firstLba: p.firstLba, lastLba: p.lastLba, attrs: BigInt(p.attrs ?? 0) })));
  assert.equal(r.partitions.map((p) => p.index), [1, 2, 3, 4]);
  const bad = Buffer.from(gpt.primary); bad[1024 + 60] ^= 1;
  assert.throws(() => readGpt(bad), /entry array CRC mismatch/);
  const badH = Buffer.from(gpt.primary); badH[512 + 40] ^= 1;
  assert.throws(() => readGpt(badH), /header CRC mismatch/);
  assert.throws(() => readGpt(Buffer.alloc(4096)), /no GPT header/);
});

test('4096-byte sectors: entries fit in 4 sectors and readGpt detects the size', () => {
  const size = 64 * MiB;
  const layout = layoutPartitions(size, [{ name: 'only', sizeBytes: 'rest', type: GPT_TYPES.linuxData }], MiB, 4096);
  assert.is(layout[0]!.firstLba, 256);
  const gpt = buildGpt({ diskSizeBytes: size, sectorSize: 4096, diskGuid: stableGuid('4k'), partitions: layout.map((p) => ({ ...p, guid: stableGuid('4k:p') })) });
  assert.is(gpt.primary.length, 6 * 4096);
  const r = readGpt(gpt.primary);
  assert.is(r.sectorSize, 4096);
  assert.is(r.firstUsableLba, 6);
  assert.is(r.partitions[0]!.lastLba, size / 4096 - 6);
});

test('overlapping or out-of-range partitions are refused', () => {
  const base = { typeGuid: GPT_TYPES.esp, guid: stableGuid('x') };
  assert.throws(() => buildGpt({ diskSizeBytes: SIZE, diskGuid: stableGuid('d'), partitions: [{ ...base, name: 'a', firstLba: 2048, lastLba: 5000 }, { ...base, name: 'b', firstLba: 4096, lastLba: 9000 }] }), /'a' and 'b' overlap/);
  assert.throws(() => buildGpt({ diskSizeBytes: SIZE, diskGuid: stableGuid('d'), partitions: [{ ...base, name: 'a', firstLba: 10, lastLba: 5000 }] }), /outside the usable range/);
  assert.throws(() => buildGpt({ diskSizeBytes: SIZE, diskGuid: stableGuid('d'), partitions: [{ ...base, name: 'x'.repeat(37), firstLba: 2048, lastLba: 5000 }] }), /longer than 36/);
});

test.run();
