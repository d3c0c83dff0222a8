// The work behind each task of the boot plan (plan.ts), in plan order. Each returns an
// optional note for init.log; a throw marks the task failed and boot goes on.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { cmdlineArg, countBoot, ensureMachineId, mountEsp, writeAtomic } from '../boot.ts';
import { decideRuncmd, instanceOf, RUNCMD_DONE } from '../config/instance.ts';
import { clockFloor, clockState, readFloorSources, SAVE_INTERVAL_MS, saveClock } from '../clock.ts';
import { partitionBySpec } from '../bootctl/index.ts';
import type { KilnConfig } from '../config/schema.ts';
import {
  applyDns, applyHostname, applyModules, applyPassword, applySshKeys, applySysctls, applyUsers, chooseAndReport,
  chooseHostname, gatherSources, runCommands, runScripts, writeFiles,
} from '../configure.ts';
import { migrateOldEtc, PERSISTENT_ETC, restoreEtcState, stateDir } from '../etcstate.ts';
import { runOk } from '../exec.ts';
import { growDataPartition } from '../grow.ts';
import { debug, enableFileLog, LOG_DIR, say } from '../log.ts';
import { configureStatic, ethernetLinks, waitForLease } from '../network.ts';
import { watchNewPowerButtons, watchPowerButton } from '../power.ts';
import { dhcpService } from '../services/dhcp.ts';
import { k3sService } from '../services/k3s.ts';
import { ntpService } from '../services/ntp.ts';
import { sshService } from '../services/ssh.ts';
import { wifiDhcpService, wifiService, wirelessLinks } from '../services/wifi.ts';
import { isMounted, loadModules, read, unloadedModules } from '../system.ts';
import { Coldplug, loadAliasTable, scanModaliases, startHotplug } from '../coldplug.ts';
import { chosenOk, k3sStatus, report, type BootContext } from './context.ts';
import { isoUtcS } from '../utc.ts';

/** How long the network phase waits for a first ethernet link to appear. */
const LINK_WAIT_MS = 20_000;
/** How long kiln.wifi waits for a wireless link (its driver may need firmware, or USB). */
const WIFI_WAIT_MS = 120_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- modules

export async function loadBootModules(): Promise<string> {
  return `${await loadListed('/usr/lib/kiln/modules-load')} loaded${await coldplugAndWatch()}`;
}

/** k3s's modules (netfilter, bridges, vxlan): a list of their own, loaded beside the config's tasks. */
export async function loadK3sModules(): Promise<string> {
  return `${await loadListed('/usr/lib/kiln/modules-load-k3s')} loaded`;
}

/** Stage 1 loads both lists before init starts: only what it could not load is tried (and named) here. */
async function loadListed(list: string): Promise<number> {
  const names = read(list).split('\n').map((s) => s.trim()).filter(Boolean);
  const missing = unloadedModules(names);
  if (!missing.length) return names.length;
  const r = await loadModules(missing);
  if (r.failed.length) say(`modules not loaded: ${r.failed.join(', ')}`);
  return names.length - r.failed.length;
}

/** Hardware images (with a modules.alias): drivers by modalias now and for devices arriving later. */
async function coldplugAndWatch(): Promise<string> {
  const table = loadAliasTable(`/lib/modules/${read('/proc/sys/kernel/osrelease').trim()}/modules.alias`);
  if (!table) return '';
  const cp = new Coldplug(table, async (n) => { const r = await loadModules(n); if (r.failed.length) say(`modules not loaded: ${r.failed.join(', ')}`); }, say);
  const loaded = await cp.handle(scanModaliases(), 'coldplug');
  // A keyboard plugged in later has a power key too (watchButton took the ones present at boot).
  startHotplug(cp, say, { onAdded: (added) => {
    if (!added.some((a) => a.startsWith('input:'))) return;
    const more = watchNewPowerButtons();
    if (more.length) debug(`power button: also ${more.join(', ')}`);
  } });
  return `, ${loaded.length} by modalias; hotplug on`;
}

export function watchButton(ctx: BootContext): string {
  return `power button: ${watchPowerButton(() => ctx.power('poweroff', 'power button')).join(', ') || 'none found'}`;
}

// ---- clock

/**
 * The clock floor (clock.ts): before anything uses TLS, the clock goes up to the newest of the
 * RTC, the build time and the time saved on /data. Then the saved time is refreshed every
 * SAVE_INTERVAL_MS (and at shutdown, main.ts), so the next boot starts no further back.
 */
export async function setClockFloor(): Promise<string | undefined> {
  const f = clockFloor(readFloorSources('/'));
  for (const i of f.ignored) say(`clock: ${i}`);
  if (f.floorS === undefined || !f.from) return 'no floor known (no RTC, build time or saved time)';
  if (f.step) {
    const e = await runOk('date', ['-u', '-s', `@${f.floorS}`], { timeoutMs: 5000 });
    // Reported, not a failed task: a clock left behind is no reason to keep a slot unblessed.
    if (e) { say(`clock: cannot set it to ${isoUtcS(f.floorS)}: ${e}`); return undefined; }
  }
  clockState.floor = { atS: f.floorS, from: f.from, stepped: f.step };
  setInterval(saveClockQuietly, SAVE_INTERVAL_MS).unref();
  saveClockQuietly();
  if (!f.step) return `clock at or above ${isoUtcS(f.floorS)} (${f.from})`;
  say(`clock set to ${isoUtcS(f.floorS)} (${f.from})`);
  return undefined;
}

/** Saves the clock on /data; a read-only or missing /data is not worth a failed task. */
export function saveClockQuietly(): void {
  try { if (isMounted('/data')) saveClock(); } catch (e) { say(`clock: not saved: ${(e as Error).message}`); }
}

// ---- data

export function startFileLog(): void {
  if (!isMounted('/data')) say('WARNING: no data partition: nothing persists');
  mkdirSync(LOG_DIR, { recursive: true });
  enableFileLog();
}

/**
 * A disk larger than the image (resized qcow2, cloud volume): kiln-data takes the rest.
 * Reported, not a failed task: a disk left at the image's size is no reason to roll back.
 */
export async function growData(ctx: BootContext): Promise<string | undefined> {
  if (ctx.live) return 'live system';
  try {
    const m = await growDataPartition('kiln-data', partitionBySpec(cmdlineArg(ctx.info.cmdline, 'kiln.data')));
    if (m) say(m);
  } catch (e) { say(`data partition not grown: ${(e as Error).message}`); }
  return undefined;
}

export function countThisBoot(): void { say(`boot count ${countBoot()}`); }

/**
 * The named /etc state (etcstate.ts) back into this boot's /etc, after taking it over from the
 * old layout's overlay once. Each failure is said and boot goes on: new host keys are better
 * than no SSH.
 */
export function restoreEtc(): string {
  const notes: string[] = [];
  try { for (const l of migrateOldEtc()) say(`etc: ${l}`); } catch (e) { notes.push(`migration: ${(e as Error).message}`); }
  notes.push(...restoreEtcState());
  for (const n of notes) say(`etc: state not restored: ${n}`);
  return notes.length ? `${notes.length} problems` : `${PERSISTENT_ETC.length} items from ${stateDir()}`;
}

export function readMachineId(ctx: BootContext): string {
  ctx.machineId = ensureMachineId();
  return `machine-id ${ctx.machineId}`;
}

/** The live ISO has no ESP (and must not touch one on a disk it may install to). */
export async function mountBootPartition(ctx: BootContext): Promise<string> {
  return ctx.live ? 'live system: no ESP' : `esp on /dev/${await mountEsp()}`;
}

// ---- config

export async function chooseLocalConfig(ctx: BootContext): Promise<string> {
  ctx.chosen = await chooseAndReport(await gatherSources('local', ctx.info.cmdline), { fetchUrl: false });
  return `config: ${ctx.chosen.used}, ${ctx.chosen.gathered.sources.length} sources`;
}

/** Applies what can be applied before the network (and again if a network source changed it). */
export async function applyLocalConfig(ctx: BootContext): Promise<void> {
  const c = ctx.cfg();
  applyHostname(chooseHostname(c, ctx.chosen?.gathered ?? { sources: [], scripts: [], notes: [] }, ctx.machineId));
  // Users before write_files, so a file can be owned by a user the config makes.
  const pw = await applyPassword(c);
  if (pw) report([pw]);
  report(applyUsers(c));
  report(writeFiles(c));
  report(await applyModules(c));
  report(applySysctls(c));
  applyDns(c);
}

/** Keys known from earlier boots, so SSH works even when the network never comes. */
export async function installCachedKeys(ctx: BootContext): Promise<string> {
  const r = await applySshKeys(ctx.cfg(), { offline: true, chosenOk: chosenOk(ctx), allowInsecureHttp: ctx.chosen?.allowInsecureHttp });
  return `${r.count} keys from cache`;
}

/** init_cmd, boot_cmd or run_cmd of the config in force; failures are reported, not thrown. */
export async function runUserCommands(ctx: BootContext, which: 'init_cmd' | 'boot_cmd' | 'run_cmd'): Promise<void> {
  const c: KilnConfig = ctx.cfg();
  report(await runCommands(which, c[which], c.kiln.environment));
}

export function startSsh(ctx: BootContext): void {
  ctx.supervisor.add(sshService({ config: ctx.cfg }));
  void ctx.supervisor.start('ssh');
}

// ---- network

/** Static addresses as configured, DHCP on the rest (the first link when none is named). */
export async function bringUpLinks(ctx: BootContext): Promise<void> {
  const ifs = ctx.cfg().kiln.network.interfaces;
  // USB Ethernet (the Pi's own, adapters) shows up seconds after its controller's driver loads.
  let links = ethernetLinks();
  for (const end = Date.now() + LINK_WAIT_MS; !links.length && Date.now() < end;) { await sleep(250); links = ethernetLinks(); }
  if (!links.length) { say(`network: no ethernet link found (waited ${LINK_WAIT_MS / 1000} s)`); return; }
  const dhcp = links.filter((l, i) => ifs[l] ? ifs[l].dhcp && !ifs[l].addresses.length : Object.keys(ifs).length === 0 ? i === 0 : false);
  for (const l of links.filter((x) => ifs[x] && ifs[x].addresses.length)) {
    try { say(`network ${l} ${await configureStatic(l, ifs[l])} (static)`); } catch (e) { say(`network ${l}: ${(e as Error).message}`); }
  }
  // udhcpc's hook sets the link up (deconfig, which udhcpc runs first): no spawn of ip here.
  for (const l of dhcp) {
    ctx.supervisor.add(dhcpService(l, () => read('/proc/sys/kernel/hostname').trim()));
    void ctx.supervisor.start(`dhcp-${l}`);
  }
  for (const l of dhcp) {
    const got = await waitForLease(l, 30_000);
    if (got) say(`network ${l} ${got.ip}/${got.mask} gateway ${got.router || '-'}`);
    else say(`network ${l}: no DHCP lease yet (still trying)`);
  }
}

/**
 * kiln.wifi: wpa_supplicant on the first wireless link, DHCP on it once associated. A wifi
 * driver may come up late (firmware, USB): the link is waited for in the background.
 */
export function startWifi(ctx: BootContext): string {
  if (!ctx.cfg().kiln.wifi.length) return 'no kiln.wifi';
  const begin = (iface: string) => {
    ctx.supervisor.add(wifiService(iface, { networks: () => ctx.cfg().kiln.wifi }));
    ctx.supervisor.add(wifiDhcpService(iface, () => read('/proc/sys/kernel/hostname').trim()));
    void ctx.supervisor.start(`wifi-${iface}`);
    void ctx.supervisor.start(`dhcp-${iface}`);
  };
  const now = wirelessLinks();
  if (now.length) { begin(now[0]!); return `wifi on ${now[0]}`; }
  void (async () => {
    for (const end = Date.now() + WIFI_WAIT_MS; Date.now() < end; await sleep(1000)) {
      const l = wirelessLinks();
      if (l.length) { say(`network: wireless link ${l[0]} appeared`); begin(l[0]!); return; }
    }
    say(`network: kiln.wifi is set but no wireless link appeared in ${WIFI_WAIT_MS / 1000} s (driver or firmware missing?)`);
  })();
  return 'waiting for a wireless link';
}

// ---- config from the network

/** Sources reachable only over the network; a changed config is applied again. */
export async function readNetworkSources(ctx: BootContext): Promise<string | undefined> {
  const g = await gatherSources('network', ctx.info.cmdline, ctx.cfg().kiln.data_sources);
  const again = await chooseAndReport(g, { fetchUrl: true });
  if (JSON.stringify(again.config) !== JSON.stringify(ctx.cfg())) {
    ctx.chosen = again;
    await applyLocalConfig(ctx);
    return 'network sources changed the config';
  }
  ctx.chosen = again;
  return undefined;
}

export async function fetchSshKeys(ctx: BootContext): Promise<string> {
  const r = await applySshKeys(ctx.cfg(), { chosenOk: chosenOk(ctx), allowInsecureHttp: ctx.chosen?.allowInsecureHttp });
  report(r.problems);
  // The key cache and the last good config, what let owners in after a bad day, are synced
  // file by file when written (config/keys.ts, writePrivateFile): no global sync waits here.
  return `${r.count} keys`;
}

export function startNtp(ctx: BootContext): void {
  ctx.supervisor.add(ntpService({ servers: () => ctx.cfg().kiln.ntp_servers, say }));
  void ctx.supervisor.start('ntp');
}

// ---- k3s and after

export async function startK3s(ctx: BootContext): Promise<string | undefined> {
  ctx.supervisor.add(k3sService(() => ctx.cfg()));
  // run_cmd comes "after k3s has started": wait for the process, not for the cluster. start()
  // resolves once it is spawned, has failed to or is skipped (no polling: on a slow board each
  // turn of a poll is time on the way to ready); a start that hangs is waited for a minute.
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    ctx.supervisor.start('k3s').catch(() => undefined),
    new Promise((r) => { timer = setTimeout(r, 60_000); }),
  ]);
  clearTimeout(timer);
  return k3sStatus(ctx)?.state;
}

/**
 * runcmd: once per instance (config/instance.ts). The instance is recorded on the data
 * partition before the commands start; when that cannot be written they do not run at all,
 * since running them at every boot is what runcmd promises not to do.
 */
export async function runOncePerInstance(ctx: BootContext): Promise<string> {
  const c = ctx.cfg();
  const { id, origin } = instanceOf(ctx.chosen?.gathered.instance, ctx.machineId);
  const d = decideRuncmd({ commands: c.runcmd.length, chosenOk: chosenOk(ctx), id, origin, done: read(RUNCMD_DONE) });
  if (!d.run) return `runcmd: ${d.why}`;
  try {
    mkdirSync(dirname(RUNCMD_DONE), { recursive: true, mode: 0o700 });
    writeAtomic(RUNCMD_DONE, d.record, 0o600);
  } catch (e) {
    report([`runcmd: not run: cannot record instance ${id} in ${RUNCMD_DONE} (${(e as Error).message}), and without the record it would run at every boot`]);
    return 'runcmd: not run';
  }
  say(`config: runcmd: ${d.why}`);
  report(await runCommands('runcmd', c.runcmd, c.kiln.environment));
  return `runcmd: ${d.why}`;
}

export async function runUserScripts(ctx: BootContext): Promise<void> {
  report(await runScripts(ctx.chosen?.gathered.scripts ?? [], ctx.cfg().kiln.environment));
}
