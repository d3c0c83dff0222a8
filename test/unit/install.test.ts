// The ISO installer's pure parts (init/install.ts) and the ISO's boot menu (builder/iso.ts).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parse } from 'yaml';
import { grubConfig, isoLabel } from '../../builder/iso.ts';
import { diskLayout, minDiskBytes } from '../../init/disk/layout.ts';
import { parseCmdline } from '../../init/config/merge.ts';
import { installedConfig, isoVolumeId, partitionName, planInstall, type DiskFacts } from '../../init/install.ts';

const MiB = 1024 * 1024;
const manifest = { arch: 'x86_64' as const, espMiB: 192, rootMiB: 320, minDataMiB: 256, rootBytes: 48 * MiB };
const disk = (o: Partial<DiskFacts> = {}): DiskFacts => ({ name: 'vda', sizeBytes: 8192 * MiB, readOnly: false, partitions: [], inUse: [], isMedium: false, ...o });

test('planInstall: the build layout, with kiln-data taking the rest of the disk', () => {
  const parts = planInstall(disk(), manifest, false);
  assert.equal(parts.map((p) => p.name), ['esp', 'kiln-root-a', 'kiln-root-b', 'kiln-data']);
  const built = diskLayout({ arch: 'x86_64', espMiB: 192, rootMiB: 320, dataMiB: 256, seed: 'x' }).parts;
  for (let i = 0; i < 3; i++) assert.equal([parts[i]!.firstLba, parts[i]!.lastLba], [built[i]!.firstLba, built[i]!.lastLba], 'same offsets as kiln build');
  assert.ok(parts[3]!.sizeBytes > 7000 * MiB);
});

test('planInstall: the smallest disk fits, one MiB less is refused with the sizes', () => {
  const min = minDiskBytes(192, 320, 256);
  assert.ok(planInstall(disk({ sizeBytes: min }), manifest, false)[3]!.sizeBytes >= 256 * MiB);
  assert.throws(() => planInstall(disk({ sizeBytes: min - MiB }), manifest, false), /\/dev\/vda is too small: 1089 MiB, kiln needs at least 1090 MiB/);
});

test('planInstall: refuses a mounted, read-only or partitioned disk (unless force) and the live medium', () => {
  assert.throws(() => planInstall(disk({ inUse: ['/dev/vda1 on /data'] }), manifest, true), /in use \(\/dev\/vda1 on \/data\); unmount it first/);
  assert.throws(() => planInstall(disk({ readOnly: true }), manifest, true), /read-only/);
  assert.throws(() => planInstall(disk({ isMedium: true }), manifest, true), /holds the live medium/);
  assert.throws(() => planInstall(disk({ partitions: ['vda1'] }), manifest, false), /already has partitions \(vda1\); set kiln.install.force: true/);
  assert.is(planInstall(disk({ partitions: ['vda1'] }), manifest, true).length, 4);
  assert.throws(() => planInstall(disk(), { ...manifest, rootBytes: 400 * MiB }, false), /larger than a root slot/);
});

test('partitionName: nvme and mmc names take a p', () => {
  assert.is(partitionName('vda', 4), 'vda4');
  assert.is(partitionName('sda', 1), 'sda1');
  assert.is(partitionName('nvme0n1', 4), 'nvme0n1p4');
  assert.is(partitionName('mmcblk0', 2), 'mmcblk0p2');
});

test('installedConfig: merges the live sources, drops the install section, keeps its join settings', () => {
  const r = installedConfig([
    { file: '/usr/lib/kiln/config.yaml', text: 'hostname: from-image\n' },
    { file: 'CIDATA:user-data', text: '#cloud-config\nhostname: n1\nkiln:\n  labels: {a: b}\n  install:\n    device: /dev/vda\n    password: secret\n    power_off: true\n' },
    { file: '/proc/cmdline', text: 'console=ttyS0 kiln.live=KILN_1 kiln.install kiln.channel=beta', kind: 'cmdline' },
  ], [{ file: 'http://x/c.yaml', text: 'ssh_authorized_keys: [github:alice]\n' }]);
  assert.equal(r.problems, []);
  const c = parse(r.text);
  assert.equal(c, { hostname: 'n1', ssh_authorized_keys: ['github:alice'], kiln: { labels: { a: 'b' }, channel: 'beta', password: 'secret' } });
  assert.match(r.text, /^#cloud-config\n# written by kiln install from: /);
});

test('installedConfig: a bad extra source is reported', () => {
  const r = installedConfig([], [{ file: 'http://x/c.yaml', text: 'kiln:\n  no_such_key: 1\n' }]);
  assert.ok(r.problems.length === 1 && r.problems[0]!.includes('no_such_key'), r.problems.join('\n'));
});

test('kernel command line: boot-only parameters are not config keys', () => {
  const r = parseCmdline('kiln.live=KILN_0_1_0 kiln.install kiln.slot=a kiln.stage1=shell kiln.install.device=/dev/sda');
  assert.equal(r.problems, []);
  assert.equal((r.config as any).kiln.install, { device: '/dev/sda' });
});

test('ISO: label and boot menu', () => {
  assert.is(isoLabel('0.1.0-rc.1'), 'KILN_0_1_0_RC_1');
  assert.ok(isoLabel('x'.repeat(40)).length <= 32);
  const cfg = grubConfig({ version: '0.1.0', label: 'KILN_0_1_0', cmdline: 'console=tty0 console=ttyS0 quiet', configUrl: 'http://10.0.0.1/c.yaml' });
  const lines = cfg.split('\n').filter((l) => l.trim().startsWith('linux '));
  assert.is(lines.length, 2);
  assert.ok(lines.every((l) => l.includes('kiln.live=KILN_0_1_0') && l.includes('kiln.config_url=http://10.0.0.1/c.yaml')));
  assert.ok(lines[1]!.trim().endsWith(' kiln.install'));
  assert.match(cfg, /serial --unit=0/);
  assert.throws(() => grubConfig({ version: '1', label: 'K', cmdline: 'a;b' }), /GRUB would interpret/);
});

test('isoVolumeId: reads the primary volume descriptor', () => {
  const pvd = Buffer.alloc(80, 0x20);
  pvd[0] = 1; pvd.write('CD001', 1, 'latin1'); pvd.write('KILN_0_1_0', 40, 'latin1');
  assert.is(isoVolumeId(pvd), 'KILN_0_1_0');
  pvd[0] = 2;
  assert.is(isoVolumeId(pvd), undefined);
});

test.run();
