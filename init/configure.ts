// The node's configuration at boot: gather the sources (files, NoCloud volume or seed URL,
// config drive, EC2-style metadata, kernel command line, kiln.config_url), choose what to
// run with (falling back to the last good config on any problem), and apply it.
// Every step reports and carries on: nothing in user config may stop init.
import { accessSync, appendFileSync, chmodSync, closeSync, constants, existsSync, fchownSync, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, posix } from 'node:path';
import { ESP_MOUNT as BOOT_FILES } from './boot.ts';
import { expandAuthorizedKeys } from './config/keys.ts';
import { hostnameProblem } from './config/hostname.ts';
import { instanceIdProblem } from './config/instance.ts';
import { chooseConfig, configPaths, imageAllowsInsecureHttp, MAX_TOTAL_BYTES, PATHS, readLocalSources, readSource, type ConfigPaths, type SourceText } from './config/merge.ts';
import { parseMetaData, parseNoCloudCmdline, splitUserData } from './config/nocloud.ts';
import { decodeContent, failure, formatProblem, type ConfigProblem } from './config/parse.ts';
import { clip, fetchLimited, splitPin } from './config/url.ts';
import type { Command, KilnConfig } from './config/schema.ts';
import { run, type RunResult } from './exec.ts';
import { appendFile, closeDir, openChildDir, openDir, replaceFile, resolveTrustedFile, syncDir, type Dir } from './safefs.ts';
import { writeStaticDns } from './network.ts';
import { appendRotating, LOG_DIR, say } from './log.ts';
import { isoUtc } from './utc.ts';
import { bootDiskFor, loadModules, mount, parentDisk, read, setHostname, setSysctl } from './system.ts';
import { PARTLABELS } from './disk/layout.ts';

export interface Gathered {
  sources: SourceText[]; scripts: { name: string; text: string }[]; hostname?: string; notes: string[];
  /** the data source's instance id (runcmd runs once for each; see config/instance.ts) */
  instance?: { id: string; origin: string };
}

export interface GatherOptions {
  /** the root the paths are under (tests); default / */
  root?: string;
  fetch?: typeof fetch;
}

/**
 * A text from a URL that serves config. A refused one is a source error. An unreachable one is
 * a note when the source is optional (meta-data, EC2 user-data), else a source error too: a
 * config URL named on the command line that does not answer leaves the config incomplete.
 */
async function fetchSource(g: Gathered, url: string, key: string, o: { allowInsecureHttp: boolean; fetch?: typeof fetch; timeoutMs?: number; headers?: Record<string, string>; required?: boolean }): Promise<Buffer | undefined> {
  const r = await fetchLimited(url, { key, ...o });
  const plain = splitPin(url).url;
  if (r.problem) { const [error, ...fix] = r.problem.split('; '); g.sources.push({ file: plain, text: '', error, fix: fix.join('; ') || undefined }); }
  else if (r.missing && o.required) g.sources.push({ file: plain, text: '', error: r.missing, fix: 'check the server; the node keeps its last good config meanwhile' });
  else if (r.missing) g.notes.push(`${key} ${plain}: ${r.missing}`);
  return r.body;
}

/**
 * Filesystem label -> device for the block devices a config volume may be on, from ONE blkid
 * run: each probe of every disk costs about a second under emulation, and a label lookup per
 * source took several. The network pass asks again (a stick may have come late); while the
 * block devices are the same ones, the local pass's answer stands.
 */
let probed: { devices: string; labels: Map<string, string> } | undefined;
export async function blockLabels(o: { sys?: string; mountinfo?: string; blkid?: (devices: string[]) => Promise<RunResult> } = {}): Promise<Map<string, string>> {
  const sys = o.sys ?? '/sys';
  const classBlock = join(sys, 'class/block');
  let devices = '';
  try { devices = readdirSync(classBlock).sort().join(' '); } catch { /* no sysfs: probe */ }
  if (devices && probed?.devices === devices) return probed.labels;
  const candidates = devices ? labelCandidates(classBlock, bootDiskFor(classBlock, o.mountinfo)) : [];
  // Nothing but the node's own disk (the usual cloud or metal boot with no config volume): no spawn.
  if (devices && !candidates.length) { probed = { devices, labels: new Map() }; return probed.labels; }
  // util-linux's blkid (in /sbin) replaces busybox's applet when the image ships it; both print
  // `/dev/vdb: LABEL="cidata" ... TYPE="vfat"`. Exit 2: no device has a filesystem it knows.
  const r = await (o.blkid ?? ((devs: string[]) => run('blkid', devs, { timeoutMs: 15_000, env: { ...process.env, PATH: '/bin:/sbin:/usr/bin:/usr/sbin' } })))(candidates);
  const labels = parseBlkid(r.stdout);
  probed = devices && (r.code === 0 || r.code === 2) ? { devices, labels } : undefined;
  return labels;
}

/**
 * The block devices that may hold a config volume, as /dev paths: not kiln's own partitions of
 * the boot disk (by their GPT names) nor that disk itself, nor device-mapper, loop, RAM or zram
 * devices. A partition someone added to the boot disk, or any partition of an MBR card (no
 * names), is still probed.
 */
export function labelCandidates(classBlock: string, disk: string | undefined): string[] {
  const own = new Set<string>(Object.values(PARTLABELS));
  const out: string[] = [];
  for (const name of readdirSync(classBlock).sort()) {
    if (/^(dm-|loop|ram|zram)\d/.test(name)) continue;
    const u = read(join(classBlock, name, 'uevent'));
    if (disk && (name === disk || (own.has(/^PARTNAME=(.*)$/m.exec(u)?.[1] ?? '') && parentDisk(classBlock, name) === disk))) continue;
    out.push(`/dev/${/^DEVNAME=(.*)$/m.exec(u)?.[1] ?? name}`);
  }
  return out;
}

export function parseBlkid(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split('\n')) {
    const dev = /^(\/dev\/\S+):/.exec(line)?.[1];
    const label = /\sLABEL="([^"]*)"/.exec(line)?.[1];
    if (dev && label && !m.has(label)) m.set(label, dev);
  }
  return m;
}

/**
 * Mount options for a config volume: its user-data may hold a join token or a password, so
 * every file is root's and readable by root alone, whatever the volume says. iso9660 takes
 * modes from Rock Ridge unless told to override them.
 */
export const CONFIG_VOLUME_OPTIONS: Record<'vfat' | 'iso9660', string> = {
  vfat: 'ro,nosuid,nodev,noexec,uid=0,gid=0,umask=0077',
  iso9660: 'ro,nosuid,nodev,noexec,uid=0,gid=0,mode=0400,dmode=0500,overriderockperms',
};

/** The first volume with one of these labels, mounted read-only (and root-only) at `where`. */
export async function mountLabelled(labels: string[], where: string, known: Promise<Map<string, string>>, mountFn = mount): Promise<string | undefined> {
  for (const label of labels) {
    const dev = (await known).get(label);
    if (!dev) continue;
    for (const type of ['vfat', 'iso9660'] as const) {
      try { await mountFn(type, dev, where, CONFIG_VOLUME_OPTIONS[type]); return dev; } catch { /* next type */ }
    }
  }
  return undefined;
}

function addUserData(g: Gathered, origin: string, data: Buffer | string) {
  const u = splitUserData(data);
  // Unreadable user-data is a source that failed, not an absent one: the choice falls back.
  if (u.error) g.sources.push({ file: origin, text: '', error: u.error });
  u.cloudConfigs.forEach((text, i) => g.sources.push({ file: u.cloudConfigs.length > 1 ? `${origin}#${i + 1}` : origin, text }));
  for (const s of u.scripts) g.scripts.push({ name: `${origin}:${s.name}`, text: s.text });
  for (const p of u.problems) if (p !== u.error) g.notes.push(`${origin}: ${p}`);
}

function addMetaData(g: Gathered, origin: string, text: string) {
  const m = parseMetaData(text);
  if (m.localHostname) g.hostname = m.localHostname;
  // OpenStack's meta_data.json names it uuid
  setInstance(g, m.instanceId ?? (typeof m.raw.uuid === 'string' ? m.raw.uuid : undefined), origin);
  for (const p of m.problems) g.notes.push(`${origin}: ${p}`);
}

function setInstance(g: Gathered, id: string | undefined, origin: string) {
  if (id === undefined) return;
  const bad = instanceIdProblem(id);
  if (bad) g.notes.push(`${origin}: instance id ${bad}; passed over`);
  else g.instance = { id: id.trim(), origin };
}

/** A local source file by name; missing is fine, unreadable or too large is a source error. */
async function readInto(g: Gathered, path: string, origin: string, use: (data: Buffer) => void) {
  const r = await readSource(path);
  if (!r) return;
  if (r.error !== undefined) g.sources.push({ file: origin, text: '', error: r.error });
  else use(r.data);
}

/**
 * Sources in merge order. The local pass reads what needs no network; the network pass
 * adds seed URLs, metadata services and kiln.config_url. Never throws: a step that fails is
 * kept as a source with its error (so the choice falls back to the last good config), and
 * the kernel command line is always the last source.
 */
export async function gatherSources(pass: 'local' | 'network', cmdline: string, dataSources: string[] = [], o: GatherOptions = {}): Promise<Gathered> {
  const g: Gathered = { sources: [], scripts: [], notes: [] };
  const root = o.root ?? '/';
  const at = (p: string) => join(root, p);
  const step = async (what: string, f: () => Promise<void>) => {
    try { await f(); } catch (e) { g.sources.push({ file: what, text: '', error: `cannot be read: ${clip((e as Error)?.message ?? String(e), 200)}` }); }
  };
  await step('local config files', async () => { g.sources.push(...await readLocalSources(root, activePaths())); });
  // NoCloud volume (label cidata, any case), and an OpenStack config drive.
  const cidata = at('/run/kiln/cidata');
  const drive = at('/run/kiln/config-2');
  // Probed only when a volume is not mounted yet (the network pass finds both mounted).
  let labels: Promise<Map<string, string>> | undefined;
  const known = () => (labels ??= blockLabels());
  await step('CIDATA', async () => {
    if (existsSync(`${cidata}/user-data`) || (root === '/' && await mountLabelled(['CIDATA', 'cidata'], cidata, known()))) {
      await readInto(g, `${cidata}/meta-data`, 'CIDATA:meta-data', (d) => addMetaData(g, 'CIDATA:meta-data', d.toString('utf8')));
      await readInto(g, `${cidata}/user-data`, 'CIDATA:user-data', (d) => addUserData(g, 'CIDATA:user-data', d));
    }
  });
  // The boot partition (the Pi's FAT, or the ESP): user-data and meta-data dropped there from
  // any computer after flashing, as Raspberry Pi images with cloud-init take them.
  await step('boot partition', async () => {
    await readInto(g, at(join(BOOT_FILES, 'meta-data')), 'boot:meta-data', (d) => addMetaData(g, 'boot:meta-data', d.toString('utf8')));
    await readInto(g, at(join(BOOT_FILES, 'user-data')), 'boot:user-data', (d) => addUserData(g, 'boot:user-data', d));
  });
  await step('config drive', async () => {
    if (existsSync(`${drive}/openstack`) || (root === '/' && await mountLabelled(['config-2', 'CONFIG-2'], drive, known()))) {
      await readInto(g, `${drive}/openstack/latest/user_data`, 'config-drive:user_data', (d) => addUserData(g, 'config-drive:user_data', d));
      await readInto(g, `${drive}/openstack/latest/meta_data.json`, 'config-drive:meta_data.json', (d) => addMetaData(g, 'config-drive:meta_data.json', d.toString('utf8')));
    }
  });
  const seed = parseNoCloudCmdline(cmdline);
  for (const p of seed?.problems ?? []) g.notes.push(p);
  if (pass === 'network') {
    const allowInsecureHttp = imageAllowsInsecureHttp(g.sources);
    await step('NoCloud seed', async () => {
      if (!seed?.seedUrl || !/^https?:/.test(seed.seedUrl)) return;
      const base = seed.seedUrl;
      // A pin covers user-data only: over plain http, meta-data (the host name) is not fetched.
      const plain = /^http:/i.test(base) && !allowInsecureHttp;
      if (plain && !seed.userDataSha256) {
        g.sources.push({ file: `${base}user-data`, text: '', error: 'plain http:// lets anyone on the network path give this node its config (root access)', fix: "use https://, or pin user-data with #sha256=<its SHA-256 in hex> after the seed URL (ds=nocloud;s=http://HOST/PATH/#sha256=HEX), or set kiln.allow_insecure_http: true in the image's own config (/usr/lib/kiln/config.yaml, baked in by kiln build)" });
        return;
      }
      if (plain) g.notes.push(`NoCloud seed ${base}meta-data: not fetched over plain http (only user-data is pinned); set the host name with ds=nocloud;h=NAME`);
      else {
        const md = await fetchSource(g, `${base}meta-data`, 'NoCloud seed', { allowInsecureHttp, fetch: o.fetch, timeoutMs: 5000 });
        if (md) addMetaData(g, `${base}meta-data`, md.toString('utf8'));
      }
      const ud = await fetchSource(g, `${base}user-data${seed.userDataSha256 ? `#sha256=${seed.userDataSha256}` : ''}`, 'NoCloud seed', { allowInsecureHttp, fetch: o.fetch, timeoutMs: 5000, required: true });
      if (ud !== undefined) addUserData(g, `${base}user-data`, ud);
    });
    if (seed?.hostname) g.hostname = seed.hostname;
    if (dataSources.some((d) => d === 'ec2' || d === 'aws')) {
      await step('ec2:user-data', async () => {
        // IMDSv2 first (a session token), then v1. The link-local metadata service is plain
        // http by nature: it is the cloud's own, not a URL from config.
        const base = 'http://169.254.169.254/latest';
        const f = o.fetch ?? fetch;
        let token: string | undefined;
        try {
          const r = await f(`${base}/api/token`, { method: 'PUT', headers: { 'x-aws-ec2-metadata-token-ttl-seconds': '300' }, signal: AbortSignal.timeout(3000) });
          if (r.ok) token = (await r.text()).slice(0, 1000);
        } catch { /* v1 */ }
        const headers: Record<string, string> = token ? { 'x-aws-ec2-metadata-token': token } : {};
        const ud = await fetchSource(g, `${base}/user-data`, 'EC2 metadata service', { allowInsecureHttp: true, fetch: o.fetch, timeoutMs: 5000, headers });
        if (ud !== undefined) addUserData(g, 'ec2:user-data', ud);
        const iid = await fetchLimited(`${base}/meta-data/instance-id`, { key: 'EC2 metadata service', allowInsecureHttp: true, fetch: o.fetch, timeoutMs: 3000, headers, maxBytes: 1024 });
        if (iid.body) setInstance(g, iid.body.toString('utf8').trim(), 'ec2:meta-data/instance-id');
        const host = await fetchLimited(`${base}/meta-data/local-hostname`, { key: 'EC2 metadata service', allowInsecureHttp: true, fetch: o.fetch, timeoutMs: 3000, headers, maxBytes: 1024 });
        if (host.body) {
          const name = host.body.toString('utf8').trim().split('.')[0];
          const bad = hostnameProblem(name);
          if (bad) g.notes.push(`ec2 local-hostname: ${bad}; keeping the host name from elsewhere`); else g.hostname = name;
        }
      });
    }
  }
  // cloud-init lets the command line's i= override meta-data's instance-id
  if (seed?.instanceId !== undefined) setInstance(g, seed.instanceId, 'ds=nocloud;i=');
  g.sources.push({ file: '/proc/cmdline', text: cmdline, kind: 'cmdline' });
  return g;
}

/** The channel chosen with `kiln channel set` (it outranks kiln.channel: it picks the config space). */
export const CHANNEL_FILE = '/var/lib/kiln/channel';
export function selectedChannel(): 'beta' | 'rc' | 'stable' | undefined {
  const c = read(CHANNEL_FILE).trim();
  return c === 'beta' || c === 'rc' || c === 'stable' ? c : undefined;
}
export function activePaths(): ConfigPaths { return configPaths(selectedChannel() === 'beta' ? 'beta' : 'stable'); }

/**
 * Switches channel. Entering beta copies stable's node config into beta's own space the first
 * time; stable's files are never touched, so leaving beta finds them as they were.
 */
export async function setChannel(channel: 'beta' | 'rc' | 'stable', o: { root?: string } = {}): Promise<string> {
  const root = o.root ?? '/';
  const beta = configPaths('beta'), stable = configPaths('stable');
  const betaDir = join(root, dirname(beta.data));
  if (channel === 'beta' && !existsSync(betaDir)) {
    // The config and its last good copy hold the join token and any password: root's alone.
    mkdirSync(betaDir, { recursive: true, mode: 0o700 });
    if (existsSync(join(root, stable.data))) {
      const d = openDir(betaDir);
      try { replaceFile(d, basename(beta.data), readFileSync(join(root, stable.data)), { uid: 0, gid: 0, mode: 0o600 }); } finally { closeDir(d); }
    }
    if (existsSync(join(root, stable.dropIns))) await run('cp', ['-a', join(root, stable.dropIns), join(root, beta.dropIns)]);
  }
  // A beta space made by an earlier release got the default modes.
  if (channel === 'beta') {
    for (const p of [betaDir, join(root, beta.data)]) {
      try { if (statSync(p).mode & 0o077) chmodSync(p, statSync(p).isDirectory() ? 0o700 : 0o600); } catch { /* missing */ }
    }
  }
  const channelFile = join(root, CHANNEL_FILE);
  mkdirSync(dirname(channelFile), { recursive: true });
  writeFileSync(`${channelFile}.tmp`, `${channel}\n`);
  renameSync(`${channelFile}.tmp`, channelFile);
  const space = channel === 'beta' ? beta : stable;
  return `channel ${channel}: node config in ${space.data}${channel === 'beta' ? ' (stable\'s is kept as it is)' : ''}; takes effect at the next boot (or now for updates)`;
}

/**
 * A file only root may read (the last good config holds the join token and any plain-text
 * password): made 0600 under a random name and renamed into place, so neither a file left
 * by an earlier release nor a stale temp file keeps a wider mode; the file and the rename are
 * synced before it returns.
 */
export function writePrivateFile(path: string, text: string): void {
  const d = openDir(dirname(path), { mkdirs: true });
  try { replaceFile(d, basename(path), text, { uid: 0, gid: 0, mode: 0o600 }); syncDir(d); } finally { closeDir(d); }
}

const reported = new Set<string>();

export interface Chosen {
  config: KilnConfig;
  used: string;
  /** true only when every source was read and parsed without a problem; false: `config` is
   *  the last good config (or less), so authorized_keys must not be rewritten from it */
  ok: boolean;
  /** the problems of this choice (also said on the console and in config.log) */
  problems: ConfigProblem[];
  /** kiln.allow_insecure_http of the image's config (for kiln.install.config_url, key services) */
  allowInsecureHttp: boolean;
  configUrl?: string;
  gathered: Gathered;
}

/**
 * Chooses the config, saves it as last good when every source was fine (in the pass that
 * sees every source: the network pass, unless saveLastGood says otherwise), reports problems.
 * Never throws: on any failure the result is the last good config (else the good sources, else
 * the defaults) with ok false and the failure among the problems.
 */
export async function chooseAndReport(g: Gathered, opts: { fetchUrl: boolean; root?: string; fetch?: typeof fetch; saveLastGood?: boolean }): Promise<Chosen> {
  // The local pass sees no network source: its config must not replace the last good one
  // that a network pass made (which may hold the keys and the join settings).
  const save = opts.saveLastGood ?? opts.fetchUrl;
  const lg = join(opts.root ?? '/', activePaths().lastGood);
  let lastGood: string | undefined;
  const early: ConfigProblem[] = [];
  let lastGoodProblem: ConfigProblem | undefined;
  let choice: ReturnType<typeof chooseConfig>;
  try {
    const r = await readSource(lg, MAX_TOTAL_BYTES * 2);
    if (r?.error !== undefined) lastGoodProblem = { file: activePaths().lastGood, line: 1, col: 1, key: '(file)', message: r.error, fix: 'nothing to fall back on: the node runs with the sources that are good until all are' };
    else if (r) lastGood = r.data.toString('utf8');
    choice = chooseConfig({ sources: g.sources, lastGood, lastGoodFile: activePaths().lastGood });
    if (opts.fetchUrl && choice.configUrl) {
      const url = choice.configUrl;
      const got = await fetchLimited(url, { key: 'kiln.config_url', allowInsecureHttp: choice.allowInsecureHttp, fetch: opts.fetch, timeoutMs: 10_000 });
      // The URL's config sits just before the command line, which stays last.
      const at = g.sources.length && g.sources[g.sources.length - 1].kind === 'cmdline' ? g.sources.length - 1 : g.sources.length;
      const file = splitPin(url).url;
      // Unreachable is a failure too: without the file the config is incomplete.
      if (got.missing) g.sources.splice(at, 0, { file, text: '', error: got.missing, fix: 'check the server; the node keeps its last good config meanwhile' });
      else if (got.problem) { const [error, ...fix] = got.problem.split('; '); g.sources.splice(at, 0, { file, text: '', error, fix: fix.join('; ') || undefined }); }
      else g.sources.splice(at, 0, { file, text: got.body!.toString('utf8') });
      choice = chooseConfig({ sources: g.sources, lastGood, lastGoodFile: activePaths().lastGood });
    }
  } catch (e) {
    // chooseConfig does not throw; this is for what is around it
    early.push(failure('(config)', e));
    choice = chooseConfig({ sources: [{ file: '(config)', text: '', error: 'choosing failed' }], lastGood, lastGoodFile: activePaths().lastGood });
  }
  const problems = [...(lastGoodProblem ? [lastGoodProblem] : []), ...early, ...choice.problems];
  const ok = choice.ok && !early.length;
  try {
    for (const p of problems) {
      const line = formatProblem(p);
      // The network pass sees the local sources again: say each problem once per boot.
      if (reported.has(line)) continue;
      reported.add(line);
      say(`config: ${line}`);
      appendRotating(join(opts.root ?? '/', LOG_DIR, 'config.log'), `${isoUtc(Date.now())} ${line}\n`);
    }
    for (const n of g.notes) if (!reported.has(n)) { reported.add(n); say(`config: ${clip(n, 300)}`); }
    if (ok && save && choice.lastGood !== undefined) {
      try {
        writePrivateFile(lg, choice.lastGood);
      } catch (e) { say(`config: cannot save the last good config: ${(e as Error).message}`); }
    } else if (!ok) {
      const line = choice.used === 'last-good' ? `config: problems above: running with the last good config (${activePaths().lastGood})`
        : choice.used === 'partial' ? 'config: problems above: running with the sources that had none' : 'config: problems above: running with the defaults';
      if (!reported.has(line)) { reported.add(line); say(line); }
    }
  } catch { /* reporting must not take the choice away */ }
  return { config: choice.config, used: choice.used, ok, problems, allowInsecureHttp: choice.allowInsecureHttp, configUrl: choice.configUrl, gathered: g };
}

/** The host name: config, else the data source's, else kiln-<6 hex of the machine id>. A name
 *  that is not a valid host name is passed over (the sources report it). */
export function chooseHostname(c: KilnConfig, g: Gathered, machineId: string): string {
  for (const name of [c.hostname, g.hostname]) if (name && !hostnameProblem(name)) return name;
  return `kiln-${machineId.replace(/[^0-9a-fA-F]/g, '').slice(0, 6) || '000000'}`;
}

/**
 * Sets the host name and writes /etc/hostname and /etc/hosts. A name that is not a valid host
 * name is refused before anything is written (the previous name stays): returns the problem.
 */
export function applyHostname(name: string, o: { root?: string } = {}): string | undefined {
  const bad = hostnameProblem(name);
  if (bad) { say(`config: ${bad}; keeping the previous host name`); return bad; }
  const root = o.root ?? '/';
  if (root === '/') setHostname(name); else writeFileSync(join(root, 'proc/sys/kernel/hostname'), name);
  const at = (p: string) => join(root, p);
  if (read(at('/etc/hostname')).trim() !== name) writeFileSync(at('/etc/hostname'), `${name}\n`);
  const hosts = read(at('/etc/hosts'));
  if (!hosts.split('\n').some((l) => l.split(/\s+/).slice(1).includes(name))) appendFileSync(at('/etc/hosts'), `${hosts && !hosts.endsWith('\n') ? '\n' : ''}127.0.1.1\t${name}\n`);
  return undefined;
}

function idsOf(owner: string, root = '/'): { uid: number; gid: number } {
  const [user, group] = owner.split(':');
  const lookup = (file: string, name: string) => {
    if (/^\d+$/.test(name)) return Number(name);
    const line = read(join(root, file)).split('\n').find((l) => l.split(':')[0] === name);
    if (!line) throw new Error(`unknown ${file === 'etc/passwd' ? 'user' : 'group'} '${name}'`);
    return Number(line.split(':')[2]);
  };
  const uid = lookup('etc/passwd', user || 'root');
  return { uid, gid: group ? lookup('etc/group', group) : uid === 0 ? 0 : uid };
}

/**
 * write_files, written without following a link another user could have planted (see
 * safefs.ts): a replaced file is made under a random name and renamed into place with its
 * owner and mode already set; an append writes through a link only where root alone could
 * have made it. `root` is for tests.
 */
export function writeFiles(c: KilnConfig, o: { root?: string } = {}): string[] {
  const root = o.root ?? '/';
  const problems: string[] = [];
  c.write_files.forEach((f, i) => {
    let dir: Dir | undefined;
    try {
      const data = decodeContent(f);
      const { uid, gid } = idsOf(f.owner || 'root:root', root);
      const mode = parseInt(f.permissions || '0644', 8);
      const path = join(root, f.path);
      if (f.append) {
        const t = resolveTrustedFile(path);
        dir = t.dir;
        appendFile(dir, t.name, data, { uid, gid, mode });
      } else {
        dir = openDir(dirname(path), { mkdirs: true });
        replaceFile(dir, basename(path), data, { uid, gid, mode });
      }
    } catch (e) { problems.push(`write_files[${i}] ${f.path}: ${(e as Error).message}`); } finally { closeDir(dir); }
  });
  return problems;
}

/** The image's own kernel settings (overlay/usr/lib/sysctl.d), applied before kiln.sysctls. */
export const SYSCTL_DIR = '/usr/lib/sysctl.d';

/** sysctl.conf(5) lines: `key = value`, `#`/`;` comments; a leading `-` means a failure is not reported. */
export function parseSysctlConf(text: string): { key: string; value: string; optional: boolean }[] {
  const out: { key: string; value: string; optional: boolean }[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    let key = line.slice(0, eq).trim();
    const optional = key.startsWith('-');
    if (optional) key = key.slice(1).trim();
    if (key) out.push({ key, value: line.slice(eq + 1).trim(), optional });
  }
  return out;
}

/**
 * The image's sysctl.d files (in file name order), then kiln.sysctls, which may override
 * them. `root` and `set` are for tests.
 */
export function applySysctls(c: KilnConfig, o: { root?: string; set?: (key: string, value: string) => void } = {}): string[] {
  const root = o.root ?? '/';
  const set = o.set ?? setSysctl;
  const problems: string[] = [];
  let files: string[] = [];
  try { files = readdirSync(join(root, SYSCTL_DIR)).filter((f) => f.endsWith('.conf')).sort(); } catch { /* none */ }
  for (const f of files) {
    const p = join(SYSCTL_DIR, f);
    for (const s of parseSysctlConf(read(join(root, p)))) {
      if (Object.hasOwn(c.kiln.sysctls, s.key)) continue; // the config's value follows
      try { set(s.key, s.value); } catch (e) { if (!s.optional) problems.push(`${p} ${s.key}: ${(e as Error).message}`); }
    }
  }
  for (const [k, v] of Object.entries(c.kiln.sysctls)) {
    try { set(k, v); } catch (e) { problems.push(`kiln.sysctls ${k}: ${(e as Error).message}`); }
  }
  return problems;
}

export function applyDns(c: KilnConfig): void {
  writeStaticDns(c.kiln.dns_nameservers);
}

/**
 * root's password: a crypt(3) hash as is, plain text hashed with busybox mkpasswd. Empty: locked.
 * The plain text goes to mkpasswd on its standard input (-P 0), never in its argv, which any
 * local user can read in /proc. `root` and `exec` are for tests.
 */
export async function applyPassword(c: KilnConfig, o: { root?: string; exec?: typeof run } = {}): Promise<string | undefined> {
  const root = o.root ?? '/';
  const exec = o.exec ?? run;
  let hash = '*';
  const p = c.kiln.password;
  if (p) {
    // One line of /etc/shadow: a line break or a ':' would end the field (or the entry).
    if (/[\n\r\0]/.test(p)) return 'kiln.password: contains a line break; write it on one line';
    if (/^\$\d\$/.test(p) || /^\$[a-z0-9]+\$/.test(p)) {
      if (p.includes(':')) return "kiln.password: a crypt(3) hash cannot contain ':'; give the hash as mkpasswd printed it";
      hash = p;
    } else {
      const r = await exec('mkpasswd', ['-m', 'sha512', '-P', '0'], { timeoutMs: 10_000, input: `${p}\n` });
      const out = r.stdout.trim();
      if (r.code !== 0 || !/^\$6\$[^:\s]+$/.test(out)) return `kiln.password: cannot hash it: ${r.error ?? (r.stderr.trim() || `mkpasswd printed no hash (exit ${r.code})`)}`;
      hash = out;
    }
  }
  const lines = read(join(root, 'etc/shadow')).split('\n').filter(Boolean);
  const i = lines.findIndex((l) => l.startsWith('root:'));
  const fields = (i >= 0 ? lines[i] : 'root:*:1::::::').split(':');
  fields[1] = hash;
  if (i >= 0) lines[i] = fields.join(':'); else lines.push(fields.join(':'));
  let etc: Dir | undefined;
  try {
    etc = openDir(join(root, 'etc'));
    replaceFile(etc, 'shadow', lines.join('\n') + '\n', { uid: 0, gid: 0, mode: 0o600 });
  } catch (e) { return `kiln.password: ${(e as Error).message}`; } finally { closeDir(etc); }
  // Earlier releases (and k3os) took this password over SSH too: say why it no longer does
  // when it would have been the only way in over the network.
  const anyKey = c.ssh_authorized_keys.length || c.ssh_import_id.length || c.users.some((u) => u.ssh_authorized_keys.length || u.ssh_import_id.length);
  if (p && !c.kiln.ssh.password_login && !anyKey) return 'kiln.password is for the console only and no SSH key is configured: SSH takes keys only unless kiln.ssh.password_login: true';
  return undefined;
}

/** The owner of each real directory in /home, by name. */
function homeOwners(home: string): Map<string, number> {
  const owners = new Map<string, number>();
  try {
    for (const e of readdirSync(home, { withFileTypes: true })) if (e.isDirectory()) owners.set(e.name, lstatSync(join(home, e.name)).uid);
  } catch { /* no /home yet */ }
  return owners;
}

/** The image's login shells (busybox's), listed in /etc/shells with the users' own: dropbear
 *  refuses a login whose shell is not listed there. */
export const IMAGE_SHELLS = ['/bin/sh', '/bin/ash'];
const NAME_RE = /^[a-z_][a-z0-9_-]{0,31}$/;
const HASH_RE = /^\$[0-9a-z]+\$[^:\s]*$/;

type Fields = string[];
const findEntry = (db: Fields[], name: string) => db.find((f) => f[0] === name);

/**
 * Applies `groups` and `users` to /etc/passwd, /etc/group and /etc/shadow, at every boot and
 * from config alone (/etc may be rebuilt at each boot), so the result is the same each time:
 * a user or group that exists is updated in place, a missing one is added. uids come from
 * 1000 up (system users: from 999 down); a user whose home directory already exists gets the
 * uid that owns it, if free, so its files stay its own whatever else changed. Missing groups
 * (primary, supplementary) are made, as cloud-init makes them. Homes are made when missing
 * (an existing /home/NAME is given to a user made now, as earlier releases did; another
 * existing directory keeps its owner). Problems are returned; the rest is applied. `root` is
 * for tests.
 */
export function applyUsers(c: KilnConfig, o: { root?: string } = {}): string[] {
  const root = o.root ?? '/';
  const problems: string[] = [];
  const load = (f: string) => read(join(root, 'etc', f)).split('\n').filter(Boolean).map((l) => l.split(':'));
  const passwd = load('passwd'), group = load('group'), shadow = load('shadow');
  const before = [passwd, group, shadow].map((db) => db.map((f) => f.join(':')).join('\n'));
  const ids = (db: Fields[]) => new Set(db.map((f) => Number(f[2])));
  // /etc is rebuilt every boot but /home persists: a new user never gets a uid that owns
  // someone else's home.
  const homeUids = new Set(homeOwners(join(root, 'home')).values());
  const freeId = (system: boolean, db: Fields[], avoid: Set<number> = new Set()) => {
    const used = new Set([...ids(db), ...avoid]);
    if (system) { for (let id = 999; id >= 100; id--) if (!used.has(id)) return id; }
    for (let id = 1000; id < 60000; id++) if (!used.has(id)) return id;
    throw new Error('no free id left');
  };
  const ensureGroup = (name: string, want?: number, system = false): number => {
    const g = findEntry(group, name);
    if (g) return Number(g[2]);
    const gid = want !== undefined && !ids(group).has(want) ? want : freeId(system, group);
    group.push([name, 'x', String(gid), '']);
    return gid;
  };
  const addMember = (gname: string, user: string) => {
    const g = findEntry(group, gname)!;
    while (g.length < 4) g.push('');
    const members = g[3] ? g[3].split(',') : [];
    if (!members.includes(user)) g[3] = [...members, user].join(',');
  };
  const shells = new Set(IMAGE_SHELLS);
  for (const g of c.groups) {
    try { ensureGroup(g.name); } catch (e) { problems.push(`groups ${g.name}: ${(e as Error).message}`); }
  }
  for (const u of c.users) {
    if (u.name === 'default' || u.name === 'root') continue;
    let parent: Dir | undefined, home: Dir | undefined;
    try {
      for (const [k, v] of [['gecos', u.gecos], ['homedir', u.homedir], ['shell', u.shell]] as const) {
        if (/[:\n\r]/.test(v)) throw new Error(`${k} cannot contain ':' or a line break`);
      }
      // days since 1970 (shadow(5)); checked before anything is changed
      const expire = u.expiredate ? String(Math.floor(Date.parse(`${u.expiredate}T00:00:00Z`) / 86_400_000)) : '';
      if (expire === 'NaN') throw new Error(`expiredate ${u.expiredate} is not a date`);
      let shell = u.shell || '/bin/sh';
      if (!IMAGE_SHELLS.includes(shell) && !isExecutable(join(root, shell))) {
        problems.push(`users ${u.name}: shell ${shell} is not on this node; /bin/sh is used instead`);
        shell = '/bin/sh';
      }
      shells.add(shell);
      const homePath = u.homedir || `/home/${u.name}`;
      if (posix.normalize(homePath) !== homePath || homePath === '/') throw new Error(`homedir ${homePath} is not a plain absolute path (no '.', '..', '//' or trailing '/')`);
      const existing = findEntry(passwd, u.name);
      let uid: number;
      // uid 0 is the default (unset): kiln makes no second root
      const holder = u.uid ? passwd.find((f) => Number(f[2]) === u.uid && f[0] !== u.name) : undefined;
      if (holder) problems.push(`users ${u.name}: uid ${u.uid} is ${holder[0]}'s; ${existing ? 'the uid it has is kept' : 'a free one is used'}`);
      if (u.uid && !holder) uid = u.uid;
      else if (existing) uid = Number(existing[2]);
      else {
        const owner = dirOwner(join(root, homePath));
        const inRange = owner !== undefined && (u.system ? owner > 0 && owner < 1000 : owner >= 1000 && owner < 60000);
        uid = inRange && !ids(passwd).has(owner!) ? owner! : freeId(u.system, passwd, homeUids);
      }
      const pg = u.primary_group || u.name;
      if (!NAME_RE.test(pg)) throw new Error(`primary_group '${pg}' is not a group name`);
      const gid = ensureGroup(pg, uid, u.system);
      const entry = [u.name, 'x', String(uid), String(gid), u.gecos, homePath, shell];
      if (existing) existing.splice(0, existing.length, ...entry); else passwd.push(entry);
      let hash = '';
      if (u.passwd && !HASH_RE.test(u.passwd)) problems.push(`users ${u.name}: passwd is not a crypt(3) hash ('$6$...'); the user has no password (make one with: openssl passwd -6)`);
      else hash = u.passwd;
      // No hash: '*', which no password matches. A locked hash keeps it behind '!', as
      // passwd -l does; dropbear checks neither for keys, so keys still log in.
      const field = !hash ? '*' : u.lock_passwd ? `!${hash}` : hash;
      const sh = findEntry(shadow, u.name);
      if (sh) { while (sh.length < 9) sh.push(''); sh[1] = field; sh[6] = u.inactive; sh[7] = expire; }
      else shadow.push([u.name, field, '1', '', '', '', u.inactive, expire, '']);
      for (const g of u.groups) {
        if (!NAME_RE.test(g)) { problems.push(`users ${u.name}: '${g}' is not a group name; left out`); continue; }
        ensureGroup(g);
        addMember(g, u.name);
      }
      if (!u.system && !u.no_create_home) {
        // Made, and given to the user, through the open directory: never through a link. A
        // /home/NAME left by an earlier user is given to a user made now; any other existing
        // directory named as homedir keeps its owner (as with useradd -m).
        parent = openDir(dirname(join(root, homePath)), { mkdirs: true });
        home = openChildDir(parent, basename(homePath), { create: { mode: 0o750, uid, gid }, followRootLinks: true });
        if (!existing && !u.homedir && home.stat.uid !== uid) fchownSync(home.fd, uid, gid);
      }
    } catch (e) { problems.push(`users ${u.name}: ${(e as Error).message}`); } finally { closeDir(home); closeDir(parent); }
  }
  for (const g of c.groups) {
    for (const m of g.members) {
      if (findEntry(passwd, m) && findEntry(group, g.name)) addMember(g.name, m);
      else problems.push(`groups ${g.name}: member ${m} is not a user on this node; left out`);
    }
  }
  let etc: Dir | undefined;
  try {
    etc = openDir(join(root, 'etc'));
    const files: [string, Fields[], number][] = [['passwd', passwd, 0o644], ['group', group, 0o644], ['shadow', shadow, 0o600]];
    files.forEach(([name, db, mode], i) => {
      const text = db.map((f) => f.join(':')).join('\n');
      if (text !== before[i]) replaceFile(etc!, name, `${text}\n`, { uid: 0, gid: 0, mode });
    });
    const list = `${[...shells].join('\n')}\n`;
    if (read(join(root, 'etc/shells')) !== list) replaceFile(etc, 'shells', list, { uid: 0, gid: 0, mode: 0o644 });
  } catch (e) { problems.push(`users: ${(e as Error).message}`); } finally { closeDir(etc); }
  return problems;
}

function dirOwner(path: string): number | undefined {
  try { const st = lstatSync(path); return st.isDirectory() ? st.uid : undefined; } catch { return undefined; }
}

function isExecutable(path: string): boolean {
  try { accessSync(path, constants.X_OK); return statSync(path).isFile(); } catch { return false; }
}

/** uid, gid and home of a user in /etc/passwd. */
function passwdEntry(name: string, root = '/'): { uid: number; gid: number; home: string } {
  const f = read(join(root, 'etc/passwd')).split('\n').map((l) => l.split(':')).find((x) => x[0] === name);
  if (!f) throw new Error(`unknown user '${name}'`);
  return { uid: Number(f[2]), gid: Number(f[3]), home: f[5] || (name === 'root' ? '/root' : `/home/${name}`) };
}

/**
 * Writes HOME/.ssh/authorized_keys for the user uid:gid. The home may be a link only where
 * root alone could have made it; ~/.ssh must be a real directory owned by the user (one that
 * is a link, a file or someone else's is reported and left alone, as is everything in it);
 * the file is made under a random name and renamed into place, never written through.
 */
export function writeAuthorizedKeys(home: string, keys: string[], uid: number, gid: number): void {
  let parent: Dir | undefined, h: Dir | undefined, ssh: Dir | undefined;
  try {
    parent = openDir(dirname(home), { mkdirs: true });
    h = openChildDir(parent, basename(home), { create: { mode: uid === 0 ? 0o700 : 0o750, uid, gid }, followRootLinks: true });
    ssh = openChildDir(h, '.ssh', { create: { mode: 0o700, uid, gid }, owner: uid });
    replaceFile(ssh, 'authorized_keys', keys.map((k) => `${k}\n`).join(''), { uid, gid, mode: 0o600 });
  } finally { closeDir(ssh); closeDir(h); closeDir(parent); }
}

/**
 * Writes authorized_keys for root and each user, expanding github:/gitlab:/launchpad: users.
 * `chosenOk: false` (the config was not chosen successfully; what is at hand is a stand-in)
 * leaves every authorized_keys file as it is: a stand-in must not lock the owner out.
 * `root` is for tests.
 */
export async function applySshKeys(c: KilnConfig, o: { fetch?: typeof fetch; offline?: boolean; chosenOk?: boolean; root?: string; allowInsecureHttp?: boolean } = {}): Promise<{ count: number; problems: string[] }> {
  if (o.chosenOk === false) return { count: 0, problems: ['ssh keys: no config was chosen successfully; every authorized_keys file is left as it is'] };
  const root = o.root ?? '/';
  const ks = c.kiln.key_services;
  const opts = { githubUrl: ks.github || undefined, gitlabUrl: ks.gitlab || undefined, launchpadUrl: ks.launchpad || undefined, cacheDir: join(root, PATHS.keyCache), fetch: o.fetch, timeoutMs: o.offline ? 1 : 8000, retries: o.offline ? 0 : 2, allowInsecureHttp: o.allowInsecureHttp ?? false };
  const problems: string[] = [];
  const install = async (home: string, entries: string[], uid: number, gid: number) => {
    const r = await expandAuthorizedKeys(entries, opts);
    problems.push(...r.problems);
    writeAuthorizedKeys(join(root, home), r.keys, uid, gid);
    return r.keys.length;
  };
  let count = 0;
  try { count += await install('/root', [...c.ssh_authorized_keys, ...c.ssh_import_id], 0, 0); } catch (e) { problems.push(`ssh_authorized_keys (root): ${(e as Error).message}`); }
  for (const u of c.users) {
    if (!u.ssh_authorized_keys.length && !u.ssh_import_id.length) continue;
    try {
      const { uid, gid, home } = passwdEntry(u.name === 'default' ? 'root' : u.name, root);
      count += await install(uid === 0 ? '/root' : home, [...u.ssh_authorized_keys, ...u.ssh_import_id], uid, gid);
    } catch (e) { problems.push(`users ${u.name}: ${(e as Error).message}`); }
  }
  return { count, problems };
}

export async function applyModules(c: KilnConfig): Promise<string[]> {
  if (!c.kiln.modules.length) return [];
  const r = await loadModules(c.kiln.modules);
  return r.failed.map((f) => `kiln.modules: ${f}`);
}

/** How a user command ended, for the log and the config report. */
function outcome(r: RunResult, timeoutMs: number): string {
  return r.error ?? (r.timedOut ? `timed out after ${timeoutMs / 1000} s (its process group was killed)` : r.signal ? `killed by ${r.signal}` : `exit ${r.code}`);
}

/**
 * Runs one user command with its output appended to the commands log through a file
 * descriptor, not a pipe: a daemon it leaves in the background (`mydaemon &`) may keep
 * writing there but cannot hold boot up. It starts with oom_score_adj 0, not init's -1000.
 * Returns the result and the last line of output it wrote (for the report).
 */
async function runLogged(label: string, cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number, logFile: string): Promise<{ r: RunResult; last: string }> {
  appendRotating(logFile, `${isoUtc(Date.now())} ${label} started\n`);
  let fd: number | undefined;
  try { fd = openSync(logFile, 'a+'); } catch { /* no log (full or read-only disk): the output is dropped */ }
  let start = 0;
  try { if (fd !== undefined) start = fstatSync(fd).size; } catch { /* */ }
  try {
    const r = await run(cmd, args, { timeoutMs, env, output: fd ?? 'ignore', enter: { oomScoreAdj: 0 } });
    let last = '';
    if (fd !== undefined) {
      try {
        const end = fstatSync(fd).size;
        const from = Math.max(start, end - 4096);
        const buf = Buffer.alloc(end - from);
        readSync(fd, buf, 0, buf.length, from);
        last = buf.toString().trim().split('\n').pop()?.trim() ?? '';
      } catch { /* */ }
    }
    return { r, last };
  } finally { if (fd !== undefined) closeSync(fd); }
}

/** Runs a *_cmd list: strings through /bin/sh -c, lists as argv. Output goes to commands.log. */
export async function runCommands(what: string, cmds: Command[], env: Record<string, string>, timeoutMs = 300_000, logFile = `${LOG_DIR}/commands.log`): Promise<string[]> {
  const problems: string[] = [];
  for (const [i, c] of cmds.entries()) {
    const [cmd, args] = typeof c === 'string' ? ['/bin/sh', ['-c', c]] : [c[0], c.slice(1)];
    const label = `${what}[${i}] ${JSON.stringify(c)}`;
    const { r, last } = await runLogged(label, cmd as string, args as string[], { ...process.env, PATH: '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin', HOME: '/root', ...env }, timeoutMs, logFile);
    appendRotating(logFile, `${isoUtc(Date.now())} ${label} -> ${outcome(r, timeoutMs)}\n`);
    if (r.code !== 0) problems.push(`${label}: ${outcome(r, timeoutMs)}${last ? `: ${last}` : ''}`);
  }
  return problems;
}

/** User-data scripts (`#!...`), run like run_cmd entries. */
export async function runScripts(scripts: { name: string; text: string }[], env: Record<string, string>, o: { timeoutMs?: number; dir?: string; logFile?: string } = {}): Promise<string[]> {
  const problems: string[] = [];
  const dir = o.dir ?? '/run/kiln/scripts';
  const timeoutMs = o.timeoutMs ?? 300_000;
  const logFile = o.logFile ?? `${LOG_DIR}/commands.log`;
  mkdirSync(dir, { recursive: true });
  for (const [i, s] of scripts.entries()) {
    const f = `${dir}/${i}`;
    writeFileSync(f, s.text, { mode: 0o700 });
    const { r, last } = await runLogged(`user-data script ${s.name}`, f, [], { ...process.env, ...env }, timeoutMs, logFile);
    appendRotating(logFile, `${isoUtc(Date.now())} user-data script ${s.name} -> ${outcome(r, timeoutMs)}\n`);
    if (r.code !== 0) problems.push(`${s.name}: ${f}: ${outcome(r, timeoutMs)}${last ? `: ${last}` : ''}`);
  }
  return problems;
}
