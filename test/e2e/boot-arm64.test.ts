// arm64 under AAVMF (TCG): the same image pipeline reaches the ready line on slot A.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Vm } from '../../builder/qemu.ts';
import { BOOT_TIMEOUT, espList, READY, scratchCopy, testImage, TEST_VERSION } from './image.ts';

test('arm64 boots to ready on slot A and blesses it', async () => {
  const img = await testImage('arm64');
  const disk = await scratchCopy(img.raw);
  const vm = await Vm.start({ arch: 'arm64', disk, memMiB: 384 });
  try {
    const m = await vm.waitFor(READY, BOOT_TIMEOUT * 1.5);
    assert.is(m[1], TEST_VERSION);
    assert.is(m[2], 'a');
    assert.is(m[3], 'arm64');
    await vm.waitFor(/kiln: network \S+ 10\.0\.2\.15/, 60_000);
    await vm.waitFor(/kiln: blessed slot a/, 60_000);
  } finally { await vm.kill(); }
  assert.equal(await espList(disk, 'EFI/Linux'), ['kiln-a.efi']);
});

test.run();
