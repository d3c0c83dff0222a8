// dm-verity on a real disk: one flipped byte in slot a's root data is caught by the kernel
// when stage 1 reads it, the node reboots (restart_on_corruption) instead of running it, and it
// never reaches ready on that slot.
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Vm } from '../../builder/qemu.ts';
import { readGpt } from '../../init/disk/gpt.ts';
import { BOOT_TIMEOUT, scratchCopy, testImage } from './image.ts';

test('a flipped byte in the root: verity error, reboot, never ready on that slot', async () => {
  const img = await testImage('x86_64');
  const disk = await scratchCopy(img.raw);
  const fd = openSync(disk, 'r+');
  try {
    const head = Buffer.alloc(1 << 20);
    readSync(fd, head, 0, head.length, 0);
    const rootA = readGpt(head).partitions.find((p) => p.name === 'kiln-root-a')!;
    // Byte 100 of the squashfs superblock: the first block stage 1's mount reads.
    const off = Number(rootA.firstLba) * 512 + 100;
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, off);
    b[0] = b[0]! ^ 0x01;
    writeSync(fd, b, 0, 1, off);
  } finally { closeSync(fd); }
  const vm = await Vm.start({ arch: 'x86_64', disk, memMiB: 256 });
  try {
    await vm.waitFor(/device-mapper: verity: [^\r\n]*corrupted/, BOOT_TIMEOUT);
    // The node restarts rather than carrying on: stage 1 starts again.
    const first = vm.output.lastIndexOf('corrupted');
    await vm.waitFor(/kiln-stage1: started/, BOOT_TIMEOUT, first);
    assert.not.match(vm.output, /kiln: ready/);
  } finally { await vm.kill(); }
});

test.run();
