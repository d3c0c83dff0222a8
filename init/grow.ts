// First boot on a disk larger than the image: move the backup GPT to the disk's end (or, on
// the Pi's MBR card, just rewrite the last entry's size), extend kiln-data (the last
// partition) to it, tell the kernel (resizepart: the disk is in use, so
// it cannot re-read the whole table) and grow the mounted ext4 online. Every step checks
// the current state first, so a boot interrupted halfway finishes the job on the next one.
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readSync, realpathSync, writeFileSync, writeSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { ext4Size, growLastPartition } from './disk/gpt-grow.ts';
import { randomGuid, readGpt, rewriteGuids } from './disk/gpt.ts';
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
  let number: number, want: number, changed = false, note: string | undefined;
  if (gpt) {
    const plan = growLastPartition(head, diskBytes, label);
    if (plan) writeGptPlan(`/dev/${disk}`, plan);
    // What the table says now (grown here or on an earlier boot) against what the kernel uses.
    const table = readGpt(plan ? plan.primary : head);
    const entry = table.partitions.find((p) => p.name === label)!;
    number = entry.index;
    want = (entry.lastLba - entry.firstLba + 1) * (table.sectorSize / 512);
    changed = !!plan;
    if (ownIdsWanted()) {
      try { const m = assignDiskIds(`/dev/${disk}`, diskBytes); if (m) note = m; } catch (e) { note = `disk GUIDs not renewed: ${(e as Error).message}`; }
    }
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
  const grown = changed ? `data partition grown to ${Math.floor(partBytes / MiB)} MiB` : undefined;
  return grown && note ? `${grown}; ${note}` : grown ?? note;
}

/** Marks (on the data partition) that this disk has its own GUIDs. */
export const DISK_IDS_MARKER = '/var/lib/kiln/disk-ids';

/**
 * New GUIDs only on an installed disk whose data partition holds the marker: never from the
 * live ISO (the disk is not ours), never with /data on tmpfs (the marker would not last and
 * the GUIDs would change at every boot).
 */
function ownIdsWanted(): boolean {
  if (/(?:^|\s)kiln\.live=/.test(read('/proc/cmdline'))) return false;
  return read('/proc/mounts').split('\n').some((l) => { const f = l.split(' '); return f[1] === '/data' && f[0]!.startsWith('/dev/') && f[2] === 'ext4'; });
}

/**
 * Once per disk: every image of a version carries the same disk and partition GUIDs, so two
 * kiln disks in one machine (or a disk and its copy) cannot be told apart by them. Gives the
 * disk a new random disk GUID and new partition GUIDs (labels and types unchanged), backup
 * table first so a crash leaves one consistent table, then records it in `marker`. Returns
 * what it did, or undefined when the marker says it is done. The kernel keeps the old
 * PARTUUIDs until the next boot; nothing here uses them.
 */
export function assignDiskIds(dev: string, diskBytes: number, marker = DISK_IDS_MARKER): string | undefined {
  if (existsSync(marker)) return undefined;
  const head = readAt(dev, MiB, 0);
  const gpt = readGpt(head);
  const diskGuid = randomGuid();
  const plan = rewriteGuids(head, diskBytes, diskGuid, gpt.partitions.map(() => randomGuid()));
  writeGptPlan(dev, plan);
  mkdirSync(dirname(marker), { recursive: true });
  writeFileSync(marker, `${diskGuid}\n`);
  return `disk ${dev} has its own GUIDs now (disk ${diskGuid})`;
}

/** Writes a rewritten GPT: backup first, so until the primary is rewritten the old tables stay valid together. */
function writeGptPlan(dev: string, plan: { backup: Buffer; backupOffset: number; primary: Buffer }): void {
  const fd = openSync(dev, 'r+');
  try {
    writeSync(fd, plan.backup, 0, plan.backup.length, plan.backupOffset);
    fsyncSync(fd);
    writeSync(fd, plan.primary, 0, plan.primary.length, 0);
    fsyncSync(fd);
  } finally { closeSync(fd); }
}
