// What `kiln status`, `kiln upgrade`, `kiln channel` and the other node commands ask init
// over the control socket (control.ts carries the requests; this file answers them).
// The add-ons, the installer and post-boot are imported when asked for: nothing before ready
// needs them, so boot does not load them (docs/design.md, "Boot speed, memory and size").
import { clockLine, clockState } from '../clock.ts';
import { selectedChannel, setChannel } from '../configure.ts';
import { serveControl, type Handler } from '../control.ts';
import { run } from '../exec.ts';
import { read } from '../system.ts';
import { bootCount, leaseIp, type BootContext } from './context.ts';
import { installConfigText } from './install-task.ts';

/** The updater, or why there is none yet. */
function updaterOf(ctx: BootContext, notYet: string) {
  if (ctx.updater) return ctx.updater;
  throw new Error(ctx.updaterProblem ? `the updater did not start: ${ctx.updaterProblem}` : notYet);
}

export function controlHandlers(ctx: BootContext): Record<string, Handler> {
  const { info, supervisor, notes } = ctx;
  return {
    status: () => ({ ...info, clock: clockLine(clockState, Date.now() / 1000), update: ctx.updater?.status(), uptimeMs: Math.round(Number(read('/proc/uptime').split(' ')[0]) * 1000), bootCount: bootCount(), notes, services: supervisor.status(), config: ctx.chosen?.used }),
    logs: (a) => supervisor.logTail(String(a.id), Number(a.lines) || 50),
    addons: async () => {
      const { ADDON_MESSAGES } = await import('./post-boot.ts');
      return ctx.addonResults.map((r) => ({ name: r.name, state: r.error ? `error: ${r.error}` : ADDON_MESSAGES[r.decision!.action], message: r.decision?.message }));
    },
    reseal: async (a) => {
      const { reconcileAddons, resealAddon } = await import('../addons/apply.ts');
      const m = await resealAddon(String(a.name)); ctx.addonResults = await reconcileAddons(); return m;
    },
    ui: () => uiLogin(),
    upgrade: async (a) => {
      const updater = updaterOf(ctx, 'the updater starts once boot is done; try again in a moment');
      if (a.check) return (await updater.check()).message;
      const r = await updater.apply();
      return r.message;
    },
    channel: async (a) => {
      const want = a.set as string | undefined;
      if (!want) return `${selectedChannel() ?? ctx.cfg().kiln.channel}${selectedChannel() ? ' (set with kiln channel set)' : ' (from config kiln.channel)'}`;
      if (!['beta', 'rc', 'stable'].includes(want)) throw new Error(`unknown channel '${want}' (valid: beta, rc, stable)`);
      const msg = setChannel(want as 'beta' | 'rc' | 'stable');
      // The running updater follows at once (its next check reads the new channel).
      ctx.updater?.setChannel(want as 'beta' | 'rc' | 'stable');
      return msg;
    },
    'install-config': async (a) => installConfigText(ctx, typeof a.configUrl === 'string' ? a.configUrl : ctx.cfg().kiln.install.config_url, typeof a.extra === 'string' ? a.extra : undefined),
    rollback: async () => (await updaterOf(ctx, 'the updater is not running yet').rollback()).message ?? 'rolling back',
    reboot: () => { setTimeout(() => ctx.power('reboot', 'kiln reboot'), 100); return 'rebooting'; },
    poweroff: () => { setTimeout(() => ctx.power('poweroff', 'kiln poweroff'), 100); return 'powering off'; },
  };
}

/** The boot task: listen on the control socket (needs /run). */
export function startControl(ctx: BootContext): void {
  serveControl(controlHandlers(ctx));
}

/** A short-lived token for the UI's admin account (TokenRequest API: nothing stored). */
async function uiLogin() {
  const r = await run('/usr/bin/k3s', ['kubectl', 'create', 'token', 'kiln-ui-admin', '-n', 'kube-system', '--duration=1h'], { timeoutMs: 30_000 });
  if (r.code !== 0) throw new Error(`cannot create a token: ${r.stderr.trim() || r.error} (is k3s ready? kiln status)`);
  const ip = leaseIp() ?? read('/proc/sys/kernel/hostname').trim();
  return { url: `https://${ip}/headlamp/`, token: r.stdout.trim(), expires: new Date(Date.now() + 3600_000).toISOString() };
}
