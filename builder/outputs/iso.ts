// iso: the hybrid live + installer ISO (builder/iso.ts): the root image to boot live, and the
// ESP image `kiln install` writes to a disk.
import { ARCHES } from '../arch.ts';
import { buildIso } from '../iso.ts';
import { defineFormat } from './format.ts';

export const iso = defineFormat({
  name: 'iso',
  what: 'hybrid ISO (live + installer) for CD or USB stick: BIOS + UEFI on x86_64, UEFI on arm64',
  arches: ARCHES,
  needs: ['rootImage', 'vmlinuz', 'initrd', 'esp', 'cmdline', 'systemdBoot'],
  writes: [{ suffix: '.iso', kind: 'iso' }],
  async make(job, f) {
    const { profile } = job;
    await job.log.stage(`${job.arch}: ISO (live + installer)`, () => buildIso({
      arch: job.arch, out: `${job.base}.iso`, version: job.version, kernel: f.vmlinuz, initrd: f.initrd, rootImage: f.rootImage,
      espImage: f.esp, espMiB: profile.disk.esp_mib, rootMiB: profile.disk.root_mib, minDataMiB: profile.disk.data_mib,
      cmdline: `console=tty0 ${f.cmdline}`, configUrl: job.configUrl, systemdBoot: f.systemdBoot, sourceDateEpoch: job.sourceDateEpoch, work: job.work,
    }));
  },
});
