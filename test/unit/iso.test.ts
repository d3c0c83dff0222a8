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
import { buildIso, isoLabel, isoVolumeDate, loaderEntries } from '../../builder/iso.ts';
import { findTool } from '../../builder/tools.ts';

const SDE = 1700000000; // 2023-11-14 22:13:20 UTC
const dir = mkdtempSync(join(tmpdir(), 'kiln-iso-test-'));
const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');
const env = { ...process.env, MTOOLS_SKIP_CHECK: '1', TZ: 'UTC', LC_ALL: 'C' };

// Stand-ins with recognisable, fixed contents.
const input = (name: string, bytes: number, fill: number) => { const p = join(dir, name); writeFileSync(p, Buffer.alloc(bytes, fill)); return p; };
const files = {
  kernel: input('vmlinuz', 300_000, 0x4b), initrd: input('initrd', 50_000, 0x49), rootImage: input('root.img', 400_000, 0x52),
  espImage: input('esp.img', 1 << 20, 0), systemdBoot: input('systemd-bootaa64.efi', 90_000, 0x53),
};

const haveXorriso = !!(findTool('xorriso') && findTool('mformat') && findTool('mcopy'));
const haveGrub = haveXorriso && !!findTool('grub-mkimage') && existsSync('/usr/lib/grub/i386-pc/boot_hybrid.img') && existsSync('/usr/lib/grub/x86_64-efi/kernel.img');

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

test('systemd-boot entries: live is the default and listed first; install adds kiln.install', () => {
  const e = loaderEntries({ version: '0.1.0', label: 'KILN_0_1_0', cmdline: 'console=ttyAMA0 quiet', configUrl: 'http://h/c.yaml?a=1;b' });
  assert.match(e['loader/loader.conf']!, /^default kiln-live\.conf$/m);
  const live = e['loader/entries/kiln-live.conf']!, inst = e['loader/entries/kiln-install.conf']!;
  assert.match(live, /^options console=ttyAMA0 quiet kiln\.live=KILN_0_1_0 kiln\.config_url=http:\/\/h\/c\.yaml\?a=1;b$/m);
  assert.match(inst, /^options .* kiln\.live=KILN_0_1_0 .*kiln\.install$/m);
  assert.ok(/sort-key (\S+)/.exec(live)![1]! < /sort-key (\S+)/.exec(inst)![1]!);
  assert.throws(() => loaderEntries({ version: '1', label: 'K', cmdline: 'a\nlinux /x' }), /control characters/);
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

(haveXorriso ? test : test.skip)('arm64: two builds are byte-identical; the EFI image holds systemd-boot, the kernel and the entries', async () => {
  const a = await iso('arm64', 'arm-a');
  await new Promise((r) => setTimeout(r, 1100));
  const b = await iso('arm64', 'arm-b');
  assert.is(sha(a), sha(b), 'two builds of the same inputs differ');
  const report = execFileSync('xorriso', ['-indev', a, '-report_el_torito', 'plain', '-report_system_area', 'plain'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString();
  assert.match(report, /El Torito boot img :\s+1\s+UEFI/);
  assert.not.match(report, /BIOS/);
  assert.match(report, /GPT partname local :\s+\d+\s+EFI boot partition/);
  const efiImg = extract(a, '/boot/efi.img', join(dir, 'arm-efi.img'));
  const get = (p: string) => { const d = join(dir, 'got'); execFileSync('mcopy', ['-o', '-i', efiImg, `::/${p}`, d], { env }); return readFileSync(d); };
  assert.ok(get('EFI/BOOT/BOOTAA64.EFI').equals(readFileSync(files.systemdBoot)));
  assert.ok(get('kiln/linux').equals(readFileSync(files.kernel)));
  assert.ok(get('kiln/initrd').equals(readFileSync(files.initrd)));
  assert.match(get('loader/entries/kiln-live.conf').toString(), /^linux \/kiln\/linux$/m);
  assert.match(get('loader/entries/kiln-install.conf').toString(), new RegExp(`kiln\\.live=${isoLabel('0.1.0-test')} kiln\\.install$`, 'm'));
  const manifest = JSON.parse(readFileSync(extract(a, '/kiln/install.json', join(dir, 'install.json')), 'utf8'));
  assert.is(manifest.arch, 'arm64');
  // What the installer checks the medium against.
  assert.equal([manifest.rootBytes, manifest.rootSha256, manifest.espBytes, manifest.espSha256], [400_000, sha(files.rootImage), 1 << 20, sha(files.espImage)]);
  assert.is(sha(extract(a, '/kiln/root.img', join(dir, 'root-from-iso.img'))), manifest.rootSha256);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
