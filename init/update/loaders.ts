// The boot loader's side of an update, one object per loader, so the updater's flow (write the
// inactive root, stage its boot files, judge the first boot) is the same on every machine:
//   systemd-boot (UEFI disks): one UKI per slot, a counting file name (entries.ts)
//   uboot (Raspberry Pi):      a kernel + initrd per slot on the FAT boot partition and the
//                              BOOT_ORDER / BOOT_<slot>_LEFT counters in uboot.env (bootctl/uboot.ts)
// Boot files are downloaded next to their final place (same file system), verified, then
// renamed in; the slot becomes bootable only after its files are complete.
import { existsSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { blessRename, type Slot } from '../slot.ts';
import { detectBootLoader } from '../bootctl/index.ts';
import { blessUboot, demotedEnv, readUbootEnv, slotsOf, stagedEnv, UBOOT_ENV_FILE, writeUbootEnv } from '../bootctl/uboot.ts';
import { countingName, demoteEntries, entriesOf, entryDir, fsyncDir, isBlessed, listEntries, removeEntries } from './entries.ts';

export type BootKind = 'uki' | 'kernel' | 'initrd';

export interface SlotLoader {
  readonly name: 'systemd-boot' | 'uboot';
  /** Artifacts a release must carry for this loader (a release without them is skipped). */
  readonly kinds: readonly BootKind[];
  /** Where a downloaded boot file for `slot` waits until stage() (never a name the loader boots). */
  tempPath(slot: Slot, kind: BootKind): Promise<string>;
  /** Before `slot`'s root is rewritten: make it unbootable. Returns what changed, for the log. */
  disable(slot: Slot): Promise<string[]>;
  /** Moves the verified temp files into place and makes `slot` the one tried next, `tries` times. */
  stage(slot: Slot, tries: number): Promise<void>;
  /** `slot` failed (or is rolled back from): the loader must not pick it again. */
  demote(slot: Slot): Promise<string[]>;
  /** `slot` passed its first boot's health check: it keeps being picked. */
  bless(slot: Slot): Promise<void>;
  /** Why `slot` cannot be rolled back to, or undefined when it can. */
  rollbackProblem(to: Slot, from: Slot): Promise<string | undefined>;
}

export function systemdBootLoader(esp: string): SlotLoader {
  const dir = entryDir(esp);
  return {
    name: 'systemd-boot',
    kinds: ['uki'],
    // Not *.efi: systemd-boot ignores it while it is incomplete.
    async tempPath(slot) { await mkdir(dir, { recursive: true }); return join(dir, `kiln-${slot}.tmp`); },
    disable: (slot) => removeEntries(esp, slot),
    async stage(slot, tries) {
      await removeEntries(esp, slot);
      await rename(join(dir, `kiln-${slot}.tmp`), join(dir, countingName(slot, tries)));
      fsyncDir(dir);
    },
    async demote(slot) { return (await demoteEntries(esp, slot)).map((d) => `${d.from} -> ${d.to}`); },
    async bless(slot) {
      const r = blessRename((await listEntries(esp)).map((e) => e.file), slot);
      if (r) { await rename(join(dir, r.from), join(dir, r.to)); fsyncDir(dir); }
    },
    async rollbackProblem(to, from) {
      const entries = await listEntries(esp);
      if (!entriesOf(entries, to).some(isBlessed)) return `slot ${to} holds no blessed boot entry (${entriesOf(entries, to).map((e) => e.file).join(', ') || 'no entry'})`;
      if (!entriesOf(entries, from).length) return `the booted slot ${from} has no boot entry on ${esp}`;
      return undefined;
    },
  };
}

const UBOOT_FILES: Record<Exclude<BootKind, 'uki'>, string> = { kernel: 'vmlinuz', initrd: 'initrd' };

/** `dir` is the mounted FAT boot partition holding boot.scr, uboot.env and a/, b/. */
export function ubootLoader(dir: string): SlotLoader {
  const slotDir = (slot: Slot) => join(dir, slot);
  const file = (slot: Slot, kind: BootKind) => {
    if (kind === 'uki') throw new Error('U-Boot boots a kernel and an initrd, not a UKI');
    return join(slotDir(slot), UBOOT_FILES[kind]);
  };
  const env = () => {
    try { return readUbootEnv(dir); } catch (e) {
      // U-Boot saves the file on every boot (boot.scr), so a missing one means it is not ours to guess.
      throw new Error(`cannot read ${join(dir, UBOOT_ENV_FILE)} (${(e as Error).message.split('\n')[0]}); without it the boot loader's slot state is unknown`);
    }
  };
  return {
    name: 'uboot',
    kinds: ['kernel', 'initrd'],
    async tempPath(slot, kind) { await mkdir(slotDir(slot), { recursive: true }); return `${file(slot, kind)}.new`; },
    async disable(slot) {
      const e = env(), { order, left } = slotsOf(e);
      const done: string[] = [];
      if (order.includes(slot) || left[slot] > 0) { writeUbootEnv(dir, demotedEnv(e, slot)); done.push(`uboot.env: slot ${slot} out of BOOT_ORDER`); }
      // Only after the counters say "never": the old files go, which also frees the FAT for the new ones.
      for (const k of ['kernel', 'initrd'] as const) {
        if (existsSync(file(slot, k))) { await rm(file(slot, k)); done.push(`${slot}/${UBOOT_FILES[k]}`); }
      }
      if (done.length) fsyncDir(slotDir(slot));
      return done;
    },
    async stage(slot, tries) {
      for (const k of ['kernel', 'initrd'] as const) await rename(`${file(slot, k)}.new`, file(slot, k));
      fsyncDir(slotDir(slot));
      writeUbootEnv(dir, stagedEnv(env(), slot, tries));
    },
    async demote(slot) {
      const e = env(), next = demotedEnv(e, slot);
      if (next.BOOT_ORDER === e.BOOT_ORDER && next[`BOOT_${slot}_LEFT`] === e[`BOOT_${slot}_LEFT`]) return [];
      writeUbootEnv(dir, next);
      return [`uboot.env: BOOT_ORDER=${next.BOOT_ORDER}, BOOT_${slot}_LEFT=0`];
    },
    async bless(slot) { blessUboot(dir, slot); },
    async rollbackProblem(to) {
      const { order, left } = slotsOf(env());
      if (!existsSync(file(to, 'kernel')) || !existsSync(file(to, 'initrd'))) return `slot ${to} has no kernel and initrd on the boot partition`;
      if (!order.includes(to) || left[to] === 0) return `slot ${to} is not a good slot in uboot.env (BOOT_ORDER=${order.join(' ')}, BOOT_${to}_LEFT=${left[to]})`;
      return undefined;
    },
  };
}

/** The loader in charge of the slots on the partition mounted at `esp`. */
export function slotLoaderAt(esp: string): SlotLoader {
  return detectBootLoader(esp) === 'uboot' ? ubootLoader(esp) : systemdBootLoader(esp);
}
