// rpi: the Raspberry Pi 3/4 SD card image (MBR, U-Boot A/B; builder/rpi.ts), its .xz, and
// the kernel and initrd a Pi node's updater stages on its boot partition (kiln release
// publishes them).
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildRpiImage, rpiCmdline } from '../rpi.ts';
import { defineFormat } from './format.ts';

export const rpi = defineFormat({
  name: 'rpi',
  what: 'Raspberry Pi 3/4 SD card image (MBR, U-Boot A/B) and .rpi.img.xz; needs a generic-kernel profile (images/rpi.yaml)',
  arches: ['arm64'],
  why: 'the Raspberry Pi 3/4 boots 64-bit Arm only',
  needs: ['rootImage', 'vmlinuz', 'initrd'],
  writes: [
    { suffix: '.rpi.img', kind: 'rpi' },
    { suffix: '.rpi.img.xz', kind: 'rpi.xz' },
    { suffix: '.vmlinuz', kind: 'kernel' },
    { suffix: '.initrd', kind: 'initrd' },
  ],
  checkProfile(profile) {
    if (profile.kernel.flavour !== 'generic') throw new Error(`--format rpi needs Debian's generic arm64 kernel (the ${profile.kernel.flavour} one has no Raspberry Pi drivers); use --profile images/rpi.yaml`);
  },
  async make(job, { rootImage, vmlinuz, initrd }) {
    const firmwareDir = join(await job.debTree('raspi-firmware'), 'usr/lib/raspi-firmware');
    const ubootDir = join(await job.debTree('u-boot-rpi'), 'usr/lib/u-boot');
    const { profile } = job;
    await job.log.stage(`${job.arch}: Raspberry Pi SD image`, () => buildRpiImage({
      out: `${job.base}.rpi.img`, work: job.work, vmlinuz, initrd, rootImage, firmwareDir, ubootDir,
      plan: { espMiB: profile.disk.esp_mib, rootMiB: profile.disk.root_mib, dataMiB: profile.disk.data_mib },
      cmdline: rpiCmdline(profile.kernel.cmdline), seed: `${job.version}:${job.arch}`, sourceDateEpoch: job.sourceDateEpoch,
    }));
    copyFileSync(vmlinuz, `${job.base}.vmlinuz`);
    copyFileSync(initrd, `${job.base}.initrd`);
  },
});
