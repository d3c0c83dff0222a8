// Boot counting: slot A (newer, 3 tries) has a broken root; slot B is good. systemd-boot
// must spend A's tries, then boot B by itself, and B blesses itself.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ARCH } from '../../builder/arch.ts';
import { entryName, LOADER_CONF, ukiCmdline, ukiOsRelease } from '../../builder/build.ts';
import { assembleDisk } from '../../builder/disk.ts';
import { buildEsp } from '../../builder/esp.ts';
import { loadProfile } from '../../builder/profile.ts';
import { Vm } from '../../builder/qemu.ts';
import { buildUki } from '../../builder/uki.ts';
import { Cache } from '../../builder/cache.ts';
import { unpackedDeb, kernelFromLock } from '../../builder/rootfs.ts';
import { readLock } from '../../builder/lock.ts';
import { BOOT_TIMEOUT, espList, READY, testImage } from './image.ts';

test('a slot whose root is broken is abandoned after its tries; the other slot boots and is blessed', async () => {
  const arch = 'x86_64';
  const img = await testImage(arch);
  const profile = loadProfile();
  const al = readLock(profile)!.arches[arch]!;
  const cache = new Cache();
  const kernel = await kernelFromLock(al, cache);
  const efiDir = join(await unpackedDeb(al.packages.find((p) => p.package === 'systemd-boot-efi')!, cache), 'usr/lib/systemd/boot/efi');
  const initrd = join(img.work, 'stage1.cpio.zst');
  const w = img.work;
  const ukiA = await buildUki({ arch, stub: join(efiDir, ARCH[arch].stub), kernel: kernel.vmlinuz, initrd, cmdline: ukiCmdline(arch, profile), osRelease: ukiOsRelease('9.0.0'), out: join(w, 'fallback-a.efi') });
  const ukiB = await buildUki({ arch, stub: join(efiDir, ARCH[arch].stub), kernel: kernel.vmlinuz, initrd, cmdline: ukiCmdline(arch, profile), osRelease: ukiOsRelease('1.0.0'), out: join(w, 'fallback-b.efi') });
  const esp = await buildEsp({
    out: join(w, 'fallback-esp.img'), sizeMiB: profile.disk.esp_mib, label: 'ESP', volumeId: '12345678',
    files: [
      { path: ARCH[arch].efiFallback, src: join(efiDir, ARCH[arch].bootEfi) },
      { path: 'loader/loader.conf', data: Buffer.from(LOADER_CONF) },
      { path: `EFI/Linux/${entryName('a', 3)}`, src: ukiA },
      { path: `EFI/Linux/${entryName('b', 3)}`, src: ukiB },
    ],
  });
  const broken = join(w, 'broken-root.img');
  writeFileSync(broken, Buffer.alloc(4 << 20, 0xa5));
  const rootImg = join(img.out, img.rec.outputs.find((o) => o.kind === 'root')!.file);
  const disk = join(w, 'fallback.raw');
  assembleDisk(disk, { arch, espMiB: profile.disk.esp_mib, rootMiB: profile.disk.root_mib, dataMiB: profile.disk.data_mib, seed: 'fallback' },
    { esp, rootA: broken, rootB: rootImg, data: join(w, 'data.img') });

  const vm = await Vm.start({ arch, disk, memMiB: 256 });
  try {
    const m = await vm.waitFor(READY, BOOT_TIMEOUT * 3);
    assert.is(m[2], 'b');
    const failures = vm.output.match(/kiln-stage1: FATAL/g) ?? [];
    assert.is(failures.length, 3, 'slot A should be tried exactly three times');
    await vm.waitFor(/kiln: blessed slot b/, 60_000);
    await vm.qmp('system_powerdown');
    await vm.waitFor(/kiln: power off/, 120_000);
  } finally { await vm.kill(); }
  assert.equal(await espList(disk, 'EFI/Linux'), ['kiln-a+0-3.efi', 'kiln-b.efi']);
});

test.run();
