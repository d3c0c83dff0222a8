// The arm64 hardware ISO (images/metal.yaml: Debian's generic arm64 kernel, drivers by
// modalias) on QEMU's virt machine with AAVMF, built from PCI devices a real arm64 server or
// board has instead of virtio block: the ISO written to a USB stick behind xHCI and a blank
// NVMe target. The live system finds its stick, installs unattended with
// kiln.install.device: auto (the stick is the boot medium, the CIDATA disk is read-only: the
// NVMe disk is the only candidate) and powers off; then the NVMe disk boots alone to ready.
// One vCPU under TCG (Vm's default), as little memory as each step needs.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Vm } from '../../builder/qemu.ts';
import { blankDisk, cidataImage, gptNames } from './helpers.ts';
import { BOOT_TIMEOUT, espList, READY, TEST_VERSION, testMetalIso } from './image.ts';

const MiB = 1024 * 1024;
// TCG emulating arm64 on a shared x86 host, with the generic kernel's larger initrd.
const TIMEOUT = 2 * BOOT_TIMEOUT;
const stickArgs = (stick: string) => ['-device', 'qemu-xhci', '-drive', `if=none,id=stick,format=raw,readonly=on,file=${stick}`, '-device', 'usb-storage,drive=stick,bootindex=0'];
const nvmeArgs = (disk: string) => ['-drive', `if=none,id=nv0,format=raw,file=${disk}`, '-device', 'nvme,drive=nv0,serial=kiln-e2e-nvme,bootindex=1'];

test('metal arm64: AAVMF boots the USB stick -> unattended install (device: auto) onto NVMe -> the NVMe disk boots alone', async () => {
  const t0 = Date.now();
  const metal = await testMetalIso('arm64');
  console.log(`# metal arm64 ISO ${(metal.size / MiB).toFixed(1)} MiB, kernel ${metal.rec.kernel.arm64} (build/check ${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  const nvme = blankDisk(2048);
  const cidata = await cidataImage('#cloud-config\nhostname: metal-arm64\nkiln:\n  install:\n    device: auto\n    silent: true\n    power_off: true\n');
  const vm = await Vm.start({ arch: 'arm64', disk: nvme, virtioDisk: false, memMiB: 512, allowReboot: false,
    extraDrives: [`file=${cidata},format=raw,if=virtio,readonly=on`], extraArgs: [...stickArgs(metal.iso), ...nvmeArgs(nvme)] });
  try {
    await vm.waitFor(/kiln-stage1: live: root image from \/dev\/sd[a-z]/, TIMEOUT);
    const live = vm.elapsed();
    assert.match(vm.output, /BdsDxe: starting Boot\d+ "UEFI QEMU QEMU USB HARDDRIVE/, 'AAVMF booted the USB stick');
    await vm.waitFor(/kiln: install: kiln.install.device: auto chose \/dev\/nvme0n1\b/, TIMEOUT);
    const m = await vm.waitFor(/kiln: installed kiln (\S+) to \/dev\/nvme0n1 in (\d+) s/, TIMEOUT);
    assert.is(m[1], TEST_VERSION);
    console.log(`# metal arm64: live root mounted at ${live.toFixed(1)} s, installed at ${vm.elapsed().toFixed(1)} s (install ${m[2]} s)`);
    assert.ok(await vm.exited(120_000), `power_off: QEMU should exit; last output:\n${vm.output.slice(-2000)}`);
  } finally { await vm.kill(); }
  assert.equal(gptNames(nvme), ['esp', 'kiln-root-a', 'kiln-root-b', 'kiln-data']);
  assert.ok((await espList(nvme, 'EFI/BOOT')).includes('BOOTAA64.EFI'));

  // The NVMe disk alone: stage 1 must load nvme by modalias to find its root.
  const vm2 = await Vm.start({ arch: 'arm64', disk: nvme, virtioDisk: false, memMiB: 384, allowReboot: false, extraArgs: nvmeArgs(nvme) });
  try {
    // Stage 1 loaded the NEON SHA-256 before the root was opened: dm-verity uses it, not the C code.
    await vm2.waitFor(/kiln-stage1: root \/dev\/nvme0n1p\d+ verified by dm-verity \(root hash [0-9a-f]{16}\.\.\., sha256 by sha256-arm64\S*\)/, TIMEOUT);
    assert.match(vm2.output, /BdsDxe: starting Boot\d+ "UEFI QEMU NVMe Ctrl/, 'AAVMF booted the NVMe disk');
    const r = await vm2.waitFor(READY, TIMEOUT);
    assert.equal([r[1], r[2], r[3]], [TEST_VERSION, 'a', 'arm64']);
    console.log(`# metal arm64: installed NVMe disk ready at ${vm2.elapsed().toFixed(1)} s`);
  } finally { await vm2.kill(); }
});

test.run();
