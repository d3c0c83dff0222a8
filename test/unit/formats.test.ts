// The output format registry behind `kiln build --format`: which arch gets which format, and
// each format module writing what it declares.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ARCHES } from '../../builder/arch.ts';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkFormats, FORMAT_TABLE, formatsByArch, formatsInBuildOrder, OUTPUT_FORMATS } from '../../builder/formats.ts';
import { pickNeeds, type BootFiles, type FormatJob } from '../../builder/outputs/format.ts';
import { compressZst } from '../../builder/outputs/raw-zst.ts';
import { silentLogger } from '../../builder/log.ts';
import { tool } from '../../builder/tools.ts';
import { FORMATS, loadProfile } from '../../builder/profile.ts';
import { REPO } from '../../builder/build.ts';

test('every profile format has a row, and the cloud formats exist for every arch', () => {
  assert.equal(Object.keys(FORMAT_TABLE).sort(), [...FORMATS].sort());
  for (const f of ['raw', 'qcow2', 'raw.zst'] as const) assert.equal([...FORMAT_TABLE[f].arches], [...ARCHES]);
  assert.match(formatsByArch(), /x86_64: raw, qcow2, raw\.zst/);
});

test('each registry entry is its own module under its own name; no two formats write the same file or kind', () => {
  for (const [name, f] of Object.entries(FORMAT_TABLE)) assert.is(f.name, name);
  const writes = OUTPUT_FORMATS.flatMap((f) => f.writes);
  assert.is(new Set(writes.map((w) => w.suffix)).size, writes.length);
  assert.is(new Set(writes.map((w) => w.kind)).size, writes.length);
  // The pipeline's own outputs (root image, UKI) are not a format's.
  for (const w of writes) assert.not.ok(['root', 'uki'].includes(w.kind) || w.suffix === '.efi' || w.suffix.startsWith('.root.'), w.suffix);
  // Build order (build.json's order of outputs) is the registry's, whatever order was asked for.
  assert.equal(formatsInBuildOrder(['iso', 'rpi', 'raw']).map((f) => f.name), ['raw', 'rpi', 'iso']);
});

test("kiln build --help lists the registry's formats per arch", () => {
  const help = execFileSync(process.execPath, ['--import', 'tsx', join(REPO, 'builder/cli.ts'), 'build', '--help'], { encoding: 'utf8' });
  const line = help.split('\n').find((l) => l.trimStart().startsWith('--format'))!;
  assert.ok(line.includes(formatsByArch()), line);
  for (const f of FORMATS) assert.ok(line.includes(f), `${f} missing from: ${line}`);
});

test('a format gets only the boot files it declared', () => {
  const files: BootFiles = { rootImage: 'r', vmlinuz: 'v', initrd: 'i', uki: 'u', cmdline: 'c', esp: 'e', systemdBoot: 's', disk: 'd' };
  for (const f of OUTPUT_FORMATS) assert.equal(Object.keys(pickNeeds(files, f.needs)).sort(), [...f.needs].sort());
  assert.equal(pickNeeds(files, FORMAT_TABLE.rpi.needs), { rootImage: 'r', vmlinuz: 'v', initrd: 'i' });
});

test('rpi refuses a profile without the generic kernel, saying which profile to use', () => {
  assert.throws(() => FORMAT_TABLE.rpi.checkProfile!(loadProfile()), /--format rpi needs Debian's generic arm64 kernel \(the cloud one has no Raspberry Pi drivers\); use --profile images\/rpi\.yaml/);
  FORMAT_TABLE.rpi.checkProfile!(loadProfile(join(REPO, 'images/rpi.yaml')));
});

test('the disk formats write exactly the files they declare, from the disk they are given', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-fmt-'));
  try {
    const base = join(dir, 'kiln-1-x86_64');
    const disk = `${base}.raw`;
    const fd = openSync(disk, 'w');
    ftruncateSync(fd, 4 << 20);
    writeSync(fd, randomBytes(4096), 0, 4096, 1 << 20);
    closeSync(fd);
    const job = { arch: 'x86_64', version: '1', profile: loadProfile(), sourceDateEpoch: 0, base, work: dir, log: silentLogger, debTree: () => { throw new Error('not needed'); } } as FormatJob;
    for (const name of ['raw', 'qcow2', 'raw.zst'] as const) {
      const f = FORMAT_TABLE[name];
      const before = new Set(readdirSync(dir));
      await f.make(job, { disk } as BootFiles);
      const made = readdirSync(dir).filter((n) => !before.has(n));
      assert.equal(made, f.writes.map((w) => `kiln-1-x86_64${w.suffix}`).filter((n) => !before.has(n)), name);
      for (const w of f.writes) assert.ok(existsSync(`${base}${w.suffix}`), `${name}: ${w.suffix}`);
    }
    const back = execFileSync(tool('zstd'), ['-dc', `${base}.raw.zst`], { maxBuffer: 8 << 20 });
    assert.ok(back.equals(readFileSync(disk)));
    // raw keeps the pipeline's disk as <base>.raw; a disk anywhere else is a pipeline bug.
    const err = await FORMAT_TABLE.raw.make(job, { disk: join(dir, 'elsewhere.raw') } as BootFiles).then(() => undefined, (e: Error) => e);
    assert.match(err?.message ?? '', /raw: the disk is at .*elsewhere\.raw, expected .*kiln-1-x86_64\.raw/);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test('checkFormats accepts what it can make and refuses the rest, saying why', () => {
  checkFormats(['raw', 'qcow2', 'raw.zst'], ['x86_64', 'arm64']);
  assert.throws(() => checkFormats(['vmdk'], ['x86_64']), /unknown format 'vmdk' \(formats per arch: x86_64: /);
  for (const [f, info] of Object.entries(FORMAT_TABLE)) {
    const missing = ARCHES.filter((a) => !info.arches.includes(a));
    if (!missing.length) continue;
    assert.ok(info.why, `${f} must say why it is not made for ${missing.join(', ')}`);
    assert.throws(() => checkFormats([f], missing), new RegExp(`format '${f.replace('.', '\\.')}' cannot be made for ${missing[0]}: `));
  }
});

test('raw.zst: the same raw gives the same bytes, and plain zstd -d restores it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-zst-'));
  try {
    // A sparse "disk": 32 MiB, some data at the start and near the end.
    const raw = join(dir, 'd.raw');
    const fd = openSync(raw, 'w');
    ftruncateSync(fd, 32 << 20);
    const chunk = randomBytes(1 << 20);
    writeSync(fd, chunk, 0, chunk.length, 0);
    writeSync(fd, chunk, 0, chunk.length, 30 << 20); // a repeat 30 MiB away: --long finds it
    closeSync(fd);
    await compressZst(raw, join(dir, 'a.raw.zst'));
    await compressZst(raw, join(dir, 'b.raw.zst'));
    const a = readFileSync(join(dir, 'a.raw.zst'));
    assert.ok(a.equals(readFileSync(join(dir, 'b.raw.zst'))), 'two compressions differ');
    assert.ok(a.length < 1.2 * (1 << 20), `the repeated MiB should compress away, got ${a.length} bytes`);
    const back = execFileSync(tool('zstd'), ['-dc', join(dir, 'a.raw.zst')], { maxBuffer: 64 << 20 });
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    assert.is(sha(back), sha(readFileSync(raw)));
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

test.run();
