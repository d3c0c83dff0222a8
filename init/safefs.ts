// Writing as root where other users can write too (their home directories, anything a
// write_files path leads through). Paths are resolved one component at a time from open
// directory descriptors: each step opens /proc/self/fd/<dir>/<name>, which the kernel
// resolves inside the directory already held open, the way openat(2) does. A symbolic link
// is followed only when the directory holding it is writable by root alone; anywhere else
// it is refused, so a user cannot point root's writes at /etc. Files are created with
// O_EXCL|O_NOFOLLOW under random names, given their owner and mode through the open
// descriptor (fchown/fchmod), then renamed into place within the same directory.
import {
  closeSync, constants as C, fchmodSync, fchownSync, fstatSync, fsyncSync, mkdirSync, openSync, readlinkSync, readSync, renameSync,
  unlinkSync, writeSync, type Stats,
} from 'node:fs';
import { posix } from 'node:path';

/** An open directory: `fd` is what every later step uses; `path` is for messages only. */
export interface Dir { fd: number; path: string; stat: Stats }

const DIR_FLAGS = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW;
const MAX_LINKS = 40;

/** The path of `name` inside an open directory, resolved by the kernel from the descriptor. */
const at = (fd: number, name: string) => `/proc/self/fd/${fd}/${name}`;

/** Only root can add, remove or replace entries in this directory. */
export function rootOnly(st: Stats): boolean {
  return st.uid === 0 && (st.mode & 0o022) === 0;
}

const codeOf = (e: unknown) => (e as NodeJS.ErrnoException)?.code ?? '';
const why = (e: unknown) => codeOf(e) || (e as Error).message;

function checkName(name: string): void {
  if (!name || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) throw new Error(`'${name}' is not a file name`);
}

export function closeDir(d: Dir | undefined): void {
  if (d) try { closeSync(d.fd); } catch { /* already closed */ }
}

function openRoot(): Dir {
  const fd = openSync('/', C.O_RDONLY | C.O_DIRECTORY);
  return { fd, path: '/', stat: fstatSync(fd) };
}

/**
 * Opens the directory at an absolute path. Missing directories are made (root:root 0755)
 * when `mkdirs` is set. A symbolic link on the way is followed only where root alone can
 * write the directory holding it (its target is then walked the same way, component by
 * component); otherwise this throws, naming the link.
 */
export function openDir(path: string, o: { mkdirs?: boolean } = {}): Dir {
  if (!path.startsWith('/')) throw new Error(`${path}: not an absolute path`);
  let cur = openRoot();
  const todo = path.split('/').filter((c) => c && c !== '.');
  let links = 0, made = 0;
  try {
    while (todo.length) {
      const name = todo.shift()!;
      if (name === '..') {
        const fd = openSync(at(cur.fd, '..'), C.O_RDONLY | C.O_DIRECTORY);
        closeDir(cur);
        cur = { fd, path: posix.dirname(cur.path), stat: fstatSync(fd) };
        continue;
      }
      const here = posix.join(cur.path, name);
      let fd: number;
      try {
        fd = openSync(at(cur.fd, name), DIR_FLAGS);
      } catch (e) {
        if (codeOf(e) === 'ENOENT' && o.mkdirs) {
          // Bounded: a directory that keeps vanishing under us is an attack, not a race to win.
          if (++made > 64) throw new Error(`${here}: keeps disappearing`);
          try { mkdirSync(at(cur.fd, name), { mode: 0o755 }); } catch (m) { if (codeOf(m) !== 'EEXIST') throw new Error(`cannot make ${here}: ${why(m)}`); }
          todo.unshift(name);
          continue;
        }
        if (codeOf(e) !== 'ENOTDIR' && codeOf(e) !== 'ELOOP') throw new Error(`cannot open ${here}: ${why(e)}`);
        let target: string;
        try { target = readlinkSync(at(cur.fd, name)); } catch { throw new Error(`${here} is not a directory`); }
        if (!rootOnly(cur.stat)) throw new Error(`${here} is a symbolic link in ${cur.path}, which users other than root can write to: not followed`);
        if (++links > MAX_LINKS) throw new Error(`${path}: too many symbolic links`);
        if (target.startsWith('/')) { closeDir(cur); cur = openRoot(); }
        todo.unshift(...target.split('/').filter((c) => c && c !== '.'));
        continue;
      }
      closeDir(cur);
      cur = { fd, path: here, stat: fstatSync(fd) };
    }
    return cur;
  } catch (e) {
    closeDir(cur);
    throw e;
  }
}

/**
 * Opens the directory `name` inside `parent` without following a link. When it is missing
 * and `create` is given, it is made with that owner and mode. With `owner`, a directory
 * owned by anyone else is refused. `followRootLinks` follows a link in a directory only root
 * can write (a home that an administrator moved elsewhere).
 */
export function openChildDir(parent: Dir, name: string, o: { create?: { mode: number; uid: number; gid: number }; owner?: number; followRootLinks?: boolean } = {}): Dir {
  checkName(name);
  const here = posix.join(parent.path, name);
  let fd: number;
  let made = false;
  try {
    fd = openSync(at(parent.fd, name), DIR_FLAGS);
  } catch (e) {
    if ((codeOf(e) === 'ENOTDIR' || codeOf(e) === 'ELOOP') && o.followRootLinks && rootOnly(parent.stat)) {
      let target: string | undefined;
      try { target = readlinkSync(at(parent.fd, name)); } catch { /* a file: reported below */ }
      if (target !== undefined) {
        const d = openDir(posix.resolve(parent.path, target));
        if (o.owner !== undefined && d.stat.uid !== o.owner) { closeDir(d); throw new Error(`${here} is owned by uid ${d.stat.uid}, not ${o.owner}: left alone`); }
        return d;
      }
    }
    if (codeOf(e) === 'ENOENT' && o.create) {
      try { mkdirSync(at(parent.fd, name), { mode: 0o700 }); made = true; } catch (m) { if (codeOf(m) !== 'EEXIST') throw new Error(`cannot make ${here}: ${why(m)}`); }
      try { fd = openSync(at(parent.fd, name), DIR_FLAGS); } catch (m) { throw new Error(`${here}: ${codeOf(m) === 'ENOTDIR' ? 'not a directory (replaced while being made)' : why(m)}`); }
    } else if (codeOf(e) === 'ENOTDIR' || codeOf(e) === 'ELOOP') {
      throw new Error(`${here} is not a directory (a symbolic link or a file): left alone`);
    } else throw new Error(`cannot open ${here}: ${why(e)}`);
  }
  try {
    let stat = fstatSync(fd);
    // Ours only if it is still the root-owned directory just made; one a user slipped in
    // instead keeps its owner (and is then judged by `owner` below).
    if (made && o.create && stat.uid === 0) {
      fchownSync(fd, o.create.uid, o.create.gid);
      fchmodSync(fd, o.create.mode);
      stat = fstatSync(fd);
    }
    if (o.owner !== undefined && stat.uid !== o.owner) throw new Error(`${here} is owned by uid ${stat.uid}, not ${o.owner}: left alone`);
    return { fd, path: here, stat };
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

function writeAll(fd: number, data: Buffer): void {
  for (let off = 0; off < data.length;) off += writeSync(fd, data, off, data.length - off);
}

export interface Owned { uid: number; gid: number; mode: number }

/** Random bytes from the kernel's pool, read directly: node:crypto is not loaded before ready (lazy.ts). */
export function urandom(bytes: number): Buffer {
  const b = Buffer.alloc(bytes);
  const fd = openSync('/dev/urandom', 'r');
  try { if (readSync(fd, b, 0, bytes, null) !== bytes) throw new Error('short read from /dev/urandom'); } finally { closeSync(fd); }
  return b;
}

export const randomHex = (bytes: number): string => urandom(bytes).toString('hex');

/** Makes the directory's entries (a rename into it, say) durable. */
export function syncDir(d: Dir): void { fsyncSync(d.fd); }

/**
 * Replaces `name` in `dir` atomically: a new file under a random name (O_EXCL, never
 * following a link), owner and mode set on the open file, synced, renamed over `name`.
 * Whatever `name` was (a link, a hard link to another file) is replaced, never written through.
 */
export function replaceFile(dir: Dir, name: string, data: Buffer | string, o: Owned): void {
  checkName(name);
  const tmp = `.${name.slice(0, 200)}.kiln-${randomHex(8)}`;
  const buf = typeof data === 'string' ? Buffer.from(data) : data;
  const fd = openSync(at(dir.fd, tmp), C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
  try {
    writeAll(fd, buf);
    // chown first: it clears set-id bits that the mode may ask for.
    fchownSync(fd, o.uid, o.gid);
    fchmodSync(fd, o.mode);
    fsyncSync(fd);
    closeSync(fd);
    renameSync(at(dir.fd, tmp), at(dir.fd, name));
  } catch (e) {
    try { closeSync(fd); } catch { /* closed */ }
    try { unlinkSync(at(dir.fd, tmp)); } catch { /* renamed or gone */ }
    throw new Error(`cannot write ${posix.join(dir.path, name)}: ${why(e)}`);
  }
}

/**
 * Appends to `name` in `dir` (made when missing), then sets its owner and mode. Refuses a
 * link, anything but a regular file (a FIFO fails at once instead of blocking), and, in a
 * directory others can write, a file with more than one hard link.
 */
export function appendFile(dir: Dir, name: string, data: Buffer | string, o: Owned): void {
  checkName(name);
  const here = posix.join(dir.path, name);
  const buf = typeof data === 'string' ? Buffer.from(data) : data;
  let fd: number;
  try {
    fd = openSync(at(dir.fd, name), C.O_WRONLY | C.O_APPEND | C.O_CREAT | C.O_NOFOLLOW | C.O_NONBLOCK | C.O_NOCTTY, 0o600);
  } catch (e) {
    throw new Error(codeOf(e) === 'ELOOP' ? `${here} is a symbolic link: not followed` : `cannot open ${here}: ${why(e)}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(`${here} is not a regular file`);
    if (st.nlink > 1 && !rootOnly(dir.stat)) throw new Error(`${here} has other hard links, in a directory users other than root can write to: not written`);
    writeAll(fd, buf);
    fchownSync(fd, o.uid, o.gid);
    fchmodSync(fd, o.mode);
  } finally {
    closeSync(fd);
  }
}

/**
 * Where a write to `path` should go: the path itself, or, when it is a symbolic link in a
 * directory only root can write, where the link points (resolved until it is no link).
 * Used for appends, which write through; a replacement replaces the link instead.
 */
export function resolveTrustedFile(path: string): { dir: Dir; name: string } {
  let p = posix.normalize(path);
  for (let i = 0; ; i++) {
    const dir = openDir(posix.dirname(p), { mkdirs: true });
    const name = posix.basename(p);
    let target: string | undefined;
    try { target = readlinkSync(at(dir.fd, name)); } catch { /* not a link, or missing */ }
    if (target === undefined) return { dir, name };
    if (!rootOnly(dir.stat) || i >= MAX_LINKS) {
      const path2 = posix.join(dir.path, name);
      closeDir(dir);
      throw new Error(i >= MAX_LINKS ? `${path}: too many symbolic links` : `${path2} is a symbolic link in ${dir.path}, which users other than root can write to: not followed`);
    }
    p = posix.resolve(dir.path, target);
    closeDir(dir);
  }
}
