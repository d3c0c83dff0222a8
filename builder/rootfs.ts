// Assembles the read-only root tree for one architecture: Debian parts, Node, our init
// bundle, overlay/, kernel modules and the generated /etc files.
import { chmodSync, closeSync, openSync, readSync, existsSync, lstatSync, mkdirSync, readdirSync, readlinkSync, renameSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { ARCH, type Arch } from './arch.ts';
import { busyboxApplets } from './busybox.ts';
import { checkSharedLibraries } from './elfdeps.ts';
import { INIT_LATER } from './bundle.ts';
import type { Cache } from './cache.ts';
import { extractDeb } from './debian/index.ts';
import { copyIntoRoot, dirInRoot, existsInRoot, removeInRoot, symlinkInRoot, writeInRoot } from './inroot.ts';
import { aliasEntries, firmwareNames, formatModulesAlias, indexModules, loadableNames, mergeResolutions, moduleBytes, modulesDep, modulesUnder, resolveModules, type ModuleTree, type Resolution } from './kmod.ts';
import { chooseFirmware } from './firmware.ts';
import type { ArchLock, LockedDeb } from './lock.ts';
import type { Logger } from './log.ts';
import { updateTarget, type Profile } from './profile.ts';

/** Packages used to make boot files, never copied into the root. */
export const BOOT_ONLY_PACKAGES = new Set(['systemd-boot-efi', 'raspi-firmware', 'u-boot-rpi']);
/** Parts of Debian packages an appliance root does not need. */
const PRUNE = ['usr/share/doc', 'usr/share/man', 'usr/share/info', 'usr/share/locale', 'usr/share/lintian', 'usr/share/bug', 'usr/share/common-licenses'];
/** util-linux's PAM programs: the root has no PAM modules, so busybox's applets serve instead. */
const PAM_PROGRAMS = ['bin/su', 'sbin/runuser', 'usr/sbin/runuser'];
/**
 * util-linux's programs that alone would need a library the root otherwise does without:
 * lslogins links libsystemd (and through it libgcrypt, lzma, zstd and lz4, 1.4 MiB compressed).
 */
const UNUSED_PROGRAMS = ['usr/bin/lslogins'];

/** Extracts a pinned .deb once into the cache and returns the tree. */
export async function unpackedDeb(pin: LockedDeb, cache: Cache, log?: Logger): Promise<string> {
  const dir = cache.derivedDir('deb', pin.sha256);
  if (existsSync(dir)) return dir;
  const deb = await cache.fetch(pin, log);
  const tmp = `${dir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  await extractDeb(deb, tmp);
  renameSync(tmp, dir);
  return dir;
}

export interface Kernel {
  version: string;
  vmlinuz: string;
  config: string;
  modules: ModuleTree;
}

export async function kernelFromLock(lock: ArchLock, cache: Cache, log?: Logger): Promise<Kernel> {
  const tree = await unpackedDeb(lock.kernel, cache, log);
  const versions = readdirSync(join(tree, 'lib/modules'));
  if (versions.length !== 1) throw new Error(`${lock.kernel.name}: expected one kernel in lib/modules, found ${versions.join(', ')}`);
  const version = versions[0];
  return {
    version,
    vmlinuz: join(tree, 'boot', `vmlinuz-${version}`),
    config: join(tree, 'boot', `config-${version}`),
    modules: indexModules(join(tree, 'lib/modules', version)),
  };
}

export interface RootInputs {
  arch: Arch;
  version: string;
  profile: Profile;
  lock: ArchLock;
  kernel: Kernel;
  nodeBinary: string;
  initBundle: string;
  cliBundle: string;
  overlayDir: string;
  sourceDateEpoch: number;
  /** k3s binary (upstream, or a named stand-in) and the modules it needs loaded. */
  k3s?: { binary: string; version: string; modules: string[] };
  /** HelmChart objects for /usr/lib/kiln/addons. */
  addons?: { metadata: { name: string } }[];
  /** Files laid into the root as given (path relative to / -> contents). */
  baked?: Record<string, string>;
  /** Keep the modules' signatures (moduleSignatures in kmod.ts); removed when false. */
  keepModuleSignatures?: boolean;
}

export interface RootResult { dir: string; modules: Resolution }

export async function assembleRoot(dir: string, inp: RootInputs, cache: Cache, log?: Logger): Promise<RootResult> {
  const facts = ARCH[inp.arch];
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const d of ['bin', 'sbin', 'etc', 'lib', 'usr/bin', 'usr/lib/kiln', 'proc', 'sys', 'dev', 'run', 'tmp', 'data', 'var', 'var/tmp', 'var/log', 'var/lib', 'efi', 'root', 'home', 'mnt']) {
    mkdirSync(join(dir, d), { recursive: true });
  }
  chmodSync(join(dir, 'tmp'), 0o1777);
  chmodSync(join(dir, 'var/tmp'), 0o1777);
  chmodSync(join(dir, 'root'), 0o700);

  // Firmware packages are not laid in whole: only the files the modules name (below).
  const firmwarePkgs = new Set(inp.profile.firmware?.packages ?? []);
  const debs: RootDeb[] = [];
  for (const pin of inp.lock.packages) if (!BOOT_ONLY_PACKAGES.has(pin.package) && !firmwarePkgs.has(pin.package)) debs.push({ name: pin.name, file: await cache.fetch(pin, log) });
  await layDebs(dir, debs);
  for (const p of [...PRUNE, ...PAM_PROGRAMS, ...UNUSED_PROGRAMS]) removeInRoot(dir, p);
  removeInRoot(dir, `usr/lib/${facts.triplet}/gconv`);

  // Busybox applets as symlinks, without overwriting real programs.
  const busybox = join(dir, 'bin/busybox');
  if (!lstatSync(busybox, { throwIfNoEntry: false })?.isFile()) throw new Error('the root has no /bin/busybox: add busybox-static to debian.packages');
  for (const applet of busyboxApplets(busybox)) {
    if (!['bin', 'usr/bin', 'sbin'].some((d) => existsInRoot(dir, `${d}/${applet}`))) symlinkInRoot(dir, `bin/${applet}`, 'busybox');
  }

  copyIntoRoot(dir, 'usr/bin/node', inp.nodeBinary, 0o755);
  if (inp.k3s) {
    copyIntoRoot(dir, 'usr/bin/k3s', inp.k3s.binary, 0o755);
    // The multi-call names k3s's installer would create.
    for (const n of ['kubectl', 'crictl', 'ctr']) if (!existsInRoot(dir, `usr/bin/${n}`)) symlinkInRoot(dir, `usr/bin/${n}`, 'k3s');
  }
  for (const [p, text] of Object.entries(inp.baked ?? {})) writeInRoot(dir, p, text);
  for (const a of inp.addons ?? []) writeInRoot(dir, `usr/lib/kiln/addons/${a.metadata.name}.json`, JSON.stringify(a, null, 2) + '\n');
  copyIntoRoot(dir, 'usr/lib/kiln/init.js', inp.initBundle);
  copyIntoRoot(dir, `usr/lib/kiln/${INIT_LATER}`, join(dirname(inp.initBundle), INIT_LATER));
  copyIntoRoot(dir, 'usr/lib/kiln/kiln.js', inp.cliBundle);
  if (existsSync(inp.overlayDir)) layOverlay(dir, inp.overlayDir);

  // Kernel modules: the stage-1 set plus what PID 1 loads, with their dependencies.
  const k = inp.kernel;
  const bootNames = [...inp.profile.modules.boot, ...(inp.k3s?.modules ?? []).filter((m) => !inp.profile.modules.boot.includes(m))];
  const boot = resolveModules(k.modules, bootNames, 'modules.boot');
  const all = mergeResolutions(
    resolveModules(k.modules, inp.profile.modules.stage1, 'modules.stage1'),
    boot,
    resolveModules(k.modules, inp.profile.modules.include, 'modules.include'),
    // Loaded by modalias (stage 1's set too: a USB disk may arrive after boot).
    resolveModules(k.modules, modulesUnder(k.modules, inp.profile.modules.coldplug_stage1 ?? [], 'modules.coldplug_stage1'), 'modules.coldplug_stage1'),
    resolveModules(k.modules, modulesUnder(k.modules, inp.profile.modules.coldplug ?? [], 'modules.coldplug'), 'modules.coldplug'),
  );
  const mdir = `lib/modules/${k.version}`;
  for (const f of all.order) writeInRoot(dir, `${mdir}/${f}`, moduleBytes(k.modules, f, inp.keepModuleSignatures ?? true));
  for (const f of ['modules.builtin', 'modules.order', 'modules.builtin.modinfo']) {
    if (existsSync(join(k.modules.dir, f))) copyIntoRoot(dir, `${mdir}/${f}`, join(k.modules.dir, f));
  }
  writeInRoot(dir, `${mdir}/modules.dep`, modulesDep(all.order, all.deps));
  // Only hardware profiles load by modalias: without a table init skips coldplug and hotplug.
  if (inp.profile.modules.coldplug_stage1?.length || inp.profile.modules.coldplug?.length) {
    writeInRoot(dir, `${mdir}/modules.alias`, formatModulesAlias(aliasEntries(k.modules, all.order)));
  }
  if (firmwarePkgs.size) {
    const pkgs = [];
    for (const name of firmwarePkgs) {
      const pin = inp.lock.packages.find((p) => p.package === name);
      if (!pin) throw new Error(`${inp.profile.lockFile} has no ${name} (firmware.packages); run 'kiln lock'`);
      pkgs.push({ name, dir: await unpackedDeb(pin, cache, log) });
    }
    const fw = chooseFirmware(firmwareNames(k.modules, all.order), pkgs, inp.profile.firmware.max_mib, inp.profile.file);
    for (const f of fw.files) copyIntoRoot(dir, `lib/firmware/${f.name}`, f.src);
    log?.info(`firmware: ${fw.files.length} files, ${(fw.bytes / 1048576).toFixed(1)} MiB (${fw.missing.length} names the modules list are in none of ${[...firmwarePkgs].join(', ')})`);
  }
  // Two lists, two boot tasks: what boot needs before the config (disks, NICs, vfat) and what
  // k3s needs (netfilter, bridges, vxlan), loaded beside the config's tasks.
  const k3sOnly = bootNames.filter((m) => !inp.profile.modules.boot.includes(m));
  writeInRoot(dir, 'usr/lib/kiln/modules-load', loadableNames(k.modules, inp.profile.modules.boot).join('\n') + '\n');
  writeInRoot(dir, 'usr/lib/kiln/modules-load-k3s', loadableNames(k.modules, k3sOnly).join('\n') + '\n');

  writeEtc(dir, inp);
  writeInRoot(dir, 'usr/lib/kiln/build.json', JSON.stringify({
    version: inp.version, arch: inp.arch, kernel: k.version, node: inp.lock.node.version, k3s: inp.k3s?.version ?? null,
    built: new Date(inp.sourceDateEpoch * 1000).toISOString(),
  }, null, 2) + '\n');
  checkElf(join(dir, 'usr/bin/node'), facts.elfMachine, inp.arch);
  await checkSharedLibraries(dir, facts.triplet);
  return { dir, modules: all };
}

export interface RootDeb { name: string; file: string }

/**
 * Lays Debian packages' files into the root, in order, with the checked extractor
 * (debian/deb.ts) rather than a copy: no path may climb out, and no entry is written
 * through a symlink an earlier package left (an absolute one points at the build host).
 */
export async function layDebs(root: string, debs: RootDeb[]): Promise<void> {
  for (const d of debs) {
    try {
      await extractDeb(d.file, root);
    } catch (e) {
      const m = (e as Error).message;
      const conflict = /refusing to write through it|exists as a directory/.test(m) ? ' (an earlier package in debian.packages put a symlink, file or directory there: the packages conflict)' : '';
      throw new Error(`${d.name}: cannot be laid into the root: ${m}${conflict}`);
    }
  }
}

/**
 * Copies overlay/ into the root: its files and symlinks, through real directories only.
 * Modes come from what git keeps (the executable bit), not from the checkout's umask, and
 * the root's directories keep their own: a group-writable checkout makes the same image.
 */
export function layOverlay(root: string, overlay: string, rel = ''): void {
  for (const e of readdirSync(join(overlay, rel), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    const src = join(overlay, r);
    if (e.isDirectory()) { dirInRoot(root, r); layOverlay(root, overlay, r); }
    else if (e.isSymbolicLink()) symlinkInRoot(root, r, readlinkSync(src));
    else if (e.isFile()) copyIntoRoot(root, r, src, lstatSync(src).mode & 0o111 ? 0o755 : 0o644);
    else throw new Error(`${src}: overlay/ may hold only files, directories and symlinks`);
  }
}

function writeEtc(dir: string, inp: RootInputs) {
  // A package's own file (or symlink) stays.
  const etc = (name: string, text: string, mode = 0o644) => {
    if (!existsInRoot(dir, `etc/${name}`)) writeInRoot(dir, `etc/${name}`, text, mode);
  };
  writeInRoot(dir, 'etc/os-release', [
    'NAME=kiln', 'ID=kiln', `VERSION=${inp.version}`, `VERSION_ID=${inp.version}`,
    `PRETTY_NAME="kiln ${inp.version}"`, `IMAGE_ID=kiln`, `IMAGE_VERSION=${inp.version}`,
    `KILN_ARCH=${inp.arch}`, `KILN_UPDATE_TARGET=${updateTarget(inp.profile, inp.arch)}`, `BUILD_ID=${inp.sourceDateEpoch}`, '',
  ].join('\n'));
  etc('passwd', 'root:x:0:0:root:/root:/bin/sh\n');
  etc('group', 'root:x:0:\n');
  etc('shadow', 'root:*:1::::::\n', 0o600);
  etc('hostname', 'kiln\n');
  etc('hosts', '127.0.0.1\tlocalhost\n::1\tlocalhost\n');
  etc('profile', 'export PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin\nexport PS1="\\h:\\w\\$ "\n');
}

function checkElf(file: string, machine: number, arch: Arch) {
  const h = Buffer.alloc(20);
  const fd = openSync(file, 'r');
  try { readSync(fd, h, 0, 20, 0); } finally { closeSync(fd); }
  if (h.readUInt32BE(0) !== 0x7f454c46 || h.readUInt16LE(18) !== machine) {
    throw new Error(`${file} is not an ELF binary for ${arch}`);
  }
}
