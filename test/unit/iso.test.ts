// The ISO builder (builder/iso.ts) on tiny stand-in files: two builds of the same inputs are
// byte-identical, and the pieces that must agree inside the image do. No kernel boots here
// (test/e2e/iso-*.test.ts boot real ISOs).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Arch } from '../../builder/arch.ts';
import { buildIso, isoLabel, isoVolumeDate } from '../../builder/iso.ts';
import { findTool } from '../../builder/tools.ts';

const SDE = 1700000000; // 2023-11-14 22:13:20 UTC
const dir = mkdtempSync(join(tmpdir(), 'kiln-iso-test-'));
const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');
const env = { ...process.env, MTOOLS_SKIP_CHECK: '1', TZ: 'UTC', LC_ALL: 'C' };

// Stand-ins with recognisable, fixed contents.
const input = (name: string, bytes: number, fill: number) => { const p = join(dir, name); writeFileSync(p, Buffer.alloc(bytes, fill)); return p; };
const files = {
  kernel: input('vmlinuz', 300_000, 0x4b), initrd: input('initrd', 50_000, 0x49), rootImage: input('root.img', 400_000, 0x52),
  espImage: input('esp.img', 1 << 20, 0),
};

const haveGrub = !!(findTool('xorriso') && findTool('mformat') && findTool('mcopy')) && !!findTool('grub-mkimage') && existsSync('/usr/lib/grub/i386-pc/boot_hybrid.img') && existsSync('/usr/lib/grub/x86_64-efi/kernel.img');

async function iso(arch: Arch, name: string, sde = SDE): Promise<string> {
  const out = join(dir, `${name}.iso`);
  await buildIso({
    arch, out, version: '0.1.0-test', ...files, espMiB: 64, rootMiB: 64, minDataMiB: 64,
    cmdline: 'console=tty0 console=ttyS0 quiet', sourceDateEpoch: sde, work: join(dir, `work-${name}`),
  });
  return out;
}

function extract(isoFile: string, path: string, dest: string): string {
  execFileSync('xorriso', ['-osirrox', 'on', '-indev', isoFile, '-extract', path, dest], { stdio: 'ignore' });
  return dest;
}

/** The primary volume descriptor's modification date (YYYYMMDDhhmmsscc). */
const pvdModified = (isoFile: string) => readFileSync(isoFile).subarray(32768 + 830, 32768 + 846).toString('latin1');

test('volume date: GRUB uuid and xorriso date from SOURCE_DATE_EPOCH, in UTC', () => {
  assert.equal(isoVolumeDate(SDE), { grubUuid: '2023-11-14-22-13-20-00', xorriso: '2023111422132000' });
  assert.equal(isoVolumeDate(0).xorriso, '1970010100000000');
});

(haveGrub ? test : test.skip)('x86_64: two builds are byte-identical; GRUB searches for the volume it is on', async () => {
  const a = await iso('x86_64', 'x86-a');
  utimesSync(files.kernel, new Date(), new Date()); // the inputs' own dates must not leak in
  await new Promise((r) => setTimeout(r, 1100)); // and neither must the clock
  const b = await iso('x86_64', 'x86-b');
  assert.is(sha(a), sha(b), 'two builds of the same inputs differ');
  const c = await iso('x86_64', 'x86-c', SDE + 86400);
  assert.is.not(sha(c), sha(a), 'SOURCE_DATE_EPOCH must reach the image');
  // The volume's date is the uuid both GRUB images look for (the EFI one is stored uncompressed).
  assert.is(pvdModified(a), isoVolumeDate(SDE).xorriso);
  const efiImg = extract(a, '/boot/efi.img', join(dir, 'x86-efi.img'));
  execFileSync('mcopy', ['-o', '-i', efiImg, '::/EFI/BOOT/BOOTX64.EFI', join(dir, 'bootx64.efi')], { env });
  assert.ok(readFileSync(join(dir, 'bootx64.efi')).includes(`--fs-uuid --set=root ${isoVolumeDate(SDE).grubUuid}`));
  const report = execFileSync('xorriso', ['-indev', a, '-report_el_torito', 'plain', '-report_system_area', 'plain'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  assert.match(report, /El Torito boot img :\s+1\s+BIOS/);
  assert.match(report, /El Torito boot img :\s+2\s+UEFI/);
  assert.match(report, /grub2-mbr/);
  assert.match(report, /GPT partname local :\s+\d+\s+EFI boot partition/);
  const grubCfg = readFileSync(extract(a, '/boot/grub/grub.cfg', join(dir, 'grub.cfg')), 'utf8');
  assert.match(grubCfg, new RegExp(`kiln\\.live=${isoLabel('0.1.0-test')}`));
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
