import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cutIcuAt, icuCut, icuPackageName, icuRegion } from '../../builder/node-icu.ts';
import { tool } from '../../builder/tools.ts';

test('icuCut: other locales, transliterators, converters, character names and dictionaries go; English, the root and shared data stay', () => {
  const keep = [
    'root.res', 'en.res', 'en_001.res', 'en_US.res', 'en_US_POSIX.res', 'pool.res', 'res_index.res',
    'supplementalData.res', 'zoneinfo64.res', 'metaZones.res', 'timezoneTypes.res', 'icuver.res', 'plurals.res',
    'nfkc.nrm', 'uts46.nrm', 'cnvalias.icu', 'confusables.cfu', 'rfc3491.spp', 'uemoji.icu',
    'coll/root.res', 'coll/en.res', 'coll/ucadata.icu', 'coll/res_index.res',
    'brkitr/root.res', 'brkitr/word.brk',
    'zone/en.res', 'zone/pool.res', 'zone/tzdbNames.res', 'curr/supplementalData.res', 'unit/root.res',
  ];
  const drop = [
    'fr.res', 'de_CH.res', 'zh_Hant_TW.res', 'ars.res', 'en_GB.res', 'en_150.res',
    'coll/de_.res', 'coll/zh.res', 'zone/fr_CA.res', 'lang/ja.res', 'rbnf/es.res',
    'translit/root.res', 'translit/en.res', 'ibm-37_P100-1995.cnv', 'gb18030-2022.cnv', 'unames.icu',
  ];
  const dictionaries = ['brkitr/cjdict.dict', 'brkitr/thaidict.dict', 'brkitr/khmerdict.dict'];
  assert.equal(icuCut([...keep, ...dictionaries, ...drop]), { remove: drop, dictionaries });
  assert.equal(icuCut(keep), { remove: [], dictionaries: [] });
});

const SYMS = (size: string, ndx = '17') => `
Symbol table '.dynsym' contains 3 entries:
   Num:    Value          Size Type    Bind   Vis      Ndx Name
     0: 0000000000000000     0 NOTYPE  LOCAL  DEFAULT  UND
 27125: 0000000000750000    42 FUNC    GLOBAL DEFAULT   13 uv_run
 27126: 00000000046ead50 ${size} OBJECT  GLOBAL DEFAULT   ${ndx} icudt78_dat
`;
const SECTIONS = `
Section Headers:
  [Nr] Name              Type            Address          Off    Size   ES Flg Lk Inf Al
  [ 0]                   NULL            0000000000000000 000000 000000 00      0   0  0
  [13] .text             PROGBITS        0000000000750000 350000 29300c4 00  AX  0   0 8192
  [17] .rodata           PROGBITS        0000000003201000 2e01000 3509998 00   A  0   0 4096
  [28] .data             PROGBITS        0000000006b87000 6786000 026460 00  WA  0   0 4096
`;

test('icuRegion: the symbol\'s file offset from its section, with readelf\'s hex and decimal sizes', () => {
  const at = 0x46ead50 - 0x3201000 + 0x2e01000;
  assert.equal(icuRegion(SYMS('0x1f92ff0'), SECTIONS), { symbol: 'icudt78_dat', offset: at, size: 0x1f92ff0 });
  assert.equal(icuRegion(SYMS('4096'), SECTIONS), { symbol: 'icudt78_dat', offset: at, size: 4096 });
  // past the end of its section, in a section not listed, or no symbol at all
  assert.is(icuRegion(SYMS('0x3000000'), SECTIONS), undefined);
  assert.is(icuRegion(SYMS('4096', '21'), SECTIONS), undefined);
  assert.is(icuRegion(SYMS('4096').replace('icudt78_dat', 'uv_loop_init'), SECTIONS), undefined);
});

test('icuPackageName: only ICU common data has one', () => {
  assert.is(icuPackageName(Buffer.alloc(4096)), undefined);
  assert.is(icuPackageName(Buffer.from('\x7fELF'.padEnd(64, '\0'), 'latin1')), undefined);
});

/** An ICU package of our own: genrb compiles the bundles, icupkg packs them as icudt99l. */
function fixturePackage(dir: string, bundles: Record<string, string>): Buffer {
  const [src, res, pkg] = ['src', 'res', 'pkg'].map((d) => join(dir, d));
  for (const [item, text] of Object.entries(bundles)) {
    const tree = item.includes('/') ? item.slice(0, item.lastIndexOf('/')) : '';
    for (const d of [join(src, tree), join(res, tree)]) mkdirSync(d, { recursive: true });
    const file = item.slice(item.lastIndexOf('/') + 1);
    if (file.endsWith('.dict')) {
      // a word list for Thai, made into a dictionary by gendict
      writeFileSync(join(src, tree, `${file}.txt`), text);
      execFileSync(tool('gendict'), ['-q', '--bytes', '--transform', 'offset-0e00', join(src, tree, `${file}.txt`), join(res, tree, file)]);
      continue;
    }
    const name = file.replace(/\.res$/, '');
    writeFileSync(join(src, tree, `${name}.txt`), text);
    execFileSync(tool('genrb'), ['-q', '-s', join(src, tree), '-d', join(res, tree), `${name}.txt`]);
  }
  writeFileSync(join(dir, 'items.txt'), `${Object.keys(bundles).join('\n')}\n`);
  mkdirSync(pkg, { recursive: true });
  execFileSync(tool('icupkg'), ['-s', res, '-a', join(dir, 'items.txt'), 'new', join(pkg, 'icudt99l.dat')]);
  return readFileSync(join(pkg, 'icudt99l.dat'));
}

const list = (dat: Buffer, dir: string) => {
  mkdirSync(join(dir, 'list'), { recursive: true });
  writeFileSync(join(dir, 'list', 'icudt99l.dat'), dat);
  return execFileSync(tool('icupkg'), ['--ignore-deps', '-l', join(dir, 'list', 'icudt99l.dat')], { encoding: 'utf8' }).split('\n').filter(Boolean).sort();
};

test('cutIcuAt: rewrites the package in place, zeroes the rest of the region and leaves the file around it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-icu-'));
  try {
    const dat = fixturePackage(dir, {
      'root.res': 'root{ Greeting{"hello"} }\n', 'en.res': 'en{ Greeting{"hi"} }\n', 'en_US.res': 'en_US{ }\n',
      'fr.res': 'fr{ Greeting{"salut"} }\n', 'fr_CA.res': 'fr_CA{ }\n',
      'coll/root.res': 'root{ Sort{"x"} }\n', 'coll/de.res': 'de{ Sort{"y"} }\n', 'translit/root.res': 'root{ Rules{"a > b"} }\n',
      // the break rules name their dictionary, as ICU's own do
      'brkitr/root.res': 'root{ dictionaries{ Thai:process(dependency){"thaidict.dict"} } }\n', 'brkitr/thaidict.dict': '\u0e01\u0e32\n\u0e01\u0e34\u0e19\n',
    });
    assert.is(icuPackageName(dat), 'icudt99l');
    const offset = 1000;
    const size = dat.length + 8192;
    const file = join(dir, 'binary');
    writeFileSync(file, Buffer.concat([Buffer.alloc(offset, 0xaa), dat, Buffer.alloc(8192, 0x55), Buffer.alloc(500, 0xbb)]));
    const r = await cutIcuAt(file, { offset, size }, join(dir, 'work'));
    assert.equal({ before: r.before, removed: r.removed }, { before: size, removed: 5 });
    assert.ok(r.after < dat.length, `${r.after} < ${dat.length}`);
    const out = readFileSync(file);
    assert.is(out.length, offset + size + 500);
    assert.ok(out.subarray(0, offset).every((b) => b === 0xaa), 'bytes before the region are kept');
    assert.ok(out.subarray(offset + size).every((b) => b === 0xbb), 'bytes after the region are kept');
    assert.ok(out.subarray(offset + r.after, offset + size).every((b) => b === 0), 'the rest of the region is zero');
    assert.equal(list(out.subarray(offset, offset + r.after), dir), ['brkitr/root.res', 'coll/root.res', 'en.res', 'en_US.res', 'root.res']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('cutIcuAt: a kept bundle that needs a removed one stops the build and leaves the file as it was', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-icu-'));
  try {
    const dat = fixturePackage(dir, {
      'root.res': 'root{ }\n', 'fr.res': 'fr{ Greeting{"salut"} }\n', 'en_US.res': 'en_US{ %%Parent{"fr"} }\n',
    });
    const file = join(dir, 'binary');
    writeFileSync(file, dat);
    let err: Error | undefined;
    try { await cutIcuAt(file, { offset: 0, size: dat.length }, join(dir, 'work')); } catch (e) { err = e as Error; }
    assert.match(String(err?.message), /icupkg could not cut the ICU data: .*en_US\.res depends on missing item fr\.res/);
    assert.ok(readFileSync(file).equals(dat), 'the binary is unchanged');
    // not a package at all
    writeFileSync(file, Buffer.alloc(4096, 1));
    err = undefined;
    try { await cutIcuAt(file, { offset: 0, size: 4096 }, join(dir, 'work2')); } catch (e) { err = e as Error; }
    assert.match(String(err?.message), /no ICU data package at offset 0/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
