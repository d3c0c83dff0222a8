// npm run bench: sizes, boot overhead, minimum RAM, build times, reproducibility, and at the
// end a table of the goals with each measure now and the floor that bounds it, measured in the
// same run. Prints figures; asserts nothing. `npm run bench -- --arch arm64` for the other arch.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { type Arch } from '../builder/arch.ts';
import { build, REPO } from '../builder/build.ts';
import { FORMAT_TABLE } from '../builder/formats.ts';
import { METAL_PROFILE, type Format } from '../builder/profile.ts';
import { createLogger } from '../builder/log.ts';
import { Vm } from '../builder/qemu.ts';
import { writeCpio } from '../builder/formats/cpio.ts';
import { readPe } from '../builder/uki.ts';
import { DEFAULT_PARAMS } from '../channels/chunks.ts';
import { K3S_STANDIN } from '../test/e2e/image.ts';
import { cidataImage } from '../test/e2e/helpers.ts';
import { deltaTable, rootOf, type DeltaRow } from './delta.ts';
import { smallestThatWorks, bootCriticalPath, floorLine, floorsOverGoal, type FloorLine, formatPath, goalTable, median, parseStart, parseTimings, roundsOf, type GoalRow, type Timings } from './report.ts';
import { verityBench } from './verity.ts';

// The goal rows (issues: boot, memory, size, CLI, delta updates) by default. --all adds the
// rest: a cold build (it downloads everything; also --cold alone), the reproducibility build,
// every format's size (and the Pi's, and the hardware ISO) and a boot with a data source.
// --quick leaves out the minimum RAM search and the delta table: one build, the boots and the
// floors, for a quick look at boot time and memory. --rounds N: how many rounds of boots the
// ready row takes its medians from (3; 1 with --quick).
const { values } = parseArgs({ options: { arch: { type: 'string', default: 'x86_64' }, quick: { type: 'boolean' }, rounds: { type: 'string' }, cold: { type: 'boolean' }, all: { type: 'boolean' } } });
const arch = values.arch as Arch;
const benchStart = performance.now();
/** Wall time of the run's parts (the last row's note): where the 15 minutes go. */
const parts: [string, number][] = [];
let partStart = benchStart;
const endPart = (name: string) => { const t = performance.now(); parts.push([name, (t - partStart) / 60_000]); partStart = t; };
const log = createLogger({ quiet: true });
// k3s releases cannot be fetched everywhere: the stand-in keeps the figures comparable; set
// KILN_BENCH_REAL_K3S=1 where the real binary is in the cache or --artifacts.
const k3sBinary = process.env.KILN_BENCH_REAL_K3S ? undefined : K3S_STANDIN;
const rows: [string, string][] = [];
const row = (k: string, v: string) => { rows.push([k, v]); console.log(`${k.padEnd(48)} ${v}`); };
const mib = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;
const secs = async (fn: () => Promise<unknown>) => { const t = performance.now(); await fn(); return (performance.now() - t) / 1000; };
const goals: GoalRow[] = [];
const s2 = (x: number | undefined) => (x === undefined ? '-' : `${x.toFixed(2)} s`);

// The workstation CLI first (seconds, not minutes): median wall time of 7 runs after a warm-up
// (which makes the CLI bundle if the sources changed), next to a bare `node -e 0`.
const wall = (args: string[]) => {
  spawnSync(process.execPath, args, { stdio: 'ignore' });
  return median(Array.from({ length: 7 }, () => { const t = performance.now(); spawnSync(process.execPath, args, { stdio: 'ignore' }); return (performance.now() - t) / 1000; }))!;
};
const small = join(mkdtempSync(join(tmpdir(), 'kiln-bench-cfg-')), 'small.yaml');
writeFileSync(small, 'hostname: bench\nssh_authorized_keys: [github:alice]\nkiln:\n  dns_nameservers: [1.1.1.1]\n');
const nodeFloor = wall(['-e', '0']);
for (const [measure, goal, args] of [['kiln --help', 0.4, ['--help']], ['kiln config validate, small file', 0.6, ['config', 'validate', small]]] as const) {
  const now = wall([join(REPO, 'bin/kiln.js'), ...args]);
  row(`${measure} (median of 7)`, s2(now));
  goals.push({ measure, goal: `<= ${goal} s`, now: s2(now), floor: `${s2(nodeFloor)} (node -e 0)`, note: `+${s2(now - nodeFloor)}${now <= goal ? '' : ' (goal not met)'}` });
}
rmSync(join(small, '..'), { recursive: true, force: true });

const out = join(REPO, 'out', `bench-${arch}`);
const coldCache = mkdtempSync(join(tmpdir(), 'kiln-bench-cache-'));
try {
  if (values.cold || values.all) row('cold build (empty cache, downloads everything)', `${(await secs(() => build({ arches: [arch], out: join(out, 'cold'), cacheDir: coldCache, log, force: true, k3sBinary }))).toFixed(1)} s`);
} finally { rmSync(coldCache, { recursive: true, force: true }); }
const warm = await secs(() => build({ arches: [arch], out: join(out, 'a'), log, force: true, k3sBinary }));
row('warm-cache build (nothing downloaded)', `${warm.toFixed(1)} s`);
row('no-change rebuild', `${(await secs(() => build({ arches: [arch], out: join(out, 'a'), log, k3sBinary }))).toFixed(2)} s`);
const a = await build({ arches: [arch], out: join(out, 'a'), log, k3sBinary });
if (values.all) {
  const b = await build({ arches: [arch], out: join(out, 'b'), log, force: true, k3sBinary });
  const same = a.outputs.every((o) => b.outputs.find((p) => p.file === o.file)?.sha256 === o.sha256);
  row('two builds byte-identical', same ? 'yes' : `no (${a.outputs.filter((o) => b.outputs.find((p) => p.file === o.file)?.sha256 !== o.sha256).map((o) => o.file).join(', ')})`);
}

const raw = join(out, 'a', a.outputs.find((o) => o.kind === 'raw')!.file);
const root = join(out, 'a', a.outputs.find((o) => o.kind === 'root')!.file);
const uki = join(out, 'a', a.outputs.find((o) => o.kind === 'uki')!.file);
const zst = execFileSync('sh', ['-c', `zstd -q -19 -T0 -c ${raw} | wc -c`]).toString().trim();
row('k3s in the benchmarked image', k3sBinary ? 'stand-in (test/standins/k3s)' : 'upstream');
row('image, raw (apparent / allocated)', `${mib(statSync(raw).size)} / ${mib(statSync(raw).blocks * 512)}`);
row('image, zstd -19 compressed (target <= 50 MiB)', mib(Number(zst)));
row('root image (squashfs zstd)', mib(statSync(root).size));
row('UKI (kernel + stage-1)', mib(a.outputs.find((o) => o.kind === 'uki')!.size));
// The floor of the compressed image: the root image as published (squashfs, already
// compressed: Node.js, k3s, the kernel's modules) and the UKI compressed as the image is (the
// kernel and stage 1), which no layout of the disk around them can shrink.
const ukiZst = Number(execFileSync('sh', ['-c', `zstd -q -19 -T0 -c ${uki} | wc -c`]).toString().trim());
const imgFloor = statSync(root).size + ukiZst;
endPart('the CLI and the builds');
goals.push({ measure: `${arch} raw.zst (zstd -19)`, goal: '<= 50 MiB', now: mib(Number(zst)), floor: `${mib(imgFloor)} (root ${mib(statSync(root).size)} + UKI.zst ${mib(ukiZst)})`, note: `${Number(zst) >= imgFloor ? '+' : ''}${mib(Number(zst) - imgFloor)}` });

/** Stage 1 starts within half a minute even when emulated on a loaded machine; later, it never will. */
const STAGE1_WAIT_MS = arch === 'arm64' ? 180_000 : 75_000;
/** OVMF's and AAVMF's report of an exception: the firmware (or a loader running in it) is stopped. */
const FIRMWARE_FAULT = /X64 Exception|Synchronous Exception/;
/** An emulated arm64 boot (AAVMF, a translated CPU of another kind) takes two to three times as long. */
const SLOW = arch === 'arm64' ? 2.5 : 1;
/** Kernel start to ready, from a parsed timings line (its ready counts from init's start). */
function readyAfterKernel(t: Timings | undefined): number | undefined { return t && t.initStartS + t.readyS; }
interface BootResult { first?: number; ready?: number; accel: string; timings?: string; tasks?: string; cpu?: string; start?: string; again?: string }
/**
 * One boot from a fresh copy of the disk through the firmware and systemd-boot, as a machine
 * boots it. `again`: then the power button, and the timings of the next boot of the same disk
 * (no partition to grow or format, no new disk ids: every boot after the first).
 */
async function boot(memMiB: number, timeoutMs = 300_000 * SLOW, extraDrives: string[] = [], again = false, rng = true): Promise<BootResult> {
  const disk = join(mkdtempSync(join(tmpdir(), 'kiln-bench-')), 'd.raw');
  execFileSync('cp', ['--sparse=always', raw, disk]);
  const vm = await Vm.start({ arch, disk, memMiB, allowReboot: false, extraDrives, rng });
  try {
    // A fault in the firmware ends the wait at once: stage 1 will never come.
    const first = await vm.waitFor(new RegExp(`kiln-stage1: started|${FIRMWARE_FAULT.source}`), Math.min(timeoutMs, STAGE1_WAIT_MS))
      .then((m) => (FIRMWARE_FAULT.test(m[0]) ? undefined : vm.elapsed()));
    if (first === undefined) return { accel: vm.accel };
    // A panic (init or tini killed for memory) ends the wait at once.
    const ready = await vm.waitFor(/kiln: ready |Kernel panic/, timeoutMs).then((m) => (m[0].startsWith('kiln') ? vm.elapsed() : undefined), () => undefined);
    const timings = ready ? await vm.waitFor(/kiln: timings: (.*)\r?\n/, 30_000).then((m) => m[1], () => undefined) : undefined;
    const tasks = timings ? await vm.waitFor(/kiln: (task times .*)\r?\n/, 10_000).then((m) => m[1], () => undefined) : undefined;
    const cpu = tasks ? await vm.waitFor(/kiln: (cpu at ready .*)\r?\n/, 10_000).then((m) => m[1], () => undefined) : undefined;
    const start = tasks ? await vm.waitFor(/kiln: (start \(s since init start\).*)\r?\n/, 10_000).then((m) => m[1], () => undefined) : undefined;
    return { first, ready, accel: vm.accel, timings, tasks, cpu, start, again: again && timings ? await bootAgain(vm, disk, memMiB, timeoutMs).catch(() => undefined) : undefined };
  } catch { return { accel: vm.accel }; } finally { await vm.kill(); rmSync(join(disk, '..'), { recursive: true, force: true }); }
}
/** The power button on a booted machine, then its disk's next boot: the timings line (a failure here loses nothing of the first boot's). */
async function bootAgain(vm: Vm, disk: string, memMiB: number, timeoutMs: number): Promise<string | undefined> {
  await vm.qmp('system_powerdown');
  if (!(await vm.exited(120_000 * SLOW))) return undefined;
  const vm2 = await Vm.start({ arch, disk, memMiB, allowReboot: false });
  try {
    return await vm2.waitFor(/kiln: timings: (.*)\r?\n/, timeoutMs).then((m) => m[1], () => undefined);
  } finally { await vm2.kill(); }
}

// The floors: the same firmware, kernel and stage 1 (taken out of this build's UKI, booted
// directly with its own command line), handing over to a program that prints one line
// (kiln.floor=, builder/stage1/init.sh) instead of init. `sh`: a shell's echo; `node`: Node
// from the same root printing its uptime and RSS, no more than `node -e 0`; `modules`: the
// same after a shell has loaded the image's module lists, the kernel's share of boot's work.
const ukiDir = mkdtempSync(join(tmpdir(), 'kiln-bench-uki-'));
const ukiParts = (() => {
  const buf = readFileSync(uki);
  const sec = (name: string) => { const s = readPe(buf, uki).sections.find((x) => x.name === name)!; return buf.subarray(s.rawOffset, s.rawOffset + Math.min(s.virtualSize, s.rawSize)); };
  writeFileSync(join(ukiDir, 'linux'), sec('.linux'));
  writeFileSync(join(ukiDir, 'initrd'), sec('.initrd'));
  // The memory floor's initramfs: the image's own busybox and a script that prints one line,
  // so what it measures is the firmware and the kernel, not stage 1 or the root.
  const script = '#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n'
    + '/bin/busybox echo "kiln-floor: kernel ready $(/bin/busybox cut -d" " -f1 /proc/uptime) s after the kernel" > /dev/console\n'
    + 'exec /bin/busybox sleep 2147483647\n';
  writeFileSync(join(ukiDir, 'one-line.cpio'), writeCpio([
    { path: 'bin', type: 'dir' }, { path: 'proc', type: 'dir' }, { path: 'dev', type: 'dir' },
    { path: 'dev/console', type: 'char', major: 5, minor: 1 },
    { path: 'bin/busybox', type: 'file', mode: 0o755, data: readFileSync(join(out, 'a', '.work', arch, 'root', 'bin', 'busybox')) },
    { path: 'init', type: 'file', mode: 0o755, data: Buffer.from(script) },
  ], { mtime: 0 }));
  return {
    kernel: join(ukiDir, 'linux'), initrd: join(ukiDir, 'initrd'), oneLine: join(ukiDir, 'one-line.cpio'),
    cmdline: sec('.cmdline').toString('latin1').replace(/\0+$/, '').trim(),
  };
})();
/**
 * A floor, or (`init`) init itself, booted directly. `noUefi`: under SeaBIOS (x86_64) or with no
 * firmware at all (arm64: QEMU loads the kernel) instead of OVMF or AAVMF, which fail to load
 * the kernel below about 160 MiB, so the smallest memory of what runs after the firmware is
 * found, not the firmware's.
 */
async function floorBoot(kind: 'sh' | 'node' | 'modules' | 'init' | 'kernel', memMiB: number, o: { noUefi?: boolean; timeoutMs?: number; icount?: boolean; rng?: boolean } = {}): Promise<(FloorLine & { again?: FloorLine }) | undefined> {
  const vm = await Vm.start({
    arch, disk: raw, snapshot: true, memMiB, allowReboot: false, rng: o.rng, ...(o.noUefi ? { firmware: arch === 'x86_64' ? 'bios' as const : 'none' as const } : {}),
    extraArgs: [...(o.icount ? ['-icount', 'shift=0'] : []), ...kind === 'kernel'
      ? ['-kernel', ukiParts.kernel, '-initrd', ukiParts.oneLine, '-append', ukiParts.cmdline]
      : ['-kernel', ukiParts.kernel, '-initrd', ukiParts.initrd, '-append', `${ukiParts.cmdline} kiln.slot=a${kind === 'init' ? '' : ` kiln.floor=${kind}`}`]],
  });
  try {
    // A firmware that cannot load the kernel in this memory shows no stage 1 at all (the kernel
    // floor has no stage 1: its one line, or the exception, is waited for below).
    if (kind !== 'kernel') await vm.waitFor(new RegExp(`kiln-stage1: started|${FIRMWARE_FAULT.source}`), STAGE1_WAIT_MS);
    const m = await vm.waitFor(new RegExp(`kiln-floor: .*\\r?\\n|kiln: timings: .*\\r?\\n|Kernel panic|${FIRMWARE_FAULT.source}`), o.timeoutMs ?? 180_000 * SLOW);
    if (kind === 'init') { const t = parseTimings(m[0]); return t && { kind: 'node' as const, readyS: readyAfterKernel(t)!, rssMiB: t.rssMiB }; }
    const f = floorLine(m[0]);
    // The modules floor runs Node a second time, its pages then cached (builder/stage1/init.sh).
    const again = f && kind === 'modules' ? await vm.waitFor(/kiln-floor: again .*\r?\n/, 60_000 * SLOW).then((a) => floorLine(a[0]), () => undefined) : undefined;
    return f && { ...f, again };
  } catch { return undefined; } finally { await vm.kill(); }
}

const b1 = await boot(256, undefined, [], true);
row(`boot: QEMU start -> stage-1 first line (${b1.accel})`, b1.first ? `${b1.first.toFixed(1)} s` : 'did not boot');
row(`boot: QEMU start -> ready line (${b1.accel})`, b1.ready ? `${b1.ready.toFixed(1)} s` : 'did not reach ready');
if (b1.first && b1.ready) row('boot: our overhead over the kernel floor (target <= 1.5 s)', `${(b1.ready - b1.first).toFixed(1)} s`);
if (b1.timings) row('init timings, no data source (config, network, k3s start, RSS)', b1.timings);
if (b1.again) row('init timings, the next boot of the same disk', b1.again);
const t1 = b1.timings ? parseTimings(b1.timings) : undefined;
const tAgain = b1.again ? parseTimings(b1.again) : undefined;
const path = b1.tasks ? bootCriticalPath(b1.tasks) : [];
if (path.length) row('boot critical path (s since init start)', formatPath(path));
if (b1.tasks) row('init task times', b1.tasks);
// On one vCPU, idle near nothing means ready waits for work, not for a device or a timer.
if (b1.cpu) row('init CPU on the way to ready', b1.cpu);
const st = b1.start ? parseStart(b1.start) : undefined;
if (b1.start) row("init's start: Node's, then its modules'", b1.start);
// The floors boot the image as it was built, as that boot did (stage 1 formats the data partition).
const fsh = await floorBoot('sh', 256);
const fnode = await floorBoot('node', 256);
const fmod = await floorBoot('modules', 256);
row('floor: kernel start -> sh init printed a line', fsh ? s2(fsh.readyS) : 'did not print');
row('floor: kernel start -> node -e printed a line (RSS, V8 heap limit)', fnode ? `${s2(fnode.readyS)} (${fnode.rssMiB?.toFixed(1)} MiB, ${fnode.heapLimitMiB} MiB)` : 'did not print');
/** Node's own start in a floor line: from its own code's start (`init started`) to its line. */
const ownStart = (f: FloorLine | undefined) => (f?.initStartS !== undefined ? f.readyS - f.initStartS : undefined);
const nodeStartS = ownStart(fnode);
row("floor: kernel start -> node -e printed a line after a shell loaded the image's modules", fmod ? s2(fmod.readyS) : 'did not print');
// Single boots on this machine spread by a second and more, the floors' as much as kiln's (a busy
// host slows them all), so the ready row takes medians over ROUNDS rounds, each a first boot of
// kiln and then the three floors, back to back; the rows above are the first round's.
const ROUNDS = Math.max(1, Number(values.rounds ?? (values.quick ? 1 : 3)) || 1);
const rounds = [{ kiln: readyAfterKernel(t1), sh: fsh?.readyS, node: fnode?.readyS, mod: fmod?.readyS }];
for (let r = 1; r < ROUNDS; r++) {
  const b = await boot(256);
  const kiln = readyAfterKernel(b.timings ? parseTimings(b.timings) : undefined);
  const sh = (await floorBoot('sh', 256))?.readyS, node = (await floorBoot('node', 256))?.readyS, mod = (await floorBoot('modules', 256))?.readyS;
  rounds.push({ kiln, sh, node, mod });
}
const rKiln = roundsOf(rounds.map((r) => r.kiln)), rSh = roundsOf(rounds.map((r) => r.sh));
const rNode = roundsOf(rounds.map((r) => r.node)), rMod = roundsOf(rounds.map((r) => r.mod));
if (ROUNDS > 1) {
  row('kernel start -> kiln: ready, each round', rKiln.text);
  row('floors, each round: sh / node -e 0 / after the modules', [rSh.text, rNode.text, rMod.text].join('; '));
}
// The same boot and floor under -icount shift=0: the guest's clock advances 1 ns per instruction,
// so these count the guest's work, and a busy or quiet host does not move them.
const icInit = await floorBoot('init', 256, { icount: true });
const icMod = await floorBoot('modules', 256, { icount: true });
row('guest work: kernel start -> kiln: ready, and the modules floor (-icount shift=0, 1 ns an instruction)', `${icInit ? s2(icInit.readyS) : 'did not reach ready'}, floor ${icMod ? s2(icMod.readyS) : 'did not print'}`);
// What reading Node off the verified root costs: the same start, from its process's start (the
// loading and constructors before Node's own code included), with its pages then cached.
const wholeStart = (f: FloorLine | undefined) => (f?.processStartS !== undefined ? f.readyS - f.processStartS : undefined);
const beforeCode = (f: FloorLine | undefined) => (f?.processStartS !== undefined && f.initStartS !== undefined ? ` (${s2(f.initStartS - f.processStartS)} before its own code)` : '');
const icFirst = wholeStart(icMod), icAgain = wholeStart(icMod?.again);
row("guest work: Node's start in the modules floor from its process's start, first and again (its pages then cached)",
  icFirst !== undefined && icAgain !== undefined ? `${s2(icFirst)}${beforeCode(icMod)}, again ${s2(icAgain)}${beforeCode(icMod?.again)}` : 'not printed');
endPart('boots and floors');
const kilnReady = rKiln.median;
const readyFloor = `${s2(rSh.median)} (sh init), ${s2(rNode.median)} (node -e 0), ${s2(rMod.median)} (node -e 0 after the modules)`;
const asFloor = (x: number | undefined) => (x === undefined ? undefined : { readyS: x });
const first = ROUNDS > 1 ? ' (first round)' : '';
const over = (now: number | undefined, floor: number | undefined, what: string) => (now !== undefined && floor !== undefined ? `+${s2(now - floor)} over ${what}` : undefined);
goals.push(t1
  ? {
    measure: `kernel start -> kiln: ready (${arch}, ${b1.accel})`, goal: '<= 6 s', now: s2(kilnReady),
    floor: readyFloor,
    note: [ROUNDS > 1 && `medians of ${ROUNDS} rounds; kiln's rounds ${rounds.map((r) => r.kiln?.toFixed(2) ?? '-').join(' / ')} s`,
      floorsOverGoal(6, [[asFloor(rSh.median), 'sh'], [asFloor(rNode.median), 'node -e 0'], [asFloor(rMod.median), 'node -e 0 after the modules']]),
      over(kilnReady, rSh.median, 'sh'), over(kilnReady, rNode.median, 'node -e 0'), over(kilnReady, rMod.median, 'node -e 0 after the modules'),
      tAgain && `the next boot ${s2(readyAfterKernel(tAgain))}${first}`, `init started ${s2(t1.initStartS)}${first}`,
      icInit && icMod && `guest work (1 ns an instruction) ${s2(icInit.readyS)} against the modules floor's ${s2(icMod.readyS)}`,
      icFirst !== undefined && icAgain !== undefined && `of which Node's start from its process's start ${s2(icFirst)}, ${s2(icAgain)} with its pages cached`,
      st && `then Node's start ${s2(st.codeS)}${nodeStartS !== undefined ? ` (node -e 0: ${s2(nodeStartS)})` : ''}, init's modules ${s2(st.loadedS - st.codeS)}, to ready ${s2(t1.readyS - st.loadedS)}${first}`,
      `critical path: ${path.map((p) => p.id).join(' -> ') || '-'}`].filter(Boolean).join('; '),
  }
  : { measure: `kernel start -> kiln: ready (${arch}, ${b1.accel})`, goal: '<= 6 s', now: 'did not reach ready', floor: readyFloor });
/** Anonymous memory (heaps) and mapped file pages (Node's binary), init against the floor. */
function rssSplitNote(a: { anonMiB?: number; fileMiB?: number }, b: { anonMiB?: number; fileMiB?: number }) {
  if (a.anonMiB === undefined || b.anonMiB === undefined || a.fileMiB === undefined || b.fileMiB === undefined) return undefined;
  return `anon ${a.anonMiB.toFixed(1)} against ${b.anonMiB.toFixed(1)}, file ${a.fileMiB.toFixed(1)} against ${b.fileMiB.toFixed(1)}`;
}
goals.push({
  measure: 'init RSS at ready', goal: '<= 50 MiB', now: t1 ? `${t1.rssMiB.toFixed(1)} MiB` : '-', floor: fnode?.rssMiB !== undefined ? `${fnode.rssMiB.toFixed(1)} MiB (node -e 0)` : '-',
  note: t1 && fnode?.rssMiB !== undefined ? [`+${(t1.rssMiB - fnode.rssMiB).toFixed(1)} MiB`, rssSplitNote(t1, fnode)].filter(Boolean).join('; ') : undefined,
});

if (values.all) {
  const cidata = await cidataImage('#cloud-config\nhostname: bench\nwrite_files: [{path: /etc/bench, content: x}]\n');
  const b2 = await boot(256, 300_000, [`file=${cidata},format=raw,if=virtio,readonly=on`]);
  if (b2.timings) row('init timings, NoCloud CIDATA data source', b2.timings);
  // Every format kiln build makes for this arch, and the Raspberry Pi card (arm64, its own profile).
  const formats = (Object.keys(FORMAT_TABLE) as Format[]).filter((f) => f !== 'rpi' && FORMAT_TABLE[f].arches.includes(arch));
  const all = await build({ arches: [arch], formats, out: join(out, 'formats'), log, k3sBinary });
  const pi = await build({ profile: join(REPO, 'images/rpi.yaml'), arches: ['arm64'], formats: ['rpi'], out: join(out, 'rpi'), log, k3sBinary });
  // The hardware profile (generic kernel, drivers by modalias, firmware): what `kiln build --format iso` makes.
  const metal = await build({ profile: METAL_PROFILE, arches: [arch], formats: ['raw', 'iso'], out: join(out, 'metal'), log, k3sBinary });
  const metalIso = metal.outputs.find((o) => o.kind === 'iso')!;
  row(`hardware ISO (${metalIso.target}, target <= 120 MiB)`, mib(metalIso.size));
  for (const [rec, dir] of [[all, 'formats'], [pi, 'rpi'], [metal, 'metal']] as const) {
    for (const o of rec.outputs) {
      if (o.kind === 'root' || o.kind === 'uki') continue;
      const st = statSync(join(out, dir, o.file));
      row(`format ${o.kind} (${o.target})`, st.blocks * 512 < st.size * 0.9 ? `${mib(st.size)} (${mib(st.blocks * 512)} allocated)` : mib(st.size));
    }
  }
  endPart('--all: a data source and every format');
}

// The smallest memory that reaches ready, searched over these sizes (128, the goal, tried
// first), for init (a first boot) and for the node floor.
const SIZES = [64, 80, 96, 112, 128, 160, 192, 256];
const FLOOR_SIZES = [48, 64, 80, 96, 112, 128];
/** A search's test, keeping each size it tried and the answer, for the search's row. */
function logged(works: (mem: number) => Promise<boolean>) {
  const tried: string[] = [];
  const test = async (mem: number) => { const ok = await works(mem); tried.push(`${mem} ${ok ? 'yes' : 'no'}`); return ok; };
  return Object.assign(test, { tried: () => `tried ${tried.join(', ') || 'none'}` });
}
if (!values.quick) {
  // Through the firmware and systemd-boot, as a machine boots; a boot that never reaches stage 1
  // failed in the firmware or boot loader, before the kernel.
  let stoppedBefore: number | undefined;
  const kiln = logged(async (mem) => {
    const r = await boot(mem, 180_000 * SLOW);
    if (!r.first && (stoppedBefore === undefined || mem > stoppedBefore)) stoppedBefore = mem;
    return !!r.ready;
  });
  const kilnMin = await smallestThatWorks(SIZES, kiln, SIZES.indexOf(128));
  // The same without the VM's virtio-rng device, when 128 MiB was not enough with it: with the
  // device, AAVMF below 160 MiB leaves the arm64 kernel's EFI stub no room to place the kernel.
  const below = SIZES.filter((m) => kilnMin === undefined || m < kilnMin);
  const noRng = kilnMin === undefined || kilnMin > 128;
  const kilnNoRng = logged(async (mem) => !!(await boot(mem, 180_000 * SLOW, [], false, false)).ready);
  const noRngMin = noRng ? await smallestThatWorks(below, kilnNoRng, below.indexOf(128)) : undefined;
  // The firmware and the kernel alone (a one-line initramfs, through the same firmware): what no
  // stage 1 or init can go below; with no virtio-rng device too when kiln was measured so.
  const kernel = logged(async (mem) => !!(await floorBoot('kernel', mem, { timeoutMs: 60_000 * SLOW })));
  const kernelMin = await smallestThatWorks(SIZES, kernel, SIZES.indexOf(128));
  const kernelNoRng = logged(async (mem) => !!(await floorBoot('kernel', mem, { timeoutMs: 60_000 * SLOW, rng: false })));
  const kernelNoRngMin = noRng ? await smallestThatWorks(SIZES, kernelNoRng, SIZES.indexOf(128)) : undefined;
  // After the firmware: the node floor, and init itself at the goal's 128 MiB, booted directly.
  const nodeMem = logged(async (mem) => !!(await floorBoot('node', mem, { noUefi: true, timeoutMs: 120_000 * SLOW })));
  const floorMin = await smallestThatWorks(FLOOR_SIZES, nodeMem, FLOOR_SIZES.indexOf(96));
  const init128 = await floorBoot('init', 128, { noUefi: true, timeoutMs: 240_000 * SLOW });
  const minRam = kilnMin === undefined ? `none of ${SIZES[0]}..${SIZES.at(-1)} MiB` : `${kilnMin} MiB`;
  row(`minimum RAM reaching ready (searched over ${SIZES.join(',')})`, `${minRam} (${kiln.tried()})`);
  if (noRng) row('minimum RAM reaching ready with no virtio-rng device', `${noRngMin === undefined ? `none below ${minRam}` : `${noRngMin} MiB`} (${kilnNoRng.tried()})`);
  if (stoppedBefore !== undefined) row('largest memory the firmware did not reach stage 1 in', `${stoppedBefore} MiB`);
  row('floor: minimum RAM for the firmware and kernel to run a one-line initramfs', `${kernelMin === undefined ? 'none' : `${kernelMin} MiB`} (${kernel.tried()})`);
  if (noRng) row('floor: the same with no virtio-rng device', `${kernelNoRngMin === undefined ? 'none' : `${kernelNoRngMin} MiB`} (${kernelNoRng.tried()})`);
  row('floor: minimum RAM for node -e 0 to print a line (direct kernel boot)', `${floorMin === undefined ? 'none' : `${floorMin} MiB`} (${nodeMem.tried()})`);
  row('init at 128 MiB, direct kernel boot (kernel start -> ready, RSS)', init128 ? `${s2(init128.readyS)}, ${init128.rssMiB?.toFixed(1)} MiB` : 'did not reach ready');
  goals.push({
    measure: `reaches ready with -m 128 (${arch})`, goal: 'yes',
    now: kilnMin !== undefined && kilnMin <= 128 ? `yes; smallest ${minRam}`
      : noRngMin !== undefined && noRngMin <= 128 ? `yes with no virtio-rng device (smallest ${noRngMin} MiB); with one, smallest ${minRam}`
        : `no; smallest ${minRam}`,
    floor: [kernelMin === undefined ? undefined : `${kernelMin} MiB (firmware + kernel)`, kernelNoRngMin === undefined ? undefined : `${kernelNoRngMin} MiB (the same, no virtio-rng)`,
      floorMin === undefined ? undefined : `${floorMin} MiB (node -e 0, no firmware)`].filter(Boolean).join(', ') || '-',
    note: [
      kilnMin !== undefined && kernelMin !== undefined ? `+${kilnMin - kernelMin} MiB over the firmware and kernel` : undefined,
      noRngMin !== undefined && kernelNoRngMin !== undefined ? `+${noRngMin - kernelNoRngMin} MiB over them with no virtio-rng device` : undefined,
      stoppedBefore !== undefined ? `at ${stoppedBefore} MiB the firmware never reached stage 1` : undefined,
      `init booted directly at 128 MiB: ${init128 ? `ready ${s2(init128.readyS)} after the kernel` : 'not ready'}`,
    ].filter(Boolean).join('; '),
  });
  endPart('the smallest memory');
} else goals.push({ measure: `reaches ready with -m 128 (${arch})`, goal: 'yes', now: 'not measured (--quick)', floor: '-' });
// One arch per run (an emulated arm64 boot takes minutes): the other arch's row says how to get it.
const other = arch === 'x86_64' ? 'arm64' : 'x86_64';
goals.push({ measure: `reaches ready with -m 128 (${other})`, goal: 'yes', now: `npm run bench -- --arch ${other}`, floor: '-' });
rmSync(ukiDir, { recursive: true, force: true });

// Delta updates (channels/README.md, "Measured savings"): what a node running this build
// fetches per scenario, as a share of the full root. The version bump is a second real build
// that differs only in its version; the other scenarios change this build's root tree. The
// floor is the same plan with 4 KiB chunks: about the bytes that really changed.
if (!values.quick) {
  await build({ arches: [arch], out: join(out, 'v2'), version: `${a.version}-next`, log, k3sBinary });
  const FINE = { min: 1024, avg: 4096, max: 16384 };
  console.log(`delta: ${['scenario', 'squashfs block', 'chunks min/avg/max', 'root', 'fetched', 'share', 'ranges', 'chunks'].join('  |  ')}`);
  const got = await deltaTable({
    v1Root: root, v2Root: rootOf(join(out, 'v2'), arch), tree: join(out, 'a', '.work', arch, 'root'), paramSets: [DEFAULT_PARAMS, FINE],
    squash: { sde: a.sourceDateEpoch, label: `${a.version}:${arch}`, v1Image: root },
    print: (l) => console.log(`delta: ${l}`),
  });
  const GOALS: [string, string][] = [['version bump', '<= 3%'], ["init's code", '<= 3%'], ['Debian package', '<= 15%'], ['kernel update', 'as measured'], ['Node.js minor', 'as measured']];
  const pct = (r: DeltaRow) => `${((100 * r.fetch) / r.size).toFixed(1)}% (${mib(r.fetch)})`;
  for (const [name, goal] of GOALS) {
    const rs = got.filter((r) => r.scenario.includes(name));
    const now = rs.find((r) => r.params === DEFAULT_PARAMS), floor = rs.find((r) => r.params === FINE);
    goals.push({ measure: `delta: ${now?.scenario ?? name}`, goal, now: now ? pct(now) : '-', floor: floor ? `${pct(floor)} (4 KiB chunks)` : '-', note: now ? `of a ${mib(now.size)} root, ${now.ranges} ranges` : undefined });
  }
  endPart('delta updates');
}
// The cost of dm-verity: the same image booted with and without it, in this run (bench/verity.ts).
const vf = await verityBench({ arch, dir: join(out, 'a'), rec: a, row, rounds: values.all ? 3 : 1 }).catch((e: Error) => { row('verity cost', `not measured: ${e.message}`); return undefined; });
if (vf) {
  const with_ = median(vf.withVerity), without = median(vf.withoutVerity);
  goals.push({ measure: 'verity: boot to ready with / without it', goal: 'as measured', now: with_ && without ? `${(with_ / without).toFixed(2)}x` : '-', floor: without ? `${s2(without)} (no verity)` : '-',
    note: `hash tree ${(vf.treeBytes / 1024).toFixed(0)} KiB, ${((100 * vf.treeBytes) / vf.dataBytes).toFixed(2)}% of the root` });
}
endPart('verity');
// The bench's own time: the default run is meant to end within 15 minutes.
const benchMin = (performance.now() - benchStart) / 60_000;
const runKind = values.all ? '--all' : values.quick ? '--quick' : values.cold ? '--cold' : 'the default run';
goals.push({ measure: 'npm run bench itself', goal: runKind === 'the default run' ? '< 15 min' : 'as measured', now: `${benchMin.toFixed(1)} min`, floor: '-',
  note: `${runKind}, ${arch}; ${parts.map(([n, m]) => `${n} ${m.toFixed(1)}`).join(', ')} min` });
// In the issue's order: boot, memory, the smallest RAM, size, the CLI, then delta updates.
const ORDER = ['kernel start', 'init RSS', 'reaches ready', `${arch} raw.zst`, 'kiln --help', 'kiln config validate', 'delta:', 'verity:', 'npm run bench'];
const rank = (g: GoalRow) => { const i = ORDER.findIndex((p) => g.measure.startsWith(p)); return i < 0 ? ORDER.length : i; };
console.log(`\n${goalTable([...goals].sort((x, y) => rank(x) - rank(y)))}`);
console.log(`\n${JSON.stringify(Object.fromEntries(rows))}`);
