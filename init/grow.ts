// First boot on a disk larger than the image: move the backup GPT to the disk's end (or, on
// the Pi's MBR card, just rewrite the last entry's size), extend kiln-data (the last
// partition) to it, tell the kernel (resizepart: the disk is in use, so
// it cannot re-read the whole table) and grow the mounted ext4 online. Every step checks
// the current state first, so a boot interrupted halfway finishes the job on the next one.
import { closeSync, existsSync, fsyncSync, openSync, readSync, realpathSync, writeSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { ext4Size, growLastPartition } from './disk/gpt-grow.ts';
import { readGpt } from './disk/gpt.ts';
import { growLastMbrPartition, readMbr } from './disk/mbr.ts';
import { run, runOk } from './exec.ts';
import { partitionByLabel, read } from './system.ts';

const MiB = 1024 * 1024;
// A resize2fs'd filesystem may stop short of its partition's end (a last block group too
// small for its metadata is left out), so only a larger gap means a resize never finished.
const UNFINISHED_GAP = 64 * MiB;

function readAt(dev: string, length: number, offset: number): Buffer {
  const fd = openSync(dev, 'r');
  try {
    const b = Buffer.alloc(length);
    const n = readSync(fd, b, 0, length, offset);
    return b.subarray(0, n);
  } finally { closeSync(fd); }
}

/** First of these that exists: Debian's packages still ship to /sbin and /usr/bin separately. */
function program(name: string): string {
  return ['/usr/sbin', '/sbin', '/usr/bin', '/bin'].map((d) => `${d}/${name}`).find((p) => existsSync(p)) ?? name;
}

/**
 * Grows the data partition to the disk's end: the GPT partition labelled `label`, or on an
 * MBR disk (no names) the partition `mbrPart` (e.g. mmcblk0p4, from kiln.data=). Returns a
 * line to print, or undefined when it already fills the disk.
 */
export async function growDataPartition(label = 'kiln-data', mbrPart?: string): Promise<string | undefined> {
  const part = partitionByLabel(label) ?? mbrPart;
  if (!part) return undefined;
  // The partition's sysfs folder sits inside its disk's (path.resolve would drop '..' before the link is followed).
  const disk = basename(dirname(realpathSync(`/sys/class/block/${part}`)));
  if (!existsSync(`/sys/class/block/${disk}/${part}/partition`)) throw new Error(`cannot find the disk holding /dev/${part}`);
  // sysfs sizes are always in 512-byte units, whatever the logical sector size.
  const diskBytes = Number(read(`/sys/class/block/${disk}/size`).trim()) * 512;
  const head = readAt(`/dev/${disk}`, MiB, 0);
  const gpt = [512, 4096].some((ss) => head.toString('latin1', ss, ss + 8) === 'EFI PART');
  let number: number, want: number, changed = false;
  if (gpt) {
    const plan = growLastPartition(head, diskBytes, label);
    if (plan) {
      const fd = openSync(`/dev/${disk}`, 'r+');
      try {
        // Backup first: until the primary is rewritten, the old tables stay valid together.
        writeSync(fd, plan.backup, 0, plan.backup.length, plan.backupOffset);
        fsyncSync(fd);
        writeSync(fd, plan.primary, 0, plan.primary.length, 0);
        fsyncSync(fd);
      } finally { closeSync(fd); }
    }
    // What the table says now (grown here or on an earlier boot) against what the kernel uses.
    const table = readGpt(plan ? plan.primary : head);
    const entry = table.partitions.find((p) => p.name === label)!;
    number = entry.index;
    want = (entry.lastLba - entry.firstLba + 1) * (table.sectorSize / 512);
    changed = !!plan;
  } else {
    if (!mbrPart) return undefined;
    number = Number(read(`/sys/class/block/${part}/partition`).trim());
    const plan = growLastMbrPartition(head.subarray(0, 512), diskBytes, number);
    if (plan) {
      // One sector, one write: the old table or the new one, never half (MBR has no backup).
      const fd = openSync(`/dev/${disk}`, 'r+');
      try { writeSync(fd, plan.sector, 0, 512, 0); fsyncSync(fd); } finally { closeSync(fd); }
    }
    want = (readMbr(plan ? plan.sector : head).partitions.find((p) => p.number === number))!.sectors;
    changed = !!plan;
  }
  const have = Number(read(`/sys/class/block/${part}/size`).trim());
  if (have < want) {
    const err = await runOk(program('resizepart'), [`/dev/${disk}`, String(number), String(want)], { timeoutMs: 30_000 });
    if (err) throw new Error(`the partition table is grown but the kernel was not told: ${err}`);
    changed = true;
  }
  const partBytes = Number(read(`/sys/class/block/${part}/size`).trim()) * 512;
  const fsBytes = ext4Size(readAt(`/dev/${part}`, 4096, 0));
  if (fsBytes !== undefined && (changed || fsBytes + UNFINISHED_GAP < partBytes)) {
    const r = await run(program('resize2fs'), [`/dev/${part}`], { timeoutMs: 600_000 });
    if (r.code !== 0) throw new Error(`resize2fs /dev/${part}: ${r.error ?? `exit ${r.code}`}: ${r.stderr.trim().split('\n').slice(-2).join(' / ')}`);
    changed = true;
  }
  return changed ? `data partition grown to ${Math.floor(partBytes / MiB)} MiB` : undefined;
}
