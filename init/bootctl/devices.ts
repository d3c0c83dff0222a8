// Partitions without names: the Pi's MBR card, named on the kernel command line by its boot
// script. Reads sysfs and the disk's first sector only.
import { closeSync, existsSync, openSync, readdirSync, readSync, realpathSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { read } from '../system.ts';

/**
 * A partition named on the command line (kiln.boot=, kiln.root=, kiln.data=, as the Pi's boot
 * script passes them): /dev/NAME or PARTUUID=<MBR disk signature>-<number>. Returns NAME.
 */
export function partitionBySpec(spec: string | undefined, sys = '/sys/class/block', dev = '/dev'): string | undefined {
  if (!spec) return undefined;
  if (spec.startsWith('/dev/')) return existsSync(spec) ? spec.slice(5) : undefined;
  const m = /^PARTUUID=([0-9a-f]{8})-([0-9a-f]{2})$/i.exec(spec);
  if (!m) return undefined;
  const [sig, num] = [m[1]!.toLowerCase(), parseInt(m[2]!, 16)];
  for (const name of readdirSync(sys)) {
    if (Number(read(join(sys, name, 'partition')).trim() || NaN) !== num) continue;
    const disk = diskOf(sys, name);
    if (disk && mbrSignature(join(dev, disk)) === sig) return name;
  }
  return undefined;
}

/** The MBR partition `number` on the same disk as partition `name` (mmcblk0p1 -> mmcblk0p3). */
export function siblingPartition(name: string, number: number, sys = '/sys/class/block'): string | undefined {
  const disk = diskOf(sys, name);
  if (!disk) return undefined;
  return readdirSync(sys).find((n) => n.startsWith(disk) && n !== disk && Number(read(join(sys, n, 'partition')).trim() || NaN) === number && diskOf(sys, n) === disk);
}

/** The whole disk a partition belongs to (its parent in sysfs). */
function diskOf(sys: string, name: string): string | undefined {
  if (!/^DEVTYPE=partition$/m.test(read(join(sys, name, 'uevent')))) return undefined;
  // realpath first: join() would resolve '..' in the name, not in sysfs's device tree.
  try { return basename(dirname(realpathSync(join(sys, name)))); } catch { return undefined; }
}

/** The MBR disk signature (bytes 440-443) as Linux prints it in PARTUUIDs. */
function mbrSignature(disk: string): string | undefined {
  try {
    const fd = openSync(disk, 'r');
    try { const b = Buffer.alloc(4); readSync(fd, b, 0, 4, 440); return b.readUInt32LE(0).toString(16).padStart(8, '0'); } finally { closeSync(fd); }
  } catch { return undefined; }
}
