// The node's side effects at boot: mounts, modules, hostname, devices. Thin wrappers
// over busybox and /proc, each returning a note or throwing with what went wrong.
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { run, runOk } from './exec.ts';

export const read = (p: string, fallback = '') => { try { return readFileSync(p, 'utf8'); } catch { return fallback; } };

export function isMounted(target: string): boolean {
  return read('/proc/mounts').split('\n').some((l) => l.split(' ')[1] === target);
}

export async function mount(type: string, source: string, target: string, options?: string): Promise<void> {
  if (isMounted(target)) return;
  mkdirSync(target, { recursive: true });
  const err = await runOk('mount', ['-t', type, ...(options ? ['-o', options] : []), source, target], { timeoutMs: 20_000 });
  if (err) throw new Error(err);
}

/** The pseudo filesystems a Kubernetes node needs beyond what stage 1 moved in. */
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
  const err = await runOk('mount', ['--make-rshared', '/']);
  for (const [l, t] of [['/proc/self/fd', '/dev/fd'], ['/proc/self/fd/0', '/dev/stdin'], ['/proc/self/fd/1', '/dev/stdout'], ['/proc/self/fd/2', '/dev/stderr']]) {
    if (!existsSync(t)) await runOk('ln', ['-sf', l, t]);
  }
  return err ? `make-rshared: ${err}` : 'ok';
}

/** Device name (e.g. vda1) of the partition with this GPT PARTLABEL. */
export function partitionByLabel(label: string): string | undefined {
  for (const d of readdirSync('/sys/class/block')) {
    const u = read(`/sys/class/block/${d}/uevent`);
    if (u.split('\n').includes(`PARTNAME=${label}`)) return /^DEVNAME=(.*)$/m.exec(u)?.[1];
  }
  return undefined;
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
 * Waits (bounded) until every virtio device has its driver bound and the list of block
 * devices stops changing: a config volume probed a moment after the root must not be missed.
 */
export async function settleDevices(maxMs = 8000): Promise<string> {
  const t0 = Date.now();
  const unbound = () => { try { return readdirSync('/sys/bus/virtio/devices').filter((d) => !existsSync(`/sys/bus/virtio/devices/${d}/driver`)); } catch { return []; } };
  const blocks = () => { try { return readdirSync('/sys/class/block').join(' '); } catch { return ''; } };
  let last = blocks();
  let stableSince = Date.now();
  while (Date.now() - t0 < maxMs) {
    await new Promise((r) => setTimeout(r, 100));
    const now = blocks();
    if (now !== last) { last = now; stableSince = Date.now(); }
    if (!unbound().length && Date.now() - stableSince >= 300) break;
  }
  const left = unbound();
  return `devices settled in ${Date.now() - t0} ms${left.length ? ` (no driver yet: ${left.join(', ')})` : ''}`;
}
