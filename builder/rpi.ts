// The Raspberry Pi 3/4 SD card image (arm64): MBR with a FAT32 boot partition (VideoCore
// firmware, config.txt, U-Boot, boot.scr, uboot.env, device trees, each slot's kernel and
// stage-1 initramfs), then kiln-root-a, kiln-root-b and kiln-data. The boot script does the
// A/B choice with tries counters in uboot.env (docs/design.md, "Raspberry Pi").
import { createHash } from 'node:crypto';
import { closeSync, existsSync, ftruncateSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { $ } from 'zx';
import { copyInto, makeDataFs } from './disk.ts';
import { buildEsp, type EspFile } from './esp.ts';
import { buildMbr, MBR_TYPES, mbrPartUuid } from '../init/disk/mbr.ts';
import { scriptImage } from './formats/uimage.ts';
import { tool } from './tools.ts';

const MiB = 1024 * 1024;
export const BOOT_SCRIPT = new URL('./rpi/boot.cmd', import.meta.url).pathname;
/** Tries a slot gets when staged, and again each time the node blesses it. */
export const RPI_TRIES = 3;
/** rpi_arm64 serves both the Pi 3 and the Pi 4 in 64-bit mode. */
export const UBOOT_FLAVOUR = 'rpi_arm64';
/** VideoCore boot files: bootcode.bin (Pi 3; the Pi 4 has it in EEPROM), start/fixup (Pi 3), start4/fixup4 (Pi 4). */
export const FIRMWARE_FILES = ['bootcode.bin', 'start.elf', 'fixup.dat', 'start4.elf', 'fixup4.dat'];

// upstream_kernel=1: the firmware picks the mainline device tree names (bcm2837-rpi-3-b.dtb),
// which is what Debian's kernel ships; enable_uart=1 fixes the core clock the mini-UART needs.
export const CONFIG_TXT = `# kiln: the firmware starts U-Boot in 64-bit mode; U-Boot runs boot.scr (A/B slots).
arm_64bit=1
kernel=u-boot.bin
enable_uart=1
upstream_kernel=1
`;

// No uboot.env on a fresh card: U-Boot replaces its WHOLE default environment (bootcmd
// included) with the file's, so a file with only our variables stops it at its prompt. Without
// one it uses its defaults, the script's defaults give slot a its tries, and the first
// saveenv writes the complete file.

/** The kernel command line the boot script completes (slot and partitions are added at boot). */
export function rpiCmdline(extra: string): string {
  // The last console is /dev/console: the mini-UART (ttyS1) is the GPIO header's serial port
  // on both the Pi 3 and the Pi 4 with the mainline device trees; ttyAMA0 gets kernel messages.
  return `console=ttyAMA0,115200 console=ttyS1,115200 ${extra}`.trim();
}

/** boot.cmd with its placeholders filled in. */
export function bootScriptText(cmdline: string, tries = RPI_TRIES): string {
  if (/["$\\;]/.test(cmdline)) throw new Error(`kernel command line '${cmdline}' must not contain quotes, $, \\ or ; (it goes into a U-Boot script)`);
  return readFileSync(BOOT_SCRIPT, 'utf8').replaceAll('@TRIES@', String(tries)).replaceAll('@CMDLINE@', cmdline);
}

export interface RpiPlan { espMiB: number; rootMiB: number; dataMiB: number }

/** Partitions in 512-byte sectors; the image size is a power of two (QEMU's SD card model insists, real cards are too). */
export function rpiLayout(plan: RpiPlan) {
  const wanted = (1 + plan.espMiB + 2 * plan.rootMiB + plan.dataMiB) * MiB;
  let size = MiB;
  while (size < wanted) size *= 2;
  const s = (mib: number) => mib * (MiB / 512);
  const boot = { startLba: s(1), sectors: s(plan.espMiB) };
  const rootA = { startLba: boot.startLba + boot.sectors, sectors: s(plan.rootMiB) };
  const rootB = { startLba: rootA.startLba + rootA.sectors, sectors: s(plan.rootMiB) };
  const dataStart = rootB.startLba + rootB.sectors;
  const data = { startLba: dataStart, sectors: size / 512 - dataStart };
  return { size, boot, rootA, rootB, data };
}

export interface RpiInputs {
  out: string;
  work: string;
  /** Debian kernel: the Image (booti wants it uncompressed) and the package tree for the DTBs. */
  vmlinuz: string;
  initrd: string;
  rootImage: string;
  firmwareDir: string;
  ubootDir: string;
  plan: RpiPlan;
  cmdline: string;
  seed: string;
  sourceDateEpoch: number;
}

/** Device trees of the Pi 3/4 family from the kernel package (usr/lib/linux-image-<v>/broadcom). */
export function piDeviceTrees(vmlinuz: string): string[] {
  const tree = dirname(dirname(vmlinuz));
  const lib = join(tree, 'usr/lib');
  const dir = readdirSync(lib).filter((d) => d.startsWith('linux-image-')).map((d) => join(lib, d, 'broadcom')).find(existsSync);
  if (!dir) throw new Error(`${tree} has no usr/lib/linux-image-*/broadcom: the Pi needs Debian's generic arm64 kernel (kernel.flavour: generic)`);
  const dtbs = readdirSync(dir).filter((f) => /^bcm(2711|2837)-rpi-.*\.dtb$/.test(f)).sort();
  if (!dtbs.length) throw new Error(`${dir} has no Raspberry Pi device trees`);
  return dtbs.map((f) => join(dir, f));
}

export function diskSignature(seed: string): number {
  return createHash('sha256').update(`mbr:${seed}`).digest().readUInt32LE(0);
}

export async function buildRpiImage(o: RpiInputs): Promise<{ img: string; xz: string; size: number }> {
  const fw = (f: string) => { const p = join(o.firmwareDir, f); if (!existsSync(p)) throw new Error(`raspi-firmware has no ${f} (${p})`); return p; };
  const uboot = join(o.ubootDir, UBOOT_FLAVOUR, 'u-boot.bin');
  if (!existsSync(uboot)) throw new Error(`u-boot-rpi has no ${UBOOT_FLAVOUR}/u-boot.bin`);
  const script = scriptImage(bootScriptText(o.cmdline), { name: 'kiln A/B', time: o.sourceDateEpoch });
  // The DTBs sit at the top (where the firmware looks) and under broadcom/ (U-Boot's fdtfile
  // names them either way depending on its version); they are small.
  const dtbs = piDeviceTrees(o.vmlinuz).flatMap((p): EspFile[] => {
    const name = p.split('/').pop()!;
    return [{ path: name, src: p }, { path: `broadcom/${name}`, src: p }];
  });
  const files: EspFile[] = [
    ...FIRMWARE_FILES.map((f) => ({ path: f, src: fw(f) })),
    { path: 'config.txt', data: Buffer.from(CONFIG_TXT) },
    { path: 'u-boot.bin', src: uboot },
    { path: 'boot.scr', data: script },
    ...dtbs,
    { path: 'a/vmlinuz', src: o.vmlinuz },
    { path: 'a/initrd', src: o.initrd },
  ];
  const layout = rpiLayout(o.plan);
  const bootImg = await buildEsp({ out: join(o.work, 'rpi-boot.img'), sizeMiB: o.plan.espMiB, label: 'KILN-BOOT', volumeId: createHash('sha256').update(`rpi-boot:${o.seed}`).digest('hex').slice(0, 8), files, sourceDateEpoch: o.sourceDateEpoch });
  const dataImg = await makeDataFs(join(o.work, 'rpi-data.img'), layout.data.sectors / 2048, o.seed, o.sourceDateEpoch);
  const sig = diskSignature(o.seed);
  const mbr = buildMbr({
    diskSignature: sig, partitions: [
      { type: MBR_TYPES.fat32Lba, bootable: true, ...layout.boot }, // distro_bootcmd looks at bootable partitions first
      { type: MBR_TYPES.linux, ...layout.rootA },
      { type: MBR_TYPES.linux, ...layout.rootB },
      { type: MBR_TYPES.linux, ...layout.data },
    ],
  });
  rmSync(o.out, { force: true });
  const fd = openSync(o.out, 'w');
  try {
    ftruncateSync(fd, layout.size);
    writeSync(fd, mbr, 0, 512, 0);
    const put = (file: string, p: { startLba: number; sectors: number }) => copyInto(fd, file, p.startLba * 512, p.sectors * 512);
    put(bootImg, layout.boot);
    put(o.rootImage, layout.rootA);
    put(dataImg, layout.data);
  } finally { closeSync(fd); }
  // xz's multi-threaded mode cuts fixed-size blocks whatever the thread count: same bytes on any host.
  const xz = `${o.out}.xz`;
  // -3: most of a card is empty space; higher levels cost minutes for a few percent.
  await $({ quiet: true })`${tool('xz')} -T0 -3 -k -f -q ${o.out}`;
  return { img: o.out, xz, size: layout.size };
}

export { mbrPartUuid };
