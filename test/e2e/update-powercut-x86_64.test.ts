// Power cut in the middle of an update: QEMU is killed while the new root streams into slot
// B. The node must boot its good slot A with its data intact, and the next attempt must
// finish the update (resuming the download where the progress record says).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from '../../builder/build.ts';
import { Vm } from '../../builder/qemu.ts';
import { publishRelease } from '../../builder/release.ts';
import { cidataImage, freePort, ssh, sshKeypair, staticServer } from './helpers.ts';
import { BOOT_TIMEOUT, espList, scratchCopy } from './image.ts';
import { readyRe, updateImage, updateKeys } from './update-fixture.ts';

const work = mkdtempSync(join(tmpdir(), 'kiln-powercut-'));
const keys = updateKeys();
const channels = join(work, 'channels');
const imageOf = updateImage;

test('killed during the download: slot A boots with data intact, the next upgrade resumes and finishes', async () => {
  const v1 = await imageOf('1.0.0');
  await imageOf('1.1.0');
  await publishRelease({ channel: 'stable', from: join(REPO, 'out', 'update-1.1.0'), to: channels, key: keys.keyFile });
  const http = await staticServer(channels, { bytesPerSecond: 4 << 20 });
  const me = sshKeypair();
  const cidata = await cidataImage(`#cloud-config
ssh_authorized_keys: ['${me.pub}']
kiln:
  updates: {url: 'http://10.0.2.2:${http.port}', canary: true, poll_minutes: 600}
`);
  const disk = await scratchCopy(join(REPO, 'out', 'update-1.0.0', v1.outputs.find((o) => o.kind === 'raw')!.file));
  const drives = [`file=${cidata},format=raw,if=virtio,readonly=on`];
  try {
    let port = await freePort();
    let vm = await Vm.start({ arch: 'x86_64', disk, memMiB: 384, hostfwd: [[port, 22]], extraDrives: drives });
    try {
      await vm.waitFor(readyRe('1.0.0', 'a'), BOOT_TIMEOUT);
      await vm.waitFor(/kiln: blessed slot a/, 120_000);
      await ssh(port, me.key, 'echo precious > /var/lib/kiln/precious; sync');
      void ssh(port, me.key, 'kiln upgrade', 1).catch(() => undefined);
      await vm.waitFor(/kiln: update: writing 1\.1\.0/, 60_000);
      // Let some megabytes land in slot B, then pull the plug.
      const t0 = Date.now();
      // The server runs ahead of what the guest has written and recorded (every 8 MiB): leave room.
      while (http.sent() < 28 << 20 && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 200));
    } finally { await vm.kill(); }
    assert.ok(http.sent() < 47 << 20, 'the power was cut before the download finished');
    assert.equal(await espList(disk, 'EFI/Linux'), ['kiln-a.efi'], 'no entry for the half-written slot');

    port = await freePort();
    vm = await Vm.start({ arch: 'x86_64', disk, memMiB: 384, hostfwd: [[port, 22]], extraDrives: drives });
    try {
      await vm.waitFor(readyRe('1.0.0', 'a'), BOOT_TIMEOUT);
      assert.is((await ssh(port, me.key, 'cat /var/lib/kiln/precious')).trim(), 'precious');
      const before = http.hits.length;
      await ssh(port, me.key, 'kiln upgrade');
      await vm.waitFor(readyRe('1.1.0', 'b'), BOOT_TIMEOUT);
      await vm.waitFor(/kiln: update to 1\.1\.0 succeeded: slot b blessed/, 300_000);
      assert.ok(http.hits.slice(before).some((h) => /root\.squashfs bytes=[1-9]/.test(h)), `the download resumed with a Range request: ${http.hits.slice(before).join(' | ')}`);
      assert.is((await ssh(port, me.key, 'cat /var/lib/kiln/precious')).trim(), 'precious');
    } finally { await vm.kill(); }
  } finally { http.server.close(); }
});

test.run();
