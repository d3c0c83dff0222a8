// The A/B disk image: GPT on a plain file with esp, kiln-root-a, kiln-root-b and
// kiln-data. Partitions are built as separate files and copied in at their offsets,
// skipping zero blocks so the image stays sparse. No root, no loop devices.
import { closeSync, ftruncateSync, openSync, readSync, rmSync, statSync, writeSync } from 'node:fs';
import { $ } from 'zx';
import { buildGpt, stableGuid } from '../init/disk/gpt.ts';
import { diskLayout, PARTLABELS, type DiskPlan } from '../init/disk/layout.ts';
import { tool } from './tools.ts';

const MiB = 1024 * 1024;

// The layout itself is pure (init/disk/layout.ts) so the node's installer shares it.
export { PARTLABELS, diskLayout, type DiskPlan } from '../init/disk/layout.ts';

/** Copies `src` into `fd` at byte `offset`, leaving all-zero blocks as holes. */
export function copyInto(fd: number, src: string, offset: number, limit: number) {
  const size = statSync(src).size;
  if (size > limit) throw new Error(`${src} is ${Math.ceil(size / MiB)} MiB but its partition holds ${limit / MiB} MiB; raise the size in the profile's disk settings`);
  const buf = Buffer.alloc(MiB);
  const sfd = openSync(src, 'r');
  try {
    for (let pos = 0; pos < size;) {
      const n = readSync(sfd, buf, 0, MiB, pos);
      if (n <= 0) break;
      const chunk = buf.subarray(0, n);
      if (chunk.some((b) => b !== 0)) writeSync(fd, chunk, 0, n, offset + pos);
      pos += n;
    }
  } finally { closeSync(sfd); }
}

export async function makeDataFs(out: string, sizeMiB: number, seed: string, sde: number) {
  rmSync(out, { force: true });
  const uuid = stableGuid(`data:${seed}`).toLowerCase();
  await $({ quiet: true, env: { ...process.env, E2FSPROGS_FAKE_TIME: String(sde) } })`${tool('mkfs.ext4')} -q -F -L kiln-data -U ${uuid} -E root_owner=0:0,hash_seed=${uuid},lazy_itable_init=0,nodiscard -T default ${out} ${sizeMiB}M`;
  return out;
}

export interface DiskParts { esp: string; rootA: string; rootB?: string; data: string }

export function assembleDisk(out: string, plan: DiskPlan, parts: DiskParts) {
  const { size, parts: layout } = diskLayout(plan);
  const guids = layout.map((p) => ({ ...p, guid: stableGuid(`${plan.seed}:${p.name}`) }));
  const gpt = buildGpt({ diskSizeBytes: size, diskGuid: stableGuid(`${plan.seed}:disk`), partitions: guids });
  rmSync(out, { force: true });
  const fd = openSync(out, 'w');
  try {
    ftruncateSync(fd, size);
    writeSync(fd, gpt.primary, 0, gpt.primary.length, 0);
    writeSync(fd, gpt.backup, 0, gpt.backup.length, gpt.backupOffset);
    const at = (name: string) => layout.find((p) => p.name === name)!;
    const put = (name: string, file?: string) => {
      if (!file) return;
      const p = at(name);
      copyInto(fd, file, p.firstLba * 512, (p.lastLba - p.firstLba + 1) * 512);
    };
    put(PARTLABELS.esp, parts.esp);
    put(PARTLABELS.rootA, parts.rootA);
    put(PARTLABELS.rootB, parts.rootB);
    put(PARTLABELS.data, parts.data);
  } finally { closeSync(fd); }
  return { size, layout };
}
