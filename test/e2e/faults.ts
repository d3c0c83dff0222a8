// The fault matrix: each cell injects one fault into a real x86_64 node under QEMU (or, where
// a VM cannot reach the state in reasonable time, into the real updater against a loopback
// channel) and records what the node did. `npm run faults` prints every cell as a table; the
// e2e tests assert on the cells they run. Not a test file itself.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../../builder/build.ts';
import { Vm } from '../../builder/qemu.ts';
import { publishRelease } from '../../builder/release.ts';
import { cidataImage, freePort, ssh, sshKeypair, staticServer } from './helpers.ts';
import { BOOT_TIMEOUT, espList, scratchCopy } from './image.ts';
import { readyRe, updateImage, updateKeys, updateOut } from './update-fixture.ts';

export interface FaultRow {
  fault: string;
  /** Where the fault hit, as the node's own log showed it. */
  step: string;
  outcome: string;
  /** The slot and version running once the node recovered. */
  slot: string;
  /** A file written before the fault still reads back after it (null: not applicable). */
  dataIntact: boolean | null;
  /** Seconds from the fault (power back on, reboot, check) until the node was ready again. */
  recoverS: number | null;
  where: 'QEMU' | 'updater + loopback channel';
}

type Report = (row: FaultRow) => void;

/** One node under test: its disk, its config volume, and the channel it polls. */
export interface Rig {
  disk: string;
  drives: string[];
  me: { key: string; pub: string };
  http: Awaited<ReturnType<typeof staticServer>>;
  /** The folder the channel server serves (a copy of `published` unless a cell swaps it). */
  served: string;
  published: string;
  /** The serial-1 channel (1.0.0 only), kept for the replay cell. */
  firstManifest: string;
  rootSize: number;
  work: string;
}

/** Builds (once) 1.0.0 and 1.1.0, publishes both, serves the channel and makes a disk running 1.0.0. */
export async function rig(updatesExtra = ''): Promise<Rig> {
  const work = mkdtempSync(join(tmpdir(), 'kiln-faults-'));
  const keys = updateKeys();
  const v1 = await updateImage('1.0.0');
  const v2 = await updateImage('1.1.0');
  const published = join(work, 'published');
  const served = join(work, 'served');
  await publishRelease({ channel: 'stable', from: updateOut('1.0.0'), to: published, key: keys.keyFile });
  const firstManifest = join(work, 'first');
  cpSync(join(published, 'stable'), firstManifest, { recursive: true });
  await publishRelease({ channel: 'stable', from: updateOut('1.1.0'), to: published, key: keys.keyFile });
  cpSync(published, served, { recursive: true });
  const http = await staticServer(served, { bytesPerSecond: 4 << 20 });
  const me = sshKeypair();
  const cidata = await cidataImage(`#cloud-config
ssh_authorized_keys: ['${me.pub}']
kiln:
  updates: {url: 'http://10.0.2.2:${http.port}', canary: true, poll_minutes: 600${updatesExtra}}
`);
  const disk = await scratchCopy(join(updateOut('1.0.0'), v1.outputs.find((o) => o.kind === 'raw')!.file));
  const rootSize = v2.outputs.find((o) => o.kind === 'root')!.size;
  return { disk, drives: [`file=${cidata},format=raw,if=virtio,readonly=on`], me, http, served, published, firstManifest, rootSize, work };
}

export async function closeRig(r: Rig) {
  r.http.server.close();
  rmSync(r.work, { recursive: true, force: true });
}

/** Powers the node on and waits for `ready` of a version in a slot; returns the seconds it took. */
async function powerOn(r: Rig, re: RegExp): Promise<{ vm: Vm; port: number; readyS: number; slot: string; version: string }> {
  const port = await freePort();
  const vm = await Vm.start({ arch: 'x86_64', disk: r.disk, memMiB: 384, hostfwd: [[port, 22]], extraDrives: r.drives });
  try {
    const m = await vm.waitFor(re, BOOT_TIMEOUT * 2);
    const rm = /version=(\S+) slot=([ab])/.exec(m[0])!;
    return { vm, port, readyS: vm.elapsed(), version: rm[1]!, slot: rm[2]! };
  } catch (e) { await vm.kill(); throw e; }
}

const ANY_READY = /kiln: ready version=\S+ slot=[ab] arch=x86_64[\r\n ]/;
const lastUpdateLine = (vm: Vm, from: number) => (vm.output.slice(from).match(/kiln: update: [^\r\n]*/g) ?? []).pop()?.replace(/^kiln: /, '') ?? '(no update line)';
const precious = async (port: number, key: string) => (await ssh(port, key, 'cat /var/lib/kiln/precious 2>/dev/null || true')).trim() === 'precious';

/** Waits until `pred` holds, polling; false on timeout. */
async function until(pred: () => boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end;) { if (pred()) return true; await new Promise((res) => setTimeout(res, 50)); }
  return pred();
}

/**
 * Power cuts while an update is written: in the download, at the end of the root write, and
 * while the boot files are staged. After each, the node must come back on a good slot with its
 * data, and the next `kiln upgrade` must carry on.
 */
export async function powerCutsWhileWriting(report: Report, cells: ('download' | 'root write' | 'staging')[] = ['download', 'root write', 'staging']) {
  const r = await rig();
  try {
    let node = await powerOn(r, readyRe('1.0.0', 'a'));
    await node.vm.waitFor(/kiln: blessed slot a/, 120_000);
    await ssh(node.port, r.me.key, 'echo precious > /var/lib/kiln/precious; sync');
    for (const cell of cells) {
      const from = node.vm.output.length;
      const sentBefore = r.http.sent();
      void ssh(node.port, r.me.key, 'kiln upgrade', 1).catch(() => undefined);
      await node.vm.waitFor(/kiln: update: writing 1\.1\.0/, 120_000, from);
      if (cell === 'download') {
        await until(() => r.http.sent() - sentBefore >= 20 << 20, 60_000);
      } else if (cell === 'root write') {
        // Every byte has left the server: the guest is writing, syncing and hashing the tail.
        const range = /bytes=(\d+)-/.exec(r.http.hits.filter((h) => h.includes('root.squashfs')).pop() ?? '');
        const remaining = r.rootSize - Number(range?.[1] ?? 0);
        await until(() => r.http.sent() - sentBefore >= remaining, 120_000);
      } else {
        await node.vm.waitFor(/kiln: update: staging the boot files/, 180_000, from);
      }
      const step = lastUpdateLine(node.vm, from);
      await node.vm.kill();
      const entries = await espList(r.disk, 'EFI/Linux');
      node = await powerOn(r, ANY_READY);
      report({
        fault: `power cut during ${cell}`, step, where: 'QEMU',
        outcome: `booted ${node.version}; ESP entries after the cut: ${entries.join(' ')}`,
        slot: `${node.slot} (${node.version})`, dataIntact: await precious(node.port, r.me.key), recoverS: node.readyS,
      });
      if (node.slot !== 'a') break;
    }
    // The interrupted update finishes from where it stopped.
    if (node.slot === 'a') {
      const from = node.vm.output.length;
      void ssh(node.port, r.me.key, 'kiln upgrade', 1).catch(() => undefined);
      const t0 = node.vm.elapsed();
      await node.vm.waitFor(/kiln: update to 1\.1\.0 succeeded: slot b blessed/, BOOT_TIMEOUT * 2, from);
      report({
        fault: 'the upgrade after the cuts', step: lastUpdateLine(node.vm, from), where: 'QEMU',
        outcome: /resuming 1\.1\.0 at byte [1-9]/.test(node.vm.output.slice(from)) ? 'resumed, staged, rebooted, blessed' : 'staged, rebooted, blessed',
        slot: 'b (1.1.0)', dataIntact: await precious(node.port, r.me.key), recoverS: node.vm.elapsed() - t0,
      });
    }
    await node.vm.kill();
  } finally { await closeRig(r); }
}

/**
 * Faults after the update is staged, on a fresh node: a power cut while the new slot is judged
 * (before it is blessed), init killed, a bad config, unreachable sources, and doctored
 * manifests; then a new slot whose root is corrupt (stage 1 cannot mount it: kernel panic).
 */
export async function faultsAfterStaging(report: Report, cells: ('blessing' | 'init crash' | 'bad config' | 'unreachable sources' | 'manifests' | 'panic')[]) {
  const r = await rig();
  try {
    let node = await powerOn(r, readyRe('1.0.0', 'a'));
    await node.vm.waitFor(/kiln: blessed slot a/, 120_000);
    await ssh(node.port, r.me.key, 'echo precious > /var/lib/kiln/precious; sync');
    if (cells.includes('blessing')) {
      void ssh(node.port, r.me.key, 'kiln upgrade', 1).catch(() => undefined);
      const from = node.vm.output.length;
      await node.vm.waitFor(readyRe('1.1.0', 'b'), BOOT_TIMEOUT * 2, from);
      // Power cut between ready and the blessing (health is being judged).
      const blessedAlready = /slot b blessed/.test(node.vm.output.slice(from));
      await node.vm.kill();
      const entries = await espList(r.disk, 'EFI/Linux');
      node = await powerOn(r, ANY_READY);
      const t = await node.vm.waitFor(/kiln: (update to 1\.1\.0 succeeded: slot b blessed|update to 1\.1\.0 failed[^\r\n]*|blessed slot [ab])/, 300_000);
      report({
        fault: 'power cut during blessing', step: blessedAlready ? 'after the blessing (cut too late)' : `first boot of 1.1.0, before the bless (ESP: ${entries.join(' ')})`, where: 'QEMU',
        outcome: t[1]!, slot: `${node.slot} (${node.version})`, dataIntact: await precious(node.port, r.me.key), recoverS: node.readyS,
      });
    }
    if (cells.includes('manifests')) {
      const check = async () => (await ssh(node.port, r.me.key, 'kiln upgrade --check', 3)).trim();
      const swap = (dir: string) => { rmSync(join(r.served, 'stable'), { recursive: true, force: true }); cpSync(dir, join(r.served, 'stable'), { recursive: true }); };
      // The node sees the genuine serial-2 channel first, so the replay below is one.
      await check();
      // Tampered: one byte of the signed manifest changed after signing.
      const tampered = join(r.work, 'tampered');
      cpSync(join(r.published, 'stable'), tampered, { recursive: true });
      const mf = join(tampered, 'manifest.json');
      writeFileSync(mf, readFileSync(mf, 'utf8').replace(/"version": ?"1\.1\.0"/, (s) => s.replace('1.1.0', '1.1.9')));
      swap(tampered);
      report({ fault: 'tampered manifest', step: 'update check', where: 'QEMU', outcome: await check(), slot: node.slot, dataIntact: null, recoverS: null });
      // Expired: correctly signed, but its validity ended long ago.
      const expired = join(r.work, 'expired-tree');
      // A serial above any the node saw: only the dates are wrong.
      await publishRelease({ channel: 'stable', from: updateOut('1.1.0'), to: expired, key: updateKeys().keyFile, now: new Date('2020-01-01T00:00:00Z'), expiresDays: 1, serial: 1000 });
      swap(join(expired, 'stable'));
      report({ fault: 'expired manifest', step: 'update check', where: 'QEMU', outcome: await check(), slot: node.slot, dataIntact: null, recoverS: null });
      // Replayed: the older, genuinely signed serial-1 manifest after the node saw serial 2.
      swap(r.firstManifest);
      report({ fault: 'replayed manifest', step: 'update check', where: 'QEMU', outcome: await check(), slot: node.slot, dataIntact: null, recoverS: null });
      swap(join(r.published, 'stable'));
    }
    if (cells.includes('init crash')) {
      const from = node.vm.output.length;
      await ssh(node.port, r.me.key, "for d in /proc/[0-9]*; do [ \"$(cut -d' ' -f4 $d/stat 2>/dev/null)\" = 1 ] && grep -q kiln/init.js $d/cmdline 2>/dev/null && kill -9 ${d#/proc/}; done; true", 1).catch(() => undefined);
      const t0 = node.vm.elapsed();
      const m = await node.vm.waitFor(ANY_READY, BOOT_TIMEOUT * 2, from);
      const rm = /version=(\S+) slot=([ab])/.exec(m[0])!;
      report({
        fault: 'init killed (SIGKILL)', step: 'running', where: 'QEMU',
        outcome: /Kernel panic|Attempted to kill init/.test(node.vm.output.slice(from)) ? 'kernel panicked and rebooted the node' : 'node rebooted',
        slot: `${rm[2]} (${rm[1]})`, dataIntact: await precious(node.port, r.me.key), recoverS: node.vm.elapsed() - t0,
      });
    }
    if (cells.includes('bad config')) {
      const from = node.vm.output.length;
      await ssh(node.port, r.me.key, "printf 'kiln:\\n  k3s_args: [server\\n  labels: {a: b\\n' > /var/lib/kiln/config.yaml; sync; reboot");
      const t0 = node.vm.elapsed();
      await node.vm.waitFor(ANY_READY, BOOT_TIMEOUT * 2, from + 1);
      const problem = /kiln: config: ([^\r\n]*config\.yaml[^\r\n]*)/.exec(node.vm.output.slice(from))?.[1] ?? 'no problem reported';
      const sshOk = await ssh(node.port, r.me.key, 'rm /var/lib/kiln/config.yaml; sync; echo in', 10).then((o) => o.includes('in'), () => false);
      report({
        fault: 'bad config (YAML error in /var/lib/kiln/config.yaml)', step: 'boot', where: 'QEMU',
        outcome: `${problem.slice(0, 90)}; SSH with the old key ${sshOk ? 'works' : 'FAILS'}`,
        slot: /slot=([ab])/.exec(node.vm.output.slice(from))?.[1] ?? '?', dataIntact: await precious(node.port, r.me.key), recoverS: node.vm.elapsed() - t0,
      });
    }
    if (cells.includes('unreachable sources')) {
      const from = node.vm.output.length;
      await ssh(node.port, r.me.key, "mkdir -p /var/lib/kiln/config.d; printf 'ssh_authorized_keys: [github:kiln-unreachable-user]\\nkiln: {data_sources: [ec2]}\\n' > /var/lib/kiln/config.d/unreachable.yaml; sync; reboot");
      const t0 = node.vm.elapsed();
      await node.vm.waitFor(ANY_READY, BOOT_TIMEOUT * 2, from + 1);
      const readyS = node.vm.elapsed() - t0;
      const sshOk = await ssh(node.port, r.me.key, 'echo in', 10).then((o) => o.includes('in'), () => false);
      await ssh(node.port, r.me.key, 'rm -f /var/lib/kiln/config.d/unreachable.yaml; sync').catch(() => undefined);
      report({
        fault: 'GitHub keys and the EC2 datasource unreachable', step: 'boot', where: 'QEMU',
        outcome: `ready; SSH with the local key ${sshOk ? 'works' : 'FAILS'}`,
        slot: /slot=([ab])/.exec(node.vm.output.slice(from))?.[1] ?? '?', dataIntact: await precious(node.port, r.me.key), recoverS: readyS,
      });
    }
    await node.vm.kill();
    if (cells.includes('panic')) await corruptNewSlot(report);
  } finally { await closeRig(r); }
}

/** An update whose root goes bad after staging: stage 1 cannot mount it, the kernel panics, the loader falls back. */
async function corruptNewSlot(report: Report) {
  // A window twelve hours away holds the reboot, so the slot can be damaged before it boots.
  const h = String((new Date().getUTCHours() + 12) % 24).padStart(2, '0');
  const r = await rig(`, window: '${h}:00-${h}:30'`);
  try {
    const node = await powerOn(r, readyRe('1.0.0', 'a'));
    await node.vm.waitFor(/kiln: blessed slot a/, 120_000);
    await ssh(node.port, r.me.key, 'echo precious > /var/lib/kiln/precious; sync');
    const from = node.vm.output.length;
    await ssh(node.port, r.me.key, 'kiln upgrade', 1).catch(() => undefined);
    await node.vm.waitFor(/kiln: update: 1\.1\.0 staged in slot b/, 300_000, from);
    await ssh(node.port, r.me.key, 'u=$(grep -l PARTNAME=kiln-root-b /sys/class/block/*/uevent | head -1); u=${u%/uevent}; dd if=/dev/zero of=/dev/${u##*/} bs=1M count=8 conv=fsync 2>/dev/null; reboot');
    const t0 = node.vm.elapsed();
    const m = await node.vm.waitFor(/kiln: ready version=\S+ slot=[ab]/, BOOT_TIMEOUT * 4, from + 1);
    const rm = /version=(\S+) slot=([ab])/.exec(m[0])!;
    // Tries end in stage 1's refusal or in dm-verity's reboot: count the attempts.
    const tries = (node.vm.output.slice(from).match(/kiln-stage1: slot b \(boot entry/g) ?? []).length;
    const note = await node.vm.waitFor(/kiln: (update to 1\.1\.0 failed[^\r\n]*)/, 120_000, from).then((x) => x[1]!, () => 'no report');
    report({
      fault: 'new slot panics at boot (root corrupted after staging)', step: `boot of slot b (${tries} tries)`, where: 'QEMU',
      outcome: note.slice(0, 110), slot: `${rm[2]} (${rm[1]})`, dataIntact: await precious(node.port, r.me.key), recoverS: node.vm.elapsed() - t0,
    });
    await node.vm.kill();
  } finally { await closeRig(r); }
}

/** k3s that never turns healthy on the new slot: judged by the real updater against a loopback channel (a VM would wait the 10-minute health deadline). */
export async function k3sNeverHealthy(report: Report) {
  const { world } = await import('../unit/updater-harness.ts');
  const w = await world();
  try {
    await w.publish('2.0.0');
    const u1 = w.updater();
    const a = await u1.apply();
    if (!a.ok) throw new Error(`staging failed: ${a.message}`);
    const t0 = performance.now();
    const u2 = w.updater({ currentVersion: '2.0.0', bootedSlot: 'b', bootId: 'boot-2' });
    const res = await u2.afterBoot(async () => false, 200);
    report({
      fault: 'k3s never healthy on the new slot', step: 'post-boot health check', where: 'updater + loopback channel',
      outcome: `${res.outcome}: ESP now ${w.entries().join(' ')}, reboots requested ${w.reboots}`, slot: 'a after the reboot (b demoted)', dataIntact: null,
      recoverS: (performance.now() - t0) / 1000,
    });
  } finally { await w.close(); }
}

export function formatTable(rows: FaultRow[]): string {
  const head = ['fault', 'step', 'outcome', 'slot booted', 'data intact', 'recover (s)', 'how'];
  const cells = rows.map((r) => [r.fault, r.step, r.outcome, r.slot, r.dataIntact === null ? '-' : r.dataIntact ? 'yes' : 'NO', r.recoverS === null ? '-' : r.recoverS.toFixed(1), r.where]);
  const esc = (s: string) => s.replace(/\|/g, '\\|').replace(/[\r\n]+/g, ' ');
  return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...cells.map((c) => `| ${c.map(esc).join(' | ')} |`)].join('\n');
}

