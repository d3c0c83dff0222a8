// Deterministic newc ("070701") cpio writer, the format the Linux kernel unpacks as an
// initramfs. Own code because npm cpio-stream turns mtime 0 into "now", devminor 0 into
// 262143, cannot write ino 0 and leaves the trailer unpadded (docs/design.md, "Own code").
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';

export type CpioType = 'dir' | 'file' | 'symlink' | 'char' | 'block';

export interface CpioEntry {
  /** Path inside the archive, relative ("bin/busybox"); a leading "/" or "./" is dropped. */
  path: string;
  type: CpioType;
  /** Permission bits (0o7777 is kept: setuid, setgid, sticky). Defaults: dir 0755, file 0644, symlink 0777, device 0600. */
  mode?: number;
  uid?: number;
  gid?: number;
  /** File contents. */
  data?: Buffer;
  /** Symlink target. */
  target?: string;
  /** Device numbers of a char or block node. */
  major?: number;
  minor?: number;
}

export interface CpioOptions {
  /** Modification time of every entry, in seconds since the epoch. */
  mtime?: number;
}

const TYPE_BITS: Record<CpioType, number> = { dir: 0o040000, file: 0o100000, symlink: 0o120000, char: 0o020000, block: 0o060000 };
const DEFAULT_MODE: Record<CpioType, number> = { dir: 0o755, file: 0o644, symlink: 0o777, char: 0o600, block: 0o600 };
const HEADER_SIZE = 110;
const MAX32 = 0xffffffff;

const pad4 = (n: number) => (4 - (n % 4)) % 4;

function normalise(path: string): string {
  const p = path.replace(/^(\.?\/)+/, '').replace(/\/+$/, '');
  if (!p || p === '.' || p.split('/').some((c) => c === '' || c === '.' || c === '..')) {
    throw new Error(`cpio entry path '${path}' is not a clean relative path (no empty, '.' or '..' components)`);
  }
  return p;
}

/** Byte order of UTF-8 paths, independent of locale: a parent always sorts before its children. */
const byPath = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

function header(fields: number[]): Buffer {
  const hex = fields.map((n, i) => {
    if (!Number.isInteger(n) || n < 0 || n > MAX32) throw new Error(`cpio header field ${i} out of range: ${n}`);
    return n.toString(16).toUpperCase().padStart(8, '0');
  });
  return Buffer.from('070701' + hex.join(''), 'ascii');
}

/**
 * Writes a newc archive. Entries are sorted by path (so parents precede children), inode
 * numbers run from 1 in output order, device numbers of the archive itself are 0, every
 * entry gets the same mtime, and the whole archive is padded to a multiple of 512 bytes.
 * Every parent directory must be listed; the kernel does not create missing ones.
 */
export function writeCpio(entries: CpioEntry[], opts: CpioOptions = {}): Buffer {
  const mtime = opts.mtime ?? 0;
  const list = entries.map((e) => ({ ...e, path: normalise(e.path) })).sort((a, b) => byPath(a.path, b.path));
  const seen = new Map<string, CpioType>();
  const subdirs = new Map<string, number>();
  for (const e of list) {
    if (seen.has(e.path)) throw new Error(`cpio entry '${e.path}' is listed twice`);
    const slash = e.path.lastIndexOf('/');
    if (slash > 0) {
      const parent = e.path.slice(0, slash);
      if (seen.get(parent) !== 'dir') throw new Error(`cpio entry '${e.path}' has no parent directory entry '${parent}'; add { path: '${parent}', type: 'dir' }`);
      if (e.type === 'dir') subdirs.set(parent, (subdirs.get(parent) ?? 0) + 1);
    }
    seen.set(e.path, e.type);
  }

  const chunks: Buffer[] = [];
  let size = 0;
  const push = (b: Buffer) => { chunks.push(b); size += b.length; };
  const emit = (ino: number, name: string, mode: number, uid: number, gid: number, nlink: number, body: Buffer, rmajor: number, rminor: number) => {
    const nameBuf = Buffer.from(name + '\0', 'utf8');
    push(header([ino, mode, uid, gid, nlink, mtime, body.length, 0, 0, rmajor, rminor, nameBuf.length, 0]));
    push(nameBuf);
    push(Buffer.alloc(pad4(HEADER_SIZE + nameBuf.length)));
    if (body.length) { push(body); push(Buffer.alloc(pad4(body.length))); }
  };

  let ino = 1;
  for (const e of list) {
    if (!(e.type in TYPE_BITS)) throw new Error(`cpio entry '${e.path}' has unknown type '${e.type}' (valid: ${Object.keys(TYPE_BITS).join(', ')})`);
    const mode = TYPE_BITS[e.type] | ((e.mode ?? DEFAULT_MODE[e.type]) & 0o7777);
    let body: Buffer = Buffer.alloc(0);
    let nlink = 1;
    if (e.type === 'file') body = e.data ?? Buffer.alloc(0);
    else if (e.type === 'symlink') {
      if (!e.target) throw new Error(`cpio symlink '${e.path}' has no target`);
      body = Buffer.from(e.target, 'utf8');
    } else if (e.type === 'dir') nlink = 2 + (subdirs.get(e.path) ?? 0);
    const dev = e.type === 'char' || e.type === 'block';
    if (dev && (e.major === undefined || e.minor === undefined)) throw new Error(`cpio device '${e.path}' needs major and minor numbers`);
    emit(ino++, e.path, mode, e.uid ?? 0, e.gid ?? 0, nlink, body, dev ? e.major! : 0, dev ? e.minor! : 0);
  }
  emit(0, 'TRAILER!!!', 0, 0, 0, 1, Buffer.alloc(0), 0, 0);
  const tail = (512 - (size % 512)) % 512;
  if (tail) push(Buffer.alloc(tail));
  return Buffer.concat(chunks, size);
}

/**
 * Entries for the tree under `dir`, placed under `prefix` in the archive (prefix "" puts
 * the tree's contents at the top; otherwise the prefix directory itself is included, its
 * parents are not). Walks in sorted order; keeps permission bits, symlink targets and
 * device numbers; owner is root (0:0) for reproducibility.
 */
export function cpioFromDir(dir: string, prefix = ''): CpioEntry[] {
  const pre = prefix.replace(/^\/+|\/+$/g, '');
  const out: CpioEntry[] = [];
  const at = (rel: string) => (pre ? (rel ? `${pre}/${rel}` : pre) : rel);
  const visit = (abs: string, rel: string) => {
    const st = lstatSync(abs);
    const path = at(rel);
    const mode = st.mode & 0o7777;
    if (st.isDirectory()) {
      if (path) out.push({ path, type: 'dir', mode });
      for (const name of readdirSync(abs).sort(byPath)) visit(join(abs, name), rel ? `${rel}/${name}` : name);
    } else if (st.isSymbolicLink()) out.push({ path, type: 'symlink', target: readlinkSync(abs) });
    else if (st.isFile()) out.push({ path, type: 'file', mode, data: readFileSync(abs) });
    else if (st.isCharacterDevice() || st.isBlockDevice()) {
      // Linux dev_t: major in bits 8-19 (and 32+), minor in bits 0-7 and 20-31.
      const major = ((st.rdev >> 8) & 0xfff);
      const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00);
      out.push({ path, type: st.isCharacterDevice() ? 'char' : 'block', mode, major, minor });
    } else throw new Error(`${abs}: unsupported file type for cpio (fifo or socket)`);
  };
  visit(dir, '');
  return out;
}
