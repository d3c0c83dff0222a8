// The hybrid ISO end to end. UEFI (OVMF): boot the ISO with a blank disk and an unattended
// CIDATA config, let it install and power off, then boot the disk alone: the installed node
// reaches ready on slot a with the config it was installed with. BIOS (SeaBIOS): the live
// system installs without powering off, still reaches ready itself, and the disk it wrote
// has the kiln layout, the boot entry and the config.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Vm } from '../../builder/qemu.ts';
import { blankDisk, cidataImage, dataPartitionFile, gptNames } from './helpers.ts';
import { BOOT_TIMEOUT, espList, READY, TEST_VERSION, testImage, testIso } from './image.ts';

let iso = '';
const MiB = 1024 * 1024;

test.before(async () => {
  await testImage('x86_64'); // sets up the KVM probe kernel
  const t0 = Date.now();
  const r = await testIso('x86_64');
  iso = r.iso;
  console.log(`# ISO ${iso}: ${(r.size / MiB).toFixed(1)} MiB (build/check ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
});

function userData(host: string, install: string): string {
  return `#cloud-config
hostname: ${host}
run_cmd:
  - 'echo "iso-e2e hostname=$(hostname) live=$(grep -c kiln.live /proc/cmdline)" > /dev/console'
kiln:
  install:
${install}`;
}

test('UEFI: the ISO installs itself to a blank disk, powers off, and the disk boots with the config', async () => {
  const disk = blankDisk(2048);
  const cidata = await cidataImage(userData('iso-uefi', '    device: /dev/vda\n    silent: true\n    power_off: true\n'));
  const vm = await Vm.start({ arch: 'x86_64', disk, format: 'raw', memMiB: 512, cdrom: iso, extraDrives: [`file=${cidata},format=raw,if=virtio,readonly=on`], allowReboot: false });
  try {
    await vm.waitFor(/kiln-stage1: live: root image from \/dev\/sr0/, BOOT_TIMEOUT);
    const live = vm.elapsed();
    const m = await vm.waitFor(/kiln: installed kiln (\S+) to \/dev\/vda in (\d+) s/, BOOT_TIMEOUT);
    assert.is(m[1], TEST_VERSION);
    console.log(`# UEFI: live root mounted at ${live.toFixed(1)} s, installed at ${vm.elapsed().toFixed(1)} s (install ${m[2]} s)`);
    assert.ok(await vm.exited(120_000), `power_off: QEMU should exit; last output:\n${vm.output.slice(-2000)}`);
  } finally { await vm.kill(); }
  assert.equal(gptNames(disk), ['esp', 'kiln-root-a', 'kiln-root-b', 'kiln-data']);
  assert.ok((await espList(disk, 'EFI/Linux')).includes('kiln-a+3.efi'));

  // The disk alone: no ISO, no CIDATA. The host name can only come from the installed config.
  const vm2 = await Vm.start({ arch: 'x86_64', disk, format: 'raw', memMiB: 384 });
  try {
    const r = await vm2.waitFor(READY, BOOT_TIMEOUT);
    assert.is(r[2], 'a');
    assert.is(r[1], TEST_VERSION);
    await vm2.waitFor(/iso-e2e hostname=iso-uefi live=0/, 60_000);
    console.log(`# UEFI: installed disk ready at ${vm2.elapsed().toFixed(1)} s`);
  } finally { await vm2.kill(); }
});

test('BIOS: the live system boots under SeaBIOS, installs, and reaches ready itself', async () => {
  const disk = blankDisk(1536);
  const cidata = await cidataImage(userData('iso-bios', '    device: /dev/vda\n    force_efi: true\n'));
  const vm = await Vm.start({ arch: 'x86_64', disk, format: 'raw', memMiB: 512, cdrom: iso, firmware: 'bios', extraDrives: [`file=${cidata},format=raw,if=virtio,readonly=on`], allowReboot: false });
  try {
    await vm.waitFor(/kiln-stage1: live: root image from \/dev\/sr0/, BOOT_TIMEOUT);
    await vm.waitFor(/kiln-stage1: live: data on tmpfs/, 10_000);
    await vm.waitFor(/kiln: installed kiln \S+ to \/dev\/vda/, BOOT_TIMEOUT);
    const r = await vm.waitFor(READY, BOOT_TIMEOUT);
    assert.is(r[2], 'a');
    await vm.waitFor(/iso-e2e hostname=iso-bios live=1/, 60_000);
    console.log(`# BIOS: live system ready at ${vm.elapsed().toFixed(1)} s`);
    await vm.qmp('system_powerdown');
    assert.ok(await vm.exited(120_000), 'the live system should power off on the power button');
  } finally { await vm.kill(); }
  assert.equal(gptNames(disk), ['esp', 'kiln-root-a', 'kiln-root-b', 'kiln-data']);
  assert.ok((await espList(disk, 'EFI/Linux')).includes('kiln-a+3.efi'));
  // The installed config, read from the new ext4 data partition.
  const cfg = await dataPartitionFile(disk, '/overlay/var/upper/lib/kiln/config.yaml');
  assert.match(cfg, /hostname: iso-bios/);
  assert.not.match(cfg, /install:/, 'the install section stays on the ISO');
});

test.run();
