// Firmware for the shipped modules: only the files a module names (modinfo firmware=),
// taken from the profile's Debian firmware packages, copied to /lib/firmware where the
// kernel loads them directly (no firmware helper). The total is checked against the profile's
// firmware.max_mib so a new driver folder cannot silently double the image.
import { existsSync, realpathSync, statSync } from 'node:fs';
import { join } from 'node:path';

export interface FirmwareFile { name: string; src: string; size: number }
export interface FirmwareChoice { files: FirmwareFile[]; missing: string[]; bytes: number }

/** Firmware trees inside unpacked packages (bookworm ships lib/firmware; later releases usr/lib/firmware). */
const FIRMWARE_DIRS = ['lib/firmware', 'usr/lib/firmware'];

/**
 * Finds each wanted name in the packages (first package wins), following symlinks inside
 * the package. Names no package has are returned as `missing` (a driver lists every version
 * it can use; a package carries some). Throws, naming the profile key, when over the limit.
 */
export function chooseFirmware(wanted: string[], packages: { name: string; dir: string }[], maxMiB: number, profileFile = 'the profile'): FirmwareChoice {
  const files: FirmwareFile[] = [];
  const missing: string[] = [];
  for (const name of wanted) {
    if (name.includes('..') || name.startsWith('/')) { missing.push(name); continue; }
    let hit: FirmwareFile | undefined;
    for (const p of packages) {
      for (const d of FIRMWARE_DIRS) {
        const path = join(p.dir, d, name);
        if (!existsSync(path)) continue;
        const real = realpathSync(path);
        if (!real.startsWith(realpathSync(p.dir) + '/') || !statSync(real).isFile()) continue;
        hit = { name, src: real, size: statSync(real).size };
        break;
      }
      if (hit) break;
    }
    if (hit) files.push(hit); else missing.push(name);
  }
  const bytes = files.reduce((n, f) => n + f.size, 0);
  if (bytes > maxMiB * 1048576) {
    const big = [...files].sort((a, b) => b.size - a.size).slice(0, 5).map((f) => `${f.name} ${(f.size / 1048576).toFixed(1)} MiB`);
    throw new Error(`${profileFile}: firmware.max_mib: the shipped modules name ${(bytes / 1048576).toFixed(1)} MiB of firmware, over the limit of ${maxMiB} MiB (largest: ${big.join(', ')}); raise firmware.max_mib, or drop a firmware package or a modules.coldplug folder`);
  }
  return { files, missing, bytes };
}
