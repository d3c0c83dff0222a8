// Checks that every dynamically linked program in the root finds its shared libraries, so
// a missing Debian package is a build error naming the program and the library, not a
// service that exits 127 on the node.
import { closeSync, existsSync, lstatSync, openSync, readdirSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { $ } from 'zx';
import { tool } from './tools.ts';

function isElf(file: string): boolean {
  const b = Buffer.alloc(4);
  const fd = openSync(file, 'r');
  try { return readSync(fd, b, 0, 4, 0) === 4 && b.readUInt32BE(0) === 0x7f454c46; } finally { closeSync(fd); }
}

function elfFiles(root: string, dirs: string[]): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    const abs = join(root, rel);
    if (!existsSync(abs)) return;
    for (const e of readdirSync(abs, { withFileTypes: true })) {
      const r = `${rel}/${e.name}`;
      if (e.isDirectory()) { if (!r.includes('/modules/')) walk(r); } else if (e.isFile() && lstatSync(join(root, r)).size > 64 && isElf(join(root, r))) out.push(r);
    }
  };
  for (const d of dirs) walk(d);
  return out;
}

/** Parses `readelf -d` output of several files into file -> NEEDED names. */
export function parseNeeded(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let cur = '';
  for (const line of text.split('\n')) {
    const f = /^File: (.+)$/.exec(line);
    if (f) { cur = f[1]; out.set(cur, []); continue; }
    const m = /\(NEEDED\)\s+Shared library: \[(.+)\]/.exec(line);
    if (m && cur) out.get(cur)!.push(m[1]);
  }
  return out;
}

export async function checkSharedLibraries(root: string, triplet: string): Promise<void> {
  const files = elfFiles(root, ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'usr/lib', 'lib']);
  if (!files.length) return;
  const r = await $({ quiet: true, cwd: root, nothrow: true })`${tool('readelf')} -d -W ${files}`;
  const needed = parseNeeded(r.stdout);
  // readelf prints "File:" only for several files.
  if (files.length === 1) needed.set(files[0], parseNeeded(`File: ${files[0]}\n${r.stdout}`).get(files[0]) ?? []);
  const libDirs = [`lib/${triplet}`, `usr/lib/${triplet}`, 'lib', 'usr/lib'];
  const missing: string[] = [];
  for (const [file, libs] of needed) {
    for (const lib of libs) {
      if (!libDirs.some((d) => existsSync(join(root, d, lib)))) missing.push(`/${file} needs ${lib}`);
    }
  }
  if (missing.length) {
    throw new Error(`the root is missing shared libraries:\n  ${missing.join('\n  ')}\nadd the Debian packages that ship them to debian.packages in the profile (e.g. libgmp.so.10 is in libgmp10) and run 'kiln lock'`);
  }
}

/**
 * The shared libraries `programs` (paths inside `root`) need, transitively, as paths inside
 * `root`: what a program copied out of the root (into stage 1) must take along.
 */
export async function libraryClosure(root: string, programs: string[], triplet: string): Promise<string[]> {
  const libDirs = [`lib/${triplet}`, `usr/lib/${triplet}`, 'lib', 'usr/lib'];
  const found = new Set<string>();
  let todo = [...programs];
  while (todo.length) {
    const r = await $({ quiet: true, cwd: root })`${tool('readelf')} -d -W ${todo}`;
    const needed = todo.length === 1 ? parseNeeded(`File: ${todo[0]}\n${r.stdout}`) : parseNeeded(r.stdout);
    todo = [];
    for (const libs of needed.values()) {
      for (const lib of libs) {
        const dir = libDirs.find((d) => existsSync(join(root, d, lib)));
        if (!dir) throw new Error(`${programs.join(', ')}: ${lib} is not in the root; add the Debian package that ships it to debian.packages`);
        const rel = `${dir}/${lib}`;
        if (!found.has(rel)) { found.add(rel); todo.push(rel); }
      }
    }
  }
  return [...found].sort();
}
