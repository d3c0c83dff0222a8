// .deb = ar archive of debian-binary, control.tar.*, data.tar.*. We only unpack data.tar,
// streaming it through the host decompressor (no xz library in Node) into tar-stream.
import { spawn } from 'node:child_process';
import { chmodSync, chownSync, closeSync, createReadStream, createWriteStream, lchownSync, linkSync, lstatSync, lutimesSync, mkdirSync, openSync, readSync, rmSync, symlinkSync, utimesSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import * as tar from 'tar-stream';
import { tool } from '../tools.ts';

export class DebError extends Error {}

export interface ArMember { name: string; offset: number; size: number }

/** Lists the members of an ar archive (System V / GNU layout, as dpkg writes it). */
export function readArMembers(path: string): ArMember[] {
  const fd = openSync(path, 'r');
  try {
    const magic = Buffer.alloc(8);
    if (readSync(fd, magic, 0, 8, 0) !== 8 || magic.toString('latin1') !== '!<arch>\n') {
      throw new DebError(`${path}: not an ar archive (bad magic); is it a .deb?`);
    }
    const out: ArMember[] = [];
    const h = Buffer.alloc(60);
    let pos = 8;
    for (;;) {
      const n = readSync(fd, h, 0, 60, pos);
      if (n === 0) break;
      if (n !== 60 || h.toString('latin1', 58, 60) !== '`\n') throw new DebError(`${path}: truncated or corrupt ar header at byte ${pos}`);
      const name = h.toString('latin1', 0, 16).trimEnd().replace(/\/$/, '');
      const size = Number(h.toString('latin1', 48, 58).trim());
      if (!Number.isSafeInteger(size) || size < 0) throw new DebError(`${path}: bad member size in ar header at byte ${pos}`);
      out.push({ name, offset: pos + 60, size });
      pos += 60 + size + (size % 2); // members are 2-byte aligned
    }
    return out;
  } finally {
    closeSync(fd);
  }
}

type Consumer = (tarStream: Readable) => Promise<void>;

/** Runs `consume` on the decompressed stream; host xz/zstd run as child processes. */
async function decompress(src: Readable, member: string, consume: Consumer): Promise<void> {
  if (member.endsWith('.gz')) {
    const gunzip = createGunzip();
    await Promise.all([pipeline(src, gunzip).catch((e) => { gunzip.destroy(e); throw e; }), consume(gunzip)]);
    return;
  }
  if (member === 'data.tar') return consume(src);
  const prog = member.endsWith('.xz') ? 'xz' : member.endsWith('.zst') ? 'zstd' : undefined;
  if (!prog) throw new DebError(`unsupported compression in member '${member}'`);
  const child = spawn(tool(prog), ['-dc'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise<void>((res, rej) => {
    child.on('error', rej);
    child.on('close', (code) => code === 0 ? res() : rej(new DebError(`${prog} -dc failed on ${member} (exit ${code}): ${stderr.trim()}`)));
  });
  try {
    // stdin may close early if the consumer fails; that surfaces through `consume`.
    await Promise.all([pipeline(src, child.stdin).catch(() => undefined), consume(child.stdout), exited]);
  } catch (e) {
    child.kill();
    src.destroy();
    throw e;
  }
}

/** Archive path -> safe relative path, or '' for the root entry. Refuses escapes. */
export function safeRelPath(name: string, debPath = ''): string {
  if (name.startsWith('/')) throw new DebError(`${debPath}: refusing absolute path '${name}' in the package`);
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) throw new DebError(`${debPath}: refusing path '${name}' that climbs out with '..'`);
  return parts.join('/');
}

/** Extracts a tar stream into destDir, preserving modes (incl. setuid), symlinks and hardlinks. */
export async function extractTar(input: Readable, destDir: string, label = 'tar'): Promise<void> {
  const root = resolve(destDir);
  mkdirSync(root, { recursive: true });
  const asRoot = process.getuid?.() === 0;
  const safeDirs = new Set<string>(['']);
  const dirs: { path: string; mode: number; mtime?: Date }[] = [];

  // Creates the parent directories; refuses to go through a symlink or a file, so a
  // symlink entry cannot redirect later entries outside destDir.
  const ensureDir = (rel: string) => {
    if (safeDirs.has(rel)) return;
    let cur = '';
    for (const part of rel.split('/')) {
      cur = cur ? `${cur}/${part}` : part;
      if (safeDirs.has(cur)) continue;
      const abs = join(root, cur);
      let st;
      try { st = lstatSync(abs); } catch { /* missing */ }
      if (!st) mkdirSync(abs, { mode: 0o755 });
      else if (!st.isDirectory()) throw new DebError(`${label}: '${cur}' is not a directory (a symlink or file), refusing to write through it`);
      safeDirs.add(cur);
    }
  };
  // Removes whatever non-directory sits at the target, so writes never follow a symlink.
  const clear = (abs: string, rel: string) => {
    let st;
    try { st = lstatSync(abs); } catch { return; }
    if (st.isDirectory()) throw new DebError(`${label}: '${rel}' exists as a directory and cannot be replaced`);
    rmSync(abs);
  };
  const owner = (abs: string, h: tar.Header, link: boolean) => {
    if (!asRoot) return;
    (link ? lchownSync : chownSync)(abs, h.uid ?? 0, h.gid ?? 0);
  };

  const ex = tar.extract();
  const feeding = pipeline(input, ex);
  const consuming = (async () => {
    for await (const entry of ex) {
      const h = entry.header;
      const rel = safeRelPath(h.name, label);
      const abs = join(root, rel);
      const mode = (h.mode ?? 0o644) & 0o7777;
      const parent = rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '';
      switch (h.type) {
        case 'directory': {
          if (rel) {
            ensureDir(rel);
            owner(abs, h, false);
          }
          // Modes last: a read-only directory must still take its children.
          dirs.push({ path: abs, mode, mtime: h.mtime });
          break;
        }
        case 'file': case 'contiguous-file': case undefined: case null: {
          if (!rel) throw new DebError(`${label}: file entry with an empty name`);
          ensureDir(parent);
          clear(abs, rel);
          await pipeline(entry, createWriteStream(abs, { flags: 'wx', mode: 0o600 }));
          // chown before chmod: chown clears setuid/setgid bits.
          owner(abs, h, false);
          chmodSync(abs, mode);
          if (h.mtime) utimesSync(abs, h.mtime, h.mtime);
          continue;
        }
        case 'symlink': {
          if (!rel || !h.linkname) throw new DebError(`${label}: symlink entry '${h.name}' without a name or target`);
          ensureDir(parent);
          clear(abs, rel);
          symlinkSync(h.linkname, abs);
          owner(abs, h, true);
          if (h.mtime) lutimesSync(abs, h.mtime, h.mtime);
          break;
        }
        case 'link': {
          const targetRel = safeRelPath(h.linkname ?? '', label);
          if (!rel || !targetRel) throw new DebError(`${label}: hardlink entry '${h.name}' without a name or target`);
          const target = join(root, targetRel);
          ensureDir(targetRel.includes('/') ? targetRel.slice(0, targetRel.lastIndexOf('/')) : '');
          let st;
          try { st = lstatSync(target); } catch { /* missing */ }
          if (!st || st.isDirectory()) throw new DebError(`${label}: hardlink '${rel}' points to '${targetRel}', which is not an earlier file in the archive`);
          ensureDir(parent);
          clear(abs, rel);
          linkSync(target, abs);
          break;
        }
        default:
          throw new DebError(`${label}: unsupported entry type '${h.type}' for '${h.name}'`);
      }
      entry.resume();
    }
  })();
  try {
    await Promise.all([feeding, consuming]);
  } catch (e) {
    ex.destroy();
    input.destroy();
    throw e;
  }
  for (const d of dirs.reverse()) {
    chmodSync(d.path, d.mode);
    if (d.mtime) utimesSync(d.path, d.mtime, d.mtime);
  }
}

/**
 * Extracts a .deb's data.tar.* into destDir. Modes, setuid bits, symlinks and hardlinks
 * are kept; absolute paths, '..' and writes through symlinks are refused.
 */
export async function extractDeb(debPath: string, destDir: string): Promise<void> {
  const members = readArMembers(debPath);
  const bin = members.find((m) => m.name === 'debian-binary');
  if (!bin || members[0] !== bin) throw new DebError(`${debPath}: not a Debian package (no leading debian-binary member)`);
  const data = members.find((m) => /^data\.tar(\.(xz|gz|zst))?$/.test(m.name));
  if (!data) throw new DebError(`${debPath}: no data.tar member (found ${members.map((m) => m.name).join(', ')})`);
  if (data.size === 0) return;
  const src = createReadStream(debPath, { start: data.offset, end: data.offset + data.size - 1 });
  await decompress(src, data.name, (s) => extractTar(s, destDir, `${debPath} (${data.name})`));
}
