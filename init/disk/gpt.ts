// GUID partition tables (UEFI spec, chapter 5): protective MBR, primary and backup
// headers with their entry arrays, written as plain buffers and parsed back.
import { nodeCrypto } from '../lazy.ts';
import { crc32 } from './crc32.ts';
import { urandom } from '../safefs.ts';

export const GPT_TYPES = {
  esp: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  rootX86_64: '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709',
  rootArm64: 'B921B045-1DF0-41C3-AF44-4C6F280D3FAE',
  linuxData: '0FC63DAF-8483-4772-8E79-3D69D8477DE4',
} as const;

export interface GptPartition {
  /** PARTLABEL, at most 36 UTF-16 code units. */
  name: string;
  typeGuid: string;
  guid: string;
  firstLba: number;
  /** Inclusive. */
  lastLba: number;
  /** Attribute bits (bit 0 required, 60 read-only, 63 no-automount...). */
  attrs?: bigint | number;
}

export interface GptSpec {
  diskSizeBytes: number;
  sectorSize?: number;
  diskGuid: string;
  partitions: GptPartition[];
}

export interface Gpt {
  /** LBA 0 protective MBR, LBA 1 header, then the entry array: write at byte 0. */
  primary: Buffer;
  /** Entry array copy followed by the backup header: write at `backupOffset`. */
  backup: Buffer;
  backupOffset: number;
}

const ENTRY_COUNT = 128;
const ENTRY_SIZE = 128;
const HEADER_SIZE = 92;
const NAME_UNITS = 36;
const SIGNATURE = Buffer.from('EFI PART', 'ascii');
const GUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** GUID text to its on-disk form: the first three groups little-endian, the rest as written. */
export function guidToBytes(guid: string): Buffer {
  if (!GUID_RE.test(guid)) throw new Error(`'${guid}' is not a GUID (expected XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX)`);
  const h = guid.replace(/-/g, '');
  const b = Buffer.from(h, 'hex');
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  return b;
}

/** On-disk GUID bytes to upper-case text. */
export function guidFromBytes(buf: Uint8Array): string {
  const b = Buffer.from(buf.subarray(0, 16));
  b.subarray(0, 4).reverse();
  b.subarray(4, 6).reverse();
  b.subarray(6, 8).reverse();
  const h = b.toString('hex').toUpperCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** A version-4 style GUID derived from sha256(seed): the same seed always gives the same GUID. */
export function stableGuid(seed: string): string {
  return version4Text(nodeCrypto().createHash('sha256').update(seed).digest());
}

/** 16 bytes as GUID text in the order given, with the version-4 and RFC 9562 variant bits set. */
function version4Text(bytes: Uint8Array): string {
  const b = Buffer.from(bytes.subarray(0, 16));
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const h = b.toString('hex').toUpperCase();
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function geometry(diskSizeBytes: number, sectorSize: number) {
  if (![512, 4096].includes(sectorSize)) throw new Error(`GPT sector size ${sectorSize} is not supported (use 512 or 4096)`);
  if (!Number.isSafeInteger(diskSizeBytes) || diskSizeBytes % sectorSize) throw new Error(`disk size ${diskSizeBytes} is not a multiple of the ${sectorSize}-byte sector`);
  const sectors = diskSizeBytes / sectorSize;
  const entrySectors = Math.ceil((ENTRY_COUNT * ENTRY_SIZE) / sectorSize);
  const lastLba = sectors - 1;
  const g = { sectors, entrySectors, lastLba, firstUsable: 2 + entrySectors, lastUsable: lastLba - 1 - entrySectors };
  if (g.lastUsable < g.firstUsable) throw new Error(`disk of ${diskSizeBytes} bytes is too small for a GPT`);
  return g;
}

export interface LayoutRequest {
  name: string;
  sizeBytes: number | 'rest';
  /** Partition type GUID. */
  type: string;
}

export interface LayoutPartition {
  name: string;
  typeGuid: string;
  firstLba: number;
  lastLba: number;
  sizeBytes: number;
}

/**
 * Places partitions one after another, each start aligned to `align` bytes (1 MiB, as
 * sfdisk and parted do). 'rest' (last partition only) runs to the last usable LBA.
 */
export function layoutPartitions(diskSize: number, parts: LayoutRequest[], align = 1024 * 1024, sectorSize = 512): LayoutPartition[] {
  const g = geometry(diskSize, sectorSize);
  if (align % sectorSize) throw new Error(`alignment ${align} is not a multiple of the ${sectorSize}-byte sector`);
  const alignLba = align / sectorSize;
  const out: LayoutPartition[] = [];
  let next = g.firstUsable;
  parts.forEach((p, i) => {
    const first = Math.ceil(next / alignLba) * alignLba;
    let last: number;
    if (p.sizeBytes === 'rest') {
      if (i !== parts.length - 1) throw new Error(`partition '${p.name}': size 'rest' is only allowed for the last partition`);
      last = g.lastUsable;
    } else {
      if (!Number.isSafeInteger(p.sizeBytes) || p.sizeBytes <= 0 || p.sizeBytes % sectorSize) {
        throw new Error(`partition '${p.name}': size ${p.sizeBytes} must be a positive multiple of ${sectorSize} bytes`);
      }
      last = first + p.sizeBytes / sectorSize - 1;
    }
    if (last > g.lastUsable || last < first) {
      throw new Error(`partition '${p.name}' does not fit: it would end at LBA ${last} but the last usable LBA of a ${diskSize}-byte disk is ${g.lastUsable}; make the disk larger or the partition smaller`);
    }
    out.push({ name: p.name, typeGuid: p.type, firstLba: first, lastLba: last, sizeBytes: (last - first + 1) * sectorSize });
    next = last + 1;
  });
  return out;
}

function entryArray(parts: GptPartition[]): Buffer {
  if (parts.length > ENTRY_COUNT) throw new Error(`a GPT holds at most ${ENTRY_COUNT} partitions, got ${parts.length}`);
  const a = Buffer.alloc(ENTRY_COUNT * ENTRY_SIZE);
  parts.forEach((p, i) => {
    const e = a.subarray(i * ENTRY_SIZE, (i + 1) * ENTRY_SIZE);
    guidToBytes(p.typeGuid).copy(e, 0);
    guidToBytes(p.guid).copy(e, 16);
    e.writeBigUInt64LE(BigInt(p.firstLba), 32);
    e.writeBigUInt64LE(BigInt(p.lastLba), 40);
    e.writeBigUInt64LE(BigInt(p.attrs ?? 0), 48);
    const name = Buffer.from(p.name, 'utf16le');
    if (name.length > NAME_UNITS * 2) throw new Error(`partition name '${p.name}' is longer than ${NAME_UNITS} UTF-16 units`);
    name.copy(e, 56);
  });
  return a;
}

function gptHeader(sectorSize: number, f: { my: number; alt: number; firstUsable: number; lastUsable: number; diskGuid: string; entriesLba: number; entriesCrc: number }): Buffer {
  const h = Buffer.alloc(sectorSize);
  SIGNATURE.copy(h, 0);
  h.writeUInt32LE(0x00010000, 8);
  h.writeUInt32LE(HEADER_SIZE, 12);
  h.writeBigUInt64LE(BigInt(f.my), 24);
  h.writeBigUInt64LE(BigInt(f.alt), 32);
  h.writeBigUInt64LE(BigInt(f.firstUsable), 40);
  h.writeBigUInt64LE(BigInt(f.lastUsable), 48);
  guidToBytes(f.diskGuid).copy(h, 56);
  h.writeBigUInt64LE(BigInt(f.entriesLba), 72);
  h.writeUInt32LE(ENTRY_COUNT, 80);
  h.writeUInt32LE(ENTRY_SIZE, 84);
  h.writeUInt32LE(f.entriesCrc, 88);
  h.writeUInt32LE(crc32(h.subarray(0, HEADER_SIZE)), 16);
  return h;
}

function protectiveMbr(sectorSize: number, sectors: number): Buffer {
  const m = Buffer.alloc(sectorSize);
  const p = 446;
  m[p] = 0x00; // not bootable
  m.set([0x00, 0x02, 0x00], p + 1); // CHS of LBA 1
  m[p + 4] = 0xee;
  m.set([0xff, 0xff, 0xff], p + 5);
  m.writeUInt32LE(1, p + 8);
  m.writeUInt32LE(Math.min(sectors - 1, 0xffffffff), p + 12);
  m[510] = 0x55;
  m[511] = 0xaa;
  return m;
}

/** Builds both copies of the table. Partitions must lie within the usable LBAs and not overlap. */
export function buildGpt(spec: GptSpec): Gpt {
  const ss = spec.sectorSize ?? 512;
  const g = geometry(spec.diskSizeBytes, ss);
  const sorted = [...spec.partitions].sort((a, b) => a.firstLba - b.firstLba);
  sorted.forEach((p, i) => {
    if (!Number.isSafeInteger(p.firstLba) || !Number.isSafeInteger(p.lastLba) || p.firstLba < g.firstUsable || p.lastLba > g.lastUsable || p.lastLba < p.firstLba) {
      throw new Error(`partition '${p.name}' spans LBA ${p.firstLba}..${p.lastLba}, outside the usable range ${g.firstUsable}..${g.lastUsable}`);
    }
    const prev = sorted[i - 1];
    if (prev && prev.lastLba >= p.firstLba) throw new Error(`partitions '${prev.name}' and '${p.name}' overlap`);
  });
  const entries = entryArray(spec.partitions);
  const entriesCrc = crc32(entries);
  const entriesBuf = Buffer.alloc(g.entrySectors * ss);
  entries.copy(entriesBuf);
  const common = { firstUsable: g.firstUsable, lastUsable: g.lastUsable, diskGuid: spec.diskGuid, entriesCrc };
  const backupEntriesLba = g.lastLba - g.entrySectors;
  const primary = Buffer.concat([
    protectiveMbr(ss, g.sectors),
    gptHeader(ss, { ...common, my: 1, alt: g.lastLba, entriesLba: 2 }),
    entriesBuf,
  ]);
  const backup = Buffer.concat([entriesBuf, gptHeader(ss, { ...common, my: g.lastLba, alt: 1, entriesLba: backupEntriesLba })]);
  return { primary, backup, backupOffset: backupEntriesLba * ss };
}

export interface ParsedGpt {
  sectorSize: number;
  diskGuid: string;
  firstUsableLba: number;
  lastUsableLba: number;
  alternateLba: number;
  partitions: (Required<Omit<GptPartition, 'attrs'>> & { index: number; attrs: bigint })[];
}

/**
 * Parses the primary GPT from the start of a disk (at least the first 34 sectors).
 * The sector size is found by looking for the header at byte 512, then 4096.
 * Header and entry CRCs are checked.
 */
export function readGpt(buf: Buffer, sectorSize?: number): ParsedGpt {
  const ss = sectorSize ?? [512, 4096].find((s) => buf.length >= s + 8 && buf.subarray(s, s + 8).equals(SIGNATURE));
  if (!ss || buf.length < ss + HEADER_SIZE || !buf.subarray(ss, ss + 8).equals(SIGNATURE)) throw new Error('no GPT header found (no "EFI PART" signature at LBA 1)');
  const h = buf.subarray(ss, ss * 2);
  const hsize = h.readUInt32LE(12);
  if (hsize < HEADER_SIZE || hsize > ss) throw new Error(`GPT header size ${hsize} is invalid`);
  const hcopy = Buffer.from(h.subarray(0, hsize));
  hcopy.writeUInt32LE(0, 16);
  if (crc32(hcopy) !== h.readUInt32LE(16)) throw new Error('GPT header CRC mismatch: the table is corrupt');
  const entriesLba = Number(h.readBigUInt64LE(72));
  const count = h.readUInt32LE(80);
  const esize = h.readUInt32LE(84);
  if (esize < ENTRY_SIZE || esize % 8) throw new Error(`GPT entry size ${esize} is invalid`);
  const start = entriesLba * ss;
  if (buf.length < start + count * esize) throw new Error(`GPT entry array needs ${start + count * esize} bytes of the disk, got ${buf.length}`);
  const arr = buf.subarray(start, start + count * esize);
  if (crc32(arr) !== h.readUInt32LE(88)) throw new Error('GPT entry array CRC mismatch: the table is corrupt');
  const partitions: ParsedGpt['partitions'] = [];
  for (let i = 0; i < count; i++) {
    const e = arr.subarray(i * esize, (i + 1) * esize);
    if (e.subarray(0, 16).every((b) => b === 0)) continue;
    const raw = e.subarray(56, 56 + NAME_UNITS * 2);
    let end = 0;
    while (end < raw.length && (raw[end] || raw[end + 1])) end += 2;
    partitions.push({
      index: i + 1,
      name: raw.subarray(0, end).toString('utf16le'),
      typeGuid: guidFromBytes(e.subarray(0, 16)),
      guid: guidFromBytes(e.subarray(16, 32)),
      firstLba: Number(e.readBigUInt64LE(32)),
      lastLba: Number(e.readBigUInt64LE(40)),
      attrs: e.readBigUInt64LE(48),
    });
  }
  return {
    sectorSize: ss,
    diskGuid: guidFromBytes(h.subarray(56, 72)),
    firstUsableLba: Number(h.readBigUInt64LE(40)),
    lastUsableLba: Number(h.readBigUInt64LE(48)),
    alternateLba: Number(h.readBigUInt64LE(32)),
    partitions,
  };
}

export interface GuidRewrite {
  /** MBR + primary header + entry array: write at byte 0. */
  primary: Buffer;
  /** Entry array copy + backup header: write at `backupOffset`. */
  backup: Buffer;
  backupOffset: number;
}

/**
 * The same table with a new disk GUID and new partition GUIDs (`partGuids` in entry order,
 * one per used entry), everything else byte for byte: names, types, LBAs, attributes, the
 * backup's place. Every image of a version is written with the same GUIDs; a node gives its
 * disk its own ones once. `head` holds the primary table (34 sectors of 512 bytes at least).
 */
export function rewriteGuids(head: Buffer, diskSizeBytes: number, diskGuid: string, partGuids: string[]): GuidRewrite {
  const { gpt, ss, hdr, hsize, entriesLba, count, esize, entrySectors } = gptHeaderFields(head);
  const alt = gpt.alternateLba;
  if (alt * ss + ss > diskSizeBytes || alt <= entriesLba + entrySectors) throw new Error(`the backup GPT header at LBA ${alt} is not on this ${diskSizeBytes}-byte disk`);
  if (partGuids.length !== gpt.partitions.length) throw new Error(`${gpt.partitions.length} partitions need new GUIDs, got ${partGuids.length}`);
  const all = [diskGuid, ...partGuids].map((g) => g.toUpperCase());
  if (new Set(all).size !== all.length) throw new Error('the new GUIDs are not all different');
  const entries = Buffer.from(head.subarray(entriesLba * ss, (entriesLba + entrySectors) * ss));
  gpt.partitions.forEach((p, i) => guidToBytes(partGuids[i]!).copy(entries, (p.index - 1) * esize + 16));
  const entriesCrc = crc32(entries.subarray(0, count * esize));
  const header = (my: number, other: number, at: number) => {
    const h = Buffer.from(hdr);
    h.writeBigUInt64LE(BigInt(my), 24);
    h.writeBigUInt64LE(BigInt(other), 32);
    guidToBytes(diskGuid).copy(h, 56);
    h.writeBigUInt64LE(BigInt(at), 72);
    h.writeUInt32LE(entriesCrc, 88);
    h.writeUInt32LE(0, 16);
    h.writeUInt32LE(crc32(h.subarray(0, hsize)), 16);
    return h;
  };
  const backupEntriesLba = alt - entrySectors;
  const primary = Buffer.concat([head.subarray(0, ss), header(1, alt, entriesLba), head.subarray(2 * ss, entriesLba * ss), entries]);
  const backup = Buffer.concat([entries, header(alt, 1, backupEntriesLba)]);
  return { primary, backup, backupOffset: backupEntriesLba * ss };
}

/**
 * A random (version 4, RFC 9562) GUID in the upper case the tables are read back in. Made here
 * from the kernel's pool rather than by node:crypto's randomUUID: a first boot gives the disk
 * new GUIDs, and loading node:crypto for that is most of what it would cost.
 */
export function randomGuid(): string { return version4Text(urandom(16)); }

/** The primary header's raw fields that rewriting code needs, next to the parsed table. */
export function gptHeaderFields(head: Buffer) {
  const gpt = readGpt(head);
  const ss = gpt.sectorSize;
  const hdr = head.subarray(ss, 2 * ss);
  const count = hdr.readUInt32LE(80);
  const esize = hdr.readUInt32LE(84);
  return {
    gpt, ss, hdr, hsize: hdr.readUInt32LE(12), entriesLba: Number(hdr.readBigUInt64LE(72)),
    count, esize, entrySectors: Math.ceil((count * esize) / ss),
  };
}
