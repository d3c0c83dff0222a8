// The boot, top to bottom: every task with what it needs done first. `needs` names a task
// (`phase/name`) or a fact a task gives; checkPlan (sequencer.ts) holds every need to a task
// earlier in the list, and a unit test holds this plan to it. A task starts as soon as its
// needs have ended, so everything a task relies on must be in its needs: list order alone
// guarantees nothing. What the needs protect, beyond the obvious:
//   mount/base filesystems  /run and /tmp: a file written there before the mount is hidden
//   mount/protect init      service cgroups: a service or command started before runs outside
//                           them (services and user commands need it)
//   data/logs               /var/log/kiln made root's alone before a service or command logs there
//   /etc writers            config/apply (and the network sources' re-apply) write /etc; user
//                           commands run after every writer the list put before them, so they
//                           see the system as configured, and never beside one
//   the disk                the unattended install writes disks: after the data partition grew
//   etc state               SSH's host keys and k3s's node password are links to /data from here
// SSH does not wait for init_cmd: a hanging command must not keep the owner out.
//
// Phase and task names appear in results, log lines and the timings line: they are output.
import { mountBase, settleDevices, statusKiB } from '../system.ts';
import { protectInit } from '../services/cgroups.ts';
import { linkUp } from '../network.ts';
import type { BootInfo } from '../boot.ts';
import type { BootTask, TaskResult } from '../sequencer.ts';
import { startControl } from './control-api.ts';
import { unattendedInstall } from './install-task.ts';
import type { BootContext } from './context.ts';
import {
  applyLocalConfig, bringUpLinks, chooseLocalConfig, countThisBoot, fetchSshKeys, growData, installCachedKeys, loadBootModules, loadK3sModules,
  mountBootPartition, readMachineId, readNetworkSources, restoreEtc, runOncePerInstance, runUserCommands, runUserScripts, setClockFloor, startFileLog, startK3s, startNtp, startSsh,
  startWifi, watchButton,
} from './tasks.ts';

// Facts: what several later tasks rely on, named for what it is rather than who makes it.
//   drivers       the image's boot modules are loaded (disks, NICs, vfat)
//   k3s drivers   k3s's modules are loaded (br_netfilter, netfilter, vxlan): config/apply
//                 waits for them too, since kiln.sysctls may set their settings
//   local config  the config from local sources is chosen
//   network       links are up and DHCP had its chance
//   config        the final config, network sources included
//   clock floor   the clock is at least the RTC, the build time and the time saved on /data

export function bootPlan(ctx: BootContext): BootTask[] {
  return [
    // /run, /tmp, cgroups: where services, sockets and mounts go.
    { phase: 'mount', name: 'base filesystems', needs: [], run: mountBase },
    // Init and tini out of the OOM killer's reach; each service gets its own cgroup from here on.
    { phase: 'mount', name: 'protect init', needs: ['mount/base filesystems'], run: () => protectInit() },
    { phase: 'mount', name: 'control socket', needs: ['mount/base filesystems'], run: () => startControl(ctx) },

    // Stage 1 loads both lists before Node starts; these load what it could not, and name it.
    { phase: 'modules', name: 'load', needs: [], gives: ['drivers'], run: loadBootModules },
    // After the boot modules: two modprobes at once finish no sooner than one.
    { phase: 'modules', name: 'k3s', needs: ['drivers'], gives: ['k3s drivers'], run: loadK3sModules },
    // After the modules: the button and evdev drivers make the input device.
    { phase: 'modules', name: 'power button', needs: ['drivers'], run: () => watchButton(ctx) },

    // /data and /var come mounted from the initramfs.
    { phase: 'data', name: 'logs', needs: [], run: startFileLog },
    { phase: 'data', name: 'grow', needs: [], run: () => growData(ctx) },
    { phase: 'data', name: 'boot count', needs: [], run: countThisBoot },
    // /etc starts from the root each boot: the node's identity comes back from /data first.
    { phase: 'data', name: 'etc state', needs: [], run: restoreEtc },
    { phase: 'data', name: 'machine id', needs: ['data/etc state'], run: () => readMachineId(ctx) },
    { phase: 'data', name: 'esp', needs: ['drivers'], run: () => mountBootPartition(ctx) },

    // Before anything checks a certificate (and before k3s): a board without an RTC is in 1970.
    { phase: 'clock', name: 'floor', needs: ['mount/base filesystems', 'drivers'], gives: ['clock floor'], run: setClockFloor },

    // Config volumes (CIDATA, config drive) must have appeared; user-data may sit on the ESP.
    { phase: 'config', name: 'devices', needs: ['drivers'], run: () => settleDevices() },
    { phase: 'config', name: 'choose', needs: ['mount/base filesystems', 'config/devices', 'data/esp'], gives: ['local config'], run: () => chooseLocalConfig(ctx) },
    // The hostname comes from the machine id when nothing names it; sysctls may need modules.
    { phase: 'config', name: 'apply', needs: ['local config', 'data/machine id', 'drivers', 'k3s drivers'], run: () => applyLocalConfig(ctx) },
    // Keys go to the users apply made; SSH works even when the network never comes.
    { phase: 'config', name: 'ssh keys (cached)', needs: ['config/apply'], run: () => installCachedKeys(ctx) },
    { phase: 'config', name: 'init_cmd', needs: ['config/apply', 'config/ssh keys (cached)', 'mount/protect init', 'data/logs'], run: () => runUserCommands(ctx, 'init_cmd') },
    { phase: 'config', name: 'ssh', needs: ['mount/base filesystems', 'mount/protect init', 'data/logs', 'config/apply', 'config/ssh keys (cached)', 'data/etc state'], run: () => startSsh(ctx) },

    { phase: 'network', name: 'loopback', needs: [], run: () => linkUp('lo') },
    // Before the ethernet links, which may wait for one to appear; the wifi link is waited for aside.
    { phase: 'network', name: 'wifi', needs: ['drivers', 'config/apply', 'config/init_cmd'], run: () => startWifi(ctx) },
    // init_cmd runs "before the network is up" (docs/config.md); DHCP sends the applied hostname.
    { phase: 'network', name: 'links', needs: ['drivers', 'local config', 'config/apply', 'config/init_cmd', 'mount/protect init', 'data/logs', 'network/loopback'], gives: ['network'], run: () => bringUpLinks(ctx) },

    // A changed config is applied again, after the local apply.
    { phase: 'config-network', name: 'network sources', needs: ['network', 'config/apply', 'clock floor'], gives: ['config'], run: () => readNetworkSources(ctx) },
    { phase: 'config-network', name: 'ssh keys', needs: ['config', 'config/ssh keys (cached)', 'clock floor'], run: () => fetchSshKeys(ctx) },
    { phase: 'config-network', name: 'ntp', needs: ['config', 'network', 'mount/protect init', 'data/logs', 'clock floor'], run: () => startNtp(ctx) },
    { phase: 'config-network', name: 'boot_cmd', needs: ['config', 'config/init_cmd', 'config-network/ssh keys'], run: () => runUserCommands(ctx, 'boot_cmd') },

    // The live ISO installs itself when the config names a disk or the boot menu's install
    // entry was picked; it may power off, so nothing after it starts before it is done, and
    // every service before it has started (shutdown stops what has started).
    { phase: 'install', name: 'unattended', needs: ['config', 'config/devices', 'data/grow', 'config/ssh', 'config-network/boot_cmd', 'config-network/ntp'], run: () => unattendedInstall(ctx) },

    // boot_cmd runs "before k3s starts" (docs/config.md).
    { phase: 'k3s', name: 'start', needs: ['mount/base filesystems', 'mount/protect init', 'data/logs', 'drivers', 'data/etc state', 'data/machine id', 'config/apply', 'config', 'config-network/ntp', 'config-network/boot_cmd', 'install/unattended', 'clock floor', 'k3s drivers'], run: () => startK3s(ctx) },

    // run_cmd runs "after k3s has started" (docs/config.md), runcmd (once per instance) after
    // it, the user-data scripts last.
    { phase: 'late', name: 'run_cmd', needs: ['k3s/start'], run: () => runUserCommands(ctx, 'run_cmd') },
    { phase: 'late', name: 'runcmd', needs: ['late/run_cmd', 'data/machine id'], run: () => runOncePerInstance(ctx) },
    { phase: 'late', name: 'user-data scripts', needs: ['late/runcmd'], run: () => runUserScripts(ctx) },
  ];
}

/** The tasks whose end times the timings line shows, as `label: [phase, task]`. */
export const TIMED = {
  'config applied': ['config', 'apply'],
  network: ['network', 'links'],
  'network config': ['config-network', 'boot_cmd'],
  'k3s started': ['k3s', 'start'],
} as const;

/** `ready version=… slot=… arch=…`, with the failed tasks when boot is degraded. */
export function readyLine(info: Pick<BootInfo, 'version' | 'slot' | 'arch'>, failed: TaskResult[]): string {
  return `ready version=${info.version} slot=${info.slot} arch=${info.arch}${failed.length ? ` (degraded: ${failed.map((f) => `${f.phase}/${f.task}`).join(', ')})` : ''}`;
}

/**
 * One line of figures for `npm run bench` and for anyone wondering where boot time goes.
 * `nowMs`: ms since init started; `initStartS`: seconds from the kernel's start to init's.
 */
export function timingsLine(results: TaskResult[], nowMs: number, initStartS: number, rssBytes: number, split?: RssSplit): string {
  const at = ([phase, task]: readonly [string, string]) => ((results.find((r) => r.phase === phase && r.task === task)?.at ?? NaN) / 1000).toFixed(2);
  const since = Object.entries(TIMED).map(([label, t]) => `${label} ${at(t)}`).join(', ');
  const parts = split ? ` (anon ${split.anonMiB.toFixed(1)}, file ${split.fileMiB.toFixed(1)})` : '';
  return `timings: since init start (s): ${since}, ready ${(nowMs / 1000).toFixed(2)}; init started ${initStartS.toFixed(2)} s after the kernel; rss ${(rssBytes / 1048576).toFixed(1)} MiB${parts}`;
}

/**
 * Init's own start, for `npm run bench`: when its first line of code ran (Node's start before
 * it) and when its modules had all run their top level (loading the bundle).
 */
export function startLine(codeS: number, loadedS: number): string {
  return `start (s since init start): init's code ${codeS.toFixed(2)}, its modules loaded ${loadedS.toFixed(2)}`;
}

/** Clock ticks per second in /proc's CPU times (USER_HZ: 100 on every Linux port kiln runs on). */
const USER_HZ = 100;

/** The machine's CPU times (all CPUs, in ticks) from /proc/stat's first line. */
export function machineCpu(procStat: string): { busy: number; idle: number } | undefined {
  const f = /^cpu\s+(.*)$/m.exec(procStat)?.[1]?.trim().split(/\s+/).map(Number);
  if (!f || f.length < 5 || f.some((n) => !Number.isFinite(n))) return undefined;
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const idle = f[3]! + f[4]!;
  return { busy: f.slice(0, 8).reduce((a, b) => a + b, 0) - idle, idle };
}

/**
 * Where the CPU went on the way to ready, for `npm run bench`: init's own time since it started,
 * that of the commands it ran that have ended, and, from init's first line of code (`startProcStat`)
 * to ready, what all CPUs were busy with and what they left idle. Idle near nothing means boot
 * is work to be done, not waiting.
 */
export function cpuLine(selfStat: string, startProcStat: string, nowProcStat: string): string | undefined {
  const f = selfStat.slice(selfStat.lastIndexOf(')') + 2).split(' ').map(Number);
  const a = machineCpu(startProcStat), b = machineCpu(nowProcStat);
  if (f.length < 15 || !a || !b) return undefined;
  const s = (ticks: number) => (ticks / USER_HZ).toFixed(2);
  return `cpu at ready (s): init ${s(f[11]! + f[12]!)} (user ${s(f[11]!)}, system ${s(f[12]!)}), its finished commands ${s(f[13]! + f[14]!)}; from init's first code, all CPUs busy ${s(b.busy - a.busy)}, idle ${s(b.idle - a.idle)}`;
}

/**
 * RSS in its two kinds, from /proc/self/status: anonymous memory (the heaps) and mapped file
 * pages (mostly Node's own binary, clean and given back under memory pressure).
 */
export interface RssSplit { anonMiB: number; fileMiB: number }
export function rssSplit(status: string): RssSplit | undefined {
  const anon = statusKiB(status, 'RssAnon');
  const file = statusKiB(status, 'RssFile');
  return anon !== undefined && file !== undefined ? { anonMiB: anon / 1024, fileMiB: file / 1024 } : undefined;
}
