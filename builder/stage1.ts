// The stage-1 initramfs: busybox, the modules needed to reach the root and data
// partitions, and a shell /init. Written as a deterministic newc cpio, zstd-compressed.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { $ } from 'zx';
import { writeCpio, type CpioEntry } from './formats/cpio.ts';
import { loadableNames, modulesDep, resolveModules } from './kmod.ts';
import type { Kernel } from './rootfs.ts';
import { tool } from './tools.ts';

export const STAGE1_INIT = new URL('./stage1/init.sh', import.meta.url).pathname;

export function stage1Entries(kernel: Kernel, busybox: string, modules: string[]): CpioEntry[] {
  const res = resolveModules(kernel.modules, modules, 'modules.stage1');
  const mroot = `lib/modules/${kernel.version}`;
  const entries: CpioEntry[] = [
    { path: 'bin', type: 'dir', mode: 0o755 },
    { path: 'dev', type: 'dir', mode: 0o755 },
    { path: 'dev/console', type: 'char', mode: 0o600, major: 5, minor: 1 },
    { path: 'etc', type: 'dir', mode: 0o755 },
    { path: 'etc/kiln', type: 'dir', mode: 0o755 },
    { path: 'etc/kiln/stage1-modules', type: 'file', mode: 0o644, data: Buffer.from(loadableNames(kernel.modules, modules).join('\n') + '\n') },
    { path: 'bin/busybox', type: 'file', mode: 0o755, data: readFileSync(busybox) },
    { path: 'init', type: 'file', mode: 0o755, data: readFileSync(STAGE1_INIT) },
    { path: 'lib', type: 'dir', mode: 0o755 },
    { path: `${mroot}/modules.dep`, type: 'file', mode: 0o644, data: Buffer.from(modulesDep(res.order, res.deps)) },
  ];
  const dirs = new Set<string>();
  for (const f of res.order) {
    const parts = `${mroot}/${f}`.split('/');
    for (let i = 2; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
    entries.push({ path: `${mroot}/${f}`, type: 'file', mode: 0o644, data: readFileSync(join(kernel.modules.dir, f)) });
  }
  dirs.add('lib/modules'); dirs.add(mroot);
  for (const d of dirs) entries.push({ path: d, type: 'dir', mode: 0o755 });
  return entries;
}

/** Writes the compressed stage-1 initramfs and returns its path. */
export async function buildStage1(out: string, kernel: Kernel, busybox: string, modules: string[]): Promise<string> {
  const cpio = writeCpio(stage1Entries(kernel, busybox, modules), { mtime: 0 });
  writeFileSync(`${out}.cpio`, cpio);
  // zstd output carries no timestamps or names, so it is reproducible.
  await $({ quiet: true })`${tool('zstd')} -q -f -19 -T0 ${out + '.cpio'} -o ${out}`;
  return out;
}
