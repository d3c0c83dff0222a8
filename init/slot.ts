// Slots and boot counting on the ESP. systemd-boot names a counting entry
// kiln-<slot>+<left>[-<done>].efi and decrements it on each try; "blessing" renames it to
// kiln-<slot>.efi, which ends the counting. Pure functions here; the rename is in boot.ts.

export type Slot = 'a' | 'b';
export interface Entry { file: string; slot: Slot; left?: number; done?: number }

const ENTRY = /^kiln-([ab])(?:\+(\d+)(?:-(\d+))?)?\.efi$/;

export function parseEntry(file: string): Entry | undefined {
  const m = ENTRY.exec(file);
  if (!m) return undefined;
  return { file, slot: m[1] as Slot, left: m[2] === undefined ? undefined : Number(m[2]), done: m[3] === undefined ? undefined : Number(m[3]) };
}

/** The rename that blesses `slot`, or undefined when its entry is already blessed or absent. */
export function blessRename(files: string[], slot: Slot): { from: string; to: string } | undefined {
  const e = files.map(parseEntry).find((x) => x?.slot === slot && x.left !== undefined);
  return e ? { from: e.file, to: `kiln-${slot}.efi` } : undefined;
}

/** The slot named on the kernel command line (kiln.slot=), defaulting to a. */
export function slotFromCmdline(cmdline: string): Slot {
  const m = /(?:^|\s)kiln\.slot=([ab])(?:\s|$)/.exec(cmdline);
  return (m?.[1] as Slot) ?? 'a';
}

export function otherSlot(s: Slot): Slot { return s === 'a' ? 'b' : 'a'; }

/** Reads a `key=value` word from a kernel command line. */
export function cmdlineArg(cmdline: string, key: string): string | undefined {
  for (const w of cmdline.trim().split(/\s+/)) {
    if (w === key) return '';
    if (w.startsWith(`${key}=`)) return w.slice(key.length + 1);
  }
  return undefined;
}
