// The stage-1 initramfs: busybox, the modules needed to reach the root and data
// partitions, and a shell /init. Written as a deterministic newc cpio, zstd-compressed.
import { existsSync, lstatSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { $ } from 'zx';
import { writeCpio, type CpioEntry } from './formats/cpio.ts';
import { libraryClosure } from './elfdeps.ts';
import { aliasEntries, formatModulesAlias, loadableNames, mergeResolutions, moduleBytes, modulesDep, modulesUnder, resolveModules } from './kmod.ts';
import type { Kernel } from './rootfs.ts';
import { tool } from './tools.ts';

export const STAGE1_INIT = new URL('./stage1/init.sh', import.meta.url).pathname;

/**
 * Files stage 1 carries besides busybox and modules (dmsetup and its libraries, /etc/kiln/verity);
 * with `target`, a symbolic link to that absolute path instead.
 */
export interface Stage1Extra { path: string; data?: Buffer; mode: number; target?: string }

/**
 * `coldplug`: module folders (profile modules.coldplug_stage1) whose modules stage 1 loads by
 * each device's modalias, through the modules.alias written here (busybox modprobe matches it).
 * `cpu`: modules for instructions the CPU may have (the arch's cpuModules), each loaded before
 * the root is opened if /proc/cpuinfo shows its flag; the ones this kernel does not ship are
 * left out.
 */
export function stage1Entries(kernel: Kernel, busybox: string, modules: string[], extra: Stage1Extra[] = [], coldplug: string[] = [], cpu: { module: string; flag: string }[] = [], keepSignatures = true): CpioEntry[] {
  const shipped = new Set(loadableNames(kernel.modules, cpu.map((c) => c.module)));
  const cpuMods = cpu.filter((c) => shipped.has(c.module));
  const cpuNames = cpuMods.map((c) => c.module);
  const res = mergeResolutions(resolveModules(kernel.modules, modules, 'modules.stage1'),
    resolveModules(kernel.modules, modulesUnder(kernel.modules, coldplug, 'modules.coldplug_stage1'), 'modules.coldplug_stage1'),
    resolveModules(kernel.modules, cpuNames, 'the CPU modules'));
  const mroot = `lib/modules/${kernel.version}`;
  const entries: CpioEntry[] = [
    { path: 'bin', type: 'dir', mode: 0o755 },
    { path: 'dev', type: 'dir', mode: 0o755 },
    { path: 'dev/console', type: 'char', mode: 0o600, major: 5, minor: 1 },
    { path: 'etc', type: 'dir', mode: 0o755 },
    { path: 'etc/kiln', type: 'dir', mode: 0o755 },
    { path: 'etc/kiln/stage1-modules', type: 'file', mode: 0o644, data: Buffer.from(loadableNames(kernel.modules, modules).join('\n') + '\n') },
    { path: 'etc/kiln/stage1-cpu-modules', type: 'file', mode: 0o644, data: Buffer.from(cpuMods.map((c) => `${c.module} ${c.flag}\n`).join('')) },
    { path: 'bin/busybox', type: 'file', mode: 0o755, data: readFileSync(busybox) },
    { path: 'init', type: 'file', mode: 0o755, data: readFileSync(STAGE1_INIT) },
    { path: 'lib', type: 'dir', mode: 0o755 },
    { path: `${mroot}/modules.dep`, type: 'file', mode: 0o644, data: Buffer.from(modulesDep(res.order, res.deps)) },
  ];
  if (coldplug.length) entries.push({ path: `${mroot}/modules.alias`, type: 'file', mode: 0o644, data: Buffer.from(formatModulesAlias(aliasEntries(kernel.modules, res.order))) });
  const dirs = new Set<string>();
  for (const f of res.order) {
    const parts = `${mroot}/${f}`.split('/');
    for (let i = 2; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
    entries.push({ path: `${mroot}/${f}`, type: 'file', mode: 0o644, data: moduleBytes(kernel.modules, f, keepSignatures) });
  }
  for (const x of extra) {
    const parts = x.path.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
    entries.push(x.target ? { path: x.path, type: 'symlink', target: x.target } : { path: x.path, type: 'file', mode: x.mode, data: x.data });
  }
  for (const d of ['bin', 'dev', 'etc', 'etc/kiln', 'lib']) dirs.delete(d);
  dirs.add('lib/modules'); dirs.add(mroot);
  for (const d of dirs) entries.push({ path: d, type: 'dir', mode: 0o755 });
  return entries;
}

/** Writes the compressed stage-1 initramfs and returns its path. */
export async function buildStage1(out: string, kernel: Kernel, busybox: string, modules: string[], extra: Stage1Extra[] = [], coldplug: string[] = [], cpu: { module: string; flag: string }[] = [], keepSignatures = true): Promise<string> {
  const cpio = writeCpio(stage1Entries(kernel, busybox, modules, extra, coldplug, cpu, keepSignatures), { mtime: 0 });
  writeFileSync(`${out}.cpio`, cpio);
  // zstd output carries no timestamps or names, so it is reproducible.
  await $({ quiet: true })`${tool('zstd')} -q -f -19 -T0 ${out + '.cpio'} -o ${out}`;
  return out;
}

/**
 * dmsetup and the shared libraries it needs, copied from the assembled root (so they are the
 * locked Debian packages' files), plus the root's verity parameter. The dynamic loader goes
 * to its usual path, with a link where programs name it (x86_64's /lib64) rather than a
 * second copy; libraries go to the path their SONAME is found at.
 */
export async function stage1VerityFiles(root: string, triplet: string, ldso: { path: string; link?: string }, param: string): Promise<Stage1Extra[]> {
  const dmsetup = ['usr/sbin/dmsetup', 'sbin/dmsetup'].find((p) => existsSync(join(root, p)));
  if (!dmsetup) throw new Error('the root has no dmsetup: add dmsetup (and libdevmapper1.02.1) to debian.packages in the profile and run \'kiln lock\'');
  const libs = await libraryClosure(root, [dmsetup], triplet);
  const link = ldso.link?.replace(/^\//, '');
  const files = [...new Set([...libs, ldso.path.replace(/^\//, '')])].filter((f) => f !== link);
  return [
    { path: 'bin/dmsetup', data: readFileSync(join(root, dmsetup)), mode: 0o755 },
    ...files.map((f) => ({ path: f, data: readFileSync(insideRoot(root, f)), mode: 0o755 })),
    ...(link ? [{ path: link, target: ldso.path, mode: 0o777 }] : []),
    { path: 'etc/kiln/verity', data: Buffer.from(`${param.replace(/^kiln\.verity=/, '')}\n`), mode: 0o644 },
  ];
}

/** Follows symlinks of `rel` the way they resolve inside `root` (absolute targets are root-relative). */
function insideRoot(root: string, rel: string): string {
  let cur = rel;
  for (let i = 0; i < 20; i++) {
    const abs = join(root, cur);
    if (!lstatSync(abs).isSymbolicLink()) return abs;
    const t = readlinkSync(abs);
    cur = t.startsWith('/') ? t.slice(1) : join(dirname(cur), t);
  }
  throw new Error(`${rel}: too many levels of symbolic links in the root`);
}
