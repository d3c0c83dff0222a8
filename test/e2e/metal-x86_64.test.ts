// The hardware ISO (images/metal.yaml: Debian's generic kernel, drivers by modalias) on
// machines built from real devices instead of virtio, the ISO written to a USB stick behind
// xHCI and the RTC in 2001. The live system finds its stick, installs unattended with
// kiln.install.device: auto (the stick is the boot medium, the CIDATA disk is read-only: the
// target is the only candidate) and powers off; then the target boots alone to ready with a
// DHCP lease through e1000e.
// 1. q35 with OVMF, an AHCI SATA target.
// 2. q35 with SeaBIOS booting the stick (GRUB's hybrid MBR and El Torito BIOS image), an NVMe
//    target. The installed disk is GPT + ESP + systemd-boot, UEFI only (install.ts refuses a
//    BIOS-booted install without force_efi), so the NVMe disk then boots with OVMF.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Vm } from '../../builder/qemu.ts';
import { blankDisk, cidataImage, dataPartitionFile, gptNames } from './helpers.ts';
import { BOOT_TIMEOUT, READY, TEST_VERSION, testMetalIso } from './image.ts';

const MiB = 1024 * 1024;
const stickArgs = (stick: string) => ['-device', 'qemu-xhci', '-drive', `if=none,id=stick,format=raw,readonly=on,file=${stick}`, '-device', 'usb-storage,drive=stick,bootindex=0'];
const machine = (sata: string, stick?: string) => [
  '-device', 'ahci,id=ahci', '-drive', `if=none,id=d0,format=raw,file=${sata}`, '-device', 'ide-hd,drive=d0,bus=ahci.0,bootindex=1',
  ...(stick ? stickArgs(stick) : []),
  '-rtc', 'base=2001-01-01',
];
const nvmeArgs = (disk: string) => ['-drive', `if=none,id=nv0,format=raw,file=${disk}`, '-device', 'nvme,drive=nv0,serial=kiln-e2e-nvme,bootindex=1', '-rtc', 'base=2001-01-01'];
const installConfig = (extra = '') => `#cloud-config\nhostname: metal\nkiln:\n  install:\n    device: auto\n    silent: true\n    power_off: true\n${extra}`;

let metal: Awaited<ReturnType<typeof testMetalIso>>;
test.before(async () => {
  const t0 = Date.now();
  metal = await testMetalIso('x86_64');
  console.log(`# metal ISO ${(metal.size / MiB).toFixed(1)} MiB, kernel ${metal.rec.kernel.x86_64} (build/check ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
});

test('metal x86_64: USB stick -> unattended install (device: auto) onto AHCI -> the SATA disk boots alone with e1000e', async () => {
  const sata = blankDisk(2048);
  const cidata = await cidataImage(installConfig());
  const vm = await Vm.start({ arch: 'x86_64', disk: sata, virtioDisk: false, nic: 'e1000e', memMiB: 768, allowReboot: false,
    extraDrives: [`file=${cidata},format=raw,if=virtio,readonly=on`], extraArgs: machine(sata, metal.iso) });
  try {
    await vm.waitFor(/kiln-stage1: live: root image from \/dev\/sd[a-z]/, BOOT_TIMEOUT);
    await vm.waitFor(/kiln: install: kiln.install.device: auto chose \/dev\/sd[a-z]/, BOOT_TIMEOUT);
    await vm.waitFor(/kiln: installed kiln \S+ to \/dev\/sd[a-z] in \d+ s/, BOOT_TIMEOUT);
    assert.ok(await vm.exited(120_000), `power_off: QEMU should exit; last output:\n${vm.output.slice(-2000)}`);
  } finally { await vm.kill(); }
  assert.equal(gptNames(sata), ['esp', 'kiln-root-a', 'kiln-root-b', 'kiln-data']);

  // The SATA disk alone: stage 1 must load ahci by modalias to find its root, init e1000e.
  // Two USB keyboards behind xHCI: with the PS/2 keyboard and the ACPI button, four input devices
  // that have a power key, each watched by init (a blocking read each would take all four of
  // libuv's threads, and init's next file read would never end).
  const keyboards = ['-device', 'qemu-xhci,id=kbdhc', '-device', 'usb-kbd,bus=kbdhc.0', '-device', 'usb-kbd,bus=kbdhc.0'];
  const vm2 = await Vm.start({ arch: 'x86_64', disk: sata, virtioDisk: false, nic: 'e1000e', memMiB: 512, allowReboot: false, extraArgs: [...machine(sata), ...keyboards] });
  try {
    await vm2.waitFor(/kiln-stage1: root \/dev\/sd[a-z]\d+ verified by dm-verity \(root hash [0-9a-f]{16}\.\.\., sha256 by sha256-\w+\)/, BOOT_TIMEOUT);
    await vm2.waitFor(/kiln: coldplug: loading [^\n]*\be1000e\b/, BOOT_TIMEOUT);
    await vm2.waitFor(/kiln: network eth\d+ 10\.0\.2\.15\//, BOOT_TIMEOUT);
    const r = await vm2.waitFor(READY, BOOT_TIMEOUT);
    assert.is(r[1], TEST_VERSION);
    assert.is(r[2], 'a');
    console.log(`# metal: installed SATA disk ready at ${vm2.elapsed().toFixed(1)} s`);
    await vm2.qmp('system_powerdown');
    assert.ok(await vm2.exited(120_000), `the power button should power the node off; last output:\n${vm2.output.slice(-2000)}`);
  } finally { await vm2.kill(); }
  // Which input devices init watched (init.log on the data partition).
  const log = await dataPartitionFile(sata, '/overlay/var/upper/log/kiln/init.log');
  // At boot's scan, or when hotplug brought them a moment later ("power button: also ...").
  const watched = [...new Set(log.split('\n').filter((l) => / power button: /.test(l)).flatMap((l) => l.match(/event\d+ \([^)]*\)/g) ?? []))];
  console.log(`# metal: power keys watched: ${watched.join(', ')}`);
  assert.ok(watched.length >= 4, `init should watch four devices with a power key; init.log says: ${watched.join(', ')}`);
  // The ESP on the SATA disk, mounted by stage 1 (vfat among the modules it loads), which init found.
  assert.match(log, /data\/esp: esp on \/dev\/sd[a-z]1 \(mounted by stage 1\)/);
});

test('metal x86_64: SeaBIOS boots the USB stick -> unattended install (device: auto) onto NVMe -> the NVMe disk boots alone under OVMF', async () => {
  const nvme = blankDisk(2048);
  // force_efi: the install runs under BIOS, the disk it writes boots with UEFI (header).
  const cidata = await cidataImage(installConfig('    force_efi: true\n'));
  const vm = await Vm.start({ arch: 'x86_64', firmware: 'bios', disk: nvme, virtioDisk: false, nic: 'e1000e', memMiB: 768, allowReboot: false,
    extraDrives: [`file=${cidata},format=raw,if=virtio,readonly=on`], extraArgs: [...stickArgs(metal.iso), ...nvmeArgs(nvme)] });
  try {
    await vm.waitFor(/kiln-stage1: live: root image from \/dev\/sd[a-z]/, BOOT_TIMEOUT);
    // SeaBIOS (on the serial port) took the stick as a hard disk: GRUB from the hybrid MBR.
    assert.match(vm.output, /SeaBIOS \(version [^)]*\)[^]*?Booting from Hard Disk[^]*?GRUB loading/);
    await vm.waitFor(/kiln: install: kiln.install.device: auto chose \/dev\/nvme0n1\b/, BOOT_TIMEOUT);
    await vm.waitFor(/kiln: installed kiln \S+ to \/dev\/nvme0n1 in \d+ s/, BOOT_TIMEOUT);
    assert.ok(await vm.exited(120_000), `power_off: QEMU should exit; last output:\n${vm.output.slice(-2000)}`);
    console.log(`# metal SeaBIOS: installed to NVMe at ${vm.elapsed().toFixed(1)} s`);
  } finally { await vm.kill(); }
  assert.equal(gptNames(nvme), ['esp', 'kiln-root-a', 'kiln-root-b', 'kiln-data']);

  // The NVMe disk alone under OVMF: stage 1 must load nvme by modalias to find its root.
  const vm2 = await Vm.start({ arch: 'x86_64', disk: nvme, virtioDisk: false, nic: 'e1000e', memMiB: 512, allowReboot: false, extraArgs: nvmeArgs(nvme) });
  try {
    await vm2.waitFor(/kiln-stage1: root \/dev\/nvme0n1p\d+ verified by dm-verity/, BOOT_TIMEOUT);
    await vm2.waitFor(/kiln: network eth\d+ 10\.0\.2\.15\//, BOOT_TIMEOUT);
    const r = await vm2.waitFor(READY, BOOT_TIMEOUT);
    assert.equal([r[1], r[2]], [TEST_VERSION, 'a']);
    // The RTC says 2001: boot floors the clock at the build time (or later) before ready.
    const c = /kiln: clock set to (\S+) \((build|saved)\)/.exec(vm2.output);
    assert.ok(c, 'the clock floor was applied');
    assert.ok(Date.parse(c![1]!) / 1000 >= metal.rec.sourceDateEpoch, `clock floor ${c![1]} is before the build time`);
    console.log(`# metal: installed NVMe disk ready at ${vm2.elapsed().toFixed(1)} s`);
  } finally { await vm2.kill(); }
});

test.run();
