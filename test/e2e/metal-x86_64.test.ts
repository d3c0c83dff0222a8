// The hardware ISO (images/metal.yaml: Debian's generic kernel, drivers by modalias) on a
// machine built from real devices instead of virtio: q35 with OVMF, the ISO written to a USB
// stick behind xHCI, an AHCI SATA target disk, an e1000e NIC and the RTC in 2001. The live
// system finds its stick, installs unattended with kiln.install.device: auto (the stick is the
// boot medium, the CIDATA disk is read-only: the SATA disk is the only candidate) and powers
// off; then the SATA disk boots alone to ready with a DHCP lease through e1000e.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { build, REPO } from '../../builder/build.ts';
import { createLogger } from '../../builder/log.ts';
import { METAL_PROFILE } from '../../builder/profile.ts';
import { Vm } from '../../builder/qemu.ts';
import { blankDisk, cidataImage, gptNames } from './helpers.ts';
import { BOOT_TIMEOUT, K3S_STANDIN, READY, TEST_VERSION } from './image.ts';

const MiB = 1024 * 1024;
const machine = (sata: string, stick?: string) => [
  '-device', 'ahci,id=ahci', '-drive', `if=none,id=d0,format=raw,file=${sata}`, '-device', 'ide-hd,drive=d0,bus=ahci.0,bootindex=1',
  ...(stick ? ['-device', 'qemu-xhci', '-drive', `if=none,id=stick,format=raw,readonly=on,file=${stick}`, '-device', 'usb-storage,drive=stick,bootindex=0'] : []),
  '-rtc', 'base=2001-01-01',
];

test('metal x86_64: USB stick -> unattended install (device: auto) onto AHCI -> the SATA disk boots alone with e1000e', async () => {
  const out = join(REPO, 'out', 'test-metal');
  const rec = await build({ profile: METAL_PROFILE, arches: ['x86_64'], formats: ['iso'], out, version: TEST_VERSION, k3sBinary: K3S_STANDIN, log: createLogger({ quiet: !process.env.KILN_VERBOSE }) });
  const o = rec.outputs.find((x) => x.kind === 'iso')!;
  console.log(`# metal ISO ${(o.size / MiB).toFixed(1)} MiB, kernel ${rec.kernel.x86_64}`);
  const sata = blankDisk(2048);
  const cidata = await cidataImage('#cloud-config\nhostname: metal\nkiln:\n  install:\n    device: auto\n    silent: true\n    power_off: true\n');
  const vm = await Vm.start({ arch: 'x86_64', disk: sata, virtioDisk: false, nic: 'e1000e', memMiB: 768, allowReboot: false,
    extraDrives: [`file=${cidata},format=raw,if=virtio,readonly=on`], extraArgs: machine(sata, join(out, o.file)) });
  try {
    await vm.waitFor(/kiln-stage1: live: root image from \/dev\/sd[a-z]/, BOOT_TIMEOUT);
    await vm.waitFor(/kiln: install: kiln.install.device: auto chose \/dev\/sd[a-z]/, BOOT_TIMEOUT);
    await vm.waitFor(/kiln: installed kiln \S+ to \/dev\/sd[a-z] in \d+ s/, BOOT_TIMEOUT);
    assert.ok(await vm.exited(120_000), `power_off: QEMU should exit; last output:\n${vm.output.slice(-2000)}`);
  } finally { await vm.kill(); }
  assert.equal(gptNames(sata), ['esp', 'kiln-root-a', 'kiln-root-b', 'kiln-data']);

  // The SATA disk alone: stage 1 must load ahci by modalias to find its root, init e1000e.
  const vm2 = await Vm.start({ arch: 'x86_64', disk: sata, virtioDisk: false, nic: 'e1000e', memMiB: 512, allowReboot: false, extraArgs: machine(sata) });
  try {
    await vm2.waitFor(/kiln-stage1: root \/dev\/sd[a-z]\d+ verified by dm-verity/, BOOT_TIMEOUT);
    await vm2.waitFor(/kiln: coldplug: loading [^\n]*\be1000e\b/, BOOT_TIMEOUT);
    await vm2.waitFor(/kiln: network eth\d+ 10\.0\.2\.15\//, BOOT_TIMEOUT);
    const r = await vm2.waitFor(READY, BOOT_TIMEOUT);
    assert.is(r[1], TEST_VERSION);
    assert.is(r[2], 'a');
    console.log(`# metal: installed SATA disk ready at ${vm2.elapsed().toFixed(1)} s`);
  } finally { await vm2.kill(); }
});

test.run();
