// raw.zst: the raw disk compressed with zstd, the smallest download of it.
import { $ } from 'zx';
import { ARCHES } from '../arch.ts';
import { tool } from '../tools.ts';
import { defineFormat } from './format.ts';

/**
 * raw -> raw.zst. One thread and fixed settings: the same raw always gives the same bytes.
 * --long=27 stays within plain `zstd -d`'s default window limit, so no flag is needed to decompress.
 */
export async function compressZst(src: string, dest: string): Promise<void> {
  await $({ quiet: true })`${tool('zstd')} -19 --long=27 -T1 -q -f --no-progress ${src} -o ${dest}`;
}

export const rawZst = defineFormat({
  name: 'raw.zst',
  what: 'the raw disk compressed with zstd -19 --long (smallest download; zstd -d restores it)',
  arches: ARCHES,
  needs: ['disk'],
  writes: [{ suffix: '.raw.zst', kind: 'raw.zst' }],
  async make(job, { disk }) {
    await job.log.stage(`${job.arch}: raw.zst`, () => compressZst(disk, `${job.base}.raw.zst`));
  },
});
