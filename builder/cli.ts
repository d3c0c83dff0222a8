// The workstation CLI: kiln build | lock | run. Flags and their help live in one table.
import { parseArgs } from 'node:util';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArch, ARCHES, type Arch } from './arch.ts';
import { build } from './build.ts';
import { createLogger } from './log.ts';
import { lockProfile } from './lockcmd.ts';
import { checkFormats, formatsByArch } from './formats.ts';
import { loadProfile, profileHelp, type Format } from './profile.ts';
import { runImage } from './run.ts';
import { configCli, CONFIG_USAGE } from '../init/config/cli.ts';
import { releaseCli } from './release.ts';

type Opt = { type: 'string' | 'boolean'; multiple?: boolean; short?: string; help: string };
const COMMON: Record<string, Opt> = {
  profile: { type: 'string', help: 'image profile (default images/default.yaml)' },
  arch: { type: 'string', multiple: true, help: `target architecture, repeatable (${ARCHES.join(', ')})` },
  quiet: { type: 'boolean', short: 'q', help: 'only warnings and errors' },
  'cache-dir': { type: 'string', help: 'download cache (default ~/.cache/kiln, or $KILN_CACHE)' },
  help: { type: 'boolean', short: 'h', help: 'this help' },
};
const COMMANDS: Record<string, { summary: string; usage: string; options: Record<string, Opt> }> = {
  build: {
    summary: 'build disk images from the profile and its lock',
    usage: 'kiln build [--profile FILE] [--arch A]... [--format F]... [--out DIR] [--version V] [--artifacts DIR] [--config FILE] [--trust FILE]',
    options: {
      ...COMMON,
      format: { type: 'string', multiple: true, help: `output format, repeatable (${formatsByArch()})` },
      out: { type: 'string', help: 'output folder (default out/)' },
      version: { type: 'string', help: 'image version (default: the profile\'s)' },
      artifacts: { type: 'string', help: 'folder of pre-downloaded inputs, for offline builds' },
      config: { type: 'string', help: 'node config (YAML) baked into the image, checked first' },
      trust: { type: 'string', help: 'release trust root (kiln keys generate) baked in: enables updates' },
      'k3s-binary': { type: 'string', help: 'use this file as k3s instead of the pinned download' },
      'config-url': { type: 'string', help: '--format iso: boot menu entries pass kiln.config_url=URL' },
      force: { type: 'boolean', help: 'rebuild even if nothing changed' },
      'help-profile': { type: 'boolean', help: 'list the profile settings' },
    },
  },
  lock: {
    summary: 'resolve and pin every upstream input into images/<profile>.lock.json',
    usage: 'kiln lock [--profile FILE] [--arch A]...',
    options: { ...COMMON },
  },
  run: {
    summary: 'boot an image in QEMU with the serial console on this terminal',
    usage: 'kiln run <image> [--arch A] [--mem MB] [--keep]',
    options: {
      ...COMMON,
      mem: { type: 'string', help: 'guest memory in MiB (default 512)' },
      keep: { type: 'boolean', help: 'write to the image (default: changes are discarded)' },
      ssh: { type: 'string', help: 'forward this host port to the guest\'s port 22' },
    },
  },
  config: {
    summary: 'check node config files, or print their reference',
    usage: CONFIG_USAGE,
    options: { help: COMMON.help! },
  },
  keys: {
    summary: 'make a release signing key and its trust root',
    usage: 'kiln keys generate --out DIR\n       kiln keys rotate --key OLD.key --out DIR [--trust OLD-trust.json] [--to TREE]',
    options: {
      out: { type: 'string', help: 'folder for kiln-release.key (private) and trust.json' },
      key: { type: 'string', help: 'rotate: the current release key, which signs the new trust root' },
      trust: { type: 'string', help: 'rotate: the current trust root (default: trust.json next to --key)' },
      to: { type: 'string', help: 'rotate: channel tree to publish the new root into (roots/<version>.json)' },
      help: COMMON.help!,
    },
  },
  release: {
    summary: 'publish, promote or verify signed channel manifests',
    usage: 'kiln release --channel C [--from out/] --to DIR --key FILE [--serial N] [--expires-days D] [--rollout-hours H]\n' +
      '       kiln release promote --from beta --to rc --to-dir DIR --key FILE [--version V]\n' +
      '       kiln release verify DIR --channel C --trust trust.json\n' +
      '       kiln release plan --seed OLD.root.squashfs --site DIR --channel C [--target T] [--version V]',
    options: {
      channel: { type: 'string', help: 'beta, rc or stable' },
      from: { type: 'string', help: 'build output folder (default out/); with promote, the source channel' },
      to: { type: 'string', help: 'channel tree folder; with promote, the target channel' },
      'to-dir': { type: 'string', help: 'promote: the channel tree folder' },
      key: { type: 'string', help: 'release key (kiln-release.key)' },
      trust: { type: 'string', help: 'trust root (trust.json) for verify; release/promote check the published manifests against it (default: trust.json next to --key)' },
      serial: { type: 'string', help: 'manifest serial (default: previous + 1); verify: serial already seen' },
      'expires-days': { type: 'string', help: 'manifest lifetime in days (default 30)' },
      'rollout-hours': { type: 'string', help: 'roll out gradually over this many hours' },
      'min-from': { type: 'string', help: 'nodes older than this version need an intermediate release' },
      downgrade: { type: 'boolean', help: 'publish a rollback to an older version' },
      version: { type: 'string', help: 'promote, plan: which release (default the newest)' },
      seed: { type: 'string', help: 'plan: the root image a node runs now (what it already has)' },
      site: { type: 'string', help: 'plan: the channel tree folder' },
      target: { type: 'string', help: 'plan: update target (default: the release\'s only one)' },
      help: COMMON.help!,
    },
  },
};

function usage(cmd?: string): string {
  if (cmd && COMMANDS[cmd]) {
    const c = COMMANDS[cmd];
    const opts = Object.entries(c.options).map(([k, o]) => `  --${k}${o.type === 'string' ? ' X' : ''}`.padEnd(22) + o.help);
    return `${c.usage}\n\n${c.summary}\n\n${opts.join('\n')}`;
  }
  return `kiln: build and boot immutable Kubernetes appliance images\n\n${Object.entries(COMMANDS).map(([k, c]) => `  kiln ${k.padEnd(8)}${c.summary}`).join('\n')}\n\n'kiln <command> --help' for options.`;
}

async function main(argv: string[]) {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') { console.log(usage()); return 0; }
  if (cmd === '--version') { console.log(JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version); return 0; }
  const spec = COMMANDS[cmd];
  if (!spec) { console.error(`kiln: unknown command '${cmd}' (valid: ${Object.keys(COMMANDS).join(', ')})`); return 2; }
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: Object.fromEntries(Object.entries(spec.options).map(([k, o]) => [k, { type: o.type, ...(o.multiple ? { multiple: true } : {}), ...(o.short ? { short: o.short } : {}) }])), allowPositionals: cmd === 'run' || cmd === 'config' || cmd === 'keys' || cmd === 'release' });
  } catch (e) {
    console.error(`kiln ${cmd}: ${(e as Error).message}\n\n${usage(cmd)}`);
    return 2;
  }
  const v = parsed.values as Record<string, any>;
  if (v.help) { console.log(usage(cmd)); return 0; }
  if (v['help-profile']) { console.log(`Profile settings (images/<name>.yaml):\n${profileHelp()}`); return 0; }
  const arches: Arch[] | undefined = v.arch?.map(parseArch);
  const log = createLogger({ quiet: v.quiet });
  if (cmd === 'build') {
    const formats = (v.format ?? []) as string[];
    try { checkFormats(formats, arches ?? loadProfile(v.profile).arches); } catch (e) { console.error(`kiln build: ${(e as Error).message}`); return 2; }
    await build({ profile: v.profile, arches, formats: formats as Format[], out: v.out, version: v.version, artifacts: v.artifacts, cacheDir: v['cache-dir'], force: v.force, config: v.config, trust: v.trust, k3sBinary: v['k3s-binary'], isoConfigUrl: v['config-url'], log });
    return 0;
  }
  if (cmd === 'lock') {
    await lockProfile(loadProfile(v.profile), { arches, cacheDir: v['cache-dir'], log });
    return 0;
  }
  if (cmd === 'keys' || cmd === 'release') return releaseCli(cmd, parsed.positionals, v);
  if (cmd === 'config') return configCli(parsed.positionals);
  if (cmd === 'run') {
    const image = parsed.positionals[0];
    if (!image) { console.error(`kiln run: which image? e.g. kiln run out/kiln-0.1.0-x86_64.raw\n\n${usage('run')}`); return 2; }
    if (!existsSync(image)) { console.error(`kiln run: ${resolve(image)} does not exist; build it with 'kiln build'`); return 2; }
    return runImage(image, { arch: arches?.[0], memMiB: v.mem ? Number(v.mem) : undefined, keep: v.keep, sshPort: v.ssh ? Number(v.ssh) : undefined });
  }
  return 2;
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (e) => {
  console.error(`kiln: ${(e as Error).message}`);
  if (process.env.KILN_DEBUG) console.error(e);
  process.exitCode = 1;
});
