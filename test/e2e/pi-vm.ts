// QEMU's Raspberry Pi 3B and 4B models booting an SD image the way the lab did (docs/design.md,
// "Raspberry Pi"): U-Boot as the "kernel", the board's device tree, the image as the SD card.
// The VideoCore firmware and config.txt are NOT exercised: QEMU starts U-Boot directly. U-Boot
// prints on the mini-UART (second serial port), Linux's ttyAMA0 is the first: both go to files
// that are polled into one output string. raspi3b runs on the system QEMU (bookworm's 7.2);
// raspi4b needs QEMU 10 (bookworm-backports), which .ci/qemu-raspi4b unpacks beside it.
import { execa, type ResultPromise } from 'execa';
import * as assert from 'uvu/assert';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

export type PiBoard = 'raspi3b' | 'raspi4b';

/** Where .ci/qemu-raspi4b unpacks QEMU 10 (KILN_QEMU10_DIR, else its default). */
export function qemu10Dir(): string {
  return process.env.KILN_QEMU10_DIR || '/opt/kiln-qemu10';
}

/** QEMU 10's aarch64 binary and data directory, or why there is none. */
export function qemuRaspi4b(): { bin: string; data: string } | { missing: string } {
  const dir = qemu10Dir();
  const bin = join(dir, 'usr/bin/qemu-system-aarch64');
  if (!existsSync(bin)) return { missing: `${bin} is absent: bookworm's QEMU 7.2 has no raspi4b machine; run .ci/qemu-raspi4b (unpacks bookworm-backports' QEMU 10 there) or set KILN_QEMU10_DIR` };
  return { bin, data: join(dir, 'usr/share/qemu') };
}

/**
 * What the Pi 4's device tree must lose for QEMU 10's raspi4b, each with the failure it causes
 * there (Debian's 6.1 kernel). QEMU maps nothing at the DVP/HDMI block (0xfef00000), so its
 * drivers take a synchronous external abort on their first register read, which kills the
 * kernel at boot; the rest are devices QEMU models too little of. None is needed by a
 * headless node. (QEMU itself disables PCIe, GENET, RNG200 and the thermal sensor.)
 */
export const RASPI4B_DT_EDITS: ReadonlyArray<{ node: string; drop?: string; why: string }> = [
  { node: '/soc/interrupt-controller@7ef00100', why: 'HDMI L2 interrupt controller: brcmstb_l2_intc_of_init takes an external abort' },
  { node: '/soc/i2c@7ef04500', why: 'HDMI0 DDC I2C: brcmstb_i2c takes an external abort' },
  { node: '/soc/i2c@7ef09500', why: 'HDMI1 DDC I2C: brcmstb_i2c takes an external abort' },
  { node: '/soc/clock@7ef00000', why: 'DVP clock gates: clk_gate takes an external abort' },
  { node: '/soc/serial@7e215040', why: 'mini-UART: opening it as a console soft-locks CPU 0 in __setup_irq (univ8250_setup_irq)' },
  { node: '/soc/mmc@7e300000', drop: 'mmc-pwrseq', why: 'the WiFi power sequence needs the firmware GPIO expander QEMU does not answer (pwrseq_simple fails with -5), and the SD host, which carries QEMU\'s card, would wait for it forever' },
];

/** The Pi 4 device tree for QEMU's raspi4b: `src` (a .dtb) with RASPI4B_DT_EDITS applied, written to `dest`. */
export async function raspi4bDtb(src: string, dest: string): Promise<string> {
  copyFileSync(src, dest);
  for (const e of RASPI4B_DT_EDITS) {
    const r = e.drop
      ? await $({ quiet: true, nothrow: true })`fdtput -d ${dest} ${e.node} ${e.drop}`
      : await $({ quiet: true, nothrow: true })`fdtput -t s ${dest} ${e.node} status disabled`;
    if (r.exitCode !== 0) throw new Error(`${src}: cannot ${e.drop ? `drop ${e.drop} from` : 'disable'} ${e.node} (${r.stderr.trim()}); the kernel's Pi 4 device tree changed: update RASPI4B_DT_EDITS in test/e2e/pi-vm.ts`);
  }
  return dest;
}

/** A guest kernel's report of a CPU stuck in the kernel: a soft lockup, or an RCU stall it detected itself. */
const LOCKUP = /watchdog: BUG: soft lockup - CPU#\d+ stuck|rcu: INFO: rcu_\w+ (self-)?detected stall/;

export class PiVm {
  output = '';
  readonly started = performance.now();
  /** How many times the guest reset the board (each a new QEMU run, as below). */
  resets = 0;
  /** How many times the card was powered on again after the guest kernel locked up (below). */
  lockups = 0;
  private timer: NodeJS.Timeout;
  private runStart = 0;
  private lockupSeen: number | undefined;
  private restarting = false;
  private seen = [0, 0];
  private run = 0;
  private killed = false;
  private exited: string | undefined;
  private proc!: ResultPromise;

  /**
   * QEMU runs with -no-reboot: when the guest resets the board (the watchdog's full reset, as
   * Linux reboots a Pi), QEMU exits and the same card is booted by a new QEMU, as a Pi comes
   * back from its reset: U-Boot loaded again from the start. QEMU's in-place reset of raspi3b
   * was seen not to come back once, on a loaded machine (no output at all for 300 s).
   *
   * A guest kernel that keeps reporting a soft lockup (one CPU stuck in the kernel for 45 s or
   * more) is powered off and the same card powered on again, once per VM: under
   * QEMU 7.2's raspi3b, on a loaded host, init's main thread was seen stuck in the kernel for
   * minutes before ready, in one boot of a card that reached ready in every other (docs/design.md,
   * "Raspberry Pi"). The report is printed, so a lockup is never silent; a second one fails.
   */
  private constructor(private readonly argv: string[], readonly dir: string) {
    this.spawn();
    this.timer = setInterval(() => this.poll(), 250);
  }

  private uart(i: number): string { return join(this.dir, `uart${i}.${this.run}`); }

  private spawn() {
    this.runStart = this.output.length;
    this.lockupSeen = undefined;
    const proc = execa(this.argv[0]!, [...this.argv.slice(1), '-no-reboot',
      '-serial', `file:${this.uart(0)}`, '-serial', `file:${this.uart(1)}`],
    { reject: false, stdin: 'ignore', buffer: true });
    this.proc = proc;
    void proc.then((r) => {
      if (this.killed || this.proc !== proc) return;
      this.poll();
      if (this.restarting) {
        this.restarting = false;
        this.lockups++;
        this.output += '\n';
        this.nextRun();
        return;
      }
      if (r.exitCode !== 0 || r.signal) {
        this.exited = `QEMU exited (${r.signal ?? `status ${r.exitCode}`}): ${String(r.stderr ?? '').trim().slice(-2000)}`;
        return;
      }
      this.resets++;
      this.nextRun();
    });
  }

  /** The same card in a new QEMU, its UARTs in new files. */
  private nextRun() {
    this.run++;
    this.seen = [0, 0];
    this.spawn();
  }

  /**
   * Boots `img` (written to: pass a copy). U-Boot and the DTB are taken from the image itself;
   * on raspi4b the DTB gets RASPI4B_DT_EDITS first (QEMU hands it to U-Boot, which hands it on).
   */
  static async start(img: string, o: { board?: PiBoard; extraArgs?: string[] } = {}): Promise<PiVm> {
    const board = o.board ?? 'raspi3b';
    let qemu = ['qemu-system-aarch64', '-M', 'raspi3b', '-m', '1G'];
    if (board === 'raspi4b') {
      const q = qemuRaspi4b();
      if ('missing' in q) throw new Error(q.missing);
      qemu = [q.bin, '-L', q.data, '-M', 'raspi4b', '-m', '2G'];
    }
    const dir = mkdtempSync(join(tmpdir(), 'kiln-pi-'));
    const uboot = await bootFile(img, 'u-boot.bin', join(dir, 'u-boot.bin'));
    const dtb = board === 'raspi4b'
      ? await raspi4bDtb(await bootFile(img, 'bcm2711-rpi-4-b.dtb', join(dir, 'card.dtb')), join(dir, 'board.dtb'))
      : await bootFile(img, 'bcm2837-rpi-3-b.dtb', join(dir, 'board.dtb'));
    return new PiVm([...qemu, '-display', 'none', '-monitor', 'none', '-nodefaults',
      '-kernel', uboot, '-dtb', dtb, '-drive', `if=sd,format=raw,file=${img}`, ...(o.extraArgs ?? [])], dir);
  }

  private poll() {
    for (const i of [0, 1]) {
      const p = this.uart(i);
      if (!existsSync(p)) continue;
      const b = readFileSync(p);
      if (b.length > this.seen[i]!) {
        const chunk = b.subarray(this.seen[i]).toString('latin1');
        this.seen[i] = b.length;
        this.output += chunk;
        if (process.env.KILN_VM_ECHO) process.stderr.write(chunk);
      }
    }
    this.checkLockup();
  }

  /** See the constructor: one power cycle after a guest kernel lockup, its report printed. */
  private checkLockup() {
    if (this.killed || this.exited || this.restarting) return;
    const run = this.output.slice(this.runStart);
    // The kernel reports a stuck CPU after 20 s and again every 30 or so: a host too busy to
    // run a vCPU for a while can cause one report, a CPU that stays stuck causes the next.
    const stuck = Math.max(0, ...[...run.matchAll(/soft lockup - CPU#\d+ stuck for (\d+)s/g)].map((m) => Number(m[1])));
    if (stuck < 45) return;
    this.lockupSeen ??= Date.now();
    // A few seconds more, for the report's registers and call trace.
    if (Date.now() - this.lockupSeen < 5000) return;
    const report = run.slice(run.search(LOCKUP)).slice(0, 6000);
    if (this.lockups >= 1) {
      this.exited = `the guest kernel locked up again after the card was powered on again:\n${report}`;
      return;
    }
    console.log(`  PiVm: the guest kernel locked up (a CPU stuck for ${stuck} s) ${this.elapsed().toFixed(0)} s after the VM started; powering the card on again. The report:\n${report.replace(/^/gm, '    | ')}`);
    this.restarting = true;
    this.proc.kill('SIGKILL');
  }

  elapsed(): number { return (performance.now() - this.started) / 1000; }

  /** Waits for output matching `re` after offset `from`. */
  async waitFor(re: RegExp, timeoutMs: number, from = 0): Promise<RegExpExecArray> {
    let end = Date.now() + timeoutMs, lockups = this.lockups;
    for (;;) {
      this.poll();
      // A power cycle after a lockup (above) starts the boot again: so does the wait.
      if (this.lockups !== lockups) { lockups = this.lockups; end = Date.now() + timeoutMs; }
      const m = re.exec(this.output.slice(from));
      if (m) return m;
      if (this.exited) throw new Error(`${this.exited}\nwhile waiting for ${re}; last output:\n${this.output.slice(-3000)}`);
      if (Date.now() > end) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${re} (${this.resets} board resets); last output:\n${this.output.slice(-3000)}\n${(this.proc as any).stderr ?? ''}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async kill() {
    this.killed = true;
    clearInterval(this.timer);
    this.poll();
    this.proc.kill('SIGKILL');
    await this.proc;
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * The A/B fall-back both Pi tests run: slot b gets a's kernel and initrd but keeps its empty
 * root partition, and is preferred with one try. Its stage 1 fails and reboots (the board's
 * watchdog), U-Boot finds b spent and boots a, and the node blesses a saying it fell back.
 * `slow` scales the waits (raspi4b emulates four cores).
 */
export async function expectFallbackFromEmptySlotB(disk: string, board: PiBoard, o: { bootTimeoutMs: number; slow?: number }): Promise<void> {
  const { encodeUbootEnv, decodeUbootEnv } = await import('../../init/bootctl/ubootenv.ts');
  const { READY } = await import('./image.ts');
  const tmp = mkdtempSync(join(tmpdir(), 'kiln-pi-fallback-'));
  const env = async () => decodeUbootEnv(readFileSync(await bootFile(disk, 'uboot.env', join(tmp, `env-${Date.now()}`))));
  const ms = (n: number) => Math.round(n * (o.slow ?? 1));
  const mtools = { quiet: true, env: mtoolsEnv } as const;
  try {
    for (const f of ['vmlinuz', 'initrd']) await bootFile(disk, `a/${f}`, join(tmp, f));
    await $(mtools)`mmd -i ${disk}@@1M ::/b`;
    await $(mtools)`mcopy -i ${disk}@@1M ${join(tmp, 'vmlinuz')} ${join(tmp, 'initrd')} ::/b/`;
    writeFileSync(join(tmp, 'uboot.env'), encodeUbootEnv({ ...(await env()), BOOT_ORDER: 'b a', BOOT_b_LEFT: '1' }));
    await $(mtools)`mcopy -o -i ${disk}@@1M ${join(tmp, 'uboot.env')} ::/uboot.env`;
    const vm = await PiVm.start(disk, { board });
    try {
      await vm.waitFor(/kiln: booting slot b \(tries left a=3 b=0\)/, ms(120_000));
      // Stage 1 refuses it: no hash tree where the root hash says (an empty partition).
      await vm.waitFor(/kiln-stage1: FATAL: (cannot mount|\S+ \(kiln-root-b\) has no hash tree)/, o.bootTimeoutMs);
      const at = vm.output.length;
      await vm.waitFor(/kiln: booting slot a \(tries left a=2 b=0\)/, ms(180_000), at);
      const m = await vm.waitFor(READY, o.bootTimeoutMs, at);
      assert.is(m[2], 'a');
      await vm.waitFor(/kiln: blessed slot a .*fell back from slot b/, ms(120_000), at);
      console.log(`  fell back and ready after ${vm.elapsed().toFixed(1)} s`);
    } finally { await vm.kill(); }
    const after = await env();
    assert.is(after.BOOT_ORDER, 'a');
    assert.is(after.BOOT_b_LEFT, '0');
    assert.is(after.BOOT_a_LEFT, '3');
  } finally { rmSync(tmp, { recursive: true, force: true }); }
}
