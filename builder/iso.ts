// The live + installer ISO: one hybrid ISO9660 image that boots from optical media and
// written raw to a USB stick. x86_64: GRUB for BIOS (El Torito, hybrid MBR) and UEFI.
// arm64 (UEFI only): systemd-boot in the El Torito EFI image, with the kernel beside it (it
// reads only its own FAT volume). Both hold the root image (loop-mounted by stage 1 in live
// mode) and what `kiln install` writes to a disk: the ESP image and a manifest.
// Same inputs and SOURCE_DATE_EPOCH give the same bytes: every date, the volume uuid GRUB
// searches for and the FAT serial derive from them.
import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, statSync, utimesSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createGzip } from 'node:zlib';
import { createReadStream, createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { $ } from 'zx';
import { ARCH, type Arch } from './arch.ts';
import type { IsoManifest } from '../init/disk/layout.ts';
import { espDirectories, type EspFile } from './esp.ts';
import { hostFile, tool } from './tools.ts';

export interface IsoSpec {
  arch: Arch;
  out: string;
  version: string;
  kernel: string;
  initrd: string;
  rootImage: string;
  espImage: string;
  espMiB: number;
  rootMiB: number;
  minDataMiB: number;
  /** Kernel command line shared by every entry (console, quiet...). */
  cmdline: string;
  /** Appended to every entry as kiln.config_url= when set. */
  configUrl?: string;
  /** arm64: systemd-boot (systemd-bootaa64.efi), the ISO's UEFI boot loader. */
  systemdBoot?: string;
  sourceDateEpoch: number;
  /** Scratch folder for the ISO's file tree. */
  work: string;
}

/** ISO9660 volume id (d-characters, at most 32): stage 1 finds the medium by it. */
export function isoLabel(version: string): string {
  return `KILN_${version.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`.slice(0, 32);
}

/** What every boot entry passes: the shared command line, the medium's label, the config URL. */
function liveCmdline(o: { label: string; cmdline: string; configUrl?: string }): string {
  return `${o.cmdline} kiln.live=${o.label}${o.configUrl ? ` kiln.config_url=${o.configUrl}` : ''}`.trim();
}

export function grubConfig(o: { version: string; label: string; cmdline: string; configUrl?: string }): string {
  const base = liveCmdline(o);
  if (/["\\$;{}]/.test(base)) throw new Error(`ISO kernel command line '${base}' has characters GRUB would interpret`);
  const entry = (title: string, extra: string) =>
    `menuentry "${title}" {\n  linux /boot/vmlinuz ${base}${extra}\n  initrd /boot/initrd.img\n}\n`;
  return [
    '# kiln live + installer. The install entry erases the disk named in the config',
    '# (kiln.install.device), or the only disk there is.',
    'serial --unit=0 --speed=115200',
    'terminal_input serial console',
    'terminal_output serial console',
    'set timeout=3',
    'set default=0',
    entry(`kiln ${o.version} (live)`, ''),
    entry(`kiln ${o.version}: install to disk (erases it)`, ' kiln.install'),
  ].join('\n');
}

/** Where the arm64 ISO's EFI image keeps the kernel and initrd (systemd-boot reads only that FAT volume). */
const SDBOOT_KERNEL = 'kiln/linux';
const SDBOOT_INITRD = 'kiln/initrd';

/** systemd-boot's loader.conf and boot loader entries (arm64 ISO), path on the FAT image -> text. */
export function loaderEntries(o: { version: string; label: string; cmdline: string; configUrl?: string }): Record<string, string> {
  const base = liveCmdline(o);
  if (/[\x00-\x1f]/.test(base)) throw new Error(`ISO kernel command line '${base}' has control characters`);
  // sort-key: systemd-boot would otherwise list the entries by file name, install first.
  const entry = (title: string, key: string, extra: string) =>
    `title ${title}\nsort-key ${key}\nlinux /${SDBOOT_KERNEL}\ninitrd /${SDBOOT_INITRD}\noptions ${base}${extra}\n`;
  return {
    'loader/loader.conf': 'timeout 3\ndefault kiln-live.conf\n',
    'loader/entries/kiln-live.conf': entry(`kiln ${o.version} (live)`, 'kiln-1', ''),
    'loader/entries/kiln-install.conf': entry(`kiln ${o.version}: install to disk (erases it)`, 'kiln-2', ' kiln.install'),
  };
}

/**
 * GRUB's name for an ISO9660 volume (what `search --fs-uuid` matches) is its modification
 * date; xorriso takes the same date as YYYYMMDDhhmmsscc. Both from SOURCE_DATE_EPOCH, in UTC.
 */
export function isoVolumeDate(sourceDateEpoch: number): { grubUuid: string; xorriso: string } {
  const d = new Date(sourceDateEpoch * 1000);
  if (!Number.isFinite(d.getTime()) || d.getUTCFullYear() < 1970 || d.getUTCFullYear() > 9999) throw new Error(`SOURCE_DATE_EPOCH ${sourceDateEpoch} is not a usable volume date`);
  const f = [d.getUTCFullYear(), d.getUTCMonth() + 1, d.getUTCDate(), d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds(), 0]
    .map((n, i) => String(n).padStart(i ? 2 : 4, '0'));
  return { grubUuid: f.join('-'), xorriso: f.join('') };
}

// Built into GRUB's images rather than read from the medium: fewer reads from a slow CD and
// nothing to go missing. all_video gives Linux the UEFI framebuffer for console=tty0.
const GRUB_MODULES = ['iso9660', 'part_gpt', 'part_msdos', 'search', 'normal', 'configfile', 'linux', 'boot', 'serial', 'terminal', 'echo', 'test', 'halt', 'reboot'];
const GRUB_PC_MODULES = ['biosdisk', ...GRUB_MODULES];
const GRUB_EFI_MODULES = [...GRUB_MODULES, 'all_video'];

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Builds the ISO at spec.out and returns the manifest written into it. */
export async function buildIso(spec: IsoSpec): Promise<IsoManifest> {
  // Fail with the package name before any work.
  const xorriso = tool('xorriso'); tool('mformat'); tool('mmd'); tool('mcopy');
  if (spec.arch === 'x86_64') { tool('grub-mkimage'); hostFile('grubPc'); hostFile('grubEfi'); }
  else if (!spec.systemdBoot) throw new Error(`the ${spec.arch} ISO boots with systemd-boot: IsoSpec.systemdBoot is missing`);
  const label = isoLabel(spec.version);
  const date = isoVolumeDate(spec.sourceDateEpoch);
  mkdirSync(spec.work, { recursive: true });
  const tree = mkdtempSync(join(spec.work, 'iso-'));
  const scratch = mkdtempSync(join(spec.work, 'iso-boot-'));
  try {
    mkdirSync(join(tree, 'boot'), { recursive: true });
    mkdirSync(join(tree, 'kiln'), { recursive: true });
    copyFileSync(spec.rootImage, join(tree, 'kiln/root.img'));
    // The ESP image is mostly empty FAT: gzip (which Node reads everywhere) shrinks it to its files.
    await pipeline(createReadStream(spec.espImage), createGzip({ level: 6 }), createWriteStream(join(tree, 'kiln/esp.img.gz')));
    // The installer hashes what it reads from the medium against these: a bad burn or a
    // failing stick stops the install before the new disk gets a partition table.
    const manifest: IsoManifest = {
      version: spec.version, arch: spec.arch, espMiB: spec.espMiB, rootMiB: spec.rootMiB, minDataMiB: spec.minDataMiB,
      root: 'kiln/root.img', rootBytes: statSync(spec.rootImage).size, rootSha256: await sha256File(spec.rootImage),
      esp: 'kiln/esp.img.gz', espBytes: statSync(spec.espImage).size, espSha256: await sha256File(spec.espImage),
    };
    writeFileSync(join(tree, 'kiln/install.json'), JSON.stringify(manifest, null, 2) + '\n');
    const menu = { version: spec.version, label, cmdline: spec.cmdline, configUrl: spec.configUrl };
    const serial = createHash('sha256').update(`${spec.version}:${spec.arch}:${spec.sourceDateEpoch}:efi`).digest('hex').slice(0, 8);
    let boot: string[];
    if (spec.arch === 'x86_64') {
      mkdirSync(join(tree, 'boot/grub/i386-pc'), { recursive: true });
      copyFileSync(spec.kernel, join(tree, 'boot/vmlinuz'));
      copyFileSync(spec.initrd, join(tree, 'boot/initrd.img'));
      writeFileSync(join(tree, 'boot/grub/grub.cfg'), grubConfig(menu));
      // Both GRUB images find the medium by its volume date (there is no other fixed name for
      // "the disc I booted from" under UEFI), then read grub.cfg from it.
      const loadCfg = join(scratch, 'load.cfg');
      writeFileSync(loadCfg, `search --no-floppy --fs-uuid --set=root ${date.grubUuid}\nset prefix=($root)/boot/grub\n`);
      const mkimage = tool('grub-mkimage');
      const pcDir = join(hostFile('grubPc'), '..');
      const efiDir = join(hostFile('grubEfi'), '..');
      await $({ quiet: true })`${mkimage} -d ${pcDir} -O i386-pc-eltorito -p /boot/grub -c ${loadCfg} -o ${join(tree, 'boot/grub/i386-pc/eltorito.img')} ${GRUB_PC_MODULES}`;
      const grubEfi = join(scratch, 'bootx64.efi');
      await $({ quiet: true })`${mkimage} -d ${efiDir} -O x86_64-efi -p /boot/grub -c ${loadCfg} -o ${grubEfi} ${GRUB_EFI_MODULES}`;
      await bootFat(join(tree, 'boot/efi.img'), [{ path: ARCH.x86_64.efiFallback, src: grubEfi }], serial, spec.sourceDateEpoch, scratch);
      boot = [
        '-b', 'boot/grub/i386-pc/eltorito.img', '-no-emul-boot', '-boot-load-size', '4', '-boot-info-table', '--grub2-boot-info',
        '--grub2-mbr', hostFile('grubPc'),
        '-eltorito-alt-boot', '-e', 'boot/efi.img', '-no-emul-boot',
      ];
    } else {
      await bootFat(join(tree, 'boot/efi.img'), [
        { path: ARCH[spec.arch].efiFallback, src: spec.systemdBoot! },
        { path: SDBOOT_KERNEL, src: spec.kernel },
        { path: SDBOOT_INITRD, src: spec.initrd },
        ...Object.entries(loaderEntries(menu)).map(([path, text]) => ({ path, data: Buffer.from(text) })),
      ], serial, spec.sourceDateEpoch, scratch);
      // Past 32 MiB (a generic kernel) the El Torito catalog cannot hold the image's size and
      // xorriso writes 0, which EDK2 firmware reads as "to the end of the disc" (AAVMF boots it).
      // Written to a disk, the GPT partition gives the size.
      boot = ['-e', 'boot/efi.img', '-no-emul-boot'];
    }
    stampTree(tree, spec.sourceDateEpoch);
    rmSync(spec.out, { force: true });
    // -efi-boot-part: the EFI image is also a GPT EFI system partition, for UEFI firmware
    // reading the ISO written to a disk; --protective-msdos-label: the MBR beside that GPT.
    const env = { ...process.env, SOURCE_DATE_EPOCH: String(spec.sourceDateEpoch), TZ: 'UTC' };
    const r = await $({ quiet: true, nothrow: true, env })`${xorriso} -as mkisofs -o ${spec.out} -V ${label} --modification-date=${date.xorriso} -r -c boot/boot.catalog ${boot} -efi-boot-part --efi-boot-image --protective-msdos-label ${tree} -- -volume_date all_file_dates ${`=${spec.sourceDateEpoch}`}`;
    if (r.exitCode !== 0) throw new Error(`xorriso failed: ${r.stderr.trim().split('\n').slice(-3).join(' / ')}`);
    checkIso(spec.out, label);
    return manifest;
  } finally {
    rmSync(tree, { recursive: true, force: true });
    rmSync(scratch, { recursive: true, force: true });
  }
}

/**
 * The El Torito EFI image: a FAT volume just big enough for its files, with a serial from the
 * inputs (mformat would pick a random one) and every date SOURCE_DATE_EPOCH (mtools 4.0.32+).
 */
async function bootFat(out: string, files: EspFile[], serial: string, sde: number, scratch: string): Promise<void> {
  const MiB = 1024 * 1024;
  const bytes = files.reduce((n, f) => n + Math.ceil((f.data?.length ?? statSync(f.src!).size) / 4096) * 4096, 0);
  // 1 MiB for the FATs, directories and cluster slack; whole MiB so the geometry (64 heads x 32 sectors) divides it.
  const sectors = Math.ceil((bytes + MiB) / MiB) * 2048;
  const env = { ...process.env, MTOOLS_SKIP_CHECK: '1', SOURCE_DATE_EPOCH: String(Math.max(sde, 315532800)), TZ: 'UTC' };
  const sh = $({ quiet: true, env });
  rmSync(out, { force: true });
  await sh`${tool('mformat')} -C -T ${sectors} -h 64 -s 32 -N ${serial} -v KILNBOOT -i ${out} ::`;
  const dirs = espDirectories(files.map((f) => f.path));
  if (dirs.length) await sh`${tool('mmd')} -i ${out} ${dirs.map((d) => `::/${d}`)}`;
  const tmp = mkdtempSync(join(scratch, 'fat-'));
  try {
    for (const [i, f] of files.entries()) {
      let src = f.src!;
      if (f.data) { src = join(tmp, String(i)); writeFileSync(src, f.data); }
      await sh`${tool('mcopy')} -i ${out} ${src} ${`::/${f.path}`}`;
    }
  } finally { rmSync(tmp, { recursive: true, force: true }); }
}

function stampTree(dir: string, sde: number) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) stampTree(p, sde);
    utimesSync(p, sde, sde);
  }
  utimesSync(dir, sde, sde);
}

/** The volume id at 32 KiB + 40 and the MBR boot signature: a cheap check that the result is a hybrid ISO. */
export function checkIso(file: string, label: string) {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(34 * 1024);
    readSync(fd, b, 0, b.length, 0);
    const id = b.subarray(32768 + 40, 32768 + 72).toString('latin1').trim();
    if (b.subarray(32769, 32774).toString('latin1') !== 'CD001' || id !== label) throw new Error(`${file}: not an ISO9660 image labelled ${label} (found '${id}')`);
    if (b[510] !== 0x55 || b[511] !== 0xaa) throw new Error(`${file}: no MBR (not hybrid: it would not boot from a USB stick)`);
  } finally { closeSync(fd); }
}
