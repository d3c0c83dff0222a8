// Boot facts and the per-boot records on the data partition (boot count, machine id)
// plus slot blessing on the ESP.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { stateDir } from './etcstate.ts';
import { run } from './exec.ts';
import { randomHex } from './safefs.ts';
import { say } from './log.ts';
import { blessRename, cmdlineArg, slotFromCmdline, type Slot } from './slot.ts';
import { mount, mountSource, partitionByLabel, read } from './system.ts';
import { partitionBySpec } from './bootctl/devices.ts';

export const STATE_DIR = '/var/lib/kiln';
export const ESP_MOUNT = '/efi';
/** The ESP's mount options, stage 1's as well (builder/stage1/init.sh). */
export const ESP_OPTIONS = 'rw,noatime,umask=0077,shortname=mixed,utf8=0,iocharset=ascii';

export interface BootInfo { version: string; arch: string; slot: Slot; cmdline: string; kernel: string; chain: BootChain }

/** What vouched for this boot: the firmware's Secure Boot and stage 1's dm-verity. */
export interface BootChain { secureBoot: 'on' | 'off' | 'unsupported'; root: 'verified' | 'unverified'; rootHash?: string }

const EFI_GLOBAL = '8be4df61-93ca-11d2-aa0d-00e098032b8c';

/**
 * Secure Boot from the SecureBoot EFI variable (4 attribute bytes, then 1 = enforcing); the
 * root is verified when stage 1 mounted it through dm-verity (it passes the root hash on) and
 * the mapping is still there.
 */
export function bootChain(o: { env?: NodeJS.ProcessEnv; efiDir?: string; sysBlock?: string } = {}): BootChain {
  const env = o.env ?? process.env;
  const efiDir = o.efiDir ?? '/sys/firmware/efi';
  const sysBlock = o.sysBlock ?? '/sys/block';
  let secureBoot: BootChain['secureBoot'] = 'unsupported';
  if (existsSync(efiDir)) {
    const v = readBytes(`${efiDir}/efivars/SecureBoot-${EFI_GLOBAL}`);
    secureBoot = v && v.length >= 5 && v[4] === 1 ? 'on' : 'off';
  }
  const hash = /^[0-9a-f]{64}$/.test(env.KILN_VERITY ?? '') ? env.KILN_VERITY : undefined;
  let mapped = false;
  try { mapped = readdirSync(sysBlock).some((d) => d.startsWith('dm-') && read(`${sysBlock}/${d}/dm/name`).trim() === 'kiln-root'); } catch { /* no /sys/block */ }
  return hash && mapped ? { secureBoot, root: 'verified', rootHash: hash } : { secureBoot, root: 'unverified' };
}

/** The console line, once per boot (a contract: scripts grep it). */
export const bootChainLine = (c: BootChain) => `boot chain: secure-boot=${c.secureBoot} root=${c.root}`;

function readBytes(file: string): Buffer | undefined {
  try { return readFileSync(file); } catch { return undefined; }
}

export function bootInfo(): BootInfo {
  const os = Object.fromEntries(read('/etc/os-release').split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).replace(/^"|"$/g, '')]));
  const cmdline = read('/proc/cmdline').trim();
  return { version: os.VERSION_ID ?? 'unknown', arch: os.KILN_ARCH ?? process.arch, slot: process.env.KILN_SLOT === 'a' || process.env.KILN_SLOT === 'b' ? process.env.KILN_SLOT : slotFromCmdline(cmdline), cmdline, kernel: read('/proc/sys/kernel/osrelease').trim(), chain: bootChain() };
}

export function writeAtomic(file: string, text: string, mode = 0o644) {
  writeFileSync(`${file}.tmp`, text, { mode });
  renameSync(`${file}.tmp`, file);
}

/** Increments and returns the persistent boot counter. */
export function countBoot(dir = STATE_DIR): number {
  mkdirSync(dir, { recursive: true });
  const n = (Number(read(`${dir}/boot-count`).trim()) || 0) + 1;
  writeAtomic(`${dir}/boot-count`, `${n}\n`);
  return n;
}

/**
 * /etc/machine-id, made once on first boot and kept in the /etc state on data (etcstate.ts):
 * /etc itself starts from the root every boot. A valid saved id wins and is written to /etc;
 * without one, /etc's (the old layout's, or restored) or a new one is saved. A failure to save
 * is said and boot goes on with the id (it is then new on the next boot).
 */
export function ensureMachineId(file = '/etc/machine-id', saved = join(stateDir(), 'machine-id')): string {
  const valid = (s: string) => /^[0-9a-f]{32}$/.test(s);
  const cur = read(file).trim();
  let id = read(saved).trim();
  if (!valid(id)) {
    id = valid(cur) ? cur : randomHex(16);
    try { mkdirSync(dirname(saved), { recursive: true }); writeAtomic(saved, `${id}\n`, 0o444); } catch (e) { say(`machine-id: not saved to ${saved}: ${(e as Error).message}`); }
  }
  if (cur !== id) writeAtomic(file, `${id}\n`, 0o444);
  return id;
}

export async function mountEsp(): Promise<string> {
  // Stage 1 mounts it (with ESP_OPTIONS) wherever it finds it: one read of /proc/mounts then.
  const early = mountSource(ESP_MOUNT);
  if (early) return `${early.replace(/^\/dev\//, '')} (mounted by stage 1)`;
  // MBR (the Pi) has no labels: its boot script names the FAT partition with kiln.boot=.
  const spec = cmdlineArg(read('/proc/cmdline'), 'kiln.boot');
  const dev = partitionByLabel('esp') ?? partitionBySpec(spec);
  if (!dev) throw new Error(spec ? `no partition ${spec} (kiln.boot)` : 'no partition labelled esp');
  await mount('vfat', `/dev/${dev}`, ESP_MOUNT, ESP_OPTIONS);
  return dev;
}

/** Drops the tries suffix of this slot's boot entry. Returns what it did. */
export async function blessSlot(slot: Slot, esp = ESP_MOUNT): Promise<string> {
  const dir = `${esp}/EFI/Linux`;
  if (!existsSync(dir)) throw new Error(`${dir} does not exist (ESP not mounted?)`);
  const r = blessRename(readdirSync(dir), slot);
  if (!r) return `slot ${slot} already blessed`;
  renameSync(`${dir}/${r.from}`, `${dir}/${r.to}`);
  await run('sync', [], { timeoutMs: 20_000 });
  return `blessed slot ${slot}`;
}

export { cmdlineArg };
