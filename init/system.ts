// The node's side effects at boot: mounts, modules, hostname, devices. Thin wrappers
// over busybox and /proc, each returning a note or throwing with what went wrong.
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { run, runOk } from './exec.ts';

export const read = (p: string, fallback = '') => { try { return readFileSync(p, 'utf8'); } catch { return fallback; } };

/** What is mounted on target (a disk's /dev path, or the filesystem's name), or undefined when nothing is. */
export function mountSource(target: string): string | undefined {
  return read('/proc/mounts').split('\n').map((l) => l.split(' ')).find((f) => f[1] === target)?.[0];
}

export function isMounted(target: string): boolean {
  return mountSource(target) !== undefined;
}

export async function mount(type: string, source: string, target: string, options?: string): Promise<void> {
  if (isMounted(target)) return;
  mkdirSync(target, { recursive: true });
  const err = await runOk('mount', ['-t', type, ...(options ? ['-o', options] : []), source, target], { timeoutMs: 20_000 });
  if (err) throw new Error(err);
}

/**
 * The pseudo filesystems a Kubernetes node needs. Stage 1 mounts them (a shell's mount is
 * cheaper than a spawn from here); whatever is missing is mounted now, so any stage 1 will do.
 */
export async function mountBase(): Promise<string> {
  await mount('tmpfs', 'tmpfs', '/run', 'mode=0755,nosuid,nodev');
  await mount('tmpfs', 'tmpfs', '/tmp', 'mode=1777,nosuid,nodev');
  mkdirSync('/dev/pts', { recursive: true });
  await mount('devpts', 'devpts', '/dev/pts', 'gid=5,mode=620,ptmxmode=666');
  await mount('tmpfs', 'shm', '/dev/shm', 'mode=1777,nosuid,nodev');
  await mount('cgroup2', 'cgroup2', '/sys/fs/cgroup', 'nsdelegate');
  if (existsSync('/sys/kernel/security')) await mount('securityfs', 'securityfs', '/sys/kernel/security').catch(() => undefined);
  if (existsSync('/sys/firmware/efi/efivars')) await mount('efivarfs', 'efivarfs', '/sys/firmware/efi/efivars').catch(() => undefined);
  // kubelet's mount propagation needs / shared.
  const err = rootIsShared() ? undefined : await runOk('mount', ['--make-rshared', '/']);
  for (const [l, t] of [['/proc/self/fd', '/dev/fd'], ['/proc/self/fd/0', '/dev/stdin'], ['/proc/self/fd/1', '/dev/stdout'], ['/proc/self/fd/2', '/dev/stderr']] as const) {
    try { lstatSync(t); } catch { try { symlinkSync(l, t); } catch { /* a read-only /dev: programs fall back to /proc */ } }
  }
  return err ? `make-rshared: ${err}` : 'ok';
}

/** The fields of the root mount's mountinfo line: the last "/" mount is the one in use (switch_root stacks it on the initramfs's). */
function rootMount(mountinfo: string): string[] | undefined {
  return mountinfo.split('\n').map((l) => l.split(' ')).filter((f) => f[4] === '/').pop();
}

/** Whether the root mount is in a shared peer group (mountinfo's optional `shared:N` field). */
export function rootIsShared(mountinfo = read('/proc/self/mountinfo')): boolean {
  const root = rootMount(mountinfo);
  if (!root) return false;
  const sep = root.indexOf('-');
  return root.slice(6, sep < 0 ? undefined : sep).some((f) => f.startsWith('shared:'));
}

/** The whole disk a partition belongs to (its parent in sysfs); undefined for a whole disk or a loop device. */
export function parentDisk(classBlock: string, name: string): string | undefined {
  if (!/^DEVTYPE=partition$/m.test(read(join(classBlock, name, 'uevent')))) return undefined;
  // realpath first: join() would resolve '..' in the name, not in sysfs's device tree.
  try { return basename(dirname(realpathSync(join(classBlock, name)))); } catch { return undefined; }
}

/**
 * The disk the running root was mounted from: stage 1 picked it, and its kiln-* partitions are
 * the only ones this node uses. A second disk carrying the same labels (another kiln disk, or
 * one made to look like it) must never supply a partition or receive an update. Undefined
 * when the root is not a disk partition (the live ISO's loop-mounted image).
 */
export function bootDisk(sys = '/sys', mountinfo = read('/proc/self/mountinfo')): string | undefined {
  const root = rootMount(mountinfo);
  if (!root || !/^\d+:\d+$/.test(root[2] ?? '')) return undefined;
  let dev: string;
  try { dev = realpathSync(join(sys, 'dev/block', root[2]!)); } catch { return undefined; }
  return diskUnder(join(sys, 'class/block'), basename(dev), 0);
}

/**
 * The disk under a block device: a partition's parent, or, for a device-mapper device (the
 * verified root is dm-verity over a partition), the one disk all its slaves lie on.
 */
function diskUnder(classBlock: string, name: string, depth: number): string | undefined {
  let slaves: string[] = [];
  try { slaves = readdirSync(join(classBlock, name, 'slaves')); } catch { /* not stacked */ }
  if (!slaves.length || depth > 4) return parentDisk(classBlock, name);
  const disks = new Set(slaves.map((s) => diskUnder(classBlock, s, depth + 1)));
  return disks.size === 1 ? [...disks][0] : undefined;
}

let bootDiskCache: { disk: string | undefined } | undefined;
/** bootDisk() of the running system, read once (the root never moves). */
function ownBootDisk(sys: string, mountinfo?: string): string | undefined {
  if (sys !== '/sys' || mountinfo !== undefined) return bootDisk(sys, mountinfo);
  return (bootDiskCache ??= { disk: bootDisk() }).disk;
}

/**
 * Device name (e.g. vda1) of the partition with this GPT PARTLABEL on the boot disk. When the
 * boot disk is unknown, a label found on more than one disk gives no answer: guessing could
 * pick a stranger's partition.
 */
export function partitionByLabel(label: string, sys = '/sys', mountinfo?: string): string | undefined {
  const classBlock = join(sys, 'class/block');
  const hits: { name: string; disk: string | undefined }[] = [];
  for (const d of readdirSync(classBlock)) {
    const u = read(join(classBlock, d, 'uevent'));
    if (u.split('\n').includes(`PARTNAME=${label}`)) hits.push({ name: /^DEVNAME=(.*)$/m.exec(u)?.[1] ?? d, disk: parentDisk(classBlock, d) });
  }
  const disk = ownBootDisk(sys, mountinfo);
  if (disk) return hits.find((h) => h.disk === disk)?.name;
  return hits.length === 1 ? hits[0]!.name : undefined;
}

/** bootDisk() for a sysfs class/block folder, as the bootctl helpers take it. */
export function bootDiskFor(classBlock: string, mountinfo?: string): string | undefined {
  return ownBootDisk(dirname(dirname(classBlock)), mountinfo);
}

/**
 * The named modules not loaded yet: /sys/module has a folder for every loaded module (a name's
 * dashes are underscores there). A built-in module without parameters has none and counts as
 * not loaded; modprobe then finds it built in and does nothing.
 */
export function unloadedModules(names: string[], sysModule = '/sys/module'): string[] {
  return names.filter((n) => !existsSync(`${sysModule}/${n.replace(/-/g, '_')}`));
}

/** Loads modules by name (busybox modprobe reads the modules.dep the builder wrote). */
export async function loadModules(names: string[]): Promise<{ loaded: string[]; failed: string[] }> {
  // One modprobe for all (a process start costs ~80 ms under emulation); one by one only to
  // name the failures when that fails.
  if (names.length > 1 && !(await runOk('modprobe', ['-a', ...names], { timeoutMs: 60_000 }))) return { loaded: [...names], failed: [] };
  const loaded: string[] = [], failed: string[] = [];
  for (const m of names) {
    const err = await runOk('modprobe', [m], { timeoutMs: 20_000 });
    (err ? failed : loaded).push(err ? `${m} (${err})` : m);
  }
  return { loaded, failed };
}

/** A `Key:  N kB` field of a /proc/PID/status file, in KiB. */
export function statusKiB(status: string, key: string): number | undefined {
  const kib = new RegExp(`^${key}:\\s+(\\d+) kB$`, 'm').exec(status)?.[1];
  return kib === undefined ? undefined : Number(kib);
}

export function setHostname(name: string): void {
  writeFileSync('/proc/sys/kernel/hostname', name);
}

export function setSysctl(key: string, value: string): void {
  writeFileSync(`/proc/sys/${key.replace(/\./g, '/')}`, value);
}

/** Processes in state Z, for the reaper check. */
export function zombies(): { pid: number; ppid: number; comm: string }[] {
  const out: { pid: number; ppid: number; comm: string }[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    const s = read(`/proc/${p}/stat`);
    const close = s.lastIndexOf(')');
    if (close < 0) continue;
    const rest = s.slice(close + 2).split(' ');
    if (rest[0] === 'Z') out.push({ pid: Number(p), ppid: Number(rest[1]), comm: s.slice(s.indexOf('(') + 1, close) });
  }
  return out;
}

export async function sync(): Promise<void> { await run('sync', [], { timeoutMs: 30_000 }); }

/**
 * Waits (bounded) until every virtio device has its driver bound, every USB stick usb-storage
 * has taken has its disk, and no block device has appeared for SETTLE_MS: a config volume
 * probed a moment after the root must not be missed. When a block device appeared is the
 * birth time of its node in /dev, which devtmpfs makes as the device is added (sysfs's own
 * times are those of a first lookup): devices probed long before init count as settled at
 * once, and boot waits only when something is new or has no node yet. Not the node's ctime:
 * every write through a node sets it, so the boot disk looked new for SETTLE_MS after init
 * grew its data partition (a GPT written through /dev/vda). A filesystem that keeps no birth
 * times (statx gives 0) falls back to the ctime.
 */
export const SETTLE_MS = 300;
export async function settleDevices(maxMs = 8000, o: { blockDir?: string; virtioDir?: string; devDir?: string; usbStorageDir?: string } = {}): Promise<string> {
  const blockDir = o.blockDir ?? '/sys/class/block', virtioDir = o.virtioDir ?? '/sys/bus/virtio/devices', devDir = o.devDir ?? '/dev';
  const usbStorageDir = o.usbStorageDir ?? '/sys/bus/usb/drivers/usb-storage';
  const t0 = Date.now();
  const unbound = () => [...virtioUnbound(), ...usbWithoutDisk()];
  const virtioUnbound = () => { try { return readdirSync(virtioDir).filter((d) => !existsSync(`${virtioDir}/${d}/driver`)); } catch { return []; } };
  // usb-storage waits a second (its delay_use) before it scans a stick for disks: until then
  // the interface has a SCSI host (hostN) with no target under it. A fast board is in init by then.
  const usbWithoutDisk = () => {
    let intfs: string[];
    try { intfs = readdirSync(usbStorageDir).filter((i) => i.includes(':')); } catch { return []; }
    return intfs.filter((i) => {
      try {
        const hosts = readdirSync(`${usbStorageDir}/${i}`).filter((h) => /^host\d+$/.test(h));
        return hosts.length === 0 || hosts.some((h) => !readdirSync(`${usbStorageDir}/${i}/${h}`).some((t) => t.startsWith('target')));
      } catch { return false; /* unplugged meanwhile */ }
    });
  };
  const list = () => { try { return readdirSync(blockDir); } catch { return []; } };
  /** When the newest of these block devices appeared, no later than now (a clock stepped back must not stall boot). */
  const newest = (devs: string[]) => {
    let t = 0;
    for (const d of devs) { try { const st = lstatSync(`${devDir}/${d}`); t = Math.max(t, st.birthtimeMs || st.ctimeMs); } catch { t = Date.now(); } }
    return Math.min(t, Date.now());
  };
  const first = list();
  let names = first.join(' ');
  let stableSince = newest(first);
  while ((unbound().length || Date.now() - stableSince < SETTLE_MS) && Date.now() - t0 < maxMs) {
    await new Promise((r) => setTimeout(r, 100));
    const now = list().join(' ');
    if (now !== names) { names = now; stableSince = Date.now(); }
  }
  const [virtio, usb] = [virtioUnbound(), usbWithoutDisk()];
  const left = [virtio.length ? `no driver yet: ${virtio.join(', ')}` : '', usb.length ? `no disk yet behind USB storage ${usb.join(', ')}` : ''].filter(Boolean);
  return `devices settled in ${Date.now() - t0} ms${left.length ? ` (${left.join('; ')})` : ''}`;
}
