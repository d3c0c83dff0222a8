// The read-only root image (squashfs with zstd, or erofs), reproducible for a fixed
// SOURCE_DATE_EPOCH: every file owned by root, every timestamp the same.
import { rmSync } from 'node:fs';
import { $ } from 'zx';
import { stableGuid } from '../init/disk/gpt.ts';
import { tool } from './tools.ts';

/** squashfs block size: see channels/README.md ("A build that suits deltas") for the measurement behind it. */
export const SQUASHFS_BLOCK = '256K';

export async function buildRootImage(dir: string, out: string, fs: 'squashfs' | 'erofs', sde: number, seed: string, opts: { block?: string } = {}): Promise<string> {
  rmSync(out, { force: true });
  if (fs === 'squashfs') {
    // mksquashfs refuses SOURCE_DATE_EPOCH together with explicit times; the flags say it all.
    const { SOURCE_DATE_EPOCH: _, ...env } = process.env;
    await $({ quiet: true, env })`${tool('mksquashfs')} ${dir} ${out} -comp zstd -Xcompression-level 15 -b ${opts.block ?? SQUASHFS_BLOCK} -noappend -all-root -no-xattrs -mkfs-time ${sde} -all-time ${sde} -quiet -no-progress`;
  } else {
    await $({ quiet: true })`${tool('mkfs.erofs')} -zlz4hc -T${sde} -U${stableGuid(`erofs:${seed}`).toLowerCase()} --all-root -x-1 ${out} ${dir}`;
  }
  return out;
}
