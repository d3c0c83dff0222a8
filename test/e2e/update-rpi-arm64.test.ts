// An A/B update on the Raspberry Pi, end to end in QEMU's raspi3b (TCG): the card's v1 node
// reads its config from user-data on the FAT boot partition and follows a channel tree that
// was copied onto its data partition (kiln.updates.url: file:///data/channels; QEMU's raspi3b
// USB cannot enumerate a network adapter under Linux, so HTTP is covered by the x86_64 update
// test). It writes v2's root into partition 3 and its kernel + initrd into b/, hands slot b
// three tries in uboot.env and reboots; U-Boot's boot.scr takes one, v2 comes up and blesses
// slot b. With no RTC, boot sets the clock to the build time before the first channel fetch.
// What QEMU cannot show is in rpi-arm64.test.ts's header (firmware, Pi 4, power loss).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { $ } from 'zx';
import { readMbr } from '../../init/disk/mbr.ts';
import { decodeUbootEnv } from '../../init/bootctl/ubootenv.ts';
import { bootFile, bootList, PiVm } from './pi-vm.ts';
import { tempDir } from './helpers.ts';
import { scratchCopy, testRpiImage, TEST_VERSION } from './image.ts';
import { followUserData, publishStable, readyRe } from './update-fixture.ts';

const PI_BOOT_TIMEOUT = 480_000;
const V2 = '0.0.2-test';
const tmp = tempDir('kiln-rpi-update-');
const ready = (v: string, slot: string) => readyRe(v, slot, 'arm64');
const MiB = 1048576;

/** Copies folder `src` to /`dest` on the card's ext4 data partition (p4), with debugfs: no mount, no root. */
async function copyToDataPartition(disk: string, src: string, dest: string) {
  const sector = Buffer.alloc(512), fd = openSync(disk, 'r');
  try { readSync(fd, sector, 0, 512, 0); } finally { closeSync(fd); }
  const p4 = readMbr(sector).partitions.find((p) => p.number === 4)!;
  const [skip, count] = [(p4.startLba * 512) / MiB, (p4.sectors * 512) / MiB];
  const img = join(tmp, 'data.img');
  await $({ quiet: true })`dd if=${disk} of=${img} bs=1M skip=${skip} count=${count} status=none`;
  const cmds: string[] = [`mkdir ${dest}`];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name), rel = `${dest}/${relative(src, p)}`;
      if (e.isDirectory()) { cmds.push(`mkdir ${rel}`); walk(p); } else cmds.push(`write ${p} ${rel}`);
    }
  };
  walk(src);
  writeFileSync(join(tmp, 'debugfs.cmds'), cmds.join('\n') + '\n');
  await $({ quiet: true })`debugfs -w -f ${join(tmp, 'debugfs.cmds')} ${img}`;
  await $({ quiet: true })`dd if=${img} of=${disk} bs=1M seek=${skip} conv=notrunc status=none`;
}

test('v1 -> v2 on the Pi: staged through uboot.env, booted by boot.scr from slot b, blessed', async () => {
  const v1 = await testRpiImage();
  const v2 = await testRpiImage(V2);
  // What a Pi node takes (root, kernel, initrd): the data partition has no room for the UKI too.
  const from = join(tmp, 'v2');
  mkdirSync(from);
  const outputs = v2.rec.outputs.filter((o) => ['root', 'kernel', 'initrd'].includes(o.kind));
  for (const o of outputs) symlinkSync(join(v2.out, o.file), join(from, o.file));
  writeFileSync(join(from, 'build.json'), JSON.stringify({ ...v2.rec, outputs }));
  const channels = join(tmp, 'channels');
  await publishStable(from, channels);
  const manifest = JSON.parse(readFileSync(join(channels, 'stable/manifest.json'), 'utf8'));
  // Its own target, and the chunk index for delta updates beside it.
  assert.equal(Object.keys(manifest.releases[0].artifacts), ['arm64_rpi', 'arm64_rpi_chunks'], 'the Pi build is published under its own target');

  const disk = await scratchCopy(v1.img, 'sd.img');
  await copyToDataPartition(disk, channels, 'channels');
  writeFileSync(join(tmp, 'user-data'), followUserData('file:///data/channels', 1));
  await $({ quiet: true, env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } })`mcopy -i ${disk}@@1M ${join(tmp, 'user-data')} ::/user-data`;
  const vm = await PiVm.start(disk);
  try {
    await vm.waitFor(ready(TEST_VERSION, 'a'), PI_BOOT_TIMEOUT);
    await vm.waitFor(/kiln: blessed slot a/, 120_000);
    await vm.waitFor(new RegExp(`update: ${V2.replace(/[.]/g, '\\.')} staged in slot b`), 600_000);
    // raspi3b has no RTC: the kernel starts in 1970. Boot must floor the clock at the build
    // time before the updater first fetches the channel (whose signatures carry dates).
    const clock = /kiln: clock set to (\S+) \(build\)/.exec(vm.output);
    assert.ok(clock, 'boot set the clock from the build time');
    assert.is(Date.parse(clock![1]!) / 1000, v1.rec.sourceDateEpoch, 'the floor is the build time');
    // The updater starts once the node is ready; its first line follows its first fetch.
    const readyAt = vm.output.search(ready(TEST_VERSION, 'a'));
    assert.ok(clock!.index < readyAt, 'the clock was set before ready');
    assert.ok(clock!.index < vm.output.search(/kiln: update[: ]/), 'the clock was set before the updater\'s first line');
    const at = vm.output.length;
    await vm.waitFor(/kiln: booting slot b \(tries left a=3 b=2\)/, 300_000, at);
    assert.is(vm.resets, 1, 'the node reset the board once to boot slot b');
    await vm.waitFor(ready(V2, 'b'), PI_BOOT_TIMEOUT, at);
    await vm.waitFor(new RegExp(`update to ${V2.replace(/[.]/g, '\\.')} succeeded: slot b blessed`), 300_000, at);
    console.log(`  updated and blessed after ${vm.elapsed().toFixed(1)} s (QEMU start to blessing)`);
  } finally { await vm.kill(); }
  const env = decodeUbootEnv(readFileSync(await bootFile(disk, 'uboot.env', join(tmp, 'uboot.env'))));
  assert.equal([env.BOOT_ORDER, env.BOOT_a_LEFT, env.BOOT_b_LEFT], ['b a', '3', '3']);
  assert.equal(await bootList(disk, 'b'), ['initrd', 'vmlinuz']);
  const v2Kernel = join(v2.out, v2.rec.outputs.find((o) => o.kind === 'kernel')!.file);
  const onCard = await bootFile(disk, 'b/vmlinuz', join(tmp, 'b-vmlinuz'));
  assert.is(statSync(onCard).size, statSync(v2Kernel).size);
  assert.ok(readFileSync(onCard).equals(readFileSync(v2Kernel)), 'slot b boots v2\'s kernel');
});

test.run();
