// Writes into a root tree being assembled on the build host. A package may put a symlink
// anywhere, and an absolute one points at the build host, not at the root: so every write
// here checks that each parent of the path is a real directory inside the root (made when
// missing), and replaces whatever non-directory sits at the path instead of following it.
// A symlink in the way of a write is an error naming the path, never a write through it.
import { chmodSync, constants, copyFileSync, lstatSync, mkdirSync, rmSync, symlinkSync, writeFileSync, type Stats } from 'node:fs';
import { join } from 'node:path';

export class RootPathError extends Error {}

function lstat(p: string): Stats | undefined {
  try { return lstatSync(p); } catch { return undefined; }
}

function parts(rel: string): string[] {
  const ps = rel.split('/').filter((p) => p !== '' && p !== '.');
  if (ps.includes('..')) throw new RootPathError(`'${rel}' climbs out of the root with '..'`);
  return ps;
}

/** Checks (and with `make`, creates) the directories `dirs` of `root`: their path, or undefined if one is missing. */
function realDirs(root: string, dirs: string[], rel: string, make: true): string;
function realDirs(root: string, dirs: string[], rel: string, make: false): string | undefined;
function realDirs(root: string, dirs: string[], rel: string, make: boolean): string | undefined {
  let cur = root;
  for (const [i, p] of dirs.entries()) {
    cur = join(cur, p);
    const st = lstat(cur);
    if (!st) {
      if (!make) return undefined;
      mkdirSync(cur);
      chmodSync(cur, 0o755); // whatever the umask
    } else if (!st.isDirectory()) {
      throw new RootPathError(`'${rel}': '${dirs.slice(0, i + 1).join('/')}' in the root is ${st.isSymbolicLink() ? 'a symlink' : 'not a directory'}; refusing to go through it`);
    }
  }
  return cur;
}

/** `root/rel` as a real directory: every part made when missing, none a symlink. */
export function dirInRoot(root: string, rel: string): string {
  return realDirs(root, parts(rel), rel, true);
}

/**
 * `root/rel`, ready for a new file or link: its parents are real directories, and a file or
 * symlink already there is removed (a directory there is an error).
 */
export function freshPathInRoot(root: string, rel: string): string {
  const ps = parts(rel);
  if (!ps.length) throw new RootPathError(`'${rel}' is the root itself, not a file in it`);
  const abs = join(realDirs(root, ps.slice(0, -1), rel, true), ps[ps.length - 1]!);
  const st = lstat(abs);
  if (st?.isDirectory()) throw new RootPathError(`'${rel}' is a directory in the root; refusing to replace it with a file`);
  if (st) rmSync(abs);
  return abs;
}

/** Whether anything, a dangling symlink too, is at `root/rel`; never looks outside the root. */
export function existsInRoot(root: string, rel: string): boolean {
  const ps = parts(rel);
  if (!ps.length) return true;
  const parent = realDirs(root, ps.slice(0, -1), rel, false);
  return !!parent && !!lstat(join(parent, ps[ps.length - 1]!));
}

/** Removes `root/rel` (recursively) if present; only ever inside the root. */
export function removeInRoot(root: string, rel: string): void {
  const ps = parts(rel);
  if (!ps.length) throw new RootPathError('refusing to remove the root itself');
  const parent = realDirs(root, ps.slice(0, -1), rel, false);
  // rm on a symlink removes the link, not what it points at.
  if (parent) rmSync(join(parent, ps[ps.length - 1]!), { recursive: true, force: true });
}

export function writeInRoot(root: string, rel: string, data: string | Buffer, mode = 0o644): void {
  const abs = freshPathInRoot(root, rel);
  writeFileSync(abs, data, { flag: 'wx' });
  chmodSync(abs, mode);
}

/** Copies a host file into the root: its mode, or `mode`. */
export function copyIntoRoot(root: string, rel: string, src: string, mode?: number): void {
  const abs = freshPathInRoot(root, rel);
  copyFileSync(src, abs, constants.COPYFILE_EXCL);
  if (mode !== undefined) chmodSync(abs, mode);
}

export function symlinkInRoot(root: string, rel: string, target: string): void {
  symlinkSync(target, freshPathInRoot(root, rel));
}
