// Boot entries on the ESP (/efi/EFI/Linux/kiln-<slot>[+left[-done]].efi) as the updater sees
// them: staging a counting entry, blessing, demoting, and a model of the order in which
// systemd-boot picks them, so the updater (and its tests) can say which slot boots next.
//
// How systemd-boot chooses (UAPI.1 Boot Loader Specification, "Sorting" and "Boot counting";
// systemd src/boot/boot.c boot_entry_compare() and config_find_entry(); loader.conf(5)):
//   1. Entries with boot counting and "tries left" 0 ("bad") sort after every other entry.
//   2. Entries that have a sort key sort before those that do not. For a type #2 entry (a
//      UKI in EFI/Linux/) the sort key is IMAGE_ID, else ID, from the UKI's .osrel section,
//      and the version is IMAGE_VERSION, else VERSION, else VERSION_ID, else BUILD_ID.
//   3. With sort keys on both: by sort key (ascending), then machine-id, then version
//      (DEScending: newest first).
//   4. Then by entry id, i.e. the file name (descending version order: kiln-b before kiln-a).
//   5. If still equal and both count: more tries left first, then fewer tries done first.
// loader.conf `default kiln-*` is a glob; systemd-boot takes the FIRST entry in that order
// whose id matches ("if more than one entry matches, the one with the highest priority will
// be selected (generally the one with the highest version number)", loader.conf(5)).
//
// Consequences for kiln (the UKI is the same for both slots, so both entries share a sort key
// and differ in version): a newer staged release wins over the running one as long as it has
// tries left; a slot whose entry reaches +0 drops behind the other; and an OLDER version can
// only be made preferred by pushing the newer slot's entry to +0 (renaming the older one does
// not help, because the version outranks the file name). That is what rollback() does.
// A one-shot EFI variable (LoaderEntryOneShot) would also work, but needs efivarfs and does
// not survive a firmware NVRAM reset; renames on the ESP do.
import { closeSync, fsyncSync, openSync } from 'node:fs';
import { readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import semver from 'semver';
import { parseEntry, type Entry, type Slot } from '../slot.ts';

export const ENTRY_DIR = 'EFI/Linux';
export const DEFAULT_TRIES = 3;

export function entryDir(esp: string): string { return join(esp, ENTRY_DIR); }

/** Every kiln entry in the ESP's EFI/Linux folder (missing folder: none). */
export async function listEntries(esp: string): Promise<Entry[]> {
  let files: string[];
  try { files = await readdir(entryDir(esp)); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  return files.map(parseEntry).filter((e): e is Entry => e !== undefined).sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0));
}

export const entriesOf = (entries: Entry[], slot: Slot) => entries.filter((e) => e.slot === slot);
export const isBlessed = (e: Entry) => e.left === undefined;
export const isBad = (e: Entry) => e.left === 0;

/** File name of a counting entry: kiln-b+3.efi, kiln-b+0-2.efi. */
export function countingName(slot: Slot, left: number, done?: number): string {
  return `kiln-${slot}+${left}${done ? `-${done}` : ''}.efi`;
}

/** The "no tries left" name for an entry: keeps its tries-done count, so the history stays visible. */
export function demotedName(e: Entry): string { return countingName(e.slot, 0, e.done); }

/** fsync of a directory, so a rename in it is on disk (vfat supports it on Linux). */
export function fsyncDir(dir: string): void {
  const fd = openSync(dir, 'r');
  try { fsyncSync(fd); } finally { closeSync(fd); }
}

/** Removes every entry of `slot` (blessed or counting); returns the removed names. */
export async function removeEntries(esp: string, slot: Slot): Promise<string[]> {
  const gone: string[] = [];
  for (const e of entriesOf(await listEntries(esp), slot)) {
    await rm(join(entryDir(esp), e.file), { force: true });
    gone.push(e.file);
  }
  if (gone.length) fsyncDir(entryDir(esp));
  return gone;
}

/** Renames every entry of `slot` that still has tries (or is blessed) to its +0 form. */
export async function demoteEntries(esp: string, slot: Slot): Promise<{ from: string; to: string }[]> {
  const done: { from: string; to: string }[] = [];
  for (const e of entriesOf(await listEntries(esp), slot)) {
    if (isBad(e)) continue;
    const to = demotedName(e);
    await rename(join(entryDir(esp), e.file), join(entryDir(esp), to));
    done.push({ from: e.file, to });
  }
  if (done.length) fsyncDir(entryDir(esp));
  return done;
}

// ---------------------------------------------------------------------------------------------
// A model of systemd-boot's choice (see the rules at the top). Versions come from the caller
// (the updater knows which version it wrote to which slot); kiln UKIs all share one sort key.

export interface Candidate { file: string; version?: string }

function versionCmp(a: string | undefined, b: string | undefined): number {
  if (a === b) return 0;
  if (a === undefined) return -1; // unspecified compares lower
  if (b === undefined) return 1;
  const sa = semver.valid(a), sb = semver.valid(b);
  if (sa && sb) return semver.compare(sa, sb);
  return a.localeCompare(b, 'en', { numeric: true });
}

/** Candidates in systemd-boot's order, best first. Unknown file names are left out. */
export function bootOrder(cands: Candidate[]): (Candidate & { entry: Entry })[] {
  const list = cands.flatMap((c) => { const e = parseEntry(c.file); return e ? [{ ...c, entry: e }] : []; });
  return list.sort((x, y) => {
    const bx = isBad(x.entry) ? 1 : 0, by = isBad(y.entry) ? 1 : 0;
    if (bx !== by) return bx - by;
    const v = -versionCmp(x.version, y.version);
    if (v) return v;
    const id = -(`kiln-${x.entry.slot}`.localeCompare(`kiln-${y.entry.slot}`));
    if (id) return id;
    const lx = x.entry.left ?? -1, ly = y.entry.left ?? -1;
    if (lx < 0 || ly < 0) return 0;
    return ly - lx || (x.entry.done ?? 0) - (y.entry.done ?? 0);
  });
}

/** The slot systemd-boot boots next with `default kiln-*` (no one-shot/saved EFI variable set). */
export function nextBootSlot(cands: Candidate[]): Slot | undefined {
  return bootOrder(cands)[0]?.entry.slot;
}
