// The workstation CLI: kiln build | lock | run. Flags and their help live in one table.
// Only what the table needs is imported up front; each command's modules (and the npm
// packages behind them) load when it runs, so `kiln --help` starts in a fraction of a second.
import { parseArgs } from 'node:util';
import { existsSync, readFileSync } from 'node:fs';
import { relative, resolve } from 'node:path';
import { parseArch, ARCHES, type Arch } from './arch.ts';
import type { Format } from './profile.ts';

type Opt = { type: 'string' | 'boolean'; multiple?: boolean; short?: string; help: string };
const COMMON: Record<string, Opt> = {
  profile: { type: 'string', help: 'image profile (default images/default.yaml; images/metal.yaml for --format iso)' },
  arch: { type: 'string', multiple: true, help: `target architecture, repeatable (${ARCHES.join(', ')})` },
  quiet: { type: 'boolean', short: 'q', help: 'only warnings and errors' },
  'cache-dir': { type: 'string', help: 'download cache (default ~/.cache/kiln, or $KILN_CACHE)' },
  help: { type: 'boolean', short: 'h', help: 'this help' },
};
type Commands = Record<string, { summary: string; usage: string; options: Record<string, Opt> }>;
/**
 * The table. The texts that need a module loaded (the formats, the config usage) are passed in;
 * the top-level help reads only the summaries and passes none.
 */
const commands = (formatsByArch = '', CONFIG_USAGE = ''): Commands => ({
  build: {
    summary: 'build disk images from the profile and its lock',
    usage: 'kiln build [--profile FILE] [--arch A]... [--format F]... [--out DIR] [--version V] [--artifacts DIR] [--config FILE] [--trust FILE]\n' +
      '       [--secure-boot-key KEY --secure-boot-cert CERT [--secure-boot-enroll DIR]]',
    options: {
      ...COMMON,
      format: { type: 'string', multiple: true, help: `output format, repeatable (${formatsByArch})` },
      out: { type: 'string', help: 'output folder (default out/)' },
      version: { type: 'string', help: 'image version (default: the profile\'s)' },
      artifacts: { type: 'string', help: 'folder of pre-downloaded inputs, for offline builds' },
      config: { type: 'string', help: 'node config (YAML) baked into the image, checked first' },
      trust: { type: 'string', help: 'release trust root (kiln keys generate) baked in: enables updates' },
      'k3s-binary': { type: 'string', help: 'use this file as k3s instead of the pinned download' },
      'config-url': { type: 'string', help: '--format iso: boot menu entries pass kiln.config_url=URL' },
      'secure-boot-key': { type: 'string', help: 'Secure Boot: sign systemd-boot and the UKIs with this db key (unencrypted PEM)' },
      'secure-boot-cert': { type: 'string', help: 'Secure Boot: the db key\'s certificate (PEM)' },
      'secure-boot-enroll': { type: 'string', help: 'Secure Boot: kiln keys folder whose PK/KEK/db systemd-boot enrols in setup mode' },
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
    options: { help: COMMON.help!, strict: { type: 'boolean', help: 'validate: warnings fail too (exit 1)' } },
  },
  keys: {
    summary: 'make a release signing key and its trust root, and Secure Boot keys',
    usage: 'kiln keys generate --out DIR\n       kiln keys rotate --key OLD.key --out DIR [--trust OLD-trust.json] [--to TREE]',
    options: {
      out: { type: 'string', help: 'folder for kiln-release.key (private), trust.json, and Secure Boot PK/KEK/db (.key private, .crt) with loader/keys/kiln/*.auth' },
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
});

function usage(COMMANDS: Commands, cmd?: string): string {
  if (cmd && COMMANDS[cmd]) {
    const c = COMMANDS[cmd];
    const names = Object.entries(c.options).map(([k, o]) => `  --${k}${o.type === 'string' ? ' X' : ''}`);
    const width = Math.max(22, ...names.map((n) => n.length + 2));
    const opts = Object.values(c.options).map((o, i) => names[i]!.padEnd(width) + o.help);
    return `${c.usage}\n\n${c.summary}\n\n${opts.join('\n')}`;
  }
  return `kiln: build and boot immutable Kubernetes appliance images\n\n${Object.entries(COMMANDS).map(([k, c]) => `  kiln ${k.padEnd(8)}${c.summary}`).join('\n')}\n\n'kiln <command> --help' for options.`;
}

async function main(argv: string[]) {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') { console.log(usage(commands())); return 0; }
  if (cmd === '--version') { console.log(JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version); return 0; }
  if (!commands()[cmd]) { console.error(`kiln: unknown command '${cmd}' (valid: ${Object.keys(commands()).join(', ')})`); return 2; }
  const COMMANDS = commands(
    cmd === 'build' ? (await import('./formats.ts')).formatsByArch() : '',
    cmd === 'config' ? (await import('../init/config/cli.ts')).CONFIG_USAGE : '',
  );
  const spec = COMMANDS[cmd];
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: Object.fromEntries(Object.entries(spec.options).map(([k, o]) => [k, { type: o.type, ...(o.multiple ? { multiple: true } : {}), ...(o.short ? { short: o.short } : {}) }])), allowPositionals: cmd === 'run' || cmd === 'config' || cmd === 'keys' || cmd === 'release' });
  } catch (e) {
    console.error(`kiln ${cmd}: ${(e as Error).message}\n\n${usage(COMMANDS, cmd)}`);
    return 2;
  }
  const v = parsed.values as Record<string, any>;
  if (v.help) { console.log(usage(COMMANDS, cmd)); return 0; }
  if (v['help-profile']) { const { profileHelp } = await import('./profile.ts'); console.log(`Profile settings (images/<name>.yaml):\n${profileHelp()}`); return 0; }
  const arches: Arch[] | undefined = v.arch?.map(parseArch);
  const log = (await import('./log.ts')).createLogger({ quiet: v.quiet });
  if (cmd === 'build') {
    const [{ build }, { checkFormats }, { loadProfile, profileFor }] = await Promise.all([import('./build.ts'), import('./formats.ts'), import('./profile.ts')]);
    const formats = (v.format ?? []) as string[];
    let profile: string | undefined = v.profile;
    try {
      profile = profileFor(formats, profile);
      checkFormats(formats, arches ?? loadProfile(profile).arches);
    } catch (e) { console.error(`kiln build: ${(e as Error).message}`); return 2; }
    if (profile !== v.profile) log.info(`--format iso: building the hardware image (${relative(process.cwd(), profile!) || profile}, Debian's generic kernel)`);
    const sbKey = v['secure-boot-key'], sbCert = v['secure-boot-cert'], sbEnroll = v['secure-boot-enroll'];
    if (!sbKey !== !sbCert || (sbEnroll && !sbKey)) { console.error('kiln build: Secure Boot signing needs both --secure-boot-key and --secure-boot-cert (the db.key and db.crt from kiln keys generate); --secure-boot-enroll needs them too'); return 2; }
    const secureBoot = sbKey ? { key: sbKey, cert: sbCert, enroll: sbEnroll } : undefined;
    await build({ profile, arches, formats: formats as Format[], out: v.out, version: v.version, artifacts: v.artifacts, cacheDir: v['cache-dir'], force: v.force, config: v.config, trust: v.trust, k3sBinary: v['k3s-binary'], isoConfigUrl: v['config-url'], secureBoot, log });
    return 0;
  }
  if (cmd === 'lock') {
    const [{ lockProfile }, { loadProfile }] = await Promise.all([import('./lockcmd.ts'), import('./profile.ts')]);
    await lockProfile(loadProfile(v.profile), { arches, cacheDir: v['cache-dir'], log });
    return 0;
  }
  if (cmd === 'keys' || cmd === 'release') return (await import('./release.ts')).releaseCli(cmd, parsed.positionals, v);
  if (cmd === 'config') return (await import('../init/config/cli.ts')).configCli(v.strict ? [...parsed.positionals.slice(0, 1), '--strict', ...parsed.positionals.slice(1)] : parsed.positionals);
  if (cmd === 'run') {
    const image = parsed.positionals[0];
    if (!image) { console.error(`kiln run: which image? e.g. kiln run out/kiln-0.1.0-x86_64.raw\n\n${usage(COMMANDS, 'run')}`); return 2; }
    if (!existsSync(image)) { console.error(`kiln run: ${resolve(image)} does not exist; build it with 'kiln build'`); return 2; }
    return (await import('./run.ts')).runImage(image, { arch: arches?.[0], memMiB: v.mem ? Number(v.mem) : undefined, keep: v.keep, sshPort: v.ssh ? Number(v.ssh) : undefined });
  }
  return 2;
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (e) => {
  console.error(`kiln: ${(e as Error).message}`);
  if (process.env.KILN_DEBUG) console.error(e);
  process.exitCode = 1;
});
