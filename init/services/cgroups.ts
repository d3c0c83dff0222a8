// Resource control: init keeps itself out of the OOM killer's reach (if init dies, tini
// exits and the kernel panics) and gives every service its own cgroup v2 group, with
// optional memory and CPU limits. The layout under the cgroup2 mount:
//   kiln/            controllers enabled for the groups below; no processes of its own
//   kiln/init        init and the commands it runs (a leaf: cgroup v2's no-internal-process rule)
//   kiln/<service>   one leaf per supervised service (ssh, ntp, dhcp-eth0, k3s, ...)
//   kubepods/        made by k3s's kubelet for the pods (cgroup-root /)
// tini, PID 1, stays in the root group (exempt from that rule), where Kubernetes tools expect a
// host's PID 1. Every path is relative to a root given to the constructor, so tests can use
// a plain directory.
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { statusKiB } from '../system.ts';

export const CGROUP_ROOT = '/sys/fs/cgroup';
/** What a group may need: kubelet checks cpu, cpuset, memory and pids; io is for the pods' disk weights. */
export const CONTROLLERS = ['cpu', 'cpuset', 'io', 'memory', 'pids'];
/** cpu.max's period: 100 ms, the kernel's default. */
const CPU_PERIOD_US = 100_000;
/** cpu.weight's default (and init's own group's): the share a group gets when the CPU is contended. */
export const CPU_WEIGHT = 100;

export interface Limits {
  /** memory.max in bytes: the service's group is reclaimed, then OOM-killed, above it. */
  memoryBytes?: number;
  /** cpu.max as a number of CPUs (0.5 = half of one): the group is throttled above it. */
  cpus?: number;
}

const read = (p: string) => { try { return readFileSync(p, 'utf8'); } catch { return undefined; } };

/** A service id that can name a group: one plain path segment, not init's own. */
export function groupName(id: string): string | undefined {
  return /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$/.test(id) && id !== 'init' ? id : undefined;
}

/** The cgroup.max file contents for limits (pure, for tests). */
export function limitFiles(l: Limits = {}): { 'memory.max': string; 'cpu.max': string } {
  return {
    'memory.max': l.memoryBytes !== undefined ? String(Math.trunc(l.memoryBytes)) : 'max',
    'cpu.max': l.cpus !== undefined ? `${Math.max(1000, Math.round(l.cpus * CPU_PERIOD_US))} ${CPU_PERIOD_US}` : `max ${CPU_PERIOD_US}`,
  };
}

/** Checks a spec's declared limits, OOM score and startup CPU weight; a message naming the key and the fix, or undefined. */
export function checkLimits(id: string, l: Limits | undefined, oomScoreAdj: number | undefined, startupCpuWeight?: number): string | undefined {
  if (l?.memoryBytes !== undefined && !(Number.isInteger(l.memoryBytes) && l.memoryBytes >= 4 << 20)) return `service ${id}: limits.memoryBytes must be a whole number of bytes, at least 4 MiB (got ${l.memoryBytes})`;
  if (l?.cpus !== undefined && !(typeof l.cpus === 'number' && l.cpus >= 0.01 && l.cpus <= 4096)) return `service ${id}: limits.cpus must be a number of CPUs between 0.01 and 4096 (got ${l.cpus})`;
  if (oomScoreAdj !== undefined && !(Number.isInteger(oomScoreAdj) && oomScoreAdj >= -1000 && oomScoreAdj <= 1000)) return `service ${id}: oomScoreAdj must be a whole number from -1000 to 1000 (got ${oomScoreAdj})`;
  if (startupCpuWeight !== undefined && !(Number.isInteger(startupCpuWeight) && startupCpuWeight >= 1 && startupCpuWeight <= 10_000)) return `service ${id}: startupCpuWeight must be a whole number from 1 to 10000 (got ${startupCpuWeight})`;
  return undefined;
}

export class CgroupTree {
  /** Controllers enabled for the service groups (set by setup). */
  enabled: string[] = [];
  constructor(readonly root = CGROUP_ROOT, readonly base = 'kiln') {}

  /** A cgroup2 filesystem is mounted at root. */
  available(): boolean { return existsSync(join(this.root, 'cgroup.controllers')); }

  /**
   * Enables the controllers the kernel offers in the root and in kiln/, and makes kiln/.
   * Returns a note for init's log; throws when there is no cgroup2 at root.
   */
  setup(): string {
    if (!this.available()) throw new Error(`no cgroup2 filesystem at ${this.root}`);
    const offered = (read(join(this.root, 'cgroup.controllers')) ?? '').split(/\s+/).filter(Boolean);
    const atRoot = this.enable(this.root, CONTROLLERS.filter((c) => offered.includes(c)));
    mkdirSync(join(this.root, this.base), { recursive: true });
    this.enabled = this.enable(join(this.root, this.base), atRoot);
    const missing = CONTROLLERS.filter((c) => !this.enabled.includes(c));
    return `cgroups: ${this.enabled.join(' ') || 'no controllers'} for services${missing.length ? ` (not available: ${missing.join(' ')})` : ''}`;
  }

  /** Writes +controller for each; all at once, else one by one so one refusal loses only itself. */
  private enable(dir: string, list: string[]): string[] {
    if (!list.length) return [];
    const file = join(dir, 'cgroup.subtree_control');
    try { writeFileSync(file, list.map((c) => `+${c}`).join(' ')); return list; } catch { /* one of them refused */ }
    return list.filter((c) => { try { writeFileSync(file, `+${c}`); return true; } catch { return false; } });
  }

  /** The group for init itself (and what it runs). */
  initDir(): string { return join(this.root, this.base, 'init'); }

  /** Moves a process (all its threads) into init's leaf group. */
  enterInit(pid: number): void {
    mkdirSync(this.initDir(), { recursive: true });
    writeFileSync(join(this.initDir(), 'cgroup.procs'), String(pid));
  }

  /**
   * Makes a service's group and writes its limits ("max" where none is declared, so a limit
   * removed from the spec is lifted on the next start) and its CPU weight. Returns the group
   * and what could not be applied.
   */
  prepare(id: string, limits?: Limits, cpuWeight = CPU_WEIGHT): { dir: string; procs: string; problems: string[] } | undefined {
    const name = groupName(id);
    if (!name) return undefined;
    const dir = join(this.root, this.base, name);
    mkdirSync(dir, { recursive: true });
    const problems: string[] = [];
    const files = limitFiles(limits);
    for (const [file, controller, declared] of [['memory.max', 'memory', limits?.memoryBytes], ['cpu.max', 'cpu', limits?.cpus]] as const) {
      if (!this.enabled.includes(controller)) {
        if (declared !== undefined) problems.push(`${file} not set: the ${controller} controller is not available`);
        continue;
      }
      try { writeFileSync(join(dir, file), files[file]); } catch (e) { if (declared !== undefined) problems.push(`${file} not set: ${(e as Error).message}`); }
    }
    this.setCpuWeight(dir, cpuWeight);
    return { dir, procs: join(dir, 'cgroup.procs'), problems };
  }

  /** A group's cpu.weight (checkLimits holds it to 1..10000); false where the cpu controller or the group is missing. */
  setCpuWeight(dir: string, weight: number): boolean {
    if (!this.enabled.includes('cpu')) return false;
    try { writeFileSync(join(dir, 'cpu.weight'), String(weight)); return true; } catch { return false; }
  }

  /** memory.current of a group, if the memory controller accounts it. */
  memoryCurrent(dir: string): number | undefined {
    const v = read(join(dir, 'memory.current'))?.trim();
    return v && /^\d+$/.test(v) ? Number(v) : undefined;
  }

  /** The processes in a group. */
  procs(dir: string): number[] {
    return (read(join(dir, 'cgroup.procs')) ?? '').split('\n').filter((l) => /^\d+$/.test(l)).map(Number);
  }
}

/** The tree init set up at boot; services fall back to init's own group without one. */
let active: CgroupTree | undefined;
export function activeCgroups(): CgroupTree | undefined { return active; }

/** Resident memory of some processes, summed from /proc/PID/status (shared pages count once per process). */
export function rssOf(pids: number[], proc = '/proc'): number | undefined {
  let total = 0, seen = 0;
  for (const pid of pids) {
    const kb = statusKiB(read(`${proc}/${pid}/status`) ?? '', 'VmRSS');
    if (kb !== undefined) { total += kb * 1024; seen++; }
  }
  return seen ? total : undefined;
}

/** The processes in a process group (a scan of /proc). */
export function groupMembers(pgid: number, proc = '/proc'): number[] {
  const out: number[] = [];
  let entries: string[] = [];
  try { entries = readdirSync(proc); } catch { return out; }
  for (const p of entries) {
    if (!/^\d+$/.test(p)) continue;
    const s = read(`${proc}/${p}/stat`);
    if (!s) continue;
    // Fields after the command name (which may hold spaces): state ppid pgrp ...
    const rest = s.slice(s.lastIndexOf(')') + 2).split(' ');
    if (Number(rest[2]) === pgid) out.push(Number(p));
  }
  return out;
}

/**
 * Protects init from the OOM killer and puts it in its own leaf group. Called once at boot,
 * as soon as /sys/fs/cgroup is mounted. oom_score_adj -1000 for init and for tini (PID 1):
 * the kernel never picks them, and what they start is reset to 0 (or a service's own value).
 * Never throws; returns a note for init's log.
 */
export function protectInit(o: { proc?: string; pid?: number; cgroups?: CgroupTree } = {}): string {
  const proc = o.proc ?? '/proc';
  const pid = o.pid ?? process.pid;
  const notes: string[] = [];
  const unprotected: string[] = [];
  for (const p of new Set([pid, 1])) {
    try { writeFileSync(`${proc}/${p}/oom_score_adj`, '-1000'); } catch (e) { unprotected.push(`${p} (${(e as Error).message})`); }
  }
  notes.push(unprotected.length ? `OOM protection failed for ${unprotected.join(', ')}` : 'init and tini protected from the OOM killer');
  const tree = o.cgroups ?? new CgroupTree();
  try {
    notes.push(tree.setup());
    active = tree;
  } catch (e) {
    notes.push(`no service cgroups: ${(e as Error).message}`);
    return notes.join('; ');
  }
  // Left in the root group (exempt from the no-internal-process rule), init still works.
  try { tree.enterInit(pid); } catch (e) { notes.push(`init stays in the root cgroup: ${(e as Error).message}`); }
  return notes.join('; ');
}
