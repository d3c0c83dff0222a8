// An A/B update on the Raspberry Pi, end to end in QEMU's raspi3b (TCG): the card's v1 node
// reads its config from user-data on the FAT boot partition, reaches the channel served on
// loopback through QEMU's USB network adapter (cdc_ether), writes v2's root into partition 3
// and its kernel + initrd into b/, hands slot b three tries in uboot.env and reboots; U-Boot's
// boot.scr takes one, v2 comes up and blesses slot b. What QEMU cannot show is in
// rpi-arm64.test.ts's header (firmware, Pi 4, power loss during saveenv).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { $ } from 'zx';
import { publishRelease } from '../../builder/release.ts';
import { decodeUbootEnv } from '../../init/bootctl/ubootenv.ts';
import { staticServer } from './helpers.ts';
import { bootFile, bootList, PiVm } from './pi-vm.ts';
import { scratchCopy, testRpiImage, TEST_VERSION } from './image.ts';
import { updateKeys } from './update-fixture.ts';

const PI_BOOT_TIMEOUT = 480_000;
const V2 = '0.0.2-test';
const tmp = mkdtempSync(join(tmpdir(), 'kiln-rpi-update-'));
const ready = (v: string, slot: string) => new RegExp(`kiln: ready version=${v.replace(/[.]/g, '\\.')} slot=${slot} arch=arm64[\\r\\n ]`);

test('v1 -> v2 on the Pi: staged through uboot.env, booted by boot.scr from slot b, blessed', async () => {
  const v1 = await testRpiImage();
  const v2 = await testRpiImage(V2);
  const channels = join(tmp, 'channels');
  await publishRelease({ channel: 'stable', from: v2.out, to: channels, key: updateKeys().keyFile });
  const manifest = JSON.parse(readFileSync(join(channels, 'stable/manifest.json'), 'utf8'));
  assert.equal(Object.keys(manifest.releases[0].artifacts), ['arm64_rpi'], 'the Pi build is published under its own target');
  const http = await staticServer(channels);
  try {
    const disk = await scratchCopy(v1.img, 'sd.img');
    writeFileSync(join(tmp, 'user-data'), `#cloud-config
kiln:
  updates: {url: 'http://10.0.2.2:${http.port}', canary: true, poll_minutes: 1}
`);
    await $({ quiet: true, env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } })`mcopy -i ${disk}@@1M ${join(tmp, 'user-data')} ::/user-data`;
    const vm = await PiVm.start(disk, { extraArgs: ['-netdev', 'user,id=n0', '-device', 'usb-net,netdev=n0'] });
    try {
      await vm.waitFor(ready(TEST_VERSION, 'a'), PI_BOOT_TIMEOUT);
      await vm.waitFor(/kiln: blessed slot a/, 120_000);
      assert.match(vm.output, /kiln: network \S+ 10\.0\.2\.\d+/, 'a DHCP lease on the USB network adapter');
      await vm.waitFor(new RegExp(`update: ${V2.replace(/[.]/g, '\\.')} staged in slot b`), 600_000);
      const at = vm.output.length;
      await vm.waitFor(/kiln: booting slot b \(tries left a=3 b=2\)/, 300_000, at);
      await vm.waitFor(ready(V2, 'b'), PI_BOOT_TIMEOUT, at);
      await vm.waitFor(new RegExp(`update to ${V2.replace(/[.]/g, '\\.')} succeeded: slot b blessed`), 300_000, at);
      console.log(`  updated and blessed after ${vm.elapsed().toFixed(1)} s (QEMU start to blessing)`);
    } finally { await vm.kill(); }
    assert.ok(http.hits.some((h) => h.includes('/arm64_rpi/') && h.includes('.root.')), 'the Pi root image was fetched');
    const env = decodeUbootEnv(readFileSync(await bootFile(disk, 'uboot.env', join(tmp, 'uboot.env'))));
    assert.equal([env.BOOT_ORDER, env.BOOT_a_LEFT, env.BOOT_b_LEFT], ['b a', '3', '3']);
    assert.equal(await bootList(disk, 'b'), ['initrd', 'vmlinuz']);
    const v2Kernel = readFileSync(join(v2.out, v2.rec.outputs.find((o) => o.kind === 'kernel')!.file));
    assert.ok(readFileSync(await bootFile(disk, 'b/vmlinuz', join(tmp, 'b-vmlinuz'))).equals(v2Kernel), 'slot b boots v2\'s kernel');
  } finally { http.server.closeAllConnections(); http.server.close(); }
});

test.run();
