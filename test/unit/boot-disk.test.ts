// Partitions come from the disk that booted: a second disk with the same kiln-* labels (or
// the same MBR signature) never supplies the root, the data or the ESP, nor receives an update.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bootDisk, partitionByLabel, rootIsShared } from '../../init/system.ts';
import { ESP_MOUNT, ESP_OPTIONS } from '../../init/boot.ts';
import { partitionBySpec, siblingPartition } from '../../init/bootctl/devices.ts';
import { labelCandidates } from '../../init/configure.ts';
import { buildMbr } from '../../init/disk/mbr.ts';
import { buildGpt, GPT_TYPES, guidToBytes, randomGuid, stableGuid } from '../../init/disk/gpt.ts';
import { layoutFor } from '../../init/disk/layout.ts';

const LABELS = ['esp', 'kiln-root-a', 'kiln-root-b', 'kiln-data'];

/** A fake /sys (and /dev) with two disks holding the same four labelled partitions. */
function fakeSys(disks: { name: string; major: number; sig?: number; espGuid?: string }[]) {
  const root = mkdtempSync(join(tmpdir(), 'kiln-sys-'));
  const cls = join(root, 'class/block'), devBlock = join(root, 'dev/block'), dev = join(root, 'devnodes'), block = join(root, 'block');
  for (const d of [cls, devBlock, dev, block]) mkdirSync(d, { recursive: true });
  for (const { name, major, sig, espGuid } of disks) {
    const d = join(root, 'devices/pci0', name);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'uevent'), `MAJOR=${major}\nMINOR=0\nDEVNAME=${name}\nDEVTYPE=disk\n`);
    symlinkSync(d, join(cls, name));
    symlinkSync(d, join(block, name));
    symlinkSync(d, join(devBlock, `${major}:0`));
    // The disk's first sectors: an MBR with a signature, or a GPT whose ESP has `espGuid`.
    const size = 64 * 1024 * 1024;
    const gpt = () => buildGpt({ diskSizeBytes: size, diskGuid: randomGuid(), partitions: layoutFor('x86_64', size, 8, 8).map((p, i) => ({ ...p, guid: i === 0 ? espGuid! : randomGuid() })) }).primary;
    writeFileSync(join(dev, name), espGuid ? gpt() : sig === undefined ? Buffer.alloc(512) : buildMbr({ diskSignature: sig, partitions: [{ type: 0x0c, startLba: 2048, sectors: 100 }] }));
    LABELS.forEach((label, i) => {
      const p = /\d$/.test(name) ? `${name}p${i + 1}` : `${name}${i + 1}`;
      mkdirSync(join(d, p));
      writeFileSync(join(d, p, 'uevent'), `MAJOR=${major}\nMINOR=${i + 1}\nDEVNAME=${p}\nDEVTYPE=partition\nPARTN=${i + 1}\nPARTNAME=${label}\n`);
      writeFileSync(join(d, p, 'partition'), `${i + 1}\n`);
      symlinkSync(join(d, p), join(cls, p));
      symlinkSync(join(d, p), join(devBlock, `${major}:${i + 1}`));
      writeFileSync(join(dev, p), '');
    });
  }
  return { root, cls, dev };
}

/** /proc/self/mountinfo of a node whose root is MAJ:MIN (stacked on the initramfs's rootfs). */
const mountinfo = (majmin: string) => [
  '1 1 0:2 / / rw - rootfs rootfs rw',
  `22 1 ${majmin} / / ro,relatime shared:1 - squashfs /dev/x ro`,
  '23 22 0:21 / /proc rw - proc proc rw',
  '',
].join('\n');

test('bootDisk: the disk of the partition mounted on /', () => {
  const s = fakeSys([{ name: 'sda', major: 8 }, { name: 'vda', major: 254 }]);
  assert.is(bootDisk(s.root, mountinfo('254:2')), 'vda');
  assert.is(bootDisk(s.root, mountinfo('8:3')), 'sda');
  assert.is(bootDisk(s.root, mountinfo('7:0')), undefined, 'a loop root (the live ISO) has no boot disk');
  assert.is(bootDisk(s.root, ''), undefined);
});

/** A device-mapper device (dm-verity's root) in the fake /sys, stacked on these partitions. */
function fakeDm(s: ReturnType<typeof fakeSys>, name: string, minor: number, slaves: string[]) {
  const d = join(s.root, 'devices/virtual/block', name);
  mkdirSync(join(d, 'slaves'), { recursive: true });
  writeFileSync(join(d, 'uevent'), `MAJOR=253\nMINOR=${minor}\nDEVNAME=${name}\nDEVTYPE=disk\n`);
  for (const p of slaves) symlinkSync(join(s.cls, p), join(d, 'slaves', p));
  symlinkSync(d, join(s.cls, name));
  symlinkSync(d, join(s.root, 'dev/block', `253:${minor}`));
}

test('bootDisk: a verified root (dm-verity over a partition) is on that partition\'s disk', () => {
  // The verified root is /dev/dm-0: its disk is the one under it, so a second kiln disk's ESP
  // is never taken for this one's (which left the ESP unmounted and the slot unblessed).
  const s = fakeSys([{ name: 'sda', major: 8 }, { name: 'vda', major: 254 }]);
  fakeDm(s, 'dm-0', 0, ['vda2']);
  assert.is(bootDisk(s.root, mountinfo('253:0')), 'vda');
  assert.is(partitionByLabel('esp', s.root, mountinfo('253:0')), 'vda1');
  assert.is(partitionByLabel('kiln-root-b', s.root, mountinfo('253:0')), 'vda3');
  // Stacked twice (verity over another mapping) still leads to the disk.
  fakeDm(s, 'dm-1', 1, ['dm-0']);
  assert.is(bootDisk(s.root, mountinfo('253:1')), 'vda');
  // A mapping over two disks has no one boot disk: no answer rather than a guess.
  fakeDm(s, 'dm-2', 2, ['vda2', 'sda2']);
  assert.is(bootDisk(s.root, mountinfo('253:2')), undefined);
  assert.is(partitionByLabel('esp', s.root, mountinfo('253:2')), undefined);
});

test('partitionByLabel: a second disk with the same labels is never picked', () => {
  // sda sorts first: the old lookup took its kiln-root-b, which an update would overwrite.
  const s = fakeSys([{ name: 'sda', major: 8 }, { name: 'vda', major: 254 }]);
  const booted = mountinfo('254:2');
  for (const [i, label] of LABELS.entries()) assert.is(partitionByLabel(label, s.root, booted), `vda${i + 1}`, label);
  assert.is(partitionByLabel('kiln-root-b', s.root, mountinfo('8:2')), 'sda3');
  // Boot disk unknown: two candidates, no answer (rather than a guess).
  assert.is(partitionByLabel('kiln-root-b', s.root, ''), undefined);
  const one = fakeSys([{ name: 'vda', major: 254 }]);
  assert.is(partitionByLabel('kiln-data', one.root, ''), 'vda4', 'a single disk is found without knowing the boot disk');
  assert.is(partitionByLabel('nope', one.root, mountinfo('254:2')), undefined);
});

test('config volumes are looked for beside the boot disk, not on kiln\'s own partitions', () => {
  const s = fakeSys([{ name: 'sda', major: 8 }, { name: 'vda', major: 254 }]);
  fakeDm(s, 'dm-0', 0, ['vda2']);
  // A partition someone added to the boot disk, and a CD drive.
  const extra = join(s.root, 'devices/pci0/vda/vda5');
  mkdirSync(extra);
  writeFileSync(join(extra, 'uevent'), 'MAJOR=254\nMINOR=5\nDEVNAME=vda5\nDEVTYPE=partition\nPARTN=5\nPARTNAME=cidata\n');
  symlinkSync(extra, join(s.cls, 'vda5'));
  mkdirSync(join(s.root, 'devices/pci0/sr0'));
  writeFileSync(join(s.root, 'devices/pci0/sr0/uevent'), 'MAJOR=11\nMINOR=0\nDEVNAME=sr0\nDEVTYPE=disk\n');
  symlinkSync(join(s.root, 'devices/pci0/sr0'), join(s.cls, 'sr0'));
  const disk = bootDisk(s.root, mountinfo('253:0'));
  assert.is(disk, 'vda');
  // sda carries kiln's labels too, but it is not the boot disk: it may be anything, so it is probed.
  assert.equal(labelCandidates(s.cls, disk), ['/dev/sda', '/dev/sda1', '/dev/sda2', '/dev/sda3', '/dev/sda4', '/dev/sr0', '/dev/vda5']);
  // No boot disk known (the live ISO): everything but device-mapper, loop and RAM devices.
  assert.equal(labelCandidates(s.cls, undefined), ['/dev/sda', '/dev/sda1', '/dev/sda2', '/dev/sda3', '/dev/sda4', '/dev/sr0', '/dev/vda', '/dev/vda1', '/dev/vda2', '/dev/vda3', '/dev/vda4', '/dev/vda5']);
});

test('partitionBySpec: the same MBR signature on a second card is ignored', () => {
  const s = fakeSys([{ name: 'mmcblk0', major: 179, sig: 0x1f65ff1b }, { name: 'mmcblk1', major: 180, sig: 0x1f65ff1b }]);
  assert.is(partitionBySpec('PARTUUID=1f65ff1b-04', s.cls, s.dev, mountinfo('180:2')), 'mmcblk1p4');
  assert.is(partitionBySpec('PARTUUID=1f65ff1b-01', s.cls, s.dev, mountinfo('179:2')), 'mmcblk0p1');
  assert.is(partitionBySpec('PARTUUID=1f65ff1b-04', s.cls, s.dev, ''), undefined, 'ambiguous without a boot disk');
  assert.is(partitionBySpec(`/dev/mmcblk0p4`, s.cls, s.dev, mountinfo('180:2')), undefined, 'a named partition on another disk');
  assert.is(partitionBySpec(`/dev/mmcblk1p4`, s.cls, s.dev, mountinfo('180:2')), 'mmcblk1p4');
  assert.is(siblingPartition(partitionBySpec('PARTUUID=1f65ff1b-01', s.cls, s.dev, mountinfo('180:2'))!, 3, s.cls), 'mmcblk1p3');
});

test('stage 1: its GPT GUID conversion agrees with init/disk/gpt.ts', () => {
  // Stage 1 compares LoaderDevicePartUUID with each ESP's unique GUID read raw from the disk.
  for (const guid of [GPT_TYPES.esp, randomUUID().toUpperCase(), stableGuid('x')]) {
    const s = fakeSys([{ name: 'vda', major: 254, espGuid: guid }]);
    assert.is(stage1(s, 'partuuid vda1; echo "$U_GUID"'), guid.toLowerCase());
  }
  const script = readFileSync(join(import.meta.dirname, '../../builder/stage1/init.sh'), 'utf8');
  assert.match(script, /two disks hold the ESP this machine booted from/);
});

/** Runs stage 1's partition helpers in busybox sh against a fake /sys and /dev. */
function stage1(s: ReturnType<typeof fakeSys>, call: string, env: Record<string, string> = {}): string {
  const script = readFileSync(join(import.meta.dirname, '../../builder/stage1/init.sh'), 'utf8');
  const defs = script.slice(script.indexOf('uevent() {'), script.indexOf('# The driver the kernel picks'))
    .replaceAll('/sys/', '$S/').replaceAll('"/dev/', '"$D/');
  assert.ok(['partdev', 'espdisk', 'partuuid', 'specdev', 'diskof', 'lower'].every((f) => defs.includes(`${f}() {`)), 'stage 1 defines its partition helpers');
  const r = spawnSync('busybox', ['sh', '-c', `${defs}\n${call}`], { env: { PATH: process.env.PATH, S: s.root, D: s.dev, BOOTDISK: '', ESPUUID: '', ...env }, encoding: 'utf8' });
  assert.is(r.status, 0, r.stderr);
  return r.stdout.trim();
}

test('random GUIDs are version 4 (RFC 9562 variant), upper case, and do not repeat', () => {
  const seen = new Set<string>();
  for (let i = 0; i < 2000; i++) {
    const g = randomGuid();
    assert.match(g, /^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$/);
    seen.add(g);
  }
  assert.is(seen.size, 2000);
  assert.is(guidToBytes(randomGuid()).length, 16);
});

test('stage 1: the root comes from the disk whose ESP the firmware booted, never from a copy', () => {
  const mine = randomGuid(), theirs = randomGuid();
  // sda sorts before vda: the old lookup took sda's kiln-root-a.
  const s = fakeSys([{ name: 'sda', major: 8, espGuid: theirs }, { name: 'vda', major: 254, espGuid: mine }]);
  assert.is(stage1(s, 'partuuid vda1; echo "$U_GUID"'), mine.toLowerCase());
  assert.is(stage1(s, 'espdisk; echo "$U_FOUND"', { ESPUUID: mine.toLowerCase() }), 'vda');
  assert.is(stage1(s, 'espdisk; echo "$U_FOUND"', { ESPUUID: theirs.toLowerCase() }), 'sda');
  assert.is(stage1(s, 'partdev kiln-root-a; echo "$U_FOUND"', { BOOTDISK: 'vda' }), 'vda2');
  assert.is(stage1(s, 'partdev kiln-data; echo "$U_FOUND"', { BOOTDISK: 'vda' }), 'vda4');
  assert.is(stage1(s, 'partdev kiln-root-a; echo "$U_FOUND"'), '!', 'no boot disk known and two candidates: no guess');
  // Two disks holding the very ESP that booted (the same image written twice): refused.
  const twins = fakeSys([{ name: 'sda', major: 8, espGuid: mine }, { name: 'vda', major: 254, espGuid: mine }]);
  assert.is(stage1(twins, 'espdisk; echo "$U_FOUND"', { ESPUUID: mine.toLowerCase() }), '!');
  assert.is(stage1(twins, 'espdisk; echo "$U_FOUND"', { ESPUUID: randomGuid().toLowerCase() }), '', 'an ESP on no disk');
  const one = fakeSys([{ name: 'vda', major: 254, espGuid: mine }]);
  assert.is(stage1(one, 'partdev kiln-root-b; echo "$U_FOUND"'), 'vda3', 'one disk: found without an anchor');
});

test('stage 1: kiln.root=PARTUUID= is found on the boot disk only, whatever the case of its hex', () => {
  const s = fakeSys([{ name: 'mmcblk0', major: 179, sig: 0x1f65ff1b }, { name: 'mmcblk1', major: 180, sig: 0x1f65ff1b }]);
  const spec = (v: string, env: Record<string, string> = {}) => stage1(s, `specdev '${v}'; echo "$U_FOUND"`, env);
  assert.is(spec('PARTUUID=1F65FF1B-02', { BOOTDISK: 'mmcblk1' }), 'mmcblk1p2');
  assert.is(spec('PARTUUID=1f65ff1b-04', { BOOTDISK: 'mmcblk0' }), 'mmcblk0p4');
  assert.is(spec('PARTUUID=1f65ff1b-02'), '!', 'two cards with one signature and no boot disk: no guess');
  assert.is(spec('PARTUUID=1f65ff1c-02', { BOOTDISK: 'mmcblk1' }), '', 'another signature');
  assert.is(spec('PARTUUID=1f65ff1b-05', { BOOTDISK: 'mmcblk1' }), '', 'no fifth partition');
});

test('stage 1 mounts the ESP as init finds it: the boot disk\'s esp, else kiln.boot=, and not on the live system', () => {
  const script = readFileSync(join(import.meta.dirname, '../../builder/stage1/init.sh'), 'utf8');
  const block = script.slice(script.indexOf('# The ESP, found as init finds it'), script.indexOf('argv FLOOR kiln.floor'));
  assert.ok(script.includes(`chroot /newroot /bin/mount -t vfat -o ${ESP_OPTIONS} "/dev/$ESP" ${ESP_MOUNT} `), 'stage 1 mounts the ESP where init does, with its options');
  const argv = script.split('\n').find((l) => l.startsWith('argv() {'))!;
  const esp = (s: ReturnType<typeof fakeSys>, env: Record<string, string>) =>
    stage1(s, `${argv}\n${block}\necho "$ESP"`, { CMDLINE: '', LIVE: '', ...env });
  const two = fakeSys([{ name: 'sda', major: 8 }, { name: 'vda', major: 254 }]);
  assert.is(esp(two, { BOOTDISK: 'vda' }), 'vda1');
  assert.is(esp(two, { BOOTDISK: 'sda' }), 'sda1');
  assert.is(esp(two, {}), '', 'two disks with an esp and no boot disk: left to init, which says so');
  assert.is(esp(two, { BOOTDISK: 'vda', LIVE: 'KILN' }), '', 'the live system has no ESP');
  // The Pi's MBR card has no partition names: its boot script passes kiln.boot=.
  const pi = fakeSys([{ name: 'mmcblk0', major: 179, sig: 0x1f65ff1b }]);
  for (const d of readdirSync(pi.cls)) {
    const u = join(pi.cls, d, 'uevent');
    writeFileSync(u, readFileSync(u, 'utf8').replace(/^PARTNAME=.*\n/m, ''));
  }
  assert.is(esp(pi, { BOOTDISK: 'mmcblk0', CMDLINE: 'console=ttyAMA0 kiln.boot=PARTUUID=1f65ff1b-01 kiln.slot=a' }), 'mmcblk0p1');
  assert.is(esp(pi, { BOOTDISK: 'mmcblk0', CMDLINE: 'kiln.slot=a' }), '', 'no label and no kiln.boot=: left to init');
});

test('stage 1: command-line values and EFI variables read without a process', () => {
  const script = readFileSync(join(import.meta.dirname, '../../builder/stage1/init.sh'), 'utf8');
  const line = (f: string) => script.split('\n').find((l) => l.startsWith(`${f}() {`))!;
  const d = mkdtempSync(join(tmpdir(), 'kiln-efivar-'));
  writeFileSync(join(d, 'kiln.x=a-file'), '');
  const sh = (body: string, env: Record<string, string> = {}) =>
    spawnSync('busybox', ['sh', '-c', `${line('argv')}\n${line('efivar')}\n${body}`], { cwd: d, env: { PATH: process.env.PATH, ...env }, encoding: 'utf8' }).stdout;
  const CMDLINE = 'console=ttyS0 kiln.slot=b kiln.verity=sha256:9:00ff:ab kiln.slot=a kiln.x=* kiln.empty=';
  assert.is(sh('argv S kiln.slot; argv V kiln.verity; argv N kiln.none; argv E kiln.empty; argv X kiln.x; echo "$S|$V|$N|$E|$X"', { CMDLINE }), 'b|sha256:9:00ff:ab|||*\n',
    'the first of a name wins, a missing one is empty, and a * is not a file name pattern');
  // systemd-boot's variables: 4 attribute bytes (boot service and runtime), then UTF-16LE text.
  const efi = (text: string) => Buffer.concat([Buffer.from([6, 0, 0, 0]), Buffer.from(`${text}\0`, 'utf16le')]);
  writeFileSync(join(d, 'entry'), efi('kiln-b.conf'));
  writeFileSync(join(d, 'uuid'), efi('0FC63DAF-8483-4772-8E79-3D69D8477DE4'));
  assert.is(sh(`efivar ${d}/entry; echo "[$U_VAR]"; efivar ${d}/uuid; echo "[$U_VAR]"; efivar ${d}/none; echo "[$U_VAR]"`),
    '[kiln-b.conf]\n[0FC63DAF-8483-4772-8E79-3D69D8477DE4]\n[]\n');
});

test('rootIsShared: the root mount in use, its optional fields only', () => {
  assert.ok(rootIsShared(mountinfo('254:2')), 'stage 1 made the root shared');
  assert.not.ok(rootIsShared(mountinfo('254:2').replace(' shared:1', '')), 'a private root is made shared by init');
  assert.not.ok(rootIsShared('1 1 0:2 / / rw - rootfs shared:3 rw\n'), 'a source named like the field is not the field');
  assert.not.ok(rootIsShared(''));
});

test.run();
