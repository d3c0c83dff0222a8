// The EFI system partition as a FAT32 image file, built without root: mkfs.vfat -C makes
// the file, mtools fills it. Same inputs and SOURCE_DATE_EPOCH give the same bytes.
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { $ } from 'zx';
import { tool } from './tools.ts';

export interface EspFile {
  /** Path on the ESP, e.g. 'EFI/BOOT/BOOTX64.EFI'. */
  path: string;
  /** Host file to copy... */
  src?: string;
  /** ...or the contents. */
  data?: Buffer;
}

export interface EspSpec {
  out: string;
  sizeMiB: number;
  /** FAT volume label, at most 11 characters. */
  label: string;
  /** Volume serial number, 8 hex digits; defaults to one derived from the label. */
  volumeId?: string;
  files: EspFile[];
  /** Timestamp of every file and directory; defaults to $SOURCE_DATE_EPOCH. */
  sourceDateEpoch?: number;
}

/** FAT timestamps start at 1980-01-01. */
const FAT_EPOCH = 315532800;

function cleanPath(p: string): string {
  const s = p.replace(/^\/+/, '');
  if (!s || s.split('/').some((c) => c === '' || c === '.' || c === '..')) throw new Error(`ESP file path '${p}' is not a clean relative path`);
  return s;
}

/** Directories needed for `paths`, parents first, in sorted order. */
export function espDirectories(paths: string[]): string[] {
  const dirs = new Set<string>();
  for (const p of paths) {
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  return [...dirs].sort();
}

/** Builds the image at spec.out and returns its path. */
export async function buildEsp(spec: EspSpec): Promise<string> {
  if (!/^[\x20-\x7e]{1,11}$/.test(spec.label)) throw new Error(`ESP label '${spec.label}' must be 1-11 printable ASCII characters`);
  const volumeId = spec.volumeId ?? createHash('sha256').update(`esp:${spec.label}`).digest('hex').slice(0, 8);
  if (!/^[0-9a-fA-F]{8}$/.test(volumeId)) throw new Error(`ESP volumeId '${volumeId}' must be 8 hex digits`);
  // FAT32 needs at least 65525 clusters; mkfs.vfat refuses smaller volumes.
  if (!Number.isInteger(spec.sizeMiB) || spec.sizeMiB < 33) throw new Error(`ESP size ${spec.sizeMiB} MiB is too small for FAT32 (minimum 33 MiB)`);
  const files = spec.files.map((f) => ({ ...f, path: cleanPath(f.path) })).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (let i = 1; i < files.length; i++) if (files[i]!.path.toUpperCase() === files[i - 1]!.path.toUpperCase()) throw new Error(`ESP file '${files[i]!.path}' is listed twice (FAT names ignore case)`);
  for (const f of files) if ((f.src === undefined) === (f.data === undefined)) throw new Error(`ESP file '${f.path}' needs exactly one of src or data`);

  const envSde = process.env.SOURCE_DATE_EPOCH ? Number(process.env.SOURCE_DATE_EPOCH) : undefined;
  const sde = Math.max(spec.sourceDateEpoch ?? envSde ?? FAT_EPOCH, FAT_EPOCH);
  // mtools stamps new entries with SOURCE_DATE_EPOCH (4.0.32+) in local time, hence TZ.
  // No `mcopy -m`: it would keep the source file's mtime, e.g. when the cache fetched it.
  const env = { ...process.env, MTOOLS_SKIP_CHECK: '1', SOURCE_DATE_EPOCH: String(sde), TZ: 'UTC' };
  const sh = $({ quiet: true, env });
  const img = spec.out;
  rmSync(img, { force: true });
  const tmp = mkdtempSync(join(tmpdir(), 'kiln-esp-'));
  try {
    await sh`${tool('mkfs.vfat')} -C --invariant -F 32 -i ${volumeId.toUpperCase()} -n ${spec.label} ${img} ${spec.sizeMiB * 1024}`;
    const dirs = espDirectories(files.map((f) => f.path));
    if (dirs.length) await sh`${tool('mmd')} -i ${img} ${dirs.map((d) => `::/${d}`)}`;
    let n = 0;
    for (const f of files) {
      let src = f.src!;
      if (f.data !== undefined) { src = join(tmp, String(n++)); writeFileSync(src, f.data); }
      await sh`${tool('mcopy')} -i ${img} ${src} ${`::/${f.path}`}`;
    }
  } catch (e) {
    rmSync(img, { force: true });
    throw new Error(`building ESP image ${img} failed: ${(e as Error).message}`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return img;
}
