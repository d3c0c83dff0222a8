// `kiln install`: from the live ISO, write the A/B GPT disk that `kiln build` makes (same
// layout code, init/disk/layout.ts) to a real disk: the ESP image and root image from the
// medium, an empty root-b, and a fresh kiln-data holding the node's config. The pure checks
// are exported for tests; the rest does I/O on block devices and must run as root.
import { nodeCrypto } from './lazy.ts';
import { closeSync, createReadStream, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { createGunzip } from 'node:zlib';
import { stringify } from 'yaml';
import { buildGpt, randomGuid } from './disk/gpt.ts';
import type { LayoutPartition } from './disk/gpt.ts';
import { layoutFor, minDiskBytes, PARTLABELS, type IsoManifest } from './disk/layout.ts';
import { mergeConfigs, type SourceText, parseCmdline } from './config/merge.ts';
import { formatProblem, isError, parseConfig } from './config/parse.ts';
import { fetchLimited, MAX_SOURCE_BYTES, splitPin, urlProblem } from './config/url.ts';
import { run, runOk, sleep } from './exec.ts';

const MiB = 1024 * 1024;
export const MEDIUM_MOUNT = '/run/kiln/medium';

/** What the checks need to know about a disk (from sysfs and /proc/mounts). */
export interface DiskFacts {
  name: string;
  sizeBytes: number;
  readOnly: boolean;
  partitions: string[];
  /** Mount points on the disk or its partitions (and swap, holders). */
  inUse: string[];
  /** The disk the live medium is on. */
  isMedium: boolean;
  /** sysfs says removable media (card readers, most USB sticks, CD drives). */
  removable?: boolean;
  /** sysfs device/model, for listing disks to a person. */
  model?: string;
}

/** 'vda' + 4 -> 'vda4'; 'nvme0n1' + 4 -> 'nvme0n1p4' (names ending in a digit take a 'p'). */
export function partitionName(disk: string, n: number): string {
  return /\d$/.test(disk) ? `${disk}p${n}` : `${disk}${n}`;
}

/** The layout to write, or an error saying why this disk cannot take it. */
export function planInstall(d: DiskFacts, m: Pick<IsoManifest, 'arch' | 'espMiB' | 'rootMiB' | 'minDataMiB' | 'rootBytes'>, force: boolean): LayoutPartition[] {
  const dev = `/dev/${d.name}`;
  if (d.isMedium) throw new Error(`${dev} holds the live medium this system runs from; pick another disk`);
  if (d.readOnly) throw new Error(`${dev} is read-only`);
  if (d.inUse.length) throw new Error(`${dev} is in use (${d.inUse.join(', ')}); unmount it first`);
  const min = minDiskBytes(m.espMiB, m.rootMiB, m.minDataMiB);
  if (d.sizeBytes < min) throw new Error(`${dev} is too small: ${Math.floor(d.sizeBytes / MiB)} MiB, kiln needs at least ${min / MiB} MiB (ESP ${m.espMiB} + 2 x root ${m.rootMiB} + data ${m.minDataMiB} MiB)`);
  if (m.rootBytes > m.rootMiB * MiB) throw new Error(`the root image (${Math.ceil(m.rootBytes / MiB)} MiB) is larger than a root slot (${m.rootMiB} MiB)`);
  if (d.partitions.length && !force) throw new Error(`${dev} already has partitions (${d.partitions.join(', ')}); set kiln.install.force: true (or --force) to erase it`);
  return layoutFor(m.arch, Math.floor(d.sizeBytes / MiB) * MiB, m.espMiB, m.rootMiB);
}

/**
 * The config the installed node starts with: every source the live system used (data
 * sources, kiln.config_url, the command line) merged, plus `extra` on top (kiln.install.config_url's
 * file, the installer's answers), without the install section. The image's own config is left out: it is in the root.
 */
export function installedConfig(sources: SourceText[], extra: SourceText[] = []): { text: string; problems: string[] } {
  const problems: string[] = [];
  const layers = [];
  for (const s of [...sources.filter((x) => x.file !== '/usr/lib/kiln/config.yaml'), ...extra]) {
    if (s.error !== undefined) { problems.push(`${s.file}: ${s.error}`); continue; } // never install without a source that failed
    const r = s.kind === 'cmdline' ? parseCmdline(s.text, s.file) : parseConfig(s.text, s.file);
    problems.push(...r.problems.filter(isError).map(formatProblem)); // warnings do not stop an install
    if (r.config) layers.push(r.config);
  }
  const merged = mergeConfigs(layers) as Record<string, any>;
  const inst = merged.kiln?.install ?? {};
  // The installer's own shortcuts for the installed node's join settings and password.
  for (const k of ['server_url', 'token', 'password']) if (inst[k]) merged.kiln[k] = inst[k];
  if (merged.kiln) { delete merged.kiln.install; if (!Object.keys(merged.kiln).length) delete merged.kiln; }
  const from = [...sources, ...extra].map((s) => s.file).join(', ') || 'nothing';
  return { text: `#cloud-config\n# written by kiln install from: ${from}\n${Object.keys(merged).length ? stringify(merged) : ''}`, problems };
}

/**
 * kiln.install.config_url's file, for installedConfig's `extra`: file:///PATH, https://, or
 * plain http:// only with a pin (#sha256=HEX) or the image's kiln.allow_insecure_http (the
 * installed node's config is root on it). At most MAX_SOURCE_BYTES. Never throws.
 */
export async function fetchInstallConfig(url: string, o: { allowInsecureHttp: boolean; fetch?: typeof fetch; readFile?: (p: string) => Buffer }): Promise<{ source?: SourceText; problem?: string }> {
  const key = 'kiln.install.config_url';
  const why = urlProblem(url, { allowInsecureHttp: o.allowInsecureHttp, fileOk: true });
  if (why) return { problem: `${key} ${splitPin(url).url}: ${why.message} (${why.fix})` };
  if (/^file:/i.test(url)) {
    const path = decodeURIComponent(splitPin(url).url.replace(/^file:\/\//i, ''));
    try {
      const data = (o.readFile ?? readFileSync)(path);
      if (data.length > MAX_SOURCE_BYTES) return { problem: `${key} ${url}: more than the limit of ${MAX_SOURCE_BYTES} bytes` };
      return { source: { file: url, text: data.toString('utf8') } };
    } catch (e) { return { problem: `${key} ${url}: cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` }; }
  }
  const r = await fetchLimited(url, { key, allowInsecureHttp: o.allowInsecureHttp, fetch: o.fetch, timeoutMs: 15_000 });
  const plain = splitPin(url).url;
  if (r.problem || r.missing) return { problem: `${key} ${plain}: ${r.problem ?? r.missing}` };
  return { source: { file: plain, text: r.body!.toString('utf8') } };
}

const read = (p: string) => { try { return readFileSync(p, 'utf8'); } catch { return ''; } };

/** The disk a block device (partition or disk, e.g. 'sr0', 'sdb1') belongs to. */
function diskOf(dev: string): string {
  for (const d of readdirSync('/sys/block')) if (d === dev || existsSync(`/sys/block/${d}/${dev}`)) return d;
  return dev;
}

export function diskFacts(name: string, mediumDev?: string): DiskFacts {
  const sys = `/sys/block/${name}`;
  if (!existsSync(sys)) throw new Error(`/dev/${name} is not a disk (not in /sys/block; kiln install takes a whole disk such as /dev/sda)`);
  const partitions = readdirSync(sys).filter((p) => existsSync(`${sys}/${p}/partition`)).sort();
  const devs = new Set([name, ...partitions].map((p) => `/dev/${p}`));
  const inUse = read('/proc/mounts').split('\n').map((l) => l.split(' ')).filter((f) => devs.has(f[0]!)).map((f) => `${f[0]} on ${f[1]}`);
  inUse.push(...read('/proc/swaps').split('\n').slice(1).map((l) => l.split(/\s+/)[0]!).filter((d) => devs.has(d)).map((d) => `${d} is swap`));
  for (const p of [name, ...partitions]) {
    const h = existsSync(`${sys}/${p === name ? '' : `${p}/`}holders`) ? readdirSync(`${sys}/${p === name ? '' : `${p}/`}holders`) : [];
    if (h.length) inUse.push(`/dev/${p} is held by ${h.join(', ')}`);
  }
  return {
    name, partitions, inUse,
    sizeBytes: Number(read(`${sys}/size`).trim()) * 512,
    readOnly: read(`${sys}/ro`).trim() === '1',
    isMedium: mediumDev ? diskOf(mediumDev.replace(/^\/dev\//, '')) === name : false,
    removable: read(`${sys}/removable`).trim() === '1',
    model: read(`${sys}/device/model`).trim() || undefined,
  };
}

const describe = (d: DiskFacts) => `/dev/${d.name} (${Math.floor(d.sizeBytes / MiB)} MiB${d.model ? `, ${d.model}` : ''})`;

/**
 * kiln.install.device: auto. The one disk that is neither removable nor the boot medium (and
 * writable and large enough); none or several is an error listing what was seen, because
 * guessing would erase the wrong disk.
 */
export function chooseAutoDisk(disks: DiskFacts[], minBytes: number): string {
  const why = (d: DiskFacts) => d.isMedium ? 'the boot medium' : d.removable ? 'removable' : d.readOnly ? 'read-only'
    : d.sizeBytes < minBytes ? `smaller than ${minBytes / MiB} MiB` : undefined;
  const fit = disks.filter((d) => !why(d));
  if (fit.length === 1) return fit[0]!.name;
  if (fit.length > 1) throw new Error(`kiln.install.device: auto: ${fit.length} disks could be the target: ${fit.map(describe).join(', ')}; set kiln.install.device to one of them`);
  const seen = disks.map((d) => `${describe(d)}: ${why(d)}`);
  throw new Error(`kiln.install.device: auto: no disk to install to${seen.length ? ` (${seen.join('; ')})` : ' (no disks found: is the disk controller\'s driver in the image?)'}; attach a disk, or set kiln.install.device to a /dev path`);
}

/** Every whole disk (not loop, RAM, CD, device-mapper), with its facts. */
export function allDisks(mediumDev?: string): DiskFacts[] {
  return readdirSync('/sys/block').filter((d) => !/^(loop|ram|sr|zram|fd|md|dm-)/.test(d)).sort().map((d) => diskFacts(d, mediumDev));
}

/** Disks one could install to: not the medium, not loop/ram/CD, writable, big enough. */
export function candidateDisks(m: IsoManifest, mediumDev?: string): DiskFacts[] {
  const min = minDiskBytes(m.espMiB, m.rootMiB, m.minDataMiB);
  return readdirSync('/sys/block').filter((d) => !/^(loop|ram|sr|zram|fd|md|dm-)/.test(d)).sort()
    .map((d) => diskFacts(d, mediumDev)).filter((d) => !d.isMedium && !d.readOnly && d.sizeBytes >= min);
}

/** The block device whose ISO9660 volume id is `label` (findfs skips CD drives: it reads no removable media). */
export function findIsoByLabel(label: string): string | undefined {
  for (const d of readdirSync('/sys/class/block').filter((x) => !/^(loop|ram|zram)/.test(x)).sort()) {
    let fd: number | undefined;
    try {
      fd = openSync(`/dev/${d}`, 'r');
      const b = Buffer.alloc(80);
      if (readSync(fd, b, 0, 80, 32768) === 80 && isoVolumeId(b) === label) return `/dev/${d}`;
    } catch { /* no medium, no node */ } finally { if (fd !== undefined) closeSync(fd); }
  }
  return undefined;
}

/** The volume id of an ISO9660 primary volume descriptor (its first 72 bytes), else undefined. */
export function isoVolumeId(pvd: Buffer): string | undefined {
  if (pvd[0] !== 1 || pvd.subarray(1, 6).toString('latin1') !== 'CD001') return undefined;
  return pvd.subarray(40, 72).toString('latin1').trim();
}

/** Mounts the live medium (by the label stage 1 found it by) and returns its device. */
export async function mountMedium(cmdline: string): Promise<string> {
  const label = /(?:^|\s)kiln\.live=(\S+)/.exec(cmdline)?.[1];
  if (!label) throw new Error('this is not the live system (no kiln.live= on the kernel command line): boot the kiln ISO to install');
  const dev = findIsoByLabel(label);
  if (!dev) throw new Error(`cannot find the live medium labelled ${label}`);
  if (!existsSync(`${MEDIUM_MOUNT}/kiln/install.json`)) {
    mkdirSync(MEDIUM_MOUNT, { recursive: true });
    const err = await runOk('mount', ['-t', 'iso9660', '-o', 'ro', dev, MEDIUM_MOUNT], { timeoutMs: 20_000 });
    if (err) throw new Error(`cannot mount the live medium ${dev}: ${err}`);
  }
  return dev;
}

const MANIFEST_MAX = 64 * 1024;

/** The medium's kiln/install.json, checked: every field the installer relies on, with its type. */
export function readManifest(dir = MEDIUM_MOUNT): IsoManifest {
  const file = `${dir}/kiln/install.json`;
  let m: Record<string, unknown>;
  try {
    const text = readFileSync(file);
    if (text.length > MANIFEST_MAX) throw new Error(`${text.length} bytes, more than ${MANIFEST_MAX}`);
    m = JSON.parse(text.toString('utf8'));
    if (!m || typeof m !== 'object' || Array.isArray(m)) throw new Error('not a JSON object');
  } catch (e) {
    throw new Error(`the live medium has no usable kiln/install.json (${(e as Error).message})`);
  }
  const bad = (key: string, want: string) => new Error(`the live medium's kiln/install.json: ${key} is ${JSON.stringify(m[key]) ?? 'missing'}, expected ${want}; the medium is damaged or from another build: write it again`);
  for (const k of ['version', 'root', 'esp']) if (typeof m[k] !== 'string' || !m[k]) throw bad(k, 'a non-empty string');
  for (const k of ['root', 'esp']) if ((m[k] as string).split('/').includes('..') || (m[k] as string).startsWith('/')) throw bad(k, 'a path inside the medium');
  if (m.arch !== 'x86_64' && m.arch !== 'arm64') throw bad('arch', "'x86_64' or 'arm64'");
  for (const k of ['espMiB', 'rootMiB', 'minDataMiB', 'rootBytes', 'espBytes']) if (!Number.isSafeInteger(m[k]) || (m[k] as number) <= 0) throw bad(k, 'a positive integer');
  for (const k of ['rootSha256', 'espSha256']) if (typeof m[k] !== 'string' || !/^[0-9a-f]{64}$/.test(m[k] as string)) throw bad(k, 'a sha256 in hex');
  return m as unknown as IsoManifest;
}

export interface InstallRequest {
  device: string;
  /** Text of /var/lib/kiln/config.yaml on the new disk. */
  config: string;
  force: boolean;
  /** Proceed on a BIOS-booted machine (the installed disk boots with UEFI only). */
  forceEfi: boolean;
  cmdline: string;
  log: (line: string) => void;
}

/**
 * Copies a stream into `fd` from byte `offset`, at most `limit` bytes, hashing what it copies.
 * Returns the byte count and the sha256 (hex).
 */
async function streamInto(fd: number, src: NodeJS.ReadableStream, offset: number, limit: number): Promise<{ bytes: number; sha256: string }> {
  const h = nodeCrypto().createHash('sha256');
  let pos = 0;
  for await (const chunk of src as AsyncIterable<Buffer>) {
    if (pos + chunk.length > limit) throw new Error(`image larger than its partition (${limit / MiB} MiB)`);
    let done = 0;
    while (done < chunk.length) done += writeSync(fd, chunk, done, chunk.length - done, offset + pos + done);
    h.update(chunk);
    pos += chunk.length;
  }
  return { bytes: pos, sha256: h.digest('hex') };
}

/** Throws when what was read from the medium is not what the build recorded. */
function checkImage(what: string, file: string, got: { bytes: number; sha256: string }, bytes: number, sha256: string): void {
  if (got.bytes === bytes && got.sha256 === sha256) return;
  throw new Error(`the ${what} read from the medium (${file}: ${got.bytes} bytes, sha256 ${got.sha256}) is not the one this ISO was built with (${bytes} bytes, sha256 ${sha256}): the medium is damaged; write it again (or use another stick or disc). The target disk was left without a partition table`);
}

/** A read error (a scratched disc, a corrupt gzip stream) becomes a message for the installer's user. */
async function copyImage<T>(what: string, file: string, copy: () => Promise<T>): Promise<T> {
  try { return await copy(); } catch (e) {
    throw new Error(`the ${what} on the medium (${file}) cannot be read: ${(e as Error).message}; the medium is damaged or incomplete; write it again. The target disk was left without a partition table`);
  }
}

export interface WriteDiskRequest {
  /** Block device (or, in tests, a regular file of the disk's size). */
  target: string;
  /** The size the table is made for (whole MiB). */
  sizeBytes: number;
  /** The device's real size, when larger: an old backup table sits in its last sector. */
  deviceBytes?: number;
  /** Where the medium is mounted. */
  medium: string;
  manifest: IsoManifest;
  layout: LayoutPartition[];
  log: (line: string) => void;
}

/**
 * Writes the images and then the partition table. The old table goes first (both copies), the
 * images are hashed as they stream from the medium, and only when both match the manifest is
 * the new table written: a bad medium or an interruption leaves a disk without any table,
 * which no firmware boots and no tool mistakes for a kiln disk. New random GUIDs every time.
 */
export async function writeDisk(req: WriteDiskRequest): Promise<void> {
  const { manifest: m, layout } = req;
  const gpt = buildGpt({
    diskSizeBytes: req.sizeBytes, diskGuid: randomGuid(),
    partitions: layout.map((p) => ({ ...p, guid: randomGuid() })),
  });
  const at = (label: string) => layout.find((p) => p.name === label)!;
  const bytes = (p: LayoutPartition) => (p.lastLba - p.firstLba + 1) * 512;
  const fd = openSync(req.target, 'r+');
  try {
    // Old signatures could be mistaken for ours: zero both GPT copies (a surviving backup would
    // let tools "repair" the old table over the new contents) and each partition's start.
    const zero = Buffer.alloc(MiB);
    writeSync(fd, zero, 0, MiB, 0);
    for (const end of new Set([req.sizeBytes, req.deviceBytes ?? req.sizeBytes])) writeSync(fd, zero, 0, MiB, end - MiB);
    for (const p of layout) writeSync(fd, zero, 0, MiB, p.firstLba * 512);
    fsyncSync(fd);
    req.log('writing the ESP (systemd-boot, the unified kernel image)');
    const esp = await copyImage('ESP image', m.esp, () => {
      const src = createReadStream(`${req.medium}/${m.esp}`), gunzip = createGunzip();
      src.on('error', (e) => gunzip.destroy(e)); // pipe() does not forward a read error
      return streamInto(fd, src.pipe(gunzip), at(PARTLABELS.esp).firstLba * 512, bytes(at(PARTLABELS.esp)));
    });
    checkImage('ESP image', m.esp, esp, m.espBytes, m.espSha256);
    req.log(`writing root slot a (${Math.ceil(m.rootBytes / MiB)} MiB)`);
    const root = await copyImage('root image', m.root, () => streamInto(fd, createReadStream(`${req.medium}/${m.root}`, { highWaterMark: MiB }), at(PARTLABELS.rootA).firstLba * 512, bytes(at(PARTLABELS.rootA))));
    checkImage('root image', m.root, root, m.rootBytes, m.rootSha256);
    fsyncSync(fd);
    // The tables last: a disk interrupted before this has no half-valid kiln layout.
    writeSync(fd, gpt.backup, 0, gpt.backup.length, gpt.backupOffset);
    writeSync(fd, gpt.primary, 0, gpt.primary.length, 0);
    fsyncSync(fd);
  } finally { closeSync(fd); }
}

function program(name: string): string | undefined {
  return ['/usr/sbin', '/sbin', '/usr/bin', '/bin'].map((d) => `${d}/${name}`).find((p) => existsSync(p));
}

/** Writes the disk. Throws with a message meant for the person installing. */
export async function install(req: InstallRequest): Promise<string> {
  const t0 = Date.now();
  const medium = await mountMedium(req.cmdline);
  const m = readManifest();
  const name = req.device === 'auto' ? chooseAutoDisk(allDisks(medium), minDiskBytes(m.espMiB, m.rootMiB, m.minDataMiB)) : req.device.replace(/^\/dev\//, '');
  if (req.device === 'auto') req.log(`kiln.install.device: auto chose /dev/${name}`);
  if (!existsSync('/sys/firmware/efi') && !req.forceEfi) {
    throw new Error('this machine booted in BIOS mode, and the installed disk boots with UEFI only; switch the firmware to UEFI, or set kiln.install.force_efi: true (--force-efi) to install anyway');
  }
  const layout = planInstall(diskFacts(name, medium), m, req.force);
  const dev = `/dev/${name}`;
  const deviceBytes = diskFacts(name).sizeBytes;
  const sizeBytes = Math.floor(deviceBytes / MiB) * MiB;
  const at = (label: string) => layout.find((p) => p.name === label)!;
  const bytes = (p: LayoutPartition) => (p.lastLba - p.firstLba + 1) * 512;
  req.log(`installing kiln ${m.version} to ${dev} (${sizeBytes / MiB} MiB)`);
  await writeDisk({ target: dev, sizeBytes, deviceBytes, medium: MEDIUM_MOUNT, manifest: m, layout, log: req.log });
  // The kernel reads the new table; the data partition's node appears shortly after.
  const reread = await runOk(program('blockdev') ?? 'blockdev', ['--rereadpt', dev], { timeoutMs: 20_000 });
  if (reread) throw new Error(`the kernel did not take the new partition table: ${reread}`);
  const data = `/dev/${partitionName(name, layout.indexOf(at(PARTLABELS.data)) + 1)}`;
  for (let i = 0; i < 100 && !existsSync(data); i++) await sleep(100);
  if (!existsSync(data)) throw new Error(`${data} did not appear after writing the partition table`);
  req.log(`formatting ${data} (kiln-data, ${Math.floor(bytes(at(PARTLABELS.data)) / MiB)} MiB)`);
  const mkfs = program('mkfs.ext4');
  const err = mkfs ? await runOk(mkfs, ['-q', '-F', '-L', 'kiln-data', data], { timeoutMs: 300_000 })
    : await runOk('mke2fs', ['-F', '-L', 'kiln-data', data], { timeoutMs: 300_000 });
  if (err) throw new Error(`formatting ${data}: ${err}`);
  const mnt = '/run/kiln/install-data';
  mkdirSync(mnt, { recursive: true });
  const merr = await runOk('mount', ['-t', 'ext4', data, mnt], { timeoutMs: 20_000 });
  if (merr) throw new Error(`mounting the new data partition: ${merr}`);
  try {
    // Stage 1 lays /var over the root from data/overlay/var/upper: this is /var/lib/kiln/config.yaml.
    const dir = `${mnt}/overlay/var/upper/lib/kiln`;
    mkdirSync(dir, { recursive: true, mode: 0o755 });
    writeFileSync(`${dir}/config.yaml`, req.config, { mode: 0o600 });
  } finally {
    await run('sync', [], { timeoutMs: 60_000 });
    await runOk('umount', [mnt], { timeoutMs: 20_000 });
  }
  return `installed kiln ${m.version} to ${dev} in ${Math.round((Date.now() - t0) / 1000)} s; remove the medium and boot from the disk`;
}
