// The output formats of `kiln build` (one module each in outputs/), which arch can have
// which, and why not the others. Every format in profile.ts FORMATS needs an entry (the
// Record type makes tsc insist).
import { ARCHES, type Arch } from './arch.ts';
import { FORMATS, type Format } from './profile.ts';
import type { OutputFormat } from './outputs/format.ts';
import { iso } from './outputs/iso.ts';
import { qcow2 } from './outputs/qcow2.ts';
import { raw } from './outputs/raw.ts';
import { rawZst } from './outputs/raw-zst.ts';
import { rpi } from './outputs/rpi.ts';

export type { OutputFormat } from './outputs/format.ts';

/**
 * Keyed by name, in the order a build makes them, which is the order of build.json's
 * outputs. Help and errors list them in the profile schema's order (FORMATS) instead.
 */
export const FORMAT_TABLE: Record<Format, OutputFormat<any>> = { raw, qcow2, 'raw.zst': rawZst, rpi, iso };

export const OUTPUT_FORMATS: readonly OutputFormat<any>[] = Object.values(FORMAT_TABLE);

/** The requested formats, in the order a build makes them. */
export function formatsInBuildOrder(formats: readonly Format[]): OutputFormat<any>[] {
  return OUTPUT_FORMATS.filter((f) => formats.includes(f.name));
}

/** "x86_64: raw, qcow2, ...; arm64: raw, ..." */
export function formatsByArch(): string {
  return ARCHES.map((a) => `${a}: ${FORMATS.filter((f) => FORMAT_TABLE[f].arches.includes(a)).join(', ')}`).join('; ');
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
