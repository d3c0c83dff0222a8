// `kiln run`: boot an image with the console on the terminal (Ctrl-A X quits QEMU).
import { execa } from 'execa';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { hostArch, type Arch } from './arch.ts';
import { qemuCommand } from './qemu.ts';

export function archOfImage(image: string): Arch | undefined {
  const m = /-(x86_64|arm64)\.(raw|qcow2)$/.exec(basename(image));
  return m?.[1] as Arch | undefined;
}

export async function runImage(image: string, o: { arch?: Arch; memMiB?: number; keep?: boolean; sshPort?: number }): Promise<number> {
  const arch = o.arch ?? archOfImage(image) ?? hostArch() ?? 'x86_64';
  const work = mkdtempSync(join(tmpdir(), 'kiln-run-'));
  try {
    const { cmd, args, accel } = await qemuCommand({
      arch, disk: image, memMiB: o.memMiB ?? 512, snapshot: !o.keep, interactive: true,
      hostfwd: o.sshPort ? [[o.sshPort, 22]] : [],
    }, work);
    console.error(`kiln run: ${arch} under ${accel.toUpperCase()}${o.keep ? '' : ' (changes discarded; --keep to write to the image)'}; quit with Ctrl-A X`);
    const r = await execa(cmd, args, { stdio: 'inherit', reject: false });
    return r.exitCode ?? 1;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
