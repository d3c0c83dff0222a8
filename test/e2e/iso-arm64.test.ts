// The arm64 ISO end to end (UEFI only: AAVMF). The ISO, in a virtio-scsi CD drive (what
// `kiln run` gives it), boots systemd-boot from its El Torito EFI image into the live system,
// which installs itself to a blank disk from an unattended CIDATA config and powers off; then
// the disk alone boots to ready on slot a with the config it was installed with.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Vm } from '../../builder/qemu.ts';
import { blankDisk, cidataImage, gptNames } from './helpers.ts';
import { BOOT_TIMEOUT, espList, READY, TEST_VERSION, testIso } from './image.ts';

let iso = '';
const MiB = 1024 * 1024;

test.before(async () => {
  const t0 = Date.now();
  const r = await testIso('arm64');
  iso = r.iso;
  console.log(`# ISO ${iso}: ${(r.size / MiB).toFixed(1)} MiB (build/check ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
});

test('UEFI (AAVMF): the ISO boots from CD, installs itself to a blank disk, powers off, and the disk boots with the config', async () => {
  const disk = blankDisk(2048);
  const cidata = await cidataImage(`#cloud-config
hostname: iso-arm64
run_cmd:
  - 'echo "iso-e2e hostname=$(hostname) live=$(grep -c kiln.live /proc/cmdline)" > /dev/console'
kiln:
  install:
    device: /dev/vda
    silent: true
    power_off: true
`);
  const vm = await Vm.start({ arch: 'arm64', disk, format: 'raw', memMiB: 512, cdrom: iso, extraDrives: [`file=${cidata},format=raw,if=virtio,readonly=on`], allowReboot: false });
  try {
    await vm.waitFor(/kiln-stage1: live: root image from \/dev\/sr0/, BOOT_TIMEOUT);
    const live = vm.elapsed();
    await vm.waitFor(/kiln-stage1: live: data on tmpfs/, 10_000);
    const m = await vm.waitFor(/kiln: installed kiln (\S+) to \/dev\/vda in (\d+) s/, BOOT_TIMEOUT);
    assert.is(m[1], TEST_VERSION);
    console.log(`# arm64: live root mounted at ${live.toFixed(1)} s, installed at ${vm.elapsed().toFixed(1)} s (install ${m[2]} s)`);
    assert.ok(await vm.exited(120_000), `power_off: QEMU should exit; last output:\n${vm.output.slice(-2000)}`);
  } finally { await vm.kill(); }
  assert.equal(gptNames(disk), ['esp', 'kiln-root-a', 'kiln-root-b', 'kiln-data']);
  assert.ok((await espList(disk, 'EFI/Linux')).includes('kiln-a+3.efi'));
  assert.ok((await espList(disk, 'EFI/BOOT')).includes('BOOTAA64.EFI'));

  // The disk alone: no ISO, no CIDATA. The host name can only come from the installed config.
  const vm2 = await Vm.start({ arch: 'arm64', disk, format: 'raw', memMiB: 384 });
  try {
    const r = await vm2.waitFor(READY, BOOT_TIMEOUT);
    assert.is(r[1], TEST_VERSION);
    assert.is(r[2], 'a');
    assert.is(r[3], 'arm64');
    await vm2.waitFor(/iso-e2e hostname=iso-arm64 live=0/, 60_000);
    console.log(`# arm64: installed disk ready at ${vm2.elapsed().toFixed(1)} s`);
  } finally { await vm2.kill(); }
});

test.run();
