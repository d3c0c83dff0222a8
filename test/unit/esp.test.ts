import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildEsp, espDirectories, type EspFile } from '../../builder/esp.ts';

const dir = mkdtempSync(join(tmpdir(), 'kiln-esp-test-'));
const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');
const env = { ...process.env, MTOOLS_SKIP_CHECK: '1', TZ: 'UTC', LC_ALL: 'C' };
const SDE = 1700000000; // 2023-11-14 22:13:20 UTC

const boot = join(dir, 'boot.efi');
writeFileSync(boot, Buffer.alloc(70000, 0x5a));
const files = (): EspFile[] => [
  { path: 'loader/loader.conf', data: Buffer.from('timeout 0\n') },
  { path: 'EFI/BOOT/BOOTX64.EFI', src: boot },
  { path: 'EFI/Linux/kiln-a+3.efi', data: Buffer.from('uki bytes') },
  { path: 'loader/entries/readme.txt', data: Buffer.from('x') },
];

test('directories are derived parents-first in sorted order', () => {
  assert.equal(espDirectories(files().map((f) => f.path)), ['EFI', 'EFI/BOOT', 'EFI/Linux', 'loader', 'loader/entries']);
});

test('two builds with the same SOURCE_DATE_EPOCH are byte-identical, even if the sources are touched', async () => {
  const a = await buildEsp({ out: join(dir, 'a.img'), sizeMiB: 64, label: 'ESP', volumeId: 'c0ffee01', files: files(), sourceDateEpoch: SDE });
  utimesSync(boot, new Date(), new Date(Date.now() - 86400e3)); // a different source mtime must not leak in
  const b = await buildEsp({ out: join(dir, 'b.img'), sizeMiB: 64, label: 'ESP', volumeId: 'c0ffee01', files: files().reverse(), sourceDateEpoch: SDE });
  assert.is(sha(a), sha(b));
  const c = await buildEsp({ out: join(dir, 'c.img'), sizeMiB: 64, label: 'ESP', volumeId: 'c0ffee01', files: files(), sourceDateEpoch: SDE + 86400 });
  assert.is.not(sha(c), sha(a), 'the timestamp must reach the image');
});

test('mtools sees the label, volume id, files and contents', () => {
  const img = join(dir, 'a.img');
  const top = execFileSync('mdir', ['-i', img, '::/'], { env }).toString();
  assert.match(top, /Volume in drive : is ESP/);
  assert.match(top, /Volume Serial Number is C0FF-EE01/);
  assert.match(top, /EFI\s+<DIR>\s+2023-11-14\s+22:13/);
  const boots = execFileSync('mdir', ['-i', img, '::/EFI/BOOT'], { env }).toString();
  assert.match(boots, /BOOTX64\s+EFI\s+70\s?000 2023-11-14\s+22:13/);
  const listing = execFileSync('mdir', ['-/', '-b', '-i', img, '::/'], { env }).toString().trim().split('\n').sort();
  assert.equal(listing, ['::/EFI/', '::/EFI/BOOT/', '::/EFI/BOOT/BOOTX64.EFI', '::/EFI/Linux/', '::/EFI/Linux/kiln-a+3.efi',
    '::/loader/', '::/loader/entries/', '::/loader/entries/readme.txt', '::/loader/loader.conf']);
  assert.is(execFileSync('mtype', ['-i', img, '::/loader/loader.conf'], { env }).toString(), 'timeout 0\n');
  assert.is(execFileSync('mtype', ['-i', img, '::/EFI/Linux/kiln-a+3.efi'], { env }).toString(), 'uki bytes');
  assert.ok(execFileSync('mtype', ['-i', img, '::/EFI/BOOT/BOOTX64.EFI'], { env }).equals(readFileSync(boot)));
  const fsck = execFileSync('fsck.vfat', ['-n', img]).toString();
  assert.match(fsck, /files, /);
});

test('bad descriptions are refused', async () => {
  const out = join(dir, 'x.img');
  for (const [spec, re] of [
    [{ out, sizeMiB: 64, label: 'FAR TOO LONG LABEL', files: [] }, /label/],
    [{ out, sizeMiB: 16, label: 'ESP', files: [] }, /too small for FAT32/],
    [{ out, sizeMiB: 64, label: 'ESP', files: [{ path: '../x', data: Buffer.alloc(1) }] }, /not a clean relative path/],
    [{ out, sizeMiB: 64, label: 'ESP', files: [{ path: 'a', data: Buffer.alloc(1) }, { path: 'A', data: Buffer.alloc(1) }] }, /listed twice/],
    [{ out, sizeMiB: 64, label: 'ESP', files: [{ path: 'a' }] }, /exactly one of src or data/],
    [{ out, sizeMiB: 64, label: 'ESP', files: [{ path: 'a', src: join(dir, 'missing') }] }, /building ESP image/],
  ] as const) {
    let err: Error | undefined;
    try { await buildEsp(spec as any); } catch (e) { err = e as Error; }
    assert.ok(err, `accepted ${JSON.stringify(spec)}`);
    assert.match(err!.message, re);
  }
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
