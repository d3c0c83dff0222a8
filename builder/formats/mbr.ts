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
