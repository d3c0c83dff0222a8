// Slots through U-Boot on the Raspberry Pi: the boot script (builder/rpi/boot.cmd) keeps
// BOOT_ORDER and BOOT_<slot>_LEFT in uboot.env on the FAT boot partition and takes one try per
// boot; the node blesses the booted slot by giving it its tries back (RAUC's scheme).
// The file is replaced whole (temp + fsync + rename + fsync dir): U-Boot ignores all of it
// when its CRC is wrong.
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { otherSlot, type Slot } from '../slot.ts';
import { decodeUbootEnv, encodeUbootEnv } from './ubootenv.ts';

export const UBOOT_ENV_FILE = 'uboot.env';
/** Must match RPI_TRIES in builder/rpi.ts (the script's @TRIES@). */
export const UBOOT_TRIES = 3;

export interface UbootSlots { order: Slot[]; left: Record<Slot, number> }

export function slotsOf(env: Record<string, string>): UbootSlots {
  const order = (env.BOOT_ORDER ?? 'a').split(/\s+/).filter((s): s is Slot => s === 'a' || s === 'b');
  const n = (s: Slot, dflt: number) => { const v = Number(env[`BOOT_${s}_LEFT`]); return Number.isInteger(v) && v >= 0 ? v : dflt; };
  return { order, left: { a: n('a', UBOOT_TRIES), b: n('b', 0) } };
}

/**
 * The slot the script preferred but skipped because its tries were spent, when `booted` is
 * not it: the boot loader fell back.
 */
export function fellBackFrom(env: Record<string, string>, booted: Slot): Slot | undefined {
  const { order, left } = slotsOf(env);
  const first = order[0];
  return first && first !== booted && left[first] === 0 ? first : undefined;
}

/**
 * Facts about this very board that U-Boot derives at each boot when they are absent; saved,
 * they would follow the card to another Pi (same MAC, wrong device tree). The boot script
 * clears what it can; ethaddr is write-once inside U-Boot, so only the node can drop it.
 */
export const BOARD_VARS = ['ethaddr', 'usbethaddr', 'fdt_addr', 'fdtfile', 'serial#', 'kiln_fdt_addr', 'kiln_fdtfile', 'kiln_usbethaddr'];

/**
 * The environment after blessing `booted`: its tries restored, and it first in BOOT_ORDER.
 * A slot we fell back from leaves the order (it failed; only a new update stages it again).
 */
export function blessedEnv(env: Record<string, string>, booted: Slot, tries = UBOOT_TRIES): Record<string, string> {
  const { order } = slotsOf(env);
  const failed = fellBackFrom(env, booted);
  const keep = order.filter((s) => s !== booted && s !== failed);
  const out = { ...env, BOOT_ORDER: [booted, ...keep].join(' '), [`BOOT_${booted}_LEFT`]: String(tries) };
  for (const k of BOARD_VARS) delete out[k];
  return out;
}

/** The environment with `slot` unbootable (its root is about to be rewritten, or it failed). */
export function demotedEnv(env: Record<string, string>, slot: Slot): Record<string, string> {
  const { order } = slotsOf(env);
  const rest = order.filter((s) => s !== slot);
  return { ...env, BOOT_ORDER: (rest.length ? rest : [otherSlot(slot)]).join(' '), [`BOOT_${slot}_LEFT`]: '0' };
}

/** The environment with `slot` tried first, `tries` times, the other slot kept as the fall-back. */
export function stagedEnv(env: Record<string, string>, slot: Slot, tries = UBOOT_TRIES): Record<string, string> {
  return { ...env, BOOT_ORDER: `${slot} ${otherSlot(slot)}`, [`BOOT_${slot}_LEFT`]: String(tries) };
}

export function readUbootEnv(dir: string): Record<string, string> {
  return decodeUbootEnv(readFileSync(join(dir, UBOOT_ENV_FILE)));
}

/**
 * Replaces uboot.env in `dir` atomically, keeping its size (U-Boot reads CONFIG_ENV_SIZE bytes).
 * U-Boot replaces its whole environment with the file's: one without bootcmd would leave the
 * Pi at U-Boot's prompt, so only a complete environment (one U-Boot saved) is written back.
 */
export function writeUbootEnv(dir: string, env: Record<string, string>): void {
  if (!env.bootcmd) throw new Error('refusing to write a U-Boot environment without bootcmd (U-Boot would stop at its prompt)');
  const file = join(dir, UBOOT_ENV_FILE);
  const size = existsSync(file) ? readFileSync(file).length : undefined;
  const bytes = encodeUbootEnv(env, size);
  const tmp = join(dir, 'uboot.tmp');
  const fd = openSync(tmp, 'w');
  try { writeSync(fd, bytes); fsyncSync(fd); } finally { closeSync(fd); }
  renameSync(tmp, file);
  // vfat writes a renamed file's directory entry with the FILE's inode, not the directory's:
  // fsync both, or a crash can leave the entry pointing at the old, freed clusters.
  for (const p of [file, dir]) {
    const fd2 = openSync(p, 'r');
    try { fsyncSync(fd2); } finally { closeSync(fd2); }
  }
}

/** Blesses the booted slot. Returns what it did, saying so when the boot loader had fallen back. */
export function blessUboot(dir: string, booted: Slot): string {
  let env: Record<string, string>;
  try { env = readUbootEnv(dir); } catch (e) {
    // Missing or corrupt: U-Boot runs on its defaults and the boot script's next saveenv writes
    // a complete file; one written from here would lack U-Boot's own variables.
    return `slot ${booted} not blessed: ${UBOOT_ENV_FILE} unusable (${(e as Error).message.replace(/^ENOENT.*/, 'missing')}); U-Boot uses its defaults until the next boot saves it`;
  }
  const failed = fellBackFrom(env, booted);
  const next = blessedEnv(env, booted);
  if (JSON.stringify(next) === JSON.stringify(env)) return `slot ${booted} already blessed`;
  writeUbootEnv(dir, next);
  return `blessed slot ${booted} (U-Boot: BOOT_ORDER=${next.BOOT_ORDER}, BOOT_${booted}_LEFT=${next[`BOOT_${booted}_LEFT`]})${failed ? `; the boot loader fell back from slot ${failed}, whose tries were spent` : ''}`;
}
