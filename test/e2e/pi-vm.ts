// QEMU's Raspberry Pi 3B model (QEMU 7.2 has raspi3b, not raspi4b) booting an SD image the
// way the lab did (docs/design.md, "Raspberry Pi"): U-Boot as the "kernel", the board's device tree,
// the image as the SD card. The VideoCore firmware and config.txt are NOT exercised: QEMU
// starts U-Boot directly. U-Boot prints on the mini-UART (second serial port), Linux's
// ttyAMA0 is the first: both go to files that are polled into one output string.
import { execa, type ResultPromise } from 'execa';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { $ } from 'zx';

const mtoolsEnv = { ...process.env, MTOOLS_SKIP_CHECK: '1' };

/** Copies a file out of the image's FAT boot partition (it starts at 1 MiB). */
export async function bootFile(img: string, path: string, dest: string): Promise<string> {
  await $({ quiet: true, env: mtoolsEnv })`mcopy -n -i ${img}@@1M ${`::/${path}`} ${dest}`;
  return dest;
}

export async function bootList(img: string, folder = ''): Promise<string[]> {
  const r = await $({ quiet: true, env: mtoolsEnv })`mdir -b -i ${img}@@1M ${`::/${folder}`}`;
  return r.stdout.split('\n').map((l) => l.trim().replace(/\/$/, '').split('/').pop()!).filter(Boolean).sort();
}

export class PiVm {
  output = '';
  readonly started = performance.now();
  private timer: NodeJS.Timeout;
  private seen = [0, 0];
  private constructor(readonly proc: ResultPromise, readonly dir: string) {
    this.timer = setInterval(() => this.poll(), 250);
  }

  /** Boots `img` (written to: pass a copy). U-Boot and the DTB are taken from the image itself. */
  static async start(img: string, o: { extraArgs?: string[] } = {}): Promise<PiVm> {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-pi-'));
    const uboot = await bootFile(img, 'u-boot.bin', join(dir, 'u-boot.bin'));
    const dtb = await bootFile(img, 'bcm2837-rpi-3-b.dtb', join(dir, 'board.dtb'));
    const proc = execa('qemu-system-aarch64', ['-M', 'raspi3b', '-m', '1G', '-display', 'none', '-monitor', 'none', '-nodefaults',
      '-kernel', uboot, '-dtb', dtb, '-drive', `if=sd,format=raw,file=${img}`,
      '-serial', `file:${join(dir, 'uart0')}`, '-serial', `file:${join(dir, 'uart1')}`, ...(o.extraArgs ?? [])],
    { reject: false, stdin: 'ignore', buffer: true });
    return new PiVm(proc, dir);
  }

  private poll() {
    for (const [i, f] of ['uart0', 'uart1'].entries()) {
      const p = join(this.dir, f);
      if (!existsSync(p)) continue;
      const b = readFileSync(p);
      if (b.length > this.seen[i]!) {
        const chunk = b.subarray(this.seen[i]).toString('latin1');
        this.seen[i] = b.length;
        this.output += chunk;
        if (process.env.KILN_VM_ECHO) process.stderr.write(chunk);
      }
    }
  }

  elapsed(): number { return (performance.now() - this.started) / 1000; }

  /** Waits for output matching `re` after offset `from`. */
  async waitFor(re: RegExp, timeoutMs: number, from = 0): Promise<RegExpExecArray> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      this.poll();
      const m = re.exec(this.output.slice(from));
      if (m) return m;
      if (Date.now() > end) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${re}; last output:\n${this.output.slice(-3000)}\n${(this.proc as any).stderr ?? ''}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async kill() {
    clearInterval(this.timer);
    this.poll();
    this.proc.kill('SIGKILL');
    await this.proc;
    rmSync(this.dir, { recursive: true, force: true });
  }
}
