// Power cut in the middle of an update: QEMU is killed while the new root streams into slot
// B. The node must boot its good slot A with its data intact, and the next attempt must
// finish the update (resuming the download where the progress record says).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ssh, sshRebooting } from './helpers.ts';
import { BOOT_TIMEOUT, espList } from './image.ts';
import { readyRe, x86UpdateSetup } from './update-fixture.ts';

test('killed during the download: slot A boots with data intact, the next upgrade resumes and finishes', async () => {
  const { http, me, disk, boot } = await x86UpdateSetup('powercut', { bytesPerSecond: 4 << 20 });
  try {
    let { vm, port } = await boot();
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

    ({ vm, port } = await boot());
    try {
      await vm.waitFor(readyRe('1.0.0', 'a'), BOOT_TIMEOUT);
      assert.is((await ssh(port, me.key, 'cat /var/lib/kiln/precious')).trim(), 'precious');
      const before = http.hits.length;
      await sshRebooting(port, me.key, 'kiln upgrade');
      await vm.waitFor(readyRe('1.1.0', 'b'), BOOT_TIMEOUT);
      await vm.waitFor(/kiln: update to 1\.1\.0 succeeded: slot b blessed/, 300_000);
      assert.ok(http.hits.slice(before).some((h) => /root\.squashfs bytes=[1-9]/.test(h)), `the download resumed with a Range request: ${http.hits.slice(before).join(' | ')}`);
      assert.is((await ssh(port, me.key, 'cat /var/lib/kiln/precious')).trim(), 'precious');
    } finally { await vm.kill(); }
  } finally { http.server.close(); }
});

test.run();
