// qcow2: the raw disk converted, compressed, for QEMU, libvirt and OpenStack.
import { $ } from 'zx';
import { ARCHES } from '../arch.ts';
import { tool } from '../tools.ts';
import { defineFormat } from './format.ts';

export const qcow2 = defineFormat({
  name: 'qcow2',
  what: 'the raw disk as compressed qcow2 (QEMU, libvirt, OpenStack)',
  arches: ARCHES,
  needs: ['disk'],
  writes: [{ suffix: '.qcow2', kind: 'qcow2' }],
  async make(job, { disk }) {
    await job.log.stage(`${job.arch}: qcow2`, () => $({ quiet: true })`${tool('qemu-img')} convert -f raw -O qcow2 -c ${disk} ${job.base}.qcow2`);
  },
});
