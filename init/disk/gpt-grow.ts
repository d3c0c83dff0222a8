// Growing a GPT disk's last partition after the disk got larger (a resized qcow2, a cloud
// volume bigger than the image). Pure: bytes in, bytes out; init/grow.ts does the I/O.
// Existing bytes are patched rather than rebuilt, so nothing but the moved backup, the
// last usable LBA, the partition's last LBA, the MBR's size and the CRCs can change.
import { crc32 } from './crc32.ts';
import { gptHeaderFields } from './gpt.ts';

export interface GrowPlan {
  /** MBR + primary header + entry array: write at byte 0. */
  primary: Buffer;
  /** Entry array copy + backup header: write at `backupOffset` (the disk's last sectors). */
  backup: Buffer;
  backupOffset: number;
  /** 1-based partition number (as in /dev/vda4). */
  index: number;
  firstLba: number;
  oldLastLba: number;
  newLastLba: number;
  sectorSize: number;
}

/**
 * `head` is the start of the disk (at least MBR, header and entry array: 34 sectors of
 * 512 bytes). Returns the tables that make partition `name` end at the disk's last usable
 * LBA with the backup GPT at the disk's end, or null when that is already so. Throws when
 * `name` is not the last partition on the disk or the disk is smaller than the table says.
 */
export function growLastPartition(head: Buffer, diskSizeBytes: number, name: string): GrowPlan | null {
  const { gpt, ss, hdr, hsize, entriesLba, count, esize, entrySectors } = gptHeaderFields(head);
  if (diskSizeBytes % ss) throw new Error(`disk size ${diskSizeBytes} is not a multiple of the ${ss}-byte sector`);
  const lastLba = diskSizeBytes / ss - 1;
  const lastUsable = lastLba - 1 - entrySectors;
  const part = gpt.partitions.find((p) => p.name === name);
  if (!part) throw new Error(`no partition named ${name}`);
  const after = gpt.partitions.find((p) => p !== part && p.lastLba >= part.firstLba);
  if (after) throw new Error(`${name} is not the last partition (${after.name || `#${after.index}`} ends after it starts): not growing it`);
  if (gpt.alternateLba > lastLba || part.lastLba > lastUsable) {
    throw new Error(`the disk (${lastLba + 1} sectors) is smaller than its partition table says (backup at LBA ${gpt.alternateLba}, ${name} ends at ${part.lastLba})`);
  }
  if (gpt.alternateLba === lastLba && part.lastLba === lastUsable && gpt.lastUsableLba === lastUsable) return null;

  const entries = Buffer.from(head.subarray(entriesLba * ss, entriesLba * ss + entrySectors * ss));
  entries.writeBigUInt64LE(BigInt(lastUsable), (part.index - 1) * esize + 40);
  const entriesCrc = crc32(entries.subarray(0, count * esize));
  const header = (my: number, alt: number, entriesAt: number) => {
    const h = Buffer.from(hdr);
    h.writeBigUInt64LE(BigInt(my), 24);
    h.writeBigUInt64LE(BigInt(alt), 32);
    h.writeBigUInt64LE(BigInt(lastUsable), 48);
    h.writeBigUInt64LE(BigInt(entriesAt), 72);
    h.writeUInt32LE(entriesCrc, 88);
    h.writeUInt32LE(0, 16);
    h.writeUInt32LE(crc32(h.subarray(0, hsize)), 16);
    return h;
  };
  const mbr = Buffer.from(head.subarray(0, ss));
  // A protective MBR's one partition covers the whole disk (or as much as 32 bits can say).
  if (mbr[446 + 4] === 0xee && mbr.readUInt16LE(510) === 0xaa55) mbr.writeUInt32LE(Math.min(lastLba, 0xffffffff), 446 + 12);
  const gap = head.subarray(2 * ss, entriesLba * ss); // normally empty: entries start at LBA 2
  const primary = Buffer.concat([mbr, header(1, lastLba, entriesLba), gap, entries]);
  const backupEntriesLba = lastLba - entrySectors;
  const backup = Buffer.concat([entries, header(lastLba, 1, backupEntriesLba)]);
  return { primary, backup, backupOffset: backupEntriesLba * ss, index: part.index, firstLba: part.firstLba, oldLastLba: part.lastLba, newLastLba: lastUsable, sectorSize: ss };
}

/** Size in bytes of the ext4 filesystem whose superblock starts at byte 1024 of `head`, or undefined. */
export function ext4Size(head: Buffer): number | undefined {
  const sb = head.subarray(1024, 2048);
  if (sb.length < 1024 || sb.readUInt16LE(0x38) !== 0xef53) return undefined;
  const blockSize = 1024 << sb.readUInt32LE(0x18);
  const is64 = (sb.readUInt32LE(0x60) & 0x80) !== 0;
  const blocks = sb.readUInt32LE(0x04) + (is64 ? sb.readUInt32LE(0x150) * 2 ** 32 : 0);
  return blocks * blockSize;
}
