// kiln's init. The kernel's PID 1 is tini, which only reaps orphans and forwards
// signals; this process is the init proper: boot phases, config, services, health,
// shutdown. Nothing here may end the process: tini would exit and the kernel would panic.
import { existsSync, mkdirSync } from 'node:fs';
import { bootChainLine, bootInfo, cmdlineArg, countBoot, ensureMachineId, mountEsp } from './boot.ts';
import { blessBooted, detectBootLoader, partitionBySpec, siblingPartition, ubootFellBackFrom } from './bootctl/index.ts';
import { candidateDisks, install, installedConfig, mountMedium, readManifest } from './install.ts';
import { applyDefaults } from './config/parse.ts';
import type { KilnConfig } from './config/schema.ts';
import {
  applyDns, applyHostname, applyModules, applyPassword, applySshKeys, applySysctls, applyUsers, chooseAndReport,
  chooseHostname, gatherSources, runCommands, runScripts, selectedChannel, setChannel, writeFiles, type Chosen,
} from './configure.ts';
import { serveControl } from './control.ts';
import { debug, enableFileLog, LOG_DIR, say, setBootOffset } from './log.ts';
import { configureStatic, ethernetLinks, lease, linkUp, waitForLease } from './network.ts';
import { isShuttingDown, shutdown, watchPowerButton, type PowerAction } from './power.ts';
import { runPhases, type Phase } from './sequencer.ts';
import { dhcpService } from './services/dhcp.ts';
import { reconcileAddons, resealAddon, type AddonResult } from './addons/apply.ts';
import { K3S, k3sCommand, k3sService } from './services/k3s.ts';
import { drainNode, nodeName, uncordonIfDrained } from './update/drain.ts';
import { run } from './exec.ts';
import { ntpService } from './services/ntp.ts';
import { sshService } from './services/ssh.ts';
import { Supervisor } from './services/supervisor.ts';
import { isMounted, loadModules, mountBase, partitionByLabel, read, settleDevices } from './system.ts';
import { growDataPartition } from './grow.ts';
import { readSystemFacts, Updater } from './update/updater.ts';
import type { Slot } from './slot.ts';

process.on('uncaughtException', (e) => { try { say(`internal error (contained): ${e?.stack ?? e}`); } catch { /* */ } });
process.on('unhandledRejection', (e) => { try { say(`internal error (contained): ${(e as Error)?.stack ?? e}`); } catch { /* */ } });
// Keep the event loop alive whatever else ends.
setInterval(() => { /* idle */ }, 1 << 30);
setBootOffset(Number(read('/proc/uptime').split(' ')[0]) - process.uptime());

const info = bootInfo();
/** Booted from the ISO: root image on the medium, data on tmpfs, no ESP, no slots to bless. */
const live = cmdlineArg(info.cmdline, 'kiln.live') !== undefined;
/** How long the network phase waits for a first ethernet link to appear. */
const LINK_WAIT_MS = 20_000;
const supervisor = new Supervisor({ logDir: LOG_DIR, say });
const power = (action: PowerAction, why: string) => { void shutdown(action, why, { stopServices: () => supervisor.stopAll() }); };
for (const [sig, action] of [['SIGUSR2', 'poweroff'], ['SIGUSR1', 'poweroff'], ['SIGTERM', 'reboot'], ['SIGINT', 'reboot']] as const) {
  process.on(sig, () => power(action, `${sig}`));
}
process.on('SIGHUP', () => debug('SIGHUP ignored'));

let machineId = '';
let chosen: Chosen | undefined;
// If choosing failed outright, run with the defaults: a node that boots can be repaired.
const cfg = (): KilnConfig => chosen?.config ?? applyDefaults({});
const env = () => cfg().kiln.environment;
const report = (problems: string[]) => { for (const p of problems) say(`config: ${p}`); };
const notes: string[] = [];

/** Applies what can be applied before the network (and again if a network source changed it). */
async function applyLocal(c: KilnConfig) {
  applyHostname(chooseHostname(c, chosen?.gathered ?? { sources: [], scripts: [], notes: [] }, machineId));
  report(writeFiles(c));
  report(await applyModules(c));
  report(applySysctls(c));
  applyDns(c);
  const pw = await applyPassword(c);
  if (pw) report([pw]);
  report(applyUsers(c));
}

const phases: Phase[] = [
  {
    name: 'mount', tasks: [
      { name: 'base filesystems', run: mountBase },
      { name: 'control socket', run: () => { startControl(); } },
    ],
  },
  {
    name: 'modules', tasks: [{
      name: 'load', run: async () => {
        const names = read('/usr/lib/kiln/modules-load').split('\n').map((s) => s.trim()).filter(Boolean);
        const r = await loadModules(names);
        if (r.failed.length) say(`modules not loaded: ${r.failed.join(', ')}`);
        return `${r.loaded.length} loaded`;
      },
    }, {
      // After the modules: the button and evdev drivers make the input device.
      name: 'power button', run: () => `power button: ${watchPowerButton(() => power('poweroff', 'power button')).join(', ') || 'none found'}`,
    }],
  },
  {
    name: 'data', tasks: [
      { name: 'logs', run: () => { if (!isMounted('/data')) say('WARNING: no data partition: nothing persists'); mkdirSync(LOG_DIR, { recursive: true }); enableFileLog(); } },
      // A disk larger than the image (resized qcow2, cloud volume): kiln-data takes the rest.
      // Reported, not a failed step: a disk left at the image's size is no reason to roll back.
      { name: 'grow', run: async () => { if (live) return 'live system'; try { const m = await growDataPartition('kiln-data', partitionBySpec(cmdlineArg(info.cmdline, 'kiln.data'))); if (m) say(m); } catch (e) { say(`data partition not grown: ${(e as Error).message}`); } } },
      { name: 'boot count', run: () => { say(`boot count ${countBoot()}`); } },
      { name: 'machine id', run: () => { machineId = ensureMachineId(); return `machine-id ${machineId}`; } },
      // The live ISO has no ESP (and must not touch one on a disk it may install to).
      { name: 'esp', run: async () => live ? 'live system: no ESP' : `esp on /dev/${await mountEsp()}` },
    ],
  },
  {
    name: 'config', tasks: [
      { name: 'devices', run: () => settleDevices() },
      {
        name: 'choose', run: async () => {
          chosen = await chooseAndReport(await gatherSources('local', info.cmdline), { fetchUrl: false });
          return `config: ${chosen.used}, ${chosen.gathered.sources.length} sources`;
        },
      },
      { name: 'apply', run: () => applyLocal(cfg()) },
      // Keys known from earlier boots, so SSH works even when the network never comes.
      { name: 'ssh keys (cached)', run: async () => { const r = await applySshKeys(cfg(), { offline: true }); return `${r.count} keys from cache`; } },
      { name: 'init_cmd', run: async () => report(await runCommands('init_cmd', cfg().init_cmd, env())) },
      { name: 'ssh', run: () => { supervisor.add(sshService({ passwordLogin: () => !!cfg().kiln.password })); void supervisor.start('ssh'); } },
    ],
  },
  {
    name: 'network', tasks: [
      { name: 'loopback', run: () => linkUp('lo') },
      {
        name: 'links', run: async () => {
          const ifs = cfg().kiln.network.interfaces;
          // USB Ethernet (the Pi's own, adapters) shows up seconds after its controller's driver loads.
          let links = ethernetLinks();
          for (const end = Date.now() + LINK_WAIT_MS; !links.length && Date.now() < end;) { await new Promise((r) => setTimeout(r, 250)); links = ethernetLinks(); }
          if (!links.length) { say(`network: no ethernet link found (waited ${LINK_WAIT_MS / 1000} s)`); return; }
          const dhcp = links.filter((l, i) => ifs[l] ? ifs[l].dhcp && !ifs[l].addresses.length : Object.keys(ifs).length === 0 ? i === 0 : false);
          for (const l of links.filter((x) => ifs[x] && ifs[x].addresses.length)) {
            try { say(`network ${l} ${await configureStatic(l, ifs[l])} (static)`); } catch (e) { say(`network ${l}: ${(e as Error).message}`); }
          }
          for (const l of dhcp) {
            await linkUp(l);
            supervisor.add(dhcpService(l, () => read('/proc/sys/kernel/hostname').trim()));
            void supervisor.start(`dhcp-${l}`);
          }
          for (const l of dhcp) {
            const got = await waitForLease(l, 30_000);
            if (got) say(`network ${l} ${got.ip}/${got.mask} gateway ${got.router || '-'}`);
            else say(`network ${l}: no DHCP lease yet (still trying)`);
          }
        },
      },
    ],
  },
  {
    name: 'config-network', tasks: [
      {
        name: 'network sources', run: async () => {
          const g = await gatherSources('network', info.cmdline, cfg().kiln.data_sources);
          const again = await chooseAndReport(g, { fetchUrl: true });
          if (JSON.stringify(again.config) !== JSON.stringify(cfg())) { chosen = again; await applyLocal(cfg()); return 'network sources changed the config'; }
          chosen = again;
        },
      },
      {
        name: 'ssh keys', run: async () => {
          const r = await applySshKeys(cfg());
          report(r.problems);
          // The key cache and the last good config are what let owners in after a bad day.
          await run('sync', [], { timeoutMs: 20_000 });
          return `${r.count} keys`;
        },
      },
      { name: 'ntp', run: () => { supervisor.add(ntpService(() => cfg().kiln.ntp_servers)); void supervisor.start('ntp'); } },
      { name: 'boot_cmd', run: async () => report(await runCommands('boot_cmd', cfg().boot_cmd, env())) },
    ],
  },
  {
    // The live ISO installs itself when the config names a disk or the boot menu's install entry was picked.
    name: 'install', tasks: [{ name: 'unattended', run: () => unattendedInstall() }],
  },
  {
    name: 'k3s', tasks: [{
      name: 'start', run: async () => {
        supervisor.add(k3sService(cfg));
        void supervisor.start('k3s');
        // run_cmd comes "after k3s has started": wait for the process, not for the cluster.
        const t0 = Date.now();
        while (Date.now() - t0 < 60_000 && !['running', 'skipped', 'failed', 'backoff'].includes(k3sStatus()?.state ?? '')) await new Promise((r) => setTimeout(r, 100));
        return k3sStatus()?.state;
      },
    }],
  },
  {
    name: 'late', tasks: [
      { name: 'run_cmd', run: async () => report(await runCommands('run_cmd', cfg().run_cmd, env())) },
      { name: 'user-data scripts', run: async () => report(await runScripts(chosen?.gathered.scripts ?? [], env())) },
    ],
  },
];

function startControl() {
  serveControl({
    status: () => ({ ...info, update: updaterRef?.status(), uptimeMs: Math.round(Number(read('/proc/uptime').split(' ')[0]) * 1000), bootCount: bootCount(), notes, services: supervisor.status(), config: chosen?.used }),
    logs: (a) => supervisor.logTail(String(a.id), Number(a.lines) || 50),
    addons: () => addonResults.map((r) => ({ name: r.name, state: r.error ? `error: ${r.error}` : ADDON_MESSAGES[r.decision!.action], message: r.decision?.message })),
    reseal: async (a) => { const m = await resealAddon(String(a.name)); addonResults = await reconcileAddons(); return m; },
    ui: () => uiLogin(),
    upgrade: async (a) => {
      if (!updaterRef) throw new Error('the updater starts once boot is done; try again in a moment');
      if (a.check) return (await updaterRef.check()).message;
      const r = await updaterRef.apply();
      return r.message;
    },
    channel: async (a) => {
      const want = a.set as string | undefined;
      if (!want) return `${selectedChannel() ?? cfg().kiln.channel}${selectedChannel() ? ' (set with kiln channel set)' : ' (from config kiln.channel)'}`;
      if (!['beta', 'rc', 'stable'].includes(want)) throw new Error(`unknown channel '${want}' (valid: beta, rc, stable)`);
      return setChannel(want as 'beta' | 'rc' | 'stable');
    },
    'install-config': async (a) => installConfigText(typeof a.configUrl === 'string' ? a.configUrl : cfg().kiln.install.config_url, typeof a.extra === 'string' ? a.extra : undefined),
    rollback: async () => { if (!updaterRef) throw new Error('the updater is not running yet'); return (await updaterRef.rollback()).message ?? 'rolling back'; },
    reboot: () => { setTimeout(() => power('reboot', 'kiln reboot'), 100); return 'rebooting'; },
    poweroff: () => { setTimeout(() => power('poweroff', 'kiln poweroff'), 100); return 'powering off'; },
  });
}

/** The k3s service's status (undefined in an image without it). */
function k3sStatus() { return supervisor.status().find((x) => x.id === 'k3s'); }

/**
 * Healthy now: k3s (if the image runs it) is running and its last /readyz passed. A snapshot,
 * never a wait: callers poll it against a deadline, so a k3s that keeps crashing fails the
 * check in time instead of holding it open.
 */
function k3sHealthyNow(): boolean {
  const k3s = k3sStatus();
  return !k3s || k3s.state === 'skipped' || (k3s.state === 'running' && k3s.healthy === true);
}

const HEALTH_DEADLINE_MS = 10 * 60_000;

/** Blesses the slot once the node is healthy (an update's first boot is judged by the updater), then polls for updates. */
async function healthAndUpdates(stepsOk: boolean) {
  if (live) { say('live system: not blessing or updating (install it with kiln install)'); void addonsLoop(); return; }
  const c = cfg();
  const facts = readSystemFacts('/');
  const updater = new Updater({
    channelUrl: c.kiln.updates.url || 'http://updates-not-configured.invalid', channel: selectedChannel() ?? c.kiln.channel, arch: facts.arch,
    trust: c.kiln.updates.url ? facts.trust : null, trustProblem: c.kiln.updates.url ? facts.trustProblem : 'no kiln.updates.url in the config',
    currentVersion: facts.currentVersion, bootedSlot: info.slot, buildTime: facts.buildTime, machineId: facts.machineId || machineId,
    wariness: c.kiln.updates.canary ? 0 : undefined,
    devices: { slotDevice: (slot: Slot) => { const d = partitionByLabel(`kiln-root-${slot}`) ?? piRootPartition(slot); if (!d) throw new Error(`no partition labelled kiln-root-${slot}`); return `/dev/${d}`; } },
    reboot: () => power('reboot', 'update'), log: say, window: c.kiln.updates.window || undefined,
    beforeReboot: async () => {
      const k3s = k3sStatus();
      if (!cfg().kiln.updates.drain || k3s?.state !== 'running') return;
      say(`update: ${await drainNode({ k3s: K3S, node: kubeNodeName(), timeoutS: cfg().kiln.updates.drain_timeout_s })}`);
    },
    fleetlock: c.kiln.updates.fleetlock_url ? { base: c.kiln.updates.fleetlock_url, group: c.kiln.updates.fleetlock_group || 'default' } : undefined,
    bootId: read('/proc/sys/kernel/random/boot_id').trim(),
  });
  updaterRef = updater;
  const health = async () => stepsOk && k3sHealthyNow();
  const r = await updater.afterBoot(health, HEALTH_DEADLINE_MS);
  if (r.outcome === 'none' || r.outcome === 'not-rebooted' || r.outcome === 'fell-back') {
    if (r.outcome === 'fell-back') notes.push(r.message);
    // No update was pending: a fresh image's first boots are blessed once healthy.
    const deadline = Date.now() + HEALTH_DEADLINE_MS;
    let ok = await health();
    while (!ok && Date.now() < deadline && !isShuttingDown()) { await new Promise((res) => setTimeout(res, 5000)); ok = await health(); }
    const fellBack = ubootFellBackFrom(info.slot);
    if (fellBack) notes.push(`the boot loader fell back from slot ${fellBack} (its tries were spent) to slot ${info.slot}`);
    if (ok) { try { say(await blessBooted(info.slot)); } catch (e) { say(`cannot bless slot ${info.slot}: ${(e as Error).message}`); } }
    else say(`not blessing slot ${info.slot}: the node is not healthy (boot steps ${stepsOk ? 'ok' : 'failed'}, k3s not ready)`);
  }
  void uncordonWhenReady();
  void addonsLoop();
  if (c.kiln.updates.url) updater.startPolling(c.kiln.updates.poll_minutes * 60_000, c.kiln.updates.poll_minutes * 30_000);
}
let updaterRef: Updater | undefined;

const kubeNodeName = () => nodeName(k3sCommand(cfg()).args, read('/proc/sys/kernel/hostname').trim());

/** A node drained for an update's reboot takes pods again once k3s is back. */
async function uncordonWhenReady() {
  const k3s = k3sStatus();
  if (!k3s || k3s.state === 'skipped' || !(await supervisor.waitReady('k3s'))) return;
  const m = await uncordonIfDrained({ k3s: K3S, node: kubeNodeName() });
  if (m) say(m);
}

/** MBR (the Pi): root slots are partitions 2 and 3 of the disk that holds kiln.boot. */
function piRootPartition(slot: Slot): string | undefined {
  const boot = partitionBySpec(cmdlineArg(info.cmdline, 'kiln.boot'));
  return boot ? siblingPartition(boot, slot === 'a' ? 2 : 3) : undefined;
}
let addonResults: AddonResult[] = [];

const ADDON_MESSAGES: Record<string, string> = { install: 'installed', upgrade: 'upgraded', unchanged: 'up to date', 'user-owned': 'left alone (changed by you)', 'broken-seal': 'left alone (seal broken by you)' };

/** Add-ons after k3s is ready (never part of its start), then again every 30 minutes. */
async function addonsLoop() {
  const k3s = k3sStatus();
  if (!k3s || k3s.state === 'skipped' || k3sCommand(cfg()).args[0] !== 'server') return;
  const pass = async (first: boolean) => {
    if (!(await supervisor.waitReady('k3s'))) return;
    addonResults = await reconcileAddons();
    for (const r of addonResults) {
      if (r.error) say(`addon ${r.name}: ${r.error}`);
      else if (first || r.decision!.action !== 'unchanged') say(`addon ${r.name}: ${ADDON_MESSAGES[r.decision!.action]}${r.decision!.action === 'user-owned' && r.decision!.changedFields?.length ? ` (${r.decision!.changedFields.join(', ')})` : ''}`);
    }
    if (cfg().kiln.manifests.auto_apply) {
      const dir = '/var/lib/kiln/manifests';
      mkdirSync(dir, { recursive: true });
      const r = await run('/usr/bin/k3s', ['kubectl', 'apply', '-f', dir], { timeoutMs: 120_000 });
      if (r.code !== 0) say(`manifests in ${dir}: ${r.stderr.trim().split('\n').pop()}`);
    }
  };
  await pass(true);
  const ip = leaseIp();
  if (addonResults.some((r) => r.name === 'headlamp' && !r.error)) say(`UI: https://${ip ?? '<node address>'}/headlamp/ (sign in: ssh root@${ip ?? '<node>'} kiln ui)`);
  setInterval(() => { void pass(false); }, 30 * 60_000);
}

/** The address DHCP gave the first link, for the URLs we print. */
const leaseIp = () => lease(ethernetLinks()[0] ?? 'eth0')?.ip;

/** A short-lived token for the UI's admin account (TokenRequest API: nothing stored). */
async function uiLogin() {
  const r = await run('/usr/bin/k3s', ['kubectl', 'create', 'token', 'kiln-ui-admin', '-n', 'kube-system', '--duration=1h'], { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`cannot create a token: ${r.stderr.trim() || r.error} (is k3s ready? kiln status)`);
  const ip = leaseIp() ?? read('/proc/sys/kernel/hostname').trim();
  return { url: `https://${ip}/headlamp/`, token: r.stdout.trim(), expires: new Date(Date.now() + 3600_000).toISOString() };
}

/** The installed node's config: what this live system runs with, plus kiln.install.config_url's file. */
async function installConfigText(url: string, answers?: string): Promise<{ text: string; problems: string[] }> {
  const extra = [];
  if (url) {
    let text: string | undefined;
    if (url.startsWith('file://')) text = read(url.slice(7)) || undefined;
    else if (/^https?:\/\//.test(url)) {
      try { const r = await fetch(url, { signal: AbortSignal.timeout(15_000) }); if (r.ok) text = await r.text(); } catch { /* reported below */ }
    } else return { text: '', problems: [`kiln.install.config_url ${url}: only http, https and file URLs are supported`] };
    if (text === undefined) return { text: '', problems: [`kiln.install.config_url ${url}: not reachable`] };
    extra.push({ file: url, text });
  }
  if (answers) extra.push({ file: 'kiln install (answers)', text: answers });
  return installedConfig(chosen?.gathered.sources ?? [], extra);
}

/** The boot task: install when asked to, then power off or reboot as the config says. */
async function unattendedInstall(): Promise<string | undefined> {
  const inst = cfg().kiln.install;
  const asked = cmdlineArg(info.cmdline, 'kiln.install') !== undefined;
  if (!inst.device && !asked) return undefined;
  if (!live) return 'not the live ISO: kiln.install is ignored';
  let device = inst.device;
  if (!device) {
    if (inst.silent) throw new Error('install: kiln.install.device is not set and kiln.install.silent is on');
    // The install entry without a device: the only disk there is, else ask for one.
    const medium = await mountMedium(info.cmdline);
    const disks = candidateDisks(readManifest(), medium);
    if (disks.length !== 1) {
      say(`install: ${disks.length ? `several disks (${disks.map((d) => d.name).join(', ')})` : 'no disk large enough'}: set kiln.install.device or log in and run 'kiln install'`);
      return 'waiting for kiln install';
    }
    device = `/dev/${disks[0]!.name}`;
  }
  const conf = await installConfigText(inst.config_url);
  if (conf.problems.length) throw new Error(`install: the config for the installed node has problems: ${conf.problems.join('; ')}`);
  say(await install({ device, config: conf.text, force: inst.force, forceEfi: inst.force_efi, cmdline: info.cmdline, log: (l) => say(`install: ${l}`) }));
  const action = inst.power_off ? 'poweroff' : inst.reboot ? 'reboot' : undefined;
  if (!action) return `installed to ${device}`;
  power(action, 'installed');
  // Hold the boot here: nothing after this (k3s) should start while shutting down.
  await new Promise((r) => setTimeout(r, 600_000));
  return undefined;
}

const bootCount = () => Number(read('/var/lib/kiln/boot-count').trim()) || 0;

async function boot() {
  say(`init started: kiln ${info.version} slot ${info.slot} (${info.arch}, kernel ${info.kernel}, node ${process.version})`);
  say(bootChainLine(info.chain));
  const results = await runPhases(phases);
  if (isShuttingDown()) return;
  const failed = results.filter((r) => !r.ok);
  for (const f of failed) notes.push(`boot step ${f.phase}/${f.task} failed: ${f.error}`);
  say(`ready version=${info.version} slot=${info.slot} arch=${info.arch}${failed.length ? ` (degraded: ${failed.map((f) => `${f.phase}/${f.task}`).join(', ')})` : ''}`);
  // One line of figures for `npm run bench` and for anyone wondering where boot time goes.
  const at = (phase: string, task: string) => ((results.find((r) => r.phase === phase && r.task === task)?.at ?? NaN) / 1000).toFixed(2);
  say(`timings: since init start (s): config applied ${at('config', 'apply')}, network ${at('network', 'links')}, network config ${at('config-network', 'boot_cmd')}, k3s started ${at('k3s', 'start')}, ready ${(performance.now() / 1000).toFixed(2)}; init started ${(Number(read('/proc/uptime').split(' ')[0]) - process.uptime()).toFixed(2)} s after the kernel; rss ${(process.memoryUsage().rss / 1048576).toFixed(1)} MiB`);
  await healthAndUpdates(failed.length === 0);
  // Revoked keys disappear: refetch the key services' lists every hour.
  setInterval(() => { if (chosen) void applySshKeys(cfg()).catch(() => undefined); }, 3600_000);
}

if (!existsSync('/proc/1')) say('warning: /proc is not mounted');
void boot();
