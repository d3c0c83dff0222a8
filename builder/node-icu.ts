// Node's ICU data, cut to the root and English. The Node.js binary links ICU's whole data
// package (33 MB, a third of the binary and 10 MB of the compressed root): every locale's
// names, calendars and collation, 200 legacy charset converters, the transliterators and the
// word-break dictionaries. Init speaks English and writes UTC; nothing on the node formats for
// another locale or splits Thai or Chinese text into words. So the builder rewrites the package
// in place with Debian's icupkg (icu-devtools), which refuses a cut that leaves an item missing
// something it depends on, and zeroes the rest of the symbol. What remains: the root locale and
// English (as in Node's own small-icu builds), Unicode's properties and normalisation, time
// zones, the break rules and root collation. Other locales fall back to the root
// (Intl.DateTimeFormat('de') formats as 'en' does, and supportedLocalesOf leaves them out);
// TextDecoder knows UTF-8, UTF-16 and Latin-1 only; Intl.Segmenter leaves a run of Thai, Lao,
// Khmer, Burmese, Chinese or Japanese text whole where it would split it into words.
import { closeSync, mkdirSync, openSync, readFileSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { $ } from 'zx';
import { tool } from './tools.ts';

/** Locales kept in every tree of the package: the root and English. */
export const ICU_KEEP_LOCALES: readonly string[] = ['root', 'en', 'en_001', 'en_US', 'en_US_POSIX'];

/** A locale bundle's item name: `fr.res`, `coll/zh_Hant_TW.res`, `coll/de_.res` (an alias). */
const LOCALE_RES = /^([a-z]{2,3}(?:_[A-Za-z0-9]*)*)\.res$/;
/** Per-tree files every lookup needs, whatever the locale. */
const TREE_FILES = new Set(['pool.res', 'res_index.res']);

/**
 * The items of an ICU data package (as `icupkg -l` lists them) that the node does without.
 * `remove`: other locales' bundles, the transliterators (V8 has no API for them), the legacy
 * charset converters (Node's TextDecoder decodes UTF-8, UTF-16 and Latin-1 on its own) and the
 * Unicode character names (nothing in JavaScript reads them); icupkg checks that nothing kept
 * needs them. `dictionaries`: the word lists for scripts written without spaces. The root's break
 * rules name them, and ICU goes without one it cannot find, so they are cut without that check.
 */
export function icuCut(items: readonly string[]): { remove: string[]; dictionaries: string[] } {
  const remove = items.filter((item) => {
    const slash = item.lastIndexOf('/');
    const tree = slash < 0 ? '' : item.slice(0, slash);
    const base = item.slice(slash + 1);
    if (tree === 'translit' || base.endsWith('.cnv') || base === 'unames.icu') return true;
    const m = LOCALE_RES.exec(base);
    return m !== null && !TREE_FILES.has(base) && !ICU_KEEP_LOCALES.includes(m[1]!);
  });
  return { remove, dictionaries: items.filter((item) => item.endsWith('.dict')) };
}

export interface IcuRegion { symbol: string; offset: number; size: number }

/**
 * Where the ICU data symbol (`icudtNN_dat`) lies in an ELF file, from `readelf --dyn-syms -W`
 * and `readelf -SW`: its section's file offset plus its distance from the section's address.
 */
export function icuRegion(dynSyms: string, sections: string): IcuRegion | undefined {
  // "27126: 00000000046ead50 0x1f92ff0 OBJECT  GLOBAL DEFAULT   17 icudt78_dat" (readelf
  // prints a size in decimal, or in hex with 0x once it is large)
  const sym = /^\s*\d+:\s+([0-9a-f]+)\s+(0x[0-9a-f]+|\d+)\s+OBJECT\s+\S+\s+\S+\s+(\d+)\s+(icudt\d+_dat)\s*$/m.exec(dynSyms);
  if (!sym) return undefined;
  const [, value, size, shndx, symbol] = sym;
  for (const line of sections.split('\n')) {
    // "[17] .rodata  PROGBITS  0000000003201000 2e01000 3509998 00 A 0 0 4096"
    const s = /^\s*\[\s*(\d+)\]\s+\S+\s+\S+\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)\s/.exec(line);
    if (!s || s[1] !== shndx) continue;
    const [addr, off, secSize] = [parseInt(s[2]!, 16), parseInt(s[3]!, 16), parseInt(s[4]!, 16)];
    const at = parseInt(value!, 16) - addr;
    const n = Number(size);
    if (at < 0 || at + n > secSize) return undefined;
    return { symbol: symbol!, offset: off + at, size: n };
  }
  return undefined;
}

/**
 * The package's name (`icudt78l`) from its first table-of-contents entry, or undefined when
 * `buf` is not ICU common data (magic 0xda27, data format "CmnD").
 */
export function icuPackageName(buf: Buffer): string | undefined {
  if (buf.length < 32 || buf[2] !== 0xda || buf[3] !== 0x27 || buf.toString('latin1', 12, 16) !== 'CmnD') return undefined;
  const hs = buf.readUInt16LE(0);
  if (hs + 12 > buf.length || buf.readUInt32LE(hs) === 0) return undefined;
  const nameAt = hs + buf.readUInt32LE(hs + 4);
  const end = buf.indexOf(0, nameAt);
  if (end < 0) return undefined;
  const name = buf.toString('latin1', nameAt, end).split('/')[0]!;
  return /^icudt\d+[lb]$/.test(name) ? name : undefined;
}

/**
 * Cuts the ICU package found at `region` of `file` to the root and English, in place: the new
 * package is written at the same offset and the rest of the region is zeroed (so it compresses
 * to nothing). `work` is an empty folder for icupkg's files. Returns the package's sizes.
 */
export async function cutIcuAt(file: string, region: { offset: number; size: number }, work: string): Promise<{ before: number; after: number; removed: number }> {
  const fd = openSync(file, 'r+');
  try {
    const data = Buffer.alloc(region.size);
    if (readSync(fd, data, 0, region.size, region.offset) !== region.size) throw new Error(`${file}: the ICU data runs past the end of the file`);
    const name = icuPackageName(data);
    if (!name) throw new Error(`${file}: no ICU data package at offset ${region.offset}; cannot cut it`);
    // icupkg takes an item's prefix from the package's file name, so both files are named for it.
    const [inDir, outDir] = [join(work, 'in'), join(work, 'out')];
    mkdirSync(inDir, { recursive: true });
    mkdirSync(outDir, { recursive: true });
    const input = join(inDir, `${name}.dat`);
    const output = join(outDir, `${name}.dat`);
    writeFileSync(input, data);
    const icupkg = tool('icupkg');
    const items = (await $({ quiet: true })`${icupkg} -l ${input}`).stdout.split('\n').map((l) => l.trim()).filter(Boolean);
    const cut = icuCut(items);
    // A list argument is read as a file only when its name ends in .txt.
    const [removeList, dictList] = [join(work, 'remove.txt'), join(work, 'dictionaries.txt')];
    writeFileSync(removeList, `${cut.remove.join('\n')}\n`);
    writeFileSync(dictList, `${cut.dictionaries.join('\n')}\n`);
    mkdirSync(join(work, 'mid'), { recursive: true });
    const mid = join(work, 'mid', `${name}.dat`);
    const checked = await $({ quiet: true, nothrow: true })`${icupkg} -r ${removeList} ${input} ${mid}`;
    if (checked.exitCode !== 0) throw new Error(`${file}: icupkg could not cut the ICU data: ${firstLines(checked.stderr || checked.stdout)}`);
    // The dictionaries without the dependency check, which then names what still refers to
    // them: anything missing other than a dictionary stops the build.
    const dicts = await $({ quiet: true, nothrow: true })`${icupkg} --ignore-deps -r ${dictList} ${mid} ${output}`;
    const missing = [...`${dicts.stdout}\n${dicts.stderr}`.matchAll(/depends on missing item (\S+)/g)].map((m) => m[1]!);
    const unexpected = missing.filter((item) => !cut.dictionaries.includes(item));
    if (dicts.exitCode !== 0 || unexpected.length) throw new Error(`${file}: icupkg could not cut the ICU data's dictionaries: ${firstLines(dicts.stderr || dicts.stdout)}`);
    const small = readFileSync(output);
    if (icuPackageName(small) !== name || small.length > region.size) throw new Error(`${file}: icupkg wrote no usable package (${small.length} bytes)`);
    const out = Buffer.alloc(region.size);
    small.copy(out);
    writeSync(fd, out, 0, out.length, region.offset);
    return { before: region.size, after: small.length, removed: cut.remove.length + cut.dictionaries.length };
  } finally {
    closeSync(fd);
  }
}

const firstLines = (text: string) => text.trim().split('\n').slice(0, 3).join('; ');

/** Cuts the ICU data of a Node.js binary (see the top of this file); throws when it has none. */
export async function cutNodeIcu(binary: string, work: string): Promise<{ before: number; after: number; removed: number }> {
  const readelf = tool('readelf');
  const [syms, sections] = await Promise.all([$({ quiet: true })`${readelf} --dyn-syms -W ${binary}`, $({ quiet: true })`${readelf} -SW ${binary}`]);
  const region = icuRegion(syms.stdout, sections.stdout);
  if (!region) throw new Error(`${binary}: no icudt*_dat symbol (a Node.js built without full ICU?); cannot cut its ICU data`);
  return cutIcuAt(binary, region, work);
}
