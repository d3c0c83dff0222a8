// Delta updates end to end (channels/README.md, "Delta updates"): v1 -> v2 (a version bump) where
// the server counts what it sends. First against a server that refuses Range requests for
// chunks: the node falls back to the full download and still boots and blesses v2. Then, from
// a fresh v1 disk, through a delta: the power is cut while the chunks arrive, the next attempt
// finds what was written in place and fetches only the rest, and all of it stays under the
// scenario's goal (3% of the root image).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { Vm } from '../../builder/qemu.ts';
import { freePort, ssh, sshRebooting } from './helpers.ts';
import { BOOT_TIMEOUT, scratchCopy } from './image.ts';
import { readyRe, updateOut, x86UpdateSetup } from './update-fixture.ts';

const ROOT = 'kiln-1.1.0-x86_64.root.squashfs';

test('a server refusing Range falls back to the full download; a delta survives a power cut and fetches under 3%', async () => {
  // Mutable: the server reads these per request.
  const serve: { bytesPerSecond?: number; ranges?: boolean } = { ranges: false };
  // No reboot lock: this test is about the download (the k3s stand-in has no Lease API).
  const { http, me, boot, cidata } = await x86UpdateSetup('delta', serve, 'reboot_lock: none');
  const rootSize = statSync(join(updateOut('1.1.0'), ROOT)).size;
  try {
    // 1. No Range for chunks: counted fallback, full download, v2 blessed.
    let { vm, port } = await boot();
    try {
      await vm.waitFor(readyRe('1.0.0', 'a'), BOOT_TIMEOUT);
      await vm.waitFor(/kiln: blessed slot a/, 120_000);
      await sshRebooting(port, me.key, 'kiln upgrade');
      await vm.waitFor(/delta of 1\.1\.0 falls back to the full download \(no-range\)/, 300_000);
      await vm.waitFor(readyRe('1.1.0', 'b'), BOOT_TIMEOUT);
      await vm.waitFor(/kiln: update to 1\.1\.0 succeeded: slot b blessed/, 300_000);
      assert.ok(http.sentFor(ROOT) >= rootSize, `the whole root was sent (${http.sentFor(ROOT)} of ${rootSize})`);
      assert.match(await ssh(port, me.key, 'kiln status'), /delta: last root 1\.1\.0 by full download \(delta fell back: no-range\); fallbacks no-index 0, no-range 1/);
    } finally { await vm.kill(); }

    // 2. A fresh v1 node, a server with Range, throttled so the power can be cut mid-delta.
    serve.ranges = true;
    serve.bytesPerSecond = 16 << 10;
    const fresh = await scratchCopy(join(updateOut('1.0.0'), 'kiln-1.0.0-x86_64.raw'));
    const bootFresh = async () => {
      const p = await freePort();
      return { vm: await Vm.start({ arch: 'x86_64', disk: fresh, memMiB: 384, hostfwd: [[p, 22]], extraDrives: [`file=${cidata},format=raw,if=virtio,readonly=on`] }), port: p };
    };
    const before = http.sentFor(ROOT);
    ({ vm, port } = await bootFresh());
    try {
      await vm.waitFor(readyRe('1.0.0', 'a'), BOOT_TIMEOUT);
      await vm.waitFor(/kiln: blessed slot a/, 120_000);
      void ssh(port, me.key, 'kiln upgrade', 1).catch(() => undefined);
      await vm.waitFor(/kiln: update: delta for 1\.1\.0: .* fetching \d+ of \d+ bytes/, 600_000);
      const t0 = Date.now();
      while (http.sentFor(ROOT) - before < 64 << 10 && Date.now() - t0 < 120_000) await new Promise((r) => setTimeout(r, 100));
    } finally { await vm.kill(); }
    const cut = http.sentFor(ROOT) - before;
    assert.ok(cut > 0, 'chunks were arriving when the power was cut');

    ({ vm, port } = await bootFresh());
    try {
      await vm.waitFor(readyRe('1.0.0', 'a'), BOOT_TIMEOUT);
      serve.bytesPerSecond = undefined;
      await sshRebooting(port, me.key, 'kiln upgrade');
      await vm.waitFor(/kiln: update: 1\.1\.0 assembled from \d+ local bytes and \d+ fetched/, 600_000);
      await vm.waitFor(readyRe('1.1.0', 'b'), BOOT_TIMEOUT);
      await vm.waitFor(/kiln: update to 1\.1\.0 succeeded: slot b blessed/, 300_000);
      const total = http.sentFor(ROOT) - before;
      assert.ok(total < 0.03 * rootSize, `a version bump cost ${total} bytes of the ${rootSize}-byte root (goal: under 3%)`);
      assert.match(await ssh(port, me.key, 'kiln status'), /delta: last root 1\.1\.0 by delta/);
    } finally { await vm.kill(); }
  } finally { http.server.close(); }
});

test.run();
