// A classic MBR (DOS) partition table: 4 primary entries, written as one 512-byte sector.
// The Raspberry Pi's boot ROM and firmware read MBR only, so the Pi image cannot use GPT.
export const MBR_TYPES = { fat32Lba: 0x0c, linux: 0x83 } as const;

export interface MbrPartition {
  /** Partition type byte, e.g. 0x0c FAT32 (LBA), 0x83 Linux. */
  type: number;
  startLba: number;
  sectors: number;
  bootable?: boolean;
}

/** CHS fields are unused by everything kiln targets; LBA-only tables put the 1023/254/63 "use LBA" marker there. */
const CHS_MAX = [0xfe, 0xff, 0xff];

/** The 512-byte boot sector: no boot code, disk signature at 440, entries at 446, 0x55AA at 510. */
export function buildMbr(o: { diskSignature: number; partitions: MbrPartition[] }): Buffer {
  if (o.partitions.length > 4) throw new Error(`an MBR holds 4 primary partitions, not ${o.partitions.length}`);
  const b = Buffer.alloc(512);
  b.writeUInt32LE(o.diskSignature >>> 0, 440);
  const sorted = [...o.partitions].sort((x, y) => x.startLba - y.startLba);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    if (prev.startLba + prev.sectors > sorted[i]!.startLba) throw new Error(`MBR partitions overlap at sector ${sorted[i]!.startLba}`);
  }
  o.partitions.forEach((p, i) => {
    if (!Number.isInteger(p.startLba) || p.startLba < 1 || !Number.isInteger(p.sectors) || p.sectors < 1 || p.startLba + p.sectors > 0x1_0000_0000) {
      throw new Error(`MBR partition ${i + 1}: start ${p.startLba} size ${p.sectors} does not fit 32-bit sector numbers`);
    }
    const e = 446 + 16 * i;
    b[e] = p.bootable ? 0x80 : 0;
    b.set(CHS_MAX, e + 1);
    b[e + 4] = p.type;
    b.set(CHS_MAX, e + 5);
    b.writeUInt32LE(p.startLba, e + 8);
    b.writeUInt32LE(p.sectors, e + 12);
  });
  b[510] = 0x55; b[511] = 0xaa;
  return b;
}

/** Linux's PARTUUID for an MBR partition: "<disk signature>-<number>" in hex. */
export function mbrPartUuid(diskSignature: number, number: number): string {
  return `${(diskSignature >>> 0).toString(16).padStart(8, '0')}-${number.toString(16).padStart(2, '0')}`;
}

/** The primary entries of a boot sector (number is 1-based, as in /dev/mmcblk0p4); empty slots are left out. */
export function readMbr(sector: Buffer): { diskSignature: number; partitions: (MbrPartition & { number: number })[] } {
  if (sector.length < 512 || sector[510] !== 0x55 || sector[511] !== 0xaa) throw new Error('no MBR boot signature (0x55AA) in the first sector');
  const partitions: (MbrPartition & { number: number })[] = [];
  for (let i = 0; i < 4; i++) {
    const e = 446 + 16 * i;
    const type = sector[e + 4]!;
    const sectors = sector.readUInt32LE(e + 12);
    if (type === 0 || sectors === 0) continue;
    partitions.push({ number: i + 1, type, startLba: sector.readUInt32LE(e + 8), sectors, bootable: sector[e] === 0x80 });
  }
  if (partitions.some((p) => p.type === 0xee)) throw new Error('a protective MBR: this disk is GPT');
  return { diskSignature: sector.readUInt32LE(440), partitions };
}

/**
 * The boot sector with partition `number` (the last on the disk) extended to the disk's end,
 * or null when it already ends there. Only that entry's size field changes. MBR sizes are
 * 32-bit sector counts, so a partition stops at 2 TiB whatever the card holds.
 */
export function growLastMbrPartition(sector: Buffer, diskBytes: number, number: number): { sector: Buffer; oldSectors: number; newSectors: number } | null {
  const { partitions } = readMbr(sector);
  const part = partitions.find((p) => p.number === number);
  if (!part) throw new Error(`the MBR has no partition ${number}`);
  const end = part.startLba + part.sectors;
  const after = partitions.find((p) => p !== part && p.startLba >= end);
  if (after) throw new Error(`partition ${number} is not the last one on the disk (partition ${after.number} follows it)`);
  const diskSectors = Math.floor(diskBytes / 512);
  if (diskSectors < end) throw new Error(`the disk (${diskSectors} sectors) is smaller than the table says (partition ${number} ends at sector ${end})`);
  const newSectors = Math.min(diskSectors, 0x1_0000_0000) - part.startLba;
  if (newSectors <= part.sectors) return null;
  const out = Buffer.from(sector.subarray(0, 512));
  out.writeUInt32LE(newSectors, 446 + 16 * (number - 1) + 12);
  return { sector: out, oldSectors: part.sectors, newSectors };
}
