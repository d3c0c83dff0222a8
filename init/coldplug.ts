// Drivers chosen by the machine: at boot, init loads the module of every device present by
// its modalias (coldplug), then keeps doing so for devices that arrive later (hotplug: USB
// Ethernet, wifi, USB disks). Node has no netlink sockets, so busybox's `uevent` applet
// listens on the kernel's uevent netlink socket and prints each new device's MODALIAS for
// init to match. Should the listener fail to start or keep dying, init falls back to
// rescanning /sys every few seconds for a bounded time. Images without a modules.alias
// (the cloud profile, whose drivers are loaded by name) skip all of this.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { matchModalias, MAX_ALIAS_BYTES, parseModulesAlias, type AliasTable } from './modalias.ts';

/** Bounds on the walk of /sys/devices (a large server has a few thousand devices). */
const MAX_DEPTH = 24;
const MAX_MODALIASES = 20_000;

/** Every modalias under `root` (sysfs /sys/devices), without following symlinks. */
export function scanModaliases(root = '/sys/devices'): string[] {
  const out = new Set<string>();
  const walk = (dir: string, depth: number) => {
    if (depth > MAX_DEPTH || out.size >= MAX_MODALIASES) return;
    let entries;
    try { entries = readdirSync(dir, { withFileTypes: true }); } catch { return; }
    for (const e of entries) {
      if (e.isDirectory()) walk(join(dir, e.name), depth + 1);
      else if (e.name === 'modalias' && e.isFile()) {
        try { const v = readFileSync(join(dir, e.name), 'utf8').trim(); if (v) out.add(v); } catch { /* device gone */ }
      }
    }
  };
  walk(root, 0);
  return [...out].sort();
}

/** The alias table of the running kernel, or undefined when the image has none. */
export function loadAliasTable(file: string): AliasTable | undefined {
  try {
    if (statSync(file).size > MAX_ALIAS_BYTES) return undefined;
    return parseModulesAlias(readFileSync(file, 'utf8'));
  } catch { return undefined; }
}

/**
 * Remembers which modaliases were handled, so rescans and repeated events only cost a
 * lookup. `load` gets the module names for a batch (busybox modprobe -a).
 */
export class Coldplug {
  private seen = new Set<string>();
  constructor(private table: AliasTable, private load: (names: string[]) => Promise<void>, private note: (msg: string) => void) {}

  /** Module names for modaliases not handled before; marks them handled. */
  modulesFor(modaliases: string[]): string[] {
    const names: string[] = [];
    for (const a of modaliases) {
      if (this.seen.has(a)) continue;
      this.seen.add(a);
      for (const m of matchModalias(this.table, a)) if (!names.includes(m)) names.push(m);
    }
    return names;
  }

  async handle(modaliases: string[], why: string): Promise<string[]> {
    const names = this.modulesFor(modaliases);
    if (names.length) {
      this.note(`${why}: loading ${names.join(', ')}`);
      await this.load(names);
    }
    return names;
  }
}

export interface HotplugOptions {
  /** The listener's command (busybox uevent running a shell that prints add events' MODALIAS). */
  command?: [string, string[]];
  rescanMs?: number;
  /** How long the fallback rescan runs after the listener is given up. */
  rescanForMs?: number;
  maxRestarts?: number;
  scan?: () => string[];
  /** Told each burst of added devices' modaliases, after their modules are asked for. */
  onAdded?: (modaliases: string[]) => void;
}

export const UEVENT_COMMAND: [string, string[]] = ['uevent', ['sh', '-c', '[ "$ACTION" = add ] && [ -n "$MODALIAS" ] && echo "$MODALIAS"; exit 0']];

/**
 * Starts hotplug handling; never throws. Returns a stop function. After the listener is up a
 * rescan catches devices that appeared between coldplug and the listener's start.
 */
export function startHotplug(cp: Coldplug, note: (msg: string) => void, o: HotplugOptions = {}): () => void {
  const [cmd, args] = o.command ?? UEVENT_COMMAND;
  const scan = o.scan ?? (() => scanModaliases());
  const rescanMs = o.rescanMs ?? 5000;
  let stopped = false, restarts = 0;
  let child: ReturnType<typeof spawn> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let pending: string[] = [];
  let flush: NodeJS.Timeout | undefined;
  const queue = (a: string) => {
    pending.push(a);
    // Events come in bursts (a hub and its ports): one modprobe per burst.
    flush ??= setTimeout(() => {
      flush = undefined; const batch = pending; pending = [];
      cp.handle(batch, 'hotplug').catch(() => {}).finally(() => { try { o.onAdded?.(batch); } catch { /* never ends hotplug */ } });
    }, 200);
  };
  const fallback = () => {
    note(`hotplug: uevent listener unavailable; rescanning /sys every ${rescanMs / 1000} s for ${Math.round((o.rescanForMs ?? 600_000) / 60000)} min`);
    const until = Date.now() + (o.rescanForMs ?? 600_000);
    const tick = () => {
      if (stopped || Date.now() > until) return;
      cp.handle(scan(), 'rescan').catch(() => {}).finally(() => { if (!stopped) timer = setTimeout(tick, rescanMs); });
    };
    tick();
  };
  const listen = () => {
    if (stopped) return;
    let buf = '';
    const started = Date.now();
    try {
      child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    } catch { fallback(); return; }
    child.on('error', () => { /* reported through 'close' */ });
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      buf += d;
      if (buf.length > 1 << 20) buf = '';
      let i;
      while ((i = buf.indexOf('\n')) >= 0) { const line = buf.slice(0, i).trim(); buf = buf.slice(i + 1); if (line) queue(line); }
    });
    child.on('close', () => {
      child = undefined;
      if (stopped) return;
      // A listener that ran a while is restarted; one that keeps dying gives way to rescans.
      if (Date.now() - started > 60_000) restarts = 0;
      if (++restarts > (o.maxRestarts ?? 3)) { fallback(); return; }
      timer = setTimeout(listen, 1000);
    });
    setTimeout(() => { if (!stopped) cp.handle(scan(), 'coldplug rescan').catch(() => {}); }, 500);
  };
  listen();
  return () => { stopped = true; if (timer) clearTimeout(timer); if (flush) clearTimeout(flush); child?.kill(); };
}
