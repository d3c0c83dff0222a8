// kiln's init. The kernel's PID 1 is tini, which only reaps orphans and forwards
// signals; this process is the init proper: boot phases, services, health, shutdown.
// Nothing here may end the process: tini would exit and the kernel would panic.
import { existsSync, mkdirSync } from 'node:fs';
import { serveControl } from './control.ts';
import { blessSlot, bootInfo, countBoot, ensureMachineId, mountEsp } from './boot.ts';
import { debug, enableFileLog, LOG_DIR, say, setBootOffset } from './log.ts';
import { ethernetLinks, linkUp, waitForLease } from './network.ts';
import { isShuttingDown, shutdown, watchPowerButton, type PowerAction } from './power.ts';
import { runPhases, type Phase } from './sequencer.ts';
import { dhcpService } from './services/dhcp.ts';
import { Supervisor } from './services/supervisor.ts';
import { isMounted, loadModules, mountBase, read, setHostname } from './system.ts';

process.on('uncaughtException', (e) => { try { say(`internal error (contained): ${e?.stack ?? e}`); } catch { /* */ } });
process.on('unhandledRejection', (e) => { try { say(`internal error (contained): ${(e as Error)?.stack ?? e}`); } catch { /* */ } });
// Keep the event loop alive whatever else ends.
setInterval(() => { /* idle */ }, 1 << 30);
setBootOffset(Number(read('/proc/uptime').split(' ')[0]) - process.uptime());

const info = bootInfo();
const supervisor = new Supervisor({ logDir: LOG_DIR, say });
const power = (action: PowerAction, why: string) => { void shutdown(action, why, { stopServices: () => supervisor.stopAll() }); };
for (const [sig, action] of [['SIGUSR2', 'poweroff'], ['SIGUSR1', 'poweroff'], ['SIGTERM', 'reboot'], ['SIGINT', 'reboot']] as const) {
  process.on(sig, () => power(action, `${sig}`));
}
process.on('SIGHUP', () => debug('SIGHUP ignored'));

let iface: string | undefined;
const phases: Phase[] = [
  { name: 'mount', tasks: [{ name: 'base filesystems', run: mountBase }] },
  {
    name: 'modules', tasks: [{
      name: 'load', run: async () => {
        const names = read('/usr/lib/kiln/modules-load').split('\n').map((s) => s.trim()).filter(Boolean);
        const r = await loadModules(names);
        if (r.failed.length) say(`modules not loaded: ${r.failed.join(', ')}`);
        return `${r.loaded.length} loaded`;
      },
    }],
  },
  {
    name: 'data', tasks: [
      { name: 'logs', run: () => { if (!isMounted('/data')) say('WARNING: no data partition: nothing persists'); mkdirSync(LOG_DIR, { recursive: true }); enableFileLog(); } },
      { name: 'boot count', run: () => { say(`boot count ${countBoot()}`); } },
      { name: 'machine id', run: () => `machine-id ${ensureMachineId()}` },
      { name: 'esp', run: async () => `esp on /dev/${await mountEsp()}` },
    ],
  },
  {
    name: 'identity', tasks: [{ name: 'hostname', run: () => { const h = read('/etc/hostname').trim() || 'kiln'; setHostname(h); return h; } }],
  },
  {
    name: 'network', tasks: [
      { name: 'loopback', run: () => linkUp('lo') },
      {
        name: 'dhcp', run: async () => {
          iface = ethernetLinks()[0];
          if (!iface) { say('network: no ethernet link found'); return; }
          await linkUp(iface);
          supervisor.add(dhcpService(iface, () => read('/proc/sys/kernel/hostname').trim()));
          void supervisor.start(`dhcp-${iface}`);
          const l = await waitForLease(iface, 30_000);
          if (l) say(`network ${iface} ${l.ip}/${l.mask} gateway ${l.router || '-'}`);
          else say(`network ${iface}: no DHCP lease yet (still trying)`);
        },
      },
    ],
  },
];

const bootCount = () => Number(read('/var/lib/kiln/boot-count').trim()) || 0;
const notes: string[] = [];

async function boot() {
  say(`init started: kiln ${info.version} slot ${info.slot} (${info.arch}, kernel ${info.kernel}, node ${process.version})`);
  const buttons = watchPowerButton(() => power('poweroff', 'power button'));
  debug(`power button: ${buttons.join(', ') || 'none found'}`);
  const results = await runPhases(phases);
  serveControl({
    status: () => ({ ...info, uptimeMs: Math.round(Number(read('/proc/uptime').split(' ')[0]) * 1000), bootCount: bootCount(), notes, services: supervisor.status() }),
    logs: (a) => supervisor.logTail(String(a.id), Number(a.lines) || 50),
    reboot: () => { setTimeout(() => power('reboot', 'kiln reboot'), 100); return 'rebooting'; },
    poweroff: () => { setTimeout(() => power('poweroff', 'kiln poweroff'), 100); return 'powering off'; },
  });
  if (isShuttingDown()) return;
  const failed = results.filter((r) => !r.ok);
  for (const f of failed) notes.push(`boot step ${f.phase}/${f.task} failed: ${f.error}`);
  say(`ready version=${info.version} slot=${info.slot} arch=${info.arch}${failed.length ? ` (degraded: ${failed.map((f) => `${f.phase}/${f.task}`).join(', ')})` : ''}`);
  try { say(await blessSlot(info.slot)); } catch (e) { say(`cannot bless slot ${info.slot}: ${(e as Error).message}`); }
}

if (!existsSync('/proc/1')) say('warning: /proc is not mounted');
void boot();
