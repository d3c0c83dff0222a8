// `kiln` on the node: asks init (over its control socket) what is going on.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline/promises';
import { stringify } from 'yaml';
import { callControl } from '../control.ts';
import { allDisks, candidateDisks, chooseAutoDisk, install, mountMedium, readManifest } from '../install.ts';
import { minDiskBytes } from '../disk/layout.ts';
import { ago, serviceTable, type ServiceStatus } from '../services/supervisor.ts';

const USAGE = `kiln: manage this node
  kiln status             system and service state
  kiln logs SERVICE [-n N] last lines of a service's log (files: /var/log/kiln/)
  kiln ui                 the web UI's address and a sign-in token valid for one hour
  kiln addons [reseal NAME] add-ons and whether kiln maintains them; reseal returns one to kiln
  kiln upgrade [--check]  look for an update on the channel (--check) or install it now
  kiln rollback           boot the other slot's good version
  kiln channel [set NAME] the release channel (beta, rc, stable); beta keeps its own config
  kiln reboot | poweroff  clean restart or power-off
  kiln install [DEVICE] [--force] [--force-efi] [--config-url URL] [--yes] [--reboot|--poweroff]
                          (live ISO) write kiln to a disk, erasing it; asks what is missing`;

/** `kiln install`: interactive unless --yes; the disk writing itself is init/install.ts. */
async function installCmd(args: string[]): Promise<number> {
  const flag = (f: string) => args.includes(f);
  const value = (f: string) => { const i = args.indexOf(f); return i >= 0 ? args[i + 1] : undefined; };
  const cmdline = readFileSync('/proc/cmdline', 'utf8');
  const medium = await mountMedium(cmdline);
  const m = readManifest();
  let device = args.find((a, i) => !a.startsWith('-') && args[i - 1] !== '--config-url');
  const ask = !flag('--yes') && process.stdin.isTTY;
  const rl = ask ? createInterface({ input: process.stdin, output: process.stdout }) : undefined;
  try {
    const answers: Record<string, any> = {};
    if (!device) {
      const disks = candidateDisks(m, medium);
      if (!disks.length) { console.error('kiln install: no disk is large enough (or every disk is the live medium)'); return 1; }
      if (disks.length === 1 || !rl) {
        if (disks.length > 1) { console.error(`kiln install: which disk? ${disks.map((d) => `/dev/${d.name}`).join(', ')}`); return 2; }
        device = `/dev/${disks[0]!.name}`;
      } else {
        disks.forEach((d, i) => console.log(`  ${i + 1}) /dev/${d.name}  ${Math.round(d.sizeBytes / 2 ** 30)} GiB${d.partitions.length ? `  (has partitions: ${d.partitions.join(', ')})` : ''}`));
        const n = Number(await rl.question('Install to disk number: '));
        if (!disks[n - 1]) { console.error('kiln install: no such disk'); return 2; }
        device = `/dev/${disks[n - 1]!.name}`;
      }
      if (rl) {
        const gh = (await rl.question('GitHub users whose SSH keys may log in (comma separated, empty: none): ')).split(/[,\s]+/).filter(Boolean);
        if (gh.length) answers.ssh_authorized_keys = gh.map((u) => `github:${u}`);
        const server = (await rl.question('Join an existing cluster? Its server URL (empty: be a server): ')).trim();
        if (server) answers.kiln = { server_url: server, token: (await rl.question('Cluster token: ')).trim() };
      }
    }
    // `kiln install auto`: the same choice as kiln.install.device: auto, shown before asking.
    if (device === 'auto') {
      try { device = `/dev/${chooseAutoDisk(allDisks(medium), minDiskBytes(m.espMiB, m.rootMiB, m.minDataMiB))}`; } catch (e) { console.error(`kiln install: ${(e as Error).message}`); return 1; }
    }
    if (rl && (await rl.question(`Erase ${device} and install kiln ${m.version}? Type yes: `)).trim() !== 'yes') { console.log('kiln install: nothing written'); return 1; }
    const conf = await callControl('install-config', { configUrl: value('--config-url'), extra: Object.keys(answers).length ? stringify(answers) : undefined });
    if (conf.problems.length) { console.error(`kiln install: the config for the installed node has problems:\n  ${conf.problems.join('\n  ')}`); return 1; }
    console.log(await install({ device: device!, config: conf.text, force: flag('--force'), forceEfi: flag('--force-efi'), cmdline, log: (l) => console.log(l) }));
    if (flag('--reboot') || flag('--poweroff')) await callControl(flag('--reboot') ? 'reboot' : 'poweroff');
    return 0;
  } finally { rl?.close(); }
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') { console.log(USAGE); return cmd ? 0 : 2; }
  if (cmd === 'status') {
    const st = await callControl('status');
    console.log(`kiln ${st.version} (${st.arch}), slot ${st.slot}, up ${ago(st.uptimeMs)}, boot ${st.bootCount}`);
    if (st.chain) console.log(`boot chain: secure-boot=${st.chain.secureBoot} root=${st.chain.root}${st.chain.rootHash ? ` (root hash ${st.chain.rootHash})` : ''}`);
    if (st.clock) console.log(st.clock);
    for (const line of st.notes ?? []) console.log(`  ${line}`);
    for (const line of st.update ?? []) console.log(`  ${line}`);
    console.log('');
    for (const line of serviceTable(st.services as ServiceStatus[])) console.log(line);
    return 0;
  }
  if (cmd === 'logs') {
    const id = rest.find((a) => !a.startsWith('-'));
    if (!id) { console.error('kiln logs: which service? (kiln status lists them)'); return 2; }
    const n = Number(rest[rest.indexOf('-n') + 1]) || 50;
    const lines: string[] = await callControl('logs', { id, lines: n });
    for (const l of lines) console.log(l);
    return 0;
  }
  if (cmd === 'ui') {
    const u = await callControl('ui');
    console.log(`Open ${u.url} (the certificate is k3s's own; accept it once)`);
    console.log(`Sign in with this token (valid until ${u.expires}):\n\n${u.token}\n`);
    return 0;
  }
  if (cmd === 'addons') {
    if (rest[0] === 'reseal') {
      if (!rest[1]) { console.error('kiln addons reseal: which add-on? (kiln addons lists them)'); return 2; }
      console.log(await callControl('reseal', { name: rest[1] }));
      return 0;
    }
    const list: { name: string; state: string; message?: string }[] = await callControl('addons');
    if (!list.length) console.log('no add-ons installed yet (k3s not ready, or this node is an agent)');
    for (const a of list) console.log(`${a.name.padEnd(16)}${a.state}${a.message ? `\n${' '.repeat(16)}${a.message}` : ''}`);
    return 0;
  }
  if (cmd === 'upgrade') { console.log(await callControl('upgrade', { check: rest.includes('--check') })); return 0; }
  if (cmd === 'channel') {
    if (rest[0] === 'set' && !rest[1]) { console.error('kiln channel set: which channel? (beta, rc, stable)'); return 2; }
    console.log(await callControl('channel', rest[0] === 'set' ? { set: rest[1] } : {}));
    return 0;
  }
  if (cmd === 'install') return installCmd(rest);
  if (cmd === 'rollback') { console.log(await callControl('rollback')); return 0; }
  if (cmd === 'reboot' || cmd === 'poweroff') { await callControl(cmd); console.log(`kiln: ${cmd} started`); return 0; }
  console.error(`kiln: unknown command '${cmd}'\n${USAGE}`);
  return 2;
}

main(process.argv.slice(2)).then((c) => { process.exitCode = c; }, (e) => { console.error(`kiln: ${(e as Error).message}`); process.exitCode = 1; });
