// Drivers by modalias: the modules.alias the builder writes from the real generic kernel's
// modules (the one images/metal.yaml's lock pins, fetched through the builder's own cache),
// matched as stage 1's busybox modprobe and init's coldplug match it; firmware chosen by the
// modules' firmware= names; init's scan of /sys and its hotplug listener.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ARCH } from '../../builder/arch.ts';
import { Cache } from '../../builder/cache.ts';
import { chooseFirmware } from '../../builder/firmware.ts';
import { aliasEntries, firmwareNames, formatModulesAlias, modulesUnder, resolveModules, ModuleError } from '../../builder/kmod.ts';
import { readLock } from '../../builder/lock.ts';
import { loadProfile, METAL_PROFILE, profileFor } from '../../builder/profile.ts';
import { kernelFromLock, unpackedDeb } from '../../builder/rootfs.ts';
import { STAGE1_INIT, stage1Entries } from '../../builder/stage1.ts';
import { Coldplug, scanModaliases, startHotplug } from '../../init/coldplug.ts';
import { matchModalias, parseModulesAlias } from '../../init/modalias.ts';

const profile = loadProfile(METAL_PROFILE);
const lock = readLock(profile)!.arches.x86_64!;
const cache = new Cache();
const kernel = await kernelFromLock(lock, cache);
const names = modulesUnder(kernel.modules, [...profile.modules.coldplug_stage1, ...profile.modules.coldplug]);
const shipped = resolveModules(kernel.modules, names).order;
const text = formatModulesAlias(aliasEntries(kernel.modules, shipped));
const table = parseModulesAlias(text);

// Modaliases as QEMU's q35 machine and common hardware show them in /sys/devices/**/modalias.
const devices: [string, string, string[]][] = [
  ['e1000e NIC (82574L)', 'pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00', ['e1000e']],
  ['AHCI SATA controller (ICH9)', 'pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01', ['ahci']],
  ['NVMe controller (class 01 08 02)', 'pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02', ['nvme']],
  ['xHCI USB controller', 'pci:v00001B36d0000000Dsv00001AF4sd00001100bc0Csc03i30', ['xhci_pci']],
  ['EHCI USB controller', 'pci:v00008086d0000293Asv00001AF4sd00001100bc0Csc03i20', ['ehci_pci']],
  ['USB mass storage (bulk-only), uas also claims it', 'usb:v46F4p0001d0000dc00dsc00dp00ic08isc06ip50in00', ['uas', 'usb_storage']],
  ['Realtek RTL8111 NIC', 'pci:v000010ECd00008168sv00001849sd00008168bc02sc00i00', ['r8169']],
  ['ASIX USB Ethernet (AX88179)', 'usb:v0B95p1790d0100dcFFdscFFdp00icFFiscFFip00in00', ['ax88179_178a']],
  ['SD host controller (PCI class 08 05 01)', 'pci:v00001217d00008621sv00001025sd0000105Dbc08sc05i01', ['sdhci_pci']],
  ['Intel wifi (AX201)', 'pci:v00008086d000006F0sv00008086sd00000070bc02sc80i00', ['iwlwifi']],
  ['a device no shipped module drives (VGA)', 'pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00', []],
];

test(`modules.alias from the real kernel ${kernel.version}: every line is 'alias PATTERN MODULE', sorted`, () => {
  assert.ok(table.length > 1000, `${table.length} aliases`);
  const lines = text.trimEnd().split('\n');
  assert.equal(lines, [...lines].sort());
  assert.ok(lines.every((l) => /^alias \S+ \S+$/.test(l)));
});

for (const [what, modalias, want] of devices) {
  test(`matches ${what}`, () => assert.equal(matchModalias(table, modalias).sort(), [...want].sort()));
}

test('glob forms: ?, [set], [!set] and literal characters', () => {
  const t = parseModulesAlias('alias of:N*T*Cfoo,bar? m1\nalias acpi*:PNP0A0[38]:* m2\nalias dmi:b[!x]* m3\nalias a.b m4\n');
  assert.equal(matchModalias(t, 'of:NxTyCfoo,bar1'), ['m1']);
  assert.equal(matchModalias(t, 'acpi:PNP0A08:'), ['m2']);
  assert.equal(matchModalias(t, 'acpi:PNP0A09:'), []);
  assert.equal(matchModalias(t, 'dmi:bA'), ['m3']);
  assert.equal(matchModalias(t, 'dmi:bx'), []);
  assert.equal(matchModalias(t, 'aXb'), [], 'a dot is literal');
});

test('a coldplug folder without modules is an error naming the key', () => {
  assert.throws(() => modulesUnder(kernel.modules, ['drivers/no/such'], 'modules.coldplug'), (e: Error) => e instanceof ModuleError && /modules.coldplug: 'drivers\/no\/such' holds no modules/.test(e.message));
});

test('firmware: only files the modules name, from the locked firmware packages, within the limit', async () => {
  const pkgs: { name: string; dir: string }[] = [];
  for (const n of profile.firmware.packages) pkgs.push({ name: n, dir: await unpackedDeb(lock.packages.find((p) => p.package === n)!, cache) });
  const wanted = firmwareNames(kernel.modules, shipped);
  assert.ok(wanted.some((w) => w.startsWith('rtl_nic/rtl8168')), 'r8169 names its firmware');
  const fw = chooseFirmware(wanted, pkgs, profile.firmware.max_mib);
  assert.ok(fw.files.some((f) => f.name === 'rtl_nic/rtl8168h-2.fw'));
  assert.ok(fw.files.every((f) => wanted.includes(f.name)));
  assert.ok(fw.bytes <= profile.firmware.max_mib * 1048576);
  assert.throws(() => chooseFirmware(wanted, pkgs, 1, 'images/metal.yaml'), /images\/metal.yaml: firmware.max_mib: .* over the limit of 1 MiB \(largest: /);
});

test('stage 1 carries the coldplug modules and a modules.alias its busybox modprobe resolves', async () => {
  const busybox = join(await unpackedDeb(lock.packages.find((p) => p.package === 'busybox-static')!, cache), 'bin/busybox');
  const entries = stage1Entries(kernel, busybox, profile.modules.stage1, [], profile.modules.coldplug_stage1);
  const mroot = `lib/modules/${kernel.version}`;
  const alias = entries.find((e) => e.path === `${mroot}/modules.alias`);
  assert.ok(alias && 'data' in alias && /^alias pci:v\*d\*sv\*sd\*bc01sc06i01\* ahci$/m.test(alias.data!.toString()));
  for (const m of ['ahci.ko', 'xhci-pci.ko', 'usb-storage.ko', 'uas.ko', 'nvme.ko']) assert.ok(entries.some((e) => e.path.startsWith(mroot) && e.path.endsWith(`/${m}`)), m);
  assert.not.ok(entries.some((e) => e.path.endsWith('/e1000e.ko')), 'NIC drivers stay in the root');
  assert.not.ok(stage1Entries(kernel, busybox, ['ext4']).some((e) => e.path.endsWith('modules.alias')), 'no coldplug, no table');
  if (process.getuid?.() !== 0) return;
  // The real busybox, in a tree laid out like the initramfs: modprobe -D names what it would load.
  const dir = mkdtempSync(join(tmpdir(), 'kiln-stage1-'));
  for (const e of entries) {
    if (e.type === 'dir') mkdirSync(join(dir, e.path), { recursive: true });
    else if (e.type === 'file') { mkdirSync(join(dir, e.path, '..'), { recursive: true }); writeFileSync(join(dir, e.path), e.data!, { mode: e.mode }); }
  }
  if (release() !== kernel.version) symlinkSync(kernel.version, join(dir, 'lib/modules', release()));
  const out = execFileSync('chroot', [dir, '/bin/busybox', 'modprobe', '-D', devices[1]![1]]).toString();
  assert.match(out, /insmod \/lib\/modules\/[^ ]+\/kernel\/drivers\/ata\/ahci\.ko/);
  assert.match(out, /libata\.ko/, 'with its dependencies from modules.dep');
});

/**
 * A chroot with the real busybox and one function of stage 1's script, whose modprobe call is
 * swapped for a spy that records its arguments, one per line, then `--` (busybox sh runs its
 * own applets before PATH, so the spy is named by path; the modprobe applet's matching is
 * tested above). `call` is the modprobe call as the script writes it.
 */
async function stage1Function(name: string, call: string, applets: string[]): Promise<{ dir: string; fn: string }> {
  const busybox = join(await unpackedDeb(lock.packages.find((p) => p.package === 'busybox-static')!, cache), 'bin/busybox');
  const fn = new RegExp(`\\n${name}\\(\\) \\{\\n[\\s\\S]*?\\n\\}\\n`).exec(readFileSync(STAGE1_INIT, 'utf8'))![0].replace(call, call.replace('modprobe', '/bin/spy'));
  assert.ok(fn.includes('/bin/spy'), `${name} calls ${call}`);
  const dir = mkdtempSync(join(tmpdir(), `kiln-stage1-${name}-`));
  for (const d of ['bin', 'tmp', 'dev']) mkdirSync(join(dir, d));
  execFileSync('mknod', ['-m', '666', join(dir, 'dev/null'), 'c', '1', '3']);
  writeFileSync(join(dir, 'bin/busybox'), readFileSync(busybox), { mode: 0o755 });
  for (const a of ['sh', 'cat', ...applets]) symlinkSync('busybox', join(dir, 'bin', a));
  writeFileSync(join(dir, 'bin/spy'), '#!/bin/sh\nfor a in "$@"; do echo "$a" >> /tmp/calls; done\necho -- >> /tmp/calls\n', { mode: 0o755 });
  return { dir, fn };
}

test("stage 1's coldplug passes each new modalias under /sys/devices to modprobe once, and nothing without a table", async () => {
  if (process.getuid?.() !== 0) return;
  const { dir, fn } = await stage1Function('coldplug', 'xargs -0 modprobe -qa', ['find', 'xargs', 'sort', 'uniq', 'tr', 'uname']);
  const dev = (rel: string, v: string) => { mkdirSync(join(dir, 'sys/devices', rel), { recursive: true }); writeFileSync(join(dir, 'sys/devices', rel, 'modalias'), v + '\n'); };
  dev('pci0000:00/0000:00:1f.2', devices[1]![1]);
  dev('pci0000:00/0000:00:1d.0', devices[3]![1]);
  const run = () => execFileSync('chroot', [dir, '/bin/sh', '-c', `export PATH=/bin; KVER=$(uname -r); : >> /tmp/modalias.seen\n${fn}\ncoldplug; cat /tmp/calls 2>/dev/null; : > /tmp/calls`]).toString();
  assert.is(run(), '', 'no modules.alias: coldplug does nothing');
  mkdirSync(join(dir, 'lib/modules', release()), { recursive: true });
  writeFileSync(join(dir, 'lib/modules', release(), 'modules.alias'), 'alias pci:* x\n');
  assert.equal(run().trim().split('\n'), ['-qa', ...[devices[1]![1], devices[3]![1]].sort(), '--'], 'both, in one modprobe');
  assert.is(run(), '', 'nothing new: modprobe is not run again');
  dev('pci0000:00/0000:00:1d.0/usb1/1-1/1-1:1.0', devices[5]![1]);
  assert.equal(run().trim().split('\n'), ['-qa', devices[5]![1], '--'], 'the stick behind the controller, later');
});

test("stage 1 carries the CPU's SHA-256 and CRC32C modules the kernel ships, with the flag each needs", async () => {
  const busybox = join(await unpackedDeb(lock.packages.find((p) => p.package === 'busybox-static')!, cache), 'bin/busybox');
  const entries = stage1Entries(kernel, busybox, ['ext4'], [], [], [...ARCH.x86_64.cpuModules, { module: 'no_such_cpu_module', flag: 'avx' }]);
  const list = entries.find((e) => e.path === 'etc/kiln/stage1-cpu-modules');
  assert.ok(list && 'data' in list);
  assert.is(list.data!.toString(), 'sha256_ssse3 ssse3\ncrc32c_intel sse4_2\n', 'a module the kernel lacks is left out');
  for (const m of ['sha256-ssse3.ko', 'crc32c-intel.ko']) assert.ok(entries.some((e) => e.path.endsWith(`/${m}`)), m);
  assert.is(stage1Entries(kernel, busybox, ['ext4']).find((e) => e.path === 'etc/kiln/stage1-cpu-modules')!.data!.toString(), '', 'none asked for: an empty list');
});

test("stage 1 loads a CPU module only where /proc/cpuinfo shows its flag (x86 flags, arm64 Features)", async () => {
  if (process.getuid?.() !== 0) return;
  const { dir, fn } = await stage1Function('cpu_modules', 'modprobe -q', ['grep', 'cut', 'tr']);
  for (const d of ['proc', 'etc/kiln']) mkdirSync(join(dir, d), { recursive: true });
  const run = (cpuinfo: string, list: string) => {
    writeFileSync(join(dir, 'proc/cpuinfo'), cpuinfo);
    writeFileSync(join(dir, 'etc/kiln/stage1-cpu-modules'), list);
    // The module each modprobe call named (its arguments are -q and the name).
    return execFileSync('chroot', [dir, '/bin/sh', '-c', `export PATH=/bin; : > /tmp/calls\n${fn}\ncpu_modules; cat /tmp/calls`]).toString().split('\n').filter((a) => a && a !== '-q' && a !== '--');
  };
  const x86 = (flags: string) => `processor\t: 0\nflags\t\t: fpu sse2 ${flags}\nbugs\t\t: spectre_v1\n\nprocessor\t: 1\nflags\t\t: fpu sse2 ssse3 sse4_2\n`;
  const x86List = ARCH.x86_64.cpuModules.map((c) => `${c.module} ${c.flag}\n`).join('');
  assert.equal(run(x86('pni'), x86List), [], 'qemu64: neither (and only the first CPU is read)');
  assert.equal(run(x86('ssse3 sse4_1'), x86List), ['sha256_ssse3'], 'sse4_1 is not sse4_2');
  assert.equal(run(x86('ssse3 sse4_2 avx2 sha_ni'), x86List), ['sha256_ssse3', 'crc32c_intel']);
  const arm = (features: string) => `processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp ${features} cpuid\nCPU implementer\t: 0x41\n`;
  const armList = ARCH.arm64.cpuModules.map((c) => `${c.module} ${c.flag}\n`).join('');
  assert.equal(run(arm('asimd evtstrm crc32'), armList), ['sha256_arm64'], 'a Raspberry Pi 4: no crypto extensions');
  assert.equal(run(arm('asimd evtstrm aes pmull sha1 sha2 crc32'), armList), ['sha256_arm64']);
  assert.equal(run(arm('evtstrm crc32'), armList), [], 'no NEON: the C code');
});

function fakeSys() {
  const root = mkdtempSync(join(tmpdir(), 'kiln-sys-'));
  const put = (rel: string, v: string) => { mkdirSync(join(root, rel), { recursive: true }); writeFileSync(join(root, rel, 'modalias'), v + '\n'); };
  put('pci0000:00/0000:00:02.0', devices[0]![1]);
  put('pci0000:00/0000:00:1f.2', devices[1]![1]);
  put('pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0', 'scsi:t-0x00');
  // sysfs is full of symlinks back up the tree: the walk must not follow them.
  symlinkSync(root, join(root, 'pci0000:00/loop'));
  return root;
}

test('coldplug: every modalias under /sys/devices, each handled once', async () => {
  const sys = fakeSys();
  assert.equal(scanModaliases(sys), [devices[1]![1], devices[0]![1], 'scsi:t-0x00'].sort());
  const loads: string[][] = [];
  const cp = new Coldplug(table, async (n) => { loads.push(n); }, () => {});
  assert.equal((await cp.handle(scanModaliases(sys), 'coldplug')).sort(), ['ahci', 'e1000e']);
  assert.equal(await cp.handle(scanModaliases(sys), 'rescan'), [], 'nothing new, nothing loaded');
  assert.is(loads.length, 1);
});

test('hotplug: modaliases printed by the uevent listener are loaded; a dead listener gives way to rescans', async () => {
  const loads: string[] = [];
  const cp = new Coldplug(table, async (n) => { loads.push(...n); }, () => {});
  const added: string[][] = [];
  const stop = startHotplug(cp, () => {}, { command: ['sh', ['-c', `echo ${devices[5]![1]}; echo ${devices[7]![1]}; sleep 30`]], scan: () => [], onAdded: (b) => { added.push(b); throw new Error('a failing listener ends nothing'); } });
  await new Promise((r) => setTimeout(r, 1500));
  stop();
  assert.equal(loads.sort(), ['ax88179_178a', 'uas', 'usb_storage']);
  assert.equal(added, [[devices[5]![1], devices[7]![1]]], 'the burst is passed on (init watches new power keys with it)');
  const notes: string[] = [];
  const cp2 = new Coldplug(table, async (n) => { loads.push(...n); }, () => {});
  let scans = 0;
  const stop2 = startHotplug(cp2, (m) => notes.push(m), { command: ['/nonexistent/uevent', []], maxRestarts: 0, rescanMs: 50, scan: () => (++scans > 2 ? [devices[6]![1]] : []) });
  await new Promise((r) => setTimeout(r, 800));
  stop2();
  assert.ok(notes.some((n) => /uevent listener unavailable; rescanning \/sys/.test(n)), notes.join('\n'));
  assert.ok(loads.includes('r8169'), 'the rescan found the late device');
});

test('kiln build --format iso without --profile builds the hardware profile; mixed formats are refused', () => {
  assert.is(profileFor(['iso']), METAL_PROFILE);
  assert.is(profileFor(['raw']), undefined);
  assert.is(profileFor([]), undefined);
  assert.is(profileFor(['iso'], 'images/default.yaml'), 'images/default.yaml');
  assert.throws(() => profileFor(['iso', 'raw']), /run them as two builds, or pass --profile/);
});

test.run();
