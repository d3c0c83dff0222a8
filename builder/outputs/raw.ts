// raw: the UEFI A/B disk itself. The pipeline assembles it at <base>.raw for every build
// (qcow2 and raw.zst are made from it); asking for raw keeps it in the output folder.
import { ARCHES } from '../arch.ts';
import { defineFormat } from './format.ts';

export const raw = defineFormat({
  name: 'raw',
  what: 'GPT disk image (UEFI): dd it to a disk, or import it into a hypervisor or cloud',
  arches: ARCHES,
  needs: ['disk'],
  writes: [{ suffix: '.raw', kind: 'raw' }],
  async make(job, { disk }) {
    if (disk !== `${job.base}.raw`) throw new Error(`raw: the disk is at ${disk}, expected ${job.base}.raw`);
  },
});
