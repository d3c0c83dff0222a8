// `kiln build`, per arch: pinned inputs -> root tree and image -> stage-1 initramfs -> boot
// files (UKI, ESP, A/B disk) -> the requested output formats (formats.ts, one module each in
// outputs/). Each step is a small function; this file only sequences them and records the result.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { $ } from 'zx';
import { ARCH, type Arch } from './arch.ts';
import { Cache, hashFile } from './cache.ts';
import { assembleDisk, makeDataFs } from './disk.ts';
import { buildEsp } from './esp.ts';
import { checkLock, readLock, type ArchLock } from './lock.ts';
import { createLogger, type Logger } from './log.ts';
import { nodeBinary } from './node-runtime.ts';
import { checkFormats, formatsInBuildOrder } from './formats.ts';
import { pickNeeds, type BootFiles, type FormatJob } from './outputs/format.ts';
import { loadProfile, updateTarget, type Format, type Profile } from './profile.ts';
import { buildRootImage } from './rootimage.ts';
import { assembleRoot, kernelFromLock, unpackedDeb, type Kernel, type RootInputs } from './rootfs.ts';
import { k3sBinary } from './k3s.ts';
import { chartsForImage } from './charts.ts';
import { formatProblem, parseConfig } from '../init/config/parse.ts';
import { parseTrustRoot } from '../channels/manifest.ts';
import { k3sKernelModulesFromFile } from './k3s-kernel.ts';
import { buildStage1, stage1VerityFiles } from './stage1.ts';
import { appendVerity } from './verity.ts';
import { buildUki } from './uki.ts';
import { bundleCli, bundleInit } from './bundle.ts';
import { withBuildLock } from './buildlock.ts';
import { secureBootEsp, secureBootSigner, signEfi, type SecureBootOptions } from './secureboot.ts';
import { moduleSignatures } from './kmod.ts';

export const REPO = resolve(new URL('..', import.meta.url).pathname);

export interface BuildOptions {
  profile?: string;
  arches?: Arch[];
  formats?: Format[];
  out?: string;
  version?: string;
  artifacts?: string;
  cacheDir?: string;
  quiet?: boolean;
  sourceDateEpoch?: number;
  /** Node config baked into the image as /usr/lib/kiln/config.yaml (validated first). */
  config?: string;
  /** Release trust root (from `kiln keys generate`) baked in as /usr/lib/kiln/trust.json: enables updates. */
  trust?: string;
  /** A local file used as the k3s binary for every arch instead of the pinned download (test stand-ins). */
  k3sBinary?: string;
  /** --format iso: kiln.config_url= passed by every boot menu entry. */
  isoConfigUrl?: string;
  /** Rebuild even when the recorded build key matches. */
  force?: boolean;
  /** Secure Boot: sign systemd-boot and every UKI with this db key (builder/secureboot.ts). */
  secureBoot?: SecureBootOptions;
  log?: Logger;
}

/** `target`: the output's name in channel manifests (profile update_target, e.g. arm64_rpi). */
export interface Output { file: string; arch: Arch; target: string; kind: string; size: number; sha256: string }
export interface BuildRecord {
  profile: string;
  version: string;
  sourceDateEpoch: number;
  key: string;
  outputs: Output[];
  inputs: Record<string, ArchLock>;
  kernel: Record<string, string>;
  k3s: Record<string, string>;
  /** Per arch: the root image's dm-verity root hash and the size of its appended hash tree. */
  verity?: Record<string, { rootHash: string; treeBytes: number }>;
}

/** SOURCE_DATE_EPOCH, else the time of the checkout's last commit, else 0. */
export function defaultSourceDateEpoch(): number {
  if (process.env.SOURCE_DATE_EPOCH) return Number(process.env.SOURCE_DATE_EPOCH);
  const r = $.sync({ quiet: true, cwd: REPO, nothrow: true })`git log -1 --format=%ct`;
  return Number(r.stdout.trim()) || 0;
}

/** Hash of everything that determines the outputs: a match means nothing to rebuild. */
function buildKey(profile: Profile, opts: { version: string; sde: number; arches: Arch[]; formats: Format[]; k3sBinary?: string; config?: string; trust?: string; isoConfigUrl?: string; secureBoot?: string }): string {
  const h = createHash('sha256');
  h.update(JSON.stringify({ ...opts, profile: readFileSync(profile.file, 'utf8') }));
  for (const f of [opts.k3sBinary, opts.config, opts.trust]) if (f) h.update(readFileSync(f));
  if (existsSync(profile.lockFile)) h.update(readFileSync(profile.lockFile));
  const walk = (dir: string) => {
    if (!existsSync(dir)) return;
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else { h.update(relative(REPO, p)); h.update(e.isSymbolicLink() ? 'link' : readFileSync(p)); }
    }
  };
  for (const d of ['builder', 'init', 'overlay', 'charts']) walk(join(REPO, d));
  h.update(readFileSync(join(REPO, 'package-lock.json')));
  return h.digest('hex');
}

/** Builds under a lock on the output folder, so two builds of one folder never interleave. */
export async function build(opts: BuildOptions = {}): Promise<BuildRecord> {
  return withBuildLock(resolve(opts.out ?? 'out'), () => buildLocked(opts), { say: (m) => (opts.log ?? createLogger({ quiet: opts.quiet })).info(m) });
}

async function buildLocked(opts: BuildOptions): Promise<BuildRecord> {
  const log = opts.log ?? createLogger({ quiet: opts.quiet });
  const profile = loadProfile(opts.profile);
  const arches = opts.arches?.length ? opts.arches : profile.arches;
  const formats = opts.formats?.length ? opts.formats : profile.formats;
  checkFormats(formats, arches);
  const makers = formatsInBuildOrder(formats);
  for (const f of makers) f.checkProfile?.(profile);
  const version = opts.version ?? profile.version;
  const sde = opts.sourceDateEpoch ?? defaultSourceDateEpoch();
  const out = resolve(opts.out ?? 'out');
  const lock = checkLock(profile, readLock(profile), arches);
  const cache = new Cache(opts.cacheDir, opts.artifacts);
  process.env.SOURCE_DATE_EPOCH = String(sde);

  const baked = checkBakedFiles(opts);
  const sb = opts.secureBoot ? secureBootSigner(opts.secureBoot) : undefined;
  const key = buildKey(profile, { version, sde, arches, formats, k3sBinary: opts.k3sBinary, config: opts.config, trust: opts.trust, isoConfigUrl: opts.isoConfigUrl, secureBoot: sb?.fingerprint });
  const recordFile = join(out, 'build.json');
  if (!opts.force && existsSync(recordFile)) {
    const prev = JSON.parse(readFileSync(recordFile, 'utf8')) as BuildRecord;
    if (prev.key === key && prev.outputs.every((o) => existsSync(join(out, o.file)) && statSync(join(out, o.file)).size === o.size)) {
      log.info(`up to date: ${recordFile} (nothing changed since the last build)`);
      return prev;
    }
  }

  mkdirSync(out, { recursive: true });
  const sigs = moduleSignatures({ setting: profile.kernel.module_signatures, secureBoot: !!sb, cmdline: profile.kernel.cmdline });
  log.info(`kernel modules: signatures ${sigs.keep ? 'kept' : 'removed'} (${sigs.why})`);
  const work = join(out, '.work');
  const initBundle = join(work, 'init.js');
  const cliBundle = join(work, 'kiln.js');
  await log.stage('bundle init', async () => { mkdirSync(work, { recursive: true }); await bundleInit(initBundle); await bundleCli(cliBundle); });
  // Add-ons: our charts as HelmChart objects (chart inside), installed by init after k3s is up.
  const addons = profile.k3s.version === 'none' ? [] : await log.stage('package charts', () => chartsForImage(join(REPO, 'charts'), sde));

  const outputs: Output[] = [];
  const kernels: Record<string, string> = {};
  const k3sInfo: Record<string, string> = {};
  const verities: Record<string, { rootHash: string; treeBytes: number }> = {};
  const record = async (file: string, arch: Arch, kind: string) => {
    outputs.push({ file: relative(out, file), arch, target: updateTarget(profile, arch), kind, size: statSync(file).size, sha256: await hashFile(file) });
  };
  for (const arch of arches) {
    const al = lock.arches[arch]!;
    const w = join(work, arch);
    mkdirSync(w, { recursive: true });
    const base = join(out, `kiln-${version}-${arch}`);
    const debTree = (name: string) => unpackedDeb(al.packages.find((p) => p.package === name) ?? missingPkg(name), cache, log);

    const { kernel, node, k3s } = await archInputs(arch, al, profile, opts.k3sBinary, cache, log);
    kernels[arch] = kernel.version;
    if (k3s) k3sInfo[arch] = k3s.version;
    const root = await log.stage(`${arch}: root tree`, () => assembleRoot(join(w, 'root'), {
      arch, version, profile, lock: al, kernel, nodeBinary: node, initBundle, cliBundle, overlayDir: join(REPO, 'overlay'), sourceDateEpoch: sde, k3s, addons: addons.map((a) => a.resource), baked,
      keepModuleSignatures: sigs.keep,
    }, cache, log));
    const rootImage = await log.stage(`${arch}: root image (${profile.root.filesystem})`, () =>
      buildRootImage(root.dir, `${base}.root.${profile.root.filesystem}`, profile.root.filesystem, sde, `${version}:${arch}`));
    // The tree goes on the end of the image; its root hash into stage 1 and the UKI's command line.
    const verity = await log.stage(`${arch}: verity hash tree`, () => appendVerity(rootImage));
    verities[arch] = { rootHash: verity.rootHash, treeBytes: verity.treeBytes };
    const stage1Extra = await stage1VerityFiles(root.dir, ARCH[arch].triplet, ARCH[arch].ldso, verity.param);
    const initrd = await log.stage(`${arch}: stage-1 initramfs`, () =>
      buildStage1(join(w, 'stage1.cpio.zst'), kernel, join(root.dir, 'bin/busybox'), profile.modules.stage1, stage1Extra, profile.modules.coldplug_stage1, ARCH[arch].cpuModules, sigs.keep));
    const files = await bootFiles({ arch, profile, version, sde, base, work: w, kernel, initrd, rootImage, verityParam: verity.param, secureBoot: sb, debTree, log });
    // The root image and the UKI are what a release publishes, whatever the formats.
    await record(files.rootImage, arch, 'root');
    await record(files.uki, arch, 'uki');

    const job: FormatJob = { arch, version, profile, sourceDateEpoch: sde, base, work: w, configUrl: opts.isoConfigUrl, debTree, log };
    const written: string[] = [];
    for (const f of makers) {
      await f.make(job, pickNeeds(files, f.needs));
      for (const { suffix, kind } of f.writes) {
        const file = `${base}${suffix}`;
        if (!existsSync(file)) throw new Error(`format ${f.name} did not write ${file}`);
        await record(file, arch, kind);
        written.push(file);
      }
    }
    // The disk is made for every build; it stays only as an output of its own (raw).
    if (!written.includes(files.disk)) rmSync(files.disk, { force: true });
  }
  const rec: BuildRecord = { profile: profile.name, version, sourceDateEpoch: sde, key, outputs, inputs: lock.arches as Record<string, ArchLock>, kernel: kernels, k3s: k3sInfo, verity: verities };
  writeFileSync(recordFile, JSON.stringify(rec, null, 2) + '\n');
  for (const o of outputs) log.info(`${o.file}  ${(o.size / 1048576).toFixed(1)} MiB  sha256 ${o.sha256.slice(0, 16)}…`);
  return rec;
}

/** An arch's pinned inputs: the kernel, the Node.js runtime, and k3s (pinned, a stand-in, or none). */
async function archInputs(arch: Arch, al: ArchLock, profile: Profile, k3sStandIn: string | undefined, cache: Cache, log: Logger) {
  const kernel = await log.stage(`${arch}: kernel ${al.kernel.version}`, () => kernelFromLock(al, cache, log));
  const node = await log.stage(`${arch}: node ${al.node.version}`, () => nodeBinary(al.node, arch, cache, log));
  let k3s: RootInputs['k3s'];
  if (profile.k3s.version !== 'none') {
    const modules = k3sKernelModulesFromFile(kernel.config);
    if (k3sStandIn) {
      k3s = { binary: resolve(k3sStandIn), version: `stand-in (${relative(REPO, resolve(k3sStandIn))})`, modules };
    } else {
      if (!al.k3s) throw new Error(`${profile.lockFile} has no k3s pin for ${arch}; run 'kiln lock'`);
      const pin = al.k3s;
      k3s = { binary: await log.stage(`${arch}: k3s ${pin.version}`, () => k3sBinary(pin, cache, log)), version: pin.version, modules };
    }
  }
  return { kernel, node, k3s };
}

/** The UEFI boot files every format draws on: UKI, ESP, data filesystem and the A/B disk at <base>.raw. */
async function bootFiles(o: {
  arch: Arch; profile: Profile; version: string; sde: number; base: string; work: string;
  kernel: Kernel; initrd: string; rootImage: string; verityParam: string; secureBoot?: ReturnType<typeof secureBootSigner>; debTree: (name: string) => Promise<string>; log: Logger;
}): Promise<BootFiles> {
  const { arch, profile, version, base, work: w, kernel, initrd, rootImage, log } = o;
  const efiDir = join(await o.debTree('systemd-boot-efi'), 'usr/lib/systemd/boot/efi');
  const cmdline = ukiCmdline(arch, profile, o.verityParam);
  const uki = await log.stage(`${arch}: unified kernel image`, () => buildUki({
    arch, stub: join(efiDir, ARCH[arch].stub), kernel: kernel.vmlinuz, initrd,
    cmdline, osRelease: ukiOsRelease(version), out: `${base}.efi`,
  }));
  // Signed in place: the UKI in out/ is what a release publishes and the updater stages.
  const sb = o.secureBoot;
  if (sb) await log.stage(`${arch}: Secure Boot signature on the UKI`, () => signEfi(sb, uki, { sourceDateEpoch: o.sde }));
  const esp = await log.stage(`${arch}: ESP`, async () => buildEsp({
    out: join(w, 'esp.img'), sizeMiB: profile.disk.esp_mib, label: 'ESP', volumeId: volumeId(`${version}:${arch}`),
    files: await secureBootEsp(sb, [
      { path: ARCH[arch].efiFallback, src: join(efiDir, ARCH[arch].bootEfi) },
      { path: 'loader/loader.conf', data: Buffer.from(LOADER_CONF) },
      { path: `EFI/Linux/${entryName('a', 3)}`, src: uki },
    ], w, o.sde),
  }));
  const data = await log.stage(`${arch}: data filesystem`, () => makeDataFs(join(w, 'data.img'), profile.disk.data_mib, `${version}:${arch}`, o.sde));
  const disk = `${base}.raw`;
  await log.stage(`${arch}: disk image`, async () => {
    assembleDisk(disk, { arch, espMiB: profile.disk.esp_mib, rootMiB: profile.disk.root_mib, dataMiB: profile.disk.data_mib, seed: `${version}:${arch}` },
      { esp, rootA: rootImage, data });
  });
  return { rootImage, vmlinuz: kernel.vmlinuz, initrd, uki, cmdline, esp, systemdBoot: join(efiDir, ARCH[arch].bootEfi), disk };
}

/** Checks --config and --trust before anything is built; returns the files to lay into the root. */
function checkBakedFiles(opts: BuildOptions): Record<string, string> {
  const baked: Record<string, string> = {};
  if (opts.config) {
    const text = readFileSync(opts.config, 'utf8');
    const r = parseConfig(text, opts.config);
    if (!r.config) throw new Error(`--config ${opts.config} has problems:\n  ${r.problems.map(formatProblem).join('\n  ')}`);
    baked['usr/lib/kiln/config.yaml'] = text;
  }
  if (opts.trust) {
    const text = readFileSync(opts.trust, 'utf8');
    try { parseTrustRoot(text); } catch (e) { throw new Error(`--trust ${opts.trust}: ${(e as Error).message} (make one with 'kiln keys generate')`); }
    baked['usr/lib/kiln/trust.json'] = text;
  }
  return baked;
}

function missingPkg(name: string): never {
  throw new Error(`the lock has no ${name}; add it to debian.packages in the profile and run 'kiln lock'`);
}

/** `default` matches both slots so a slot with spent tries is never forced (docs/design.md, "Slots"). */
export const LOADER_CONF = 'timeout 0\ndefault kiln-*\neditor no\n';

/** Boot entry file name on the ESP: kiln-<slot>[+<tries>].efi (systemd-boot boot counting). */
export function entryName(slot: 'a' | 'b', tries?: number): string {
  return `kiln-${slot}${tries !== undefined ? `+${tries}` : ''}.efi`;
}

/** The UKI's command line: no slot, stage 1 reads it from the boot entry systemd-boot picked. */
export function ukiCmdline(arch: Arch, profile: Profile, verityParam = ''): string {
  return `console=${ARCH[arch].console} ${profile.kernel.cmdline} ${verityParam}`.trim();
}

/** For boot loaders that pass a command line (U-Boot, direct kernel boot). */
export function slotCmdline(arch: Arch, slot: 'a' | 'b', profile: Profile): string {
  return `console=${ARCH[arch].console} kiln.slot=${slot} ${profile.kernel.cmdline}`.trim();
}

export function ukiOsRelease(version: string): string {
  return `NAME=kiln\nID=kiln\nIMAGE_ID=kiln\nVERSION_ID=${version}\nIMAGE_VERSION=${version}\nPRETTY_NAME="kiln ${version}"\n`;
}

function volumeId(seed: string): string {
  return createHash('sha256').update(seed).digest('hex').slice(0, 8);
}
