// `kiln build`: pinned inputs -> root image, stage-1 initramfs, UKI, ESP, A/B disk.
// Each step is a small function; this file only sequences them and records the result.
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { $ } from 'zx';
import { ARCH, type Arch } from './arch.ts';
import { Cache, hashFile } from './cache.ts';
import { assembleDisk, makeDataFs } from './disk.ts';
import { buildEsp } from './esp.ts';
import { buildIso } from './iso.ts';
import { buildRpiImage, rpiCmdline } from './rpi.ts';
import { checkLock, readLock, type ArchLock } from './lock.ts';
import { createLogger, type Logger } from './log.ts';
import { nodeBinary } from './node-runtime.ts';
import { checkFormats, compressZst } from './formats.ts';
import { loadProfile, updateTarget, type Format, type Profile } from './profile.ts';
import { buildRootImage } from './rootimage.ts';
import { assembleRoot, kernelFromLock, unpackedDeb, type RootInputs } from './rootfs.ts';
import { k3sBinary } from './k3s.ts';
import { chartsForImage } from './charts.ts';
import { formatProblem, parseConfig } from '../init/config/parse.ts';
import { parseTrustRoot } from '../channels/manifest.ts';
import { k3sKernelModulesFromFile } from './k3s-kernel.ts';
import { buildStage1, stage1VerityFiles } from './stage1.ts';
import { appendVerity } from './verity.ts';
import { tool } from './tools.ts';
import { buildUki } from './uki.ts';
import { bundleCli, bundleInit } from './bundle.ts';
import { withBuildLock } from './buildlock.ts';

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
function buildKey(profile: Profile, opts: { version: string; sde: number; arches: Arch[]; formats: Format[]; k3sBinary?: string; config?: string; trust?: string; isoConfigUrl?: string }): string {
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
  if (formats.includes('rpi') && profile.kernel.flavour !== 'generic') throw new Error(`--format rpi needs Debian's generic arm64 kernel (the ${profile.kernel.flavour} one has no Raspberry Pi drivers); use --profile images/rpi.yaml`);
  const version = opts.version ?? profile.version;
  const sde = opts.sourceDateEpoch ?? defaultSourceDateEpoch();
  const out = resolve(opts.out ?? 'out');
  const lock = checkLock(profile, readLock(profile), arches);
  const cache = new Cache(opts.cacheDir, opts.artifacts);
  process.env.SOURCE_DATE_EPOCH = String(sde);

  const baked = checkBakedFiles(opts);
  const key = buildKey(profile, { version, sde, arches, formats, k3sBinary: opts.k3sBinary, config: opts.config, trust: opts.trust, isoConfigUrl: opts.isoConfigUrl });
  const recordFile = join(out, 'build.json');
  if (!opts.force && existsSync(recordFile)) {
    const prev = JSON.parse(readFileSync(recordFile, 'utf8')) as BuildRecord;
    if (prev.key === key && prev.outputs.every((o) => existsSync(join(out, o.file)) && statSync(join(out, o.file)).size === o.size)) {
      log.info(`up to date: ${recordFile} (nothing changed since the last build)`);
      return prev;
    }
  }

  mkdirSync(out, { recursive: true });
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
    const kernel = await log.stage(`${arch}: kernel ${al.kernel.version}`, () => kernelFromLock(al, cache, log));
    kernels[arch] = kernel.version;
    const node = await log.stage(`${arch}: node ${al.node.version}`, () => nodeBinary(al.node, arch, cache, log));
    let k3s: RootInputs['k3s'];
    if (profile.k3s.version !== 'none') {
      const modules = k3sKernelModulesFromFile(kernel.config);
      if (opts.k3sBinary) {
        k3s = { binary: resolve(opts.k3sBinary), version: `stand-in (${relative(REPO, resolve(opts.k3sBinary))})`, modules };
      } else {
        if (!al.k3s) throw new Error(`${profile.lockFile} has no k3s pin for ${arch}; run 'kiln lock'`);
        const pin = al.k3s;
        k3s = { binary: await log.stage(`${arch}: k3s ${pin.version}`, () => k3sBinary(pin, cache, log)), version: pin.version, modules };
      }
      k3sInfo[arch] = k3s.version;
    }
    const root = await log.stage(`${arch}: root tree`, () => assembleRoot(join(w, 'root'), {
      arch, version, profile, lock: al, kernel, nodeBinary: node, initBundle, cliBundle, overlayDir: join(REPO, 'overlay'), sourceDateEpoch: sde, k3s, addons: addons.map((a) => a.resource), baked,
    }, cache, log));
    const rootImg = await log.stage(`${arch}: root image (${profile.root.filesystem})`, () =>
      buildRootImage(root.dir, `${base}.root.${profile.root.filesystem}`, profile.root.filesystem, sde, `${version}:${arch}`));
    // The tree goes on the end of the image; its root hash into stage 1 and the UKI's command line.
    const verity = await log.stage(`${arch}: verity hash tree`, () => appendVerity(rootImg));
    verities[arch] = { rootHash: verity.rootHash, treeBytes: verity.treeBytes };
    const stage1Extra = await stage1VerityFiles(root.dir, ARCH[arch].triplet, ARCH[arch].ldso, verity.param);
    const initrd = await log.stage(`${arch}: stage-1 initramfs`, () =>
      buildStage1(join(w, 'stage1.cpio.zst'), kernel, join(root.dir, 'bin/busybox'), profile.modules.stage1, stage1Extra, profile.modules.coldplug_stage1));
    const sdboot = await unpackedDeb(al.packages.find((p) => p.package === 'systemd-boot-efi') ?? missingPkg('systemd-boot-efi'), cache, log);
    const efiDir = join(sdboot, 'usr/lib/systemd/boot/efi');
    const uki = await log.stage(`${arch}: unified kernel image`, () => buildUki({
      arch, stub: join(efiDir, ARCH[arch].stub), kernel: kernel.vmlinuz, initrd,
      cmdline: ukiCmdline(arch, profile, verity.param), osRelease: ukiOsRelease(version), out: `${base}.efi`,
    }));
    const esp = await log.stage(`${arch}: ESP`, () => buildEsp({
      out: join(w, 'esp.img'), sizeMiB: profile.disk.esp_mib, label: 'ESP', volumeId: volumeId(`${version}:${arch}`),
      files: [
        { path: ARCH[arch].efiFallback, src: join(efiDir, ARCH[arch].bootEfi) },
        { path: 'loader/loader.conf', data: Buffer.from(LOADER_CONF) },
        { path: `EFI/Linux/${entryName('a', 3)}`, src: uki },
      ],
    }));
    const data = await log.stage(`${arch}: data filesystem`, () => makeDataFs(join(w, 'data.img'), profile.disk.data_mib, `${version}:${arch}`, sde));
    const raw = `${base}.raw`;
    await log.stage(`${arch}: disk image`, async () => {
      assembleDisk(raw, { arch, espMiB: profile.disk.esp_mib, rootMiB: profile.disk.root_mib, dataMiB: profile.disk.data_mib, seed: `${version}:${arch}` },
        { esp, rootA: rootImg, data });
    });
    await record(rootImg, arch, 'root');
    await record(uki, arch, 'uki');
    if (formats.includes('raw')) await record(raw, arch, 'raw');
    if (formats.includes('qcow2')) {
      const q = `${base}.qcow2`;
      await log.stage(`${arch}: qcow2`, () => $({ quiet: true })`${tool('qemu-img')} convert -f raw -O qcow2 -c ${raw} ${q}`);
      await record(q, arch, 'qcow2');
    }
    if (formats.includes('raw.zst')) {
      const z = `${raw}.zst`;
      await log.stage(`${arch}: raw.zst`, () => compressZst(raw, z));
      await record(z, arch, 'raw.zst');
    }
    if (!formats.includes('raw') && (formats.includes('qcow2') || formats.includes('raw.zst'))) rmSync(raw);
    if (formats.includes('rpi')) {
      const pkg = (n: string) => unpackedDeb(al.packages.find((p) => p.package === n) ?? missingPkg(n), cache, log);
      const firmwareDir = join(await pkg('raspi-firmware'), 'usr/lib/raspi-firmware');
      const ubootDir = join(await pkg('u-boot-rpi'), 'usr/lib/u-boot');
      const pi = await log.stage(`${arch}: Raspberry Pi SD image`, () => buildRpiImage({
        out: `${base}.rpi.img`, work: w, vmlinuz: kernel.vmlinuz, initrd, rootImage: rootImg, firmwareDir, ubootDir,
        plan: { espMiB: profile.disk.esp_mib, rootMiB: profile.disk.root_mib, dataMiB: profile.disk.data_mib },
        cmdline: rpiCmdline(profile.kernel.cmdline), seed: `${version}:${arch}`, sourceDateEpoch: sde,
      }));
      await record(pi.img, arch, 'rpi');
      await record(pi.xz, arch, 'rpi.xz');
      // What a Pi node's updater stages on its boot partition (kiln release publishes them).
      copyFileSync(kernel.vmlinuz, `${base}.vmlinuz`);
      copyFileSync(initrd, `${base}.initrd`);
      await record(`${base}.vmlinuz`, arch, 'kernel');
      await record(`${base}.initrd`, arch, 'initrd');
      if (!formats.includes('raw') && existsSync(raw)) rmSync(raw);
    }
    if (formats.includes('iso')) {
      const iso = `${base}.iso`;
      await log.stage(`${arch}: ISO (live + installer)`, () => buildIso({
        arch, out: iso, version, kernel: kernel.vmlinuz, initrd, rootImage: rootImg, espImage: esp, espMiB: profile.disk.esp_mib,
        rootMiB: profile.disk.root_mib, minDataMiB: profile.disk.data_mib, cmdline: `console=tty0 ${ukiCmdline(arch, profile, verity.param)}`,
        configUrl: opts.isoConfigUrl, systemdBoot: join(efiDir, ARCH[arch].bootEfi), sourceDateEpoch: sde, work: w,
      }));
      await record(iso, arch, 'iso');
    }
  }
  const rec: BuildRecord = { profile: profile.name, version, sourceDateEpoch: sde, key, outputs, inputs: lock.arches as Record<string, ArchLock>, kernel: kernels, k3s: k3sInfo, verity: verities };
  writeFileSync(recordFile, JSON.stringify(rec, null, 2) + '\n');
  for (const o of outputs) log.info(`${o.file}  ${(o.size / 1048576).toFixed(1)} MiB  sha256 ${o.sha256.slice(0, 16)}…`);
  return rec;
}

/** Checks --config and --trust before anything is built; returns the files to lay into the root. */
function checkBakedFiles(opts: BuildOptions): Record<string, string> {
  const baked: Record<string, string> = {};
  if (opts.config) {
    const text = readFileSync(opts.config, 'utf8');
    const r = parseConfig(text, opts.config);
    if (r.problems.length) throw new Error(`--config ${opts.config} has problems:\n  ${r.problems.map(formatProblem).join('\n  ')}`);
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
