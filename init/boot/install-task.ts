// The live ISO's unattended install (a boot task) and the config the installed node gets
// (also asked for by `kiln install` through the control socket).
import { cmdlineArg } from '../boot.ts';
import { say } from '../log.ts';
import type { BootContext } from './context.ts';

// The installer (and the zlib it inflates the image with) is loaded only to install: this task
// runs at every boot, and almost every boot installs nothing.
const installer = () => import('../install.ts');

/** The installed node's config: what this live system runs with, plus kiln.install.config_url's file. */
export async function installConfigText(ctx: BootContext, url: string, answers?: string): Promise<{ text: string; problems: string[] }> {
  const { fetchInstallConfig, installedConfig } = await installer();
  const extra = [];
  if (url) {
    // https, a #sha256= pin, or the image's opt-in; file:// from the medium.
    const r = await fetchInstallConfig(url, { allowInsecureHttp: ctx.chosen?.allowInsecureHttp ?? false });
    if (r.problem || !r.source) return { text: '', problems: [r.problem ?? `kiln.install.config_url ${url}: not reachable`] };
    extra.push(r.source);
  }
  if (answers) extra.push({ file: 'kiln install (answers)', text: answers });
  return installedConfig(ctx.chosen?.gathered.sources ?? [], extra);
}

/** The boot task: install when asked to, then power off or reboot as the config says. */
export async function unattendedInstall(ctx: BootContext): Promise<string | undefined> {
  const { info } = ctx;
  const inst = ctx.cfg().kiln.install;
  const asked = cmdlineArg(info.cmdline, 'kiln.install') !== undefined;
  if (!inst.device && !asked) return undefined;
  if (!ctx.live) return 'not the live ISO: kiln.install is ignored';
  const { candidateDisks, install, mountMedium, readManifest } = await installer();
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
  const conf = await installConfigText(ctx, inst.config_url);
  if (conf.problems.length) throw new Error(`install: the config for the installed node has problems: ${conf.problems.join('; ')}`);
  say(await install({ device, config: conf.text, force: inst.force, forceEfi: inst.force_efi, cmdline: info.cmdline, log: (l) => say(`install: ${l}`) }));
  const action = inst.power_off ? 'poweroff' : inst.reboot ? 'reboot' : undefined;
  if (!action) return `installed to ${device}`;
  ctx.power(action, 'installed');
  // Hold the boot here: nothing after this (k3s) should start while shutting down.
  await new Promise((r) => setTimeout(r, 600_000));
  return undefined;
}
