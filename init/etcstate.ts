// /etc is rebuilt every boot: stage 1 lays it over the verified root with its upper on a
// tmpfs, so every boot starts from the root's own /etc and what config writes there (host
// name, users, write_files, resolv.conf) is written again from config. Nothing in /etc
// outlives a boot except the few things below, which are the node's identity: they live on
// /data/state/etc and are put back here, before anything reads them.
//
// Nodes from before this layout kept all of /etc in an overlay upper on /data; their first
// boot on this layout takes the named state from it and moves it aside (migrateOldEtc).
import { copyFileSync, cpSync, existsSync, lstatSync, mkdirSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface EtcState {
  /** Path under /etc. */
  path: string;
  /** A directory is linked from /etc (its owner writes into it); a file is copied in. */
  kind: 'dir' | 'file';
  why: string;
}

/** Everything under /etc that persists: keep docs/design.md's list in step. */
export const PERSISTENT_ETC: readonly EtcState[] = [
  { path: 'machine-id', kind: 'file', why: 'the node\'s identity: the default host name and the update channel\'s rollout bucket come from it' },
  { path: 'dropbear', kind: 'dir', why: 'SSH host keys: new ones would make every client warn of a changed host' },
  { path: 'rancher/node', kind: 'dir', why: "k3s's node password: the server refuses a node whose password changed" },
];

export const DATA = '/data';
/** Where the named state lives, under the data partition. */
export const stateDir = (data = DATA) => join(data, 'state/etc');
/** The old layout's /etc overlay (upper and work) on the data partition. */
export const oldOverlay = (data = DATA) => join(data, 'overlay/etc');
/** In an upper this layout seeded for an older release (see migrateOldEtc). */
export const SEED_MARK = '.kiln-seed';

function lkind(p: string): 'dir' | 'file' | 'link' | 'other' | undefined {
  try {
    const s = lstatSync(p);
    return s.isSymbolicLink() ? 'link' : s.isDirectory() ? 'dir' : s.isFile() ? 'file' : 'other';
  } catch { return undefined; }
}

/**
 * First boot on this layout, and any boot after a fallback into an older release: each named
 * item the state lacks is taken from the old /etc upper (a real file or directory of the right
 * kind; a link or a deleted file's whiteout is not state). The old upper is then renamed to
 * overlay/etc.retired (.1, .2, … when taken) and never mounted again: other edits made in /etc
 * are not carried over, since one copied-up file would hide the root's newer copy again.
 * In its place goes a seed holding only the named state, so that a fallback into a release
 * from before this layout (whose stage 1 mounts overlay/etc/upper) keeps the same machine id,
 * host keys and k3s password. A seed is not retired; it is topped up with state it lacks.
 * Returns what it did, one line each.
 */
export function migrateOldEtc(data = DATA): string[] {
  const old = oldOverlay(data);
  const upper = join(old, 'upper');
  const state = stateDir(data);
  if (lkind(upper) !== 'dir') return [];
  const done: string[] = [];
  for (const e of PERSISTENT_ETC) {
    const src = join(upper, e.path);
    const dst = join(state, e.path);
    if (lkind(src) !== e.kind || lkind(dst) !== undefined) continue;
    mkdirSync(dirname(dst), { recursive: true, mode: 0o755 });
    cpSync(src, dst, { recursive: true, preserveTimestamps: true });
    done.push(`/etc/${e.path} kept from the old /etc overlay`);
  }
  const seeded = lkind(join(upper, SEED_MARK)) === 'file';
  if (!seeded) {
    let to = `${old}.retired`;
    for (let i = 1; existsSync(to); i++) to = `${old}.retired.${i}`;
    renameSync(old, to);
    done.push(`old /etc overlay moved to ${to}: edits made there are not carried over`);
    mkdirSync(join(old, 'upper'), { recursive: true, mode: 0o755 });
    mkdirSync(join(old, 'work'), { recursive: true, mode: 0o755 });
    writeFileSync(join(upper, SEED_MARK), 'The named /etc state for a release from before /etc was rebuilt each boot.\n');
  }
  for (const e of PERSISTENT_ETC) {
    const src = join(state, e.path);
    const dst = join(upper, e.path);
    if (lkind(src) !== e.kind || lkind(dst) !== undefined) continue;
    mkdirSync(dirname(dst), { recursive: true, mode: 0o755 });
    cpSync(src, dst, { recursive: true, preserveTimestamps: true });
  }
  return done;
}

/**
 * One file, its mode and its times (what cpSync with preserveTimestamps does for a file).
 * Not cpSync itself: its first call loads Node's fs/promises, readline and file watchers, and
 * this runs at every boot.
 */
function copyKeepingTimes(src: string, dst: string): void {
  copyFileSync(src, dst);
  const st = statSync(src);
  utimesSync(dst, st.atime, st.mtime);
}

/**
 * Puts the named state into this boot's /etc: each directory becomes a link to its place under
 * the state directory (made, 0700, when missing), so what dropbear and k3s write there lands on
 * /data; each file the state holds is copied in (ensureMachineId saves a new machine id). Goes
 * on past an item that fails: returns the problems, one line each.
 */
export function restoreEtcState(o: { etc?: string; data?: string } = {}): string[] {
  const etc = o.etc ?? '/etc';
  const state = stateDir(o.data);
  const problems: string[] = [];
  for (const e of PERSISTENT_ETC) {
    const src = join(state, e.path);
    const dst = join(etc, e.path);
    try {
      if (e.kind === 'dir') {
        mkdirSync(src, { recursive: true, mode: 0o700 });
        if (lkind(dst) === 'link' && readlinkSync(dst) === src) continue;
        // Whatever stands there came from the root image, not from this node: the state wins.
        if (lkind(dst) !== undefined) rmSync(dst, { recursive: true, force: true });
        mkdirSync(dirname(dst), { recursive: true, mode: 0o755 });
        symlinkSync(src, dst);
      } else if (lkind(src) === 'file') {
        mkdirSync(dirname(dst), { recursive: true, mode: 0o755 });
        if (lkind(dst) !== undefined) rmSync(dst, { recursive: true, force: true });
        copyKeepingTimes(src, dst);
      }
    } catch (err) { problems.push(`/etc/${e.path}: ${(err as Error).message}`); }
  }
  return problems;
}
