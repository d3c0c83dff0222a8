// The A/B GPT layout (esp | kiln-root-a | kiln-root-b | kiln-data), pure so that both the
// builder (disk images) and the node's installer (init/install.ts, bundled) can use it.
import { GPT_TYPES, layoutPartitions, type LayoutPartition } from './gpt.ts';

const MiB = 1024 * 1024;

/** The target architectures (the builder's per-arch facts live in builder/arch.ts). */
export type Arch = 'x86_64' | 'arm64';

/** The Discoverable Partitions Specification's root type of each arch. */
export const ROOT_TYPE_GUID: Record<Arch, string> = {
  x86_64: '4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709',
  arm64: 'B921B045-1DF0-41C3-AF44-4C6F280D3FAE',
};

/** What the installer reads from the medium (/kiln/install.json); the builder writes it. */
export interface IsoManifest {
  version: string;
  arch: Arch;
  espMiB: number;
  rootMiB: number;
  /** Smallest data partition the installer accepts. */
  minDataMiB: number;
  /** Paths on the medium. */
  root: string;
  rootBytes: number;
  /** sha256 (hex) of the root image as it is on the medium. */
  rootSha256: string;
  esp: string;
  /** Size and sha256 (hex) of the ESP image uncompressed (as written to the disk). */
  espBytes: number;
  espSha256: string;
}

export const PARTLABELS = { esp: 'esp', rootA: 'kiln-root-a', rootB: 'kiln-root-b', data: 'kiln-data' } as const;

export interface DiskPlan {
  arch: Arch;
  espMiB: number;
  rootMiB: number;
  dataMiB: number;
  /** Seed for the disk's GUIDs (same seed, same GUIDs: reproducible). */
  seed: string;
}

/** Partitions of a disk of `size` bytes; kiln-data takes the rest. */
export function layoutFor(arch: Arch, size: number, espMiB: number, rootMiB: number): LayoutPartition[] {
  return layoutPartitions(size, [
    { name: PARTLABELS.esp, sizeBytes: espMiB * MiB, type: GPT_TYPES.esp },
    { name: PARTLABELS.rootA, sizeBytes: rootMiB * MiB, type: ROOT_TYPE_GUID[arch] },
    { name: PARTLABELS.rootB, sizeBytes: rootMiB * MiB, type: ROOT_TYPE_GUID[arch] },
    { name: PARTLABELS.data, sizeBytes: 'rest', type: GPT_TYPES.linuxData },
  ]);
}

/** The image's size and layout: 1 MiB for the GPT and alignment at each end. */
export function diskLayout(plan: DiskPlan) {
  const size = (1 + plan.espMiB + 2 * plan.rootMiB + plan.dataMiB + 1) * MiB;
  return { size, parts: layoutFor(plan.arch, size, plan.espMiB, plan.rootMiB) };
}

/** Smallest disk the installer accepts: the image's layout with at least `minDataMiB` of data. */
export function minDiskBytes(espMiB: number, rootMiB: number, minDataMiB: number): number {
  return (1 + espMiB + 2 * rootMiB + minDataMiB + 1) * MiB;
}
