// Boots images in QEMU: UEFI firmware for the target arch, virtio disk and network, the
// serial console as a stream. KVM is used only when it demonstrably runs a guest here
// (a nested hypervisor may expose /dev/kvm yet fail); otherwise TCG.
import { execa, type ResultPromise } from 'execa';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ARCH, hostArch, type Arch } from './arch.ts';
import { defaultCacheDir } from './cache.ts';
import { hostFile, tool } from './tools.ts';

let accelMemo: 'kvm' | 'tcg' | undefined;

/**
 * 'kvm' when a Linux kernel really started under KVM on this host, else 'tcg'. A nested
 * hypervisor can run real-mode code under KVM and still hang a kernel, so the probe boots
 * `probeKernel` (the image's own kernel) and waits for its first console line. Without
 * a kernel to try, TCG is the safe answer. Cached per host boot.
 */
export async function detectAccel(arch: Arch, probeKernel?: string): Promise<'kvm' | 'tcg'> {
  const forced = process.env.KILN_ACCEL;
  if (forced === 'kvm' || forced === 'tcg') return forced;
  if (arch !== hostArch() || !existsSync('/dev/kvm')) return 'tcg';
  if (accelMemo) return accelMemo;
  const bootId = (() => { try { return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(); } catch { return 'unknown'; } })();
  const memo = join(defaultCacheDir(), 'kvm-probe', `${arch}-${bootId}`);
  if (existsSync(memo)) return (accelMemo = readFileSync(memo, 'utf8').trim() as 'kvm' | 'tcg');
  probeKernel ??= process.env.KILN_PROBE_KERNEL;
  if (!probeKernel || !existsSync(probeKernel)) return 'tcg';
  const facts = ARCH[arch];
  const p = execa(tool(facts.qemu.binary), [...facts.qemu.machine, '-accel', 'kvm', '-cpu', 'host', '-m', '128', '-nodefaults', '-nographic',
    '-serial', 'stdio', '-monitor', 'none', '-no-reboot', '-kernel', probeKernel, '-append', `console=${facts.console} panic=-1`],
    { reject: false, timeout: 15000, stdin: 'ignore', buffer: false });
  let seen = false;
  p.stdout?.on('data', (d: Buffer) => { if (d.includes('Linux version')) { seen = true; p.kill('SIGKILL'); } });
  await p;
  const result = seen ? 'kvm' : 'tcg';
  mkdirSync(join(memo, '..'), { recursive: true });
  writeFileSync(memo, result);
  return (accelMemo = result);
}

export interface VmOptions {
  arch: Arch;
  disk: string;
  format?: 'raw' | 'qcow2';
  memMiB?: number;
  /** Discard writes (QEMU -snapshot) so the image stays pristine. */
  snapshot?: boolean;
  /** Forward host TCP ports to the guest: [hostPort, guestPort]. */
  hostfwd?: [number, number][];
  /** More user-network options, appended to -netdev user (e.g. 'net=169.254.0.0/16,guestfwd=...'). */
  netdevExtra?: string;
  extraDrives?: string[];
  extraArgs?: string[];
  /** A kernel for the KVM probe (see detectAccel). */
  probeKernel?: string;
  /** Console to the terminal (kiln run) instead of captured. */
  interactive?: boolean;
  /** Keep the VM alive across guest reboots (default); false adds -no-reboot. */
  allowReboot?: boolean;
  /** An ISO in a CD drive (virtio-scsi: the cloud kernel has no AHCI), booted first. */
  cdrom?: string;
  /**
   * 'uefi' (default: OVMF/AAVMF), 'bios' (SeaBIOS, x86_64 only) or 'none' (no firmware of ours:
   * QEMU loads the `-kernel` given in extraArgs itself; x86_64 still gets QEMU's own SeaBIOS).
   */
  firmware?: 'uefi' | 'bios' | 'none';
  /**
   * UEFI Secure Boot (x86_64: OVMF's SMM build on q35 with SMM, variables in secure flash).
   * 'setup': no keys enrolled (setup mode: systemd-boot may enrol ours); 'snakeoil': Debian's
   * test keys in PK, KEK and db, enforcing from the first boot.
   */
  secureBoot?: 'setup' | 'snakeoil';
  /** Start from this UEFI variable store (copied) instead of the firmware's template, e.g. one a previous boot enrolled keys into. */
  efiVars?: string;
  /** false: `disk` is not attached as virtio; the caller attaches it in extraArgs (AHCI, NVMe, USB: real machines' devices). */
  virtioDisk?: boolean;
  /** NIC model on the user network (default virtio-net-pci), e.g. 'e1000e'. */
  nic?: string;
  /**
   * false: no virtio-rng device. With one, AAVMF below 160 MiB leaves the arm64 kernel's EFI
   * stub no room to place the kernel, and the firmware faults (docs/design.md, "arm64 reaches
   * ready at 128 MiB").
   */
  rng?: boolean;
}

export async function qemuCommand(o: VmOptions, workDir: string): Promise<{ cmd: string; args: string[]; qmp: string; accel: string }> {
  const facts = ARCH[o.arch];
  const accel = await detectAccel(o.arch, o.probeKernel);
  const bios = o.firmware === 'bios';
  if (bios && o.arch !== 'x86_64') throw new Error(`firmware 'bios' is x86_64 only`);
  const noUefi = bios || o.firmware === 'none';
  const sb = o.secureBoot;
  if (sb && (noUefi || o.arch !== 'x86_64')) throw new Error(`Secure Boot in QEMU is set up for x86_64 UEFI (OVMF) only`);
  const vars = join(workDir, 'efivars.fd');
  const varsTemplate = o.efiVars ?? hostFile(sb === 'snakeoil' ? 'ovmfVarsSnakeoil' : facts.qemu.firmware.vars);
  if (!noUefi && !existsSync(vars)) copyFileSync(varsTemplate, vars);
  const firmware = bios ? ['-bios', hostFile('seabios')] : o.firmware === 'none' ? [] : [
    '-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${hostFile(sb ? 'ovmfCodeSecboot' : facts.qemu.firmware.code)}`,
    '-drive', `if=pflash,format=raw,unit=1,file=${vars}`,
    // The SMM build keeps the variable store out of the OS's reach; without SMM it stops at once.
    ...(sb ? ['-global', 'driver=cfi.pflash01,property=secure,value=on'] : []),
  ];
  const machine = sb ? ['-machine', 'q35,smm=on'] : facts.qemu.machine;
  const cdrom = o.cdrom ? ['-device', 'virtio-scsi-pci,id=scsi0', '-drive', `file=${o.cdrom},if=none,id=cd0,media=cdrom,readonly=on,format=raw`, '-device', 'scsi-cd,drive=cd0,bootindex=0'] : [];
  const qmp = join(workDir, 'qmp.sock');
  const cpu = accel === 'kvm' ? ['-cpu', 'host'] : facts.qemu.cpu;
  const fwd = (o.hostfwd ?? []).map(([h, g]) => `,hostfwd=tcp:127.0.0.1:${h}-:${g}`).join('');
  const args = [
    ...machine, '-accel', accel, ...cpu, '-m', String(o.memMiB ?? 256), '-smp', '1',
    '-nographic', '-nodefaults', '-serial', o.interactive ? 'mon:stdio' : 'stdio',
    ...firmware,
    ...cdrom,
    ...(o.virtioDisk === false ? [] : ['-drive', `file=${o.disk},format=${o.format ?? (o.disk.endsWith('.qcow2') ? 'qcow2' : 'raw')},if=virtio${o.snapshot ? ',snapshot=on' : ''}`]),
    '-netdev', `user,id=n0${fwd}${o.netdevExtra ? `,${o.netdevExtra}` : ''}`, '-device', `${o.nic ?? 'virtio-net-pci'},netdev=n0`,
    ...(o.rng === false ? [] : ['-device', 'virtio-rng-pci']),
    '-qmp', `unix:${qmp},server=on,wait=off`,
    ...(o.allowReboot === false ? ['-no-reboot'] : []),
    ...(o.extraDrives ?? []).flatMap((d) => ['-drive', d]),
    ...(o.extraArgs ?? []),
  ];
  return { cmd: tool(facts.qemu.binary), args, qmp, accel };
}

/** A running VM with its serial console captured, for tests and benchmarks. */
export class Vm {
  output = '';
  readonly started = performance.now();
  private waiters: { re: RegExp; from: number; resolve: (m: RegExpExecArray) => void }[] = [];
  private constructor(readonly proc: ResultPromise, readonly qmpPath: string, readonly workDir: string, readonly accel: string) {
    proc.stdout!.on('data', (d: Buffer) => this.onData(d));
    proc.stderr!.on('data', (d: Buffer) => this.onData(d));
  }

  static async start(o: VmOptions): Promise<Vm> {
    const workDir = mkdtempSync(join(tmpdir(), 'kiln-vm-'));
    const { cmd, args, qmp, accel } = await qemuCommand(o, workDir);
    const proc = execa(cmd, args, { reject: false, stdin: 'pipe', buffer: false });
    return new Vm(proc, qmp, workDir, accel);
  }

  private onData(d: Buffer) {
    this.output += d.toString('latin1');
    if (process.env.KILN_VM_ECHO) process.stderr.write(d);
    for (const w of [...this.waiters]) {
      w.re.lastIndex = 0;
      const m = w.re.exec(this.output.slice(w.from));
      if (m) { this.waiters.splice(this.waiters.indexOf(w), 1); w.resolve(m); }
    }
  }

  /** Seconds since QEMU was started. */
  elapsed(): number { return (performance.now() - this.started) / 1000; }

  /** Waits for console output matching `re` (searching from `from`, default: from the start). */
  waitFor(re: RegExp, timeoutMs: number, from = 0): Promise<RegExpExecArray> {
    const m = re.exec(this.output.slice(from));
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const w = { re, from, resolve: (x: RegExpExecArray) => { clearTimeout(t); resolve(x); } };
      const t = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`timed out after ${timeoutMs / 1000} s waiting for ${re} on the console; last output:\n${this.output.slice(-3000)}`));
      }, timeoutMs);
      this.waiters.push(w);
      this.proc.then(() => { /* exited: the timeout reports it with the output */ });
    });
  }

  /** Types a line on the serial console. */
  send(text: string) { this.proc.stdin!.write(text); }

  /** Sends a QMP command (e.g. system_powerdown = the ACPI power button). */
  async qmp(execute: string, args?: object): Promise<any> {
    return new Promise((resolve, reject) => {
      const s = connect(this.qmpPath);
      let buf = '';
      let step = 0;
      s.on('data', (d) => {
        buf += d;
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl); buf = buf.slice(nl + 1);
          const msg = JSON.parse(line);
          if (msg.QMP && step === 0) { step = 1; s.write(JSON.stringify({ execute: 'qmp_capabilities' }) + '\n'); }
          else if ('return' in msg && step === 1) { step = 2; s.write(JSON.stringify({ execute, arguments: args }) + '\n'); }
          else if (('return' in msg || 'error' in msg) && step === 2) { s.end(); msg.error ? reject(new Error(msg.error.desc)) : resolve(msg.return); }
        }
      });
      s.on('error', reject);
    });
  }

  /** Resolves with QEMU's exit once it ends (e.g. after the guest powers off). */
  async exited(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const t = new Promise<boolean>((r) => { timer = setTimeout(() => r(false), timeoutMs); });
    const done = this.proc.then(() => true);
    const r = await Promise.race([done, t]);
    clearTimeout(timer);
    return r;
  }

  async kill() {
    this.proc.kill('SIGKILL');
    await this.proc;
    rmSync(this.workDir, { recursive: true, force: true });
  }
}
