// x86_64 under OVMF: the default image boots to the ready line, blesses slot A, keeps /var
// across a reboot, and powers off cleanly on the ACPI power button.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Vm } from '../../builder/qemu.ts';
import { join } from 'node:path';
import { BOOT_TIMEOUT, espList, READY, scratchCopy, testImage, TEST_VERSION } from './image.ts';
import { moduleSigned } from './helpers.ts';

let disk = '';
let kernel = '';
let work = '';

test.before(async () => {
  const img = await testImage('x86_64');
  disk = await scratchCopy(img.raw);
  kernel = img.rec.kernel.x86_64;
  work = img.work;
});

test('first boot reaches ready on slot A, gets a DHCP address and blesses the slot', async () => {
  assert.equal(await espList(disk, 'EFI/Linux'), ['kiln-a+3.efi']);
  const vm = await Vm.start({ arch: 'x86_64', disk, memMiB: 256 });
  try {
    const m = await vm.waitFor(READY, BOOT_TIMEOUT);
    assert.is(m[1], TEST_VERSION);
    assert.is(m[2], 'a');
    assert.is(m[3], 'x86_64');
    assert.match(vm.output, new RegExp(`kiln-stage1: started, kernel ${kernel.replace(/[.]/g, '\\.')}`));
    // The slot from systemd-boot's entry, and the root only from the disk whose ESP it booted.
    assert.match(vm.output, /kiln-stage1: slot a \(boot entry kiln-a\+3\.efi\)/);
    assert.match(vm.output, /kiln-stage1: boot disk \/dev\/vda\r?\n/);
    // The root's module lists, loaded by stage 1 before Node starts (init loads only what is missing).
    assert.match(vm.output, /kiln-stage1: root modules loaded \(\d+\)/);
    // OVMF without Secure Boot enforcing; the root came up through dm-verity.
    assert.match(vm.output, /kiln: boot chain: secure-boot=off root=verified/);
    // QEMU's user network hands out 10.0.2.15: virtio_net, from the boot list, loaded without
    // the signature the build took off it (no Secure Boot key, no enforcing command line).
    assert.not.ok(moduleSigned(join(work, 'root', 'lib', 'modules', kernel), 'virtio_net'), 'an image not signed for Secure Boot carries its modules without signatures');
    await vm.waitFor(/kiln: network \S+ 10\.0\.2\.15/, 60_000);
    await vm.waitFor(/kiln: blessed slot a/, 60_000);
    await vm.qmp('system_powerdown');
    await vm.waitFor(/kiln: power off/, 120_000);
    assert.ok(await vm.exited(60_000), 'QEMU should exit after the guest powers off');
  } finally { await vm.kill(); }
  // Boot counting ended: the entry lost its tries suffix.
  assert.equal(await espList(disk, 'EFI/Linux'), ['kiln-a.efi']);
});

test('the second boot finds what the first wrote to /var, and no zombie is left', async () => {
  const vm = await Vm.start({ arch: 'x86_64', disk, memMiB: 256 });
  try {
    await vm.waitFor(READY, BOOT_TIMEOUT);
    const boots = await vm.waitFor(/kiln: boot count (\d+)/, 10_000);
    assert.is(boots[1], '2');
    await vm.qmp('system_powerdown');
    await vm.waitFor(/kiln: power off/, 120_000);
    assert.not.match(vm.output, /kiln: zombies [1-9]/);
  } finally { await vm.kill(); }
});

test.run();
