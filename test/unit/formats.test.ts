// The per-arch format table behind `kiln build --format`.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ARCHES } from '../../builder/arch.ts';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeSync, ftruncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkFormats, compressZst, FORMAT_TABLE, formatsByArch } from '../../builder/formats.ts';
import { tool } from '../../builder/tools.ts';
import { FORMATS } from '../../builder/profile.ts';

test('every profile format has a row, and the cloud formats exist for every arch', () => {
  assert.equal(Object.keys(FORMAT_TABLE).sort(), [...FORMATS].sort());
  for (const f of ['raw', 'qcow2', 'raw.zst'] as const) assert.equal([...FORMAT_TABLE[f].arches], [...ARCHES]);
  assert.match(formatsByArch(), /x86_64: raw, qcow2, raw\.zst/);
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
