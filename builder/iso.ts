// The live + installer ISO (x86_64): a hybrid ISO9660 image made by grub-mkrescue, so one
// file boots under BIOS and UEFI, from optical media or written raw to a USB stick.
// It holds GRUB, the kernel and stage-1 initramfs, the root image (loop-mounted by stage 1
// in live mode) and what `kiln install` writes to a disk: the ESP image and a manifest.
import { closeSync, copyFileSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, statSync, utimesSync, writeFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createGzip } from 'node:zlib';
import { createReadStream, createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { $ } from 'zx';
import type { Arch } from './arch.ts';
import { hostFile, tool } from './tools.ts';

/** What the installer reads from the medium: /kiln/install.json. */
export interface IsoManifest {
  version: string;
  arch: Arch;
  espMiB: number;
  rootMiB: number;
  /** Smallest data partition the installer accepts. */
  minDataMiB: number;
  /** Paths on the medium. */
  root: string;
  rootBytes: number;
  esp: string;
  espBytes: number;
}

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
  sourceDateEpoch: number;
  /** Scratch folder for the ISO's file tree. */
  work: string;
}

/** ISO9660 volume id (d-characters, at most 32): stage 1 finds the medium by it. */
export function isoLabel(version: string): string {
  return `KILN_${version.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`.slice(0, 32);
}

export function grubConfig(o: { version: string; label: string; cmdline: string; configUrl?: string }): string {
  const base = `${o.cmdline} kiln.live=${o.label}${o.configUrl ? ` kiln.config_url=${o.configUrl}` : ''}`.trim();
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

/** Builds the ISO at spec.out and returns the manifest written into it. */
export async function buildIso(spec: IsoSpec): Promise<IsoManifest> {
  if (spec.arch !== 'x86_64') throw new Error(`--format iso: only x86_64 is supported (arm64 needs GRUB's arm64 EFI image and has no BIOS; use the raw/qcow2 image)`);
  // Fail with the package name before any work.
  const mkrescue = tool('grub-mkrescue');
  tool('xorriso'); tool('mformat'); hostFile('grubPc'); hostFile('grubEfi');
  const label = isoLabel(spec.version);
  mkdirSync(spec.work, { recursive: true });
  const tree = mkdtempSync(join(spec.work, 'iso-'));
  try {
    mkdirSync(join(tree, 'boot/grub'), { recursive: true });
    mkdirSync(join(tree, 'kiln'), { recursive: true });
    copyFileSync(spec.kernel, join(tree, 'boot/vmlinuz'));
    copyFileSync(spec.initrd, join(tree, 'boot/initrd.img'));
    copyFileSync(spec.rootImage, join(tree, 'kiln/root.img'));
    // The ESP image is mostly empty FAT: gzip (which Node reads everywhere) shrinks it to its files.
    await pipeline(createReadStream(spec.espImage), createGzip({ level: 6 }), createWriteStream(join(tree, 'kiln/esp.img.gz')));
    const manifest: IsoManifest = {
      version: spec.version, arch: spec.arch, espMiB: spec.espMiB, rootMiB: spec.rootMiB, minDataMiB: spec.minDataMiB,
      root: 'kiln/root.img', rootBytes: statSync(spec.rootImage).size, esp: 'kiln/esp.img.gz', espBytes: statSync(spec.espImage).size,
    };
    writeFileSync(join(tree, 'kiln/install.json'), JSON.stringify(manifest, null, 2) + '\n');
    writeFileSync(join(tree, 'boot/grub/grub.cfg'), grubConfig({ version: spec.version, label, cmdline: spec.cmdline, configUrl: spec.configUrl }));
    stampTree(tree, spec.sourceDateEpoch);
    rmSync(spec.out, { force: true });
    // Every file date is SOURCE_DATE_EPOCH (grub-mkrescue copies GRUB's modules at "now").
    // Not reproducible, from grub-mkrescue itself: the volume date it embeds in GRUB's images
    // to find the medium (search --fs-uuid) is the current time, and mformat gives its EFI
    // image a random serial; so two builds differ in a few dozen bytes, never in the files.
    const env = { ...process.env, SOURCE_DATE_EPOCH: String(spec.sourceDateEpoch), TZ: 'UTC', MTOOLS_SKIP_CHECK: '1' };
    const r = await $({ quiet: true, nothrow: true, env })`${mkrescue} -o ${spec.out} ${tree} -- -volid ${label} -volume_date all_file_dates ${`=${spec.sourceDateEpoch}`}`;
    if (r.exitCode !== 0) throw new Error(`grub-mkrescue failed: ${r.stderr.trim().split('\n').slice(-3).join(' / ')}`);
    checkIso(spec.out, label);
    return manifest;
  } finally {
    rmSync(tree, { recursive: true, force: true });
  }
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
