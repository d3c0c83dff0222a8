// Partitions without names: the Pi's MBR card, named on the kernel command line by its boot
// script. Reads sysfs and the disk's first sector only.
import { closeSync, existsSync, openSync, readdirSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { bootDiskFor, parentDisk as diskOf, read } from '../system.ts';

/**
 * A partition named on the command line (kiln.boot=, kiln.root=, kiln.data=, as the Pi's boot
 * script passes them): /dev/NAME or PARTUUID=<MBR disk signature>-<number>. Returns NAME.
 * Only partitions of the disk the root was mounted from count (system.ts bootDisk): a second
 * card or stick with the same disk signature is never used. When that disk is unknown, a
 * PARTUUID found on two disks gives no answer.
 */
export function partitionBySpec(spec: string | undefined, sys = '/sys/class/block', dev = '/dev', mountinfo?: string): string | undefined {
  if (!spec) return undefined;
  const boot = bootDiskFor(sys, mountinfo);
  if (spec.startsWith('/dev/')) {
    const name = spec.slice(5);
    if (!existsSync(join(dev, name))) return undefined;
    return !boot || diskOf(sys, name) === boot ? name : undefined;
  }
  const m = /^PARTUUID=([0-9a-f]{8})-([0-9a-f]{2})$/i.exec(spec);
  if (!m) return undefined;
  const [sig, num] = [m[1]!.toLowerCase(), parseInt(m[2]!, 16)];
  const hits: string[] = [];
  for (const name of readdirSync(sys)) {
    if (Number(read(join(sys, name, 'partition')).trim() || NaN) !== num) continue;
    const disk = diskOf(sys, name);
    if (disk && (!boot || disk === boot) && mbrSignature(join(dev, disk)) === sig) hits.push(name);
  }
  return hits.length === 1 ? hits[0] : undefined;
}

/** The MBR partition `number` on the same disk as partition `name` (mmcblk0p1 -> mmcblk0p3). */
export function siblingPartition(name: string, number: number, sys = '/sys/class/block'): string | undefined {
  const disk = diskOf(sys, name);
  if (!disk) return undefined;
  return readdirSync(sys).find((n) => n.startsWith(disk) && n !== disk && Number(read(join(sys, n, 'partition')).trim() || NaN) === number && diskOf(sys, n) === disk);
}

/** The MBR disk signature (bytes 440-443) as Linux prints it in PARTUUIDs. */
function mbrSignature(disk: string): string | undefined {
  try {
    const fd = openSync(disk, 'r');
    try { const b = Buffer.alloc(4); readSync(fd, b, 0, 4, 440); return b.readUInt32LE(0).toString(16).padStart(8, '0'); } finally { closeSync(fd); }
  } catch { return undefined; }
}
