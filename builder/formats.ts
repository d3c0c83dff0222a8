// Which output formats `kiln build` can make for which arch, and why not the others.
// Every format in profile.ts FORMATS needs a row (the Record type makes tsc insist).
import { $ } from 'zx';
import { ARCHES, type Arch } from './arch.ts';
import type { Format } from './profile.ts';
import { tool } from './tools.ts';

export interface FormatInfo {
  what: string;
  arches: readonly Arch[];
  /** Why the other arches cannot have it (shown when refused). */
  why?: string;
}

export const FORMAT_TABLE: Record<Format, FormatInfo> = {
  raw: { what: 'GPT disk image (UEFI): dd it to a disk, or import it into a hypervisor or cloud', arches: ARCHES },
  qcow2: { what: 'the raw disk as compressed qcow2 (QEMU, libvirt, OpenStack)', arches: ARCHES },
  'raw.zst': { what: 'the raw disk compressed with zstd -19 --long (smallest download; zstd -d restores it)', arches: ARCHES },
  iso: { what: 'hybrid ISO (live + installer) for CD or USB stick: BIOS + UEFI on x86_64, UEFI on arm64', arches: ARCHES },
  rpi: { what: 'Raspberry Pi 3/4 SD card image (MBR, U-Boot A/B) and .rpi.img.xz; needs a generic-kernel profile (images/rpi.yaml)', arches: ['arm64'], why: 'the Raspberry Pi 3/4 boots 64-bit Arm only' },
};

/** "x86_64: raw, qcow2, ...; arm64: raw, ..." */
export function formatsByArch(): string {
  return ARCHES.map((a) => `${a}: ${(Object.keys(FORMAT_TABLE) as Format[]).filter((f) => FORMAT_TABLE[f].arches.includes(a)).join(', ')}`).join('; ');
}

/** Throws, saying why, when a requested format cannot be made for a requested arch. */
export function checkFormats(formats: readonly string[], arches: readonly Arch[]): void {
  for (const f of formats) {
    const info = FORMAT_TABLE[f as Format];
    if (!info) throw new Error(`unknown format '${f}' (formats per arch: ${formatsByArch()})`);
    const bad = arches.filter((a) => !info.arches.includes(a));
    if (bad.length) throw new Error(`format '${f}' cannot be made for ${bad.join(', ')}${info.why ? `: ${info.why}` : ''} (formats per arch: ${formatsByArch()}); pick the arch with --arch`);
  }
}

/**
 * raw -> raw.zst. One thread and fixed settings: the same raw always gives the same bytes.
 * --long=27 stays within plain `zstd -d`'s default window limit, so no flag is needed to decompress.
 */
export async function compressZst(src: string, dest: string): Promise<void> {
  await $({ quiet: true })`${tool('zstd')} -19 --long=27 -T1 -q -f --no-progress ${src} -o ${dest}`;
}
