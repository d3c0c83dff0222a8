// `kiln run`: boot an image with the console on the terminal (Ctrl-A X quits QEMU).
import { execa } from 'execa';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { hostArch, type Arch } from './arch.ts';
import { qemuCommand } from './qemu.ts';

export function archOfImage(image: string): Arch | undefined {
  const m = /-(x86_64|arm64)\.(raw|qcow2|iso)$/.exec(basename(image));
  return m?.[1] as Arch | undefined;
}

export async function runImage(image: string, o: { arch?: Arch; memMiB?: number; keep?: boolean; sshPort?: number }): Promise<number> {
  if (/\.rpi\.img(\.xz)?$/.test(image)) {
    console.error('kiln run: Raspberry Pi cards boot through U-Boot on a raspi3b machine, not under UEFI; write the card and boot a Pi (QEMU: see test/e2e/pi-vm.ts)');
    return 2;
  }
  const arch = o.arch ?? archOfImage(image) ?? hostArch() ?? 'x86_64';
  const work = mkdtempSync(join(tmpdir(), 'kiln-run-'));
  try {
    // An ISO boots as a CD with a blank 8 GiB disk beside it, to install to.
    const iso = image.endsWith('.iso');
    const disk = iso ? join(work, 'disk.raw') : image;
    if (iso) writeFileSync(disk, ''), truncateSync(disk, 8 << 30);
    const { cmd, args, accel } = await qemuCommand({
      arch, disk, cdrom: iso ? image : undefined, memMiB: o.memMiB ?? 512, snapshot: !o.keep && !iso, interactive: true,
      hostfwd: o.sshPort ? [[o.sshPort, 22]] : [],
    }, work);
    if (iso) console.error(`kiln run: ${image} as a CD, with a blank 8 GiB disk to install to (discarded afterwards)`);
    console.error(`kiln run: ${arch} under ${accel.toUpperCase()}${o.keep || iso ? '' : ' (changes discarded; --keep to write to the image)'}; quit with Ctrl-A X`);
    const r = await execa(cmd, args, { stdio: 'inherit', reject: false });
    return r.exitCode ?? 1;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
