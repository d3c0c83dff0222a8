// A/B update end to end: a v1 node follows a channel served from loopback, installs v2 into
// slot B, reboots into it and blesses it once healthy. Then a broken v3 (its root does not
// mount) is published: the node installs it, its tries run out, the boot loader falls back
// to v2 by itself, and v3 is recorded as bad and not taken again.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ARCH } from '../../builder/arch.ts';
import { ukiCmdline, ukiOsRelease } from '../../builder/build.ts';
import { Cache } from '../../builder/cache.ts';
import { readLock } from '../../builder/lock.ts';
import { loadProfile } from '../../builder/profile.ts';
import { kernelFromLock, unpackedDeb } from '../../builder/rootfs.ts';
import { buildUki } from '../../builder/uki.ts';
import { ssh } from './helpers.ts';
import { BOOT_TIMEOUT, espList } from './image.ts';
import { publishStable, readyRe, updateOut, x86UpdateSetup } from './update-fixture.ts';

test('v1 -> v2 through the stable channel, then a broken v3 falls back to v2 and is never retried', async () => {
  const { work, channels, http, me, disk, boot } = await x86UpdateSetup('update');
  const { vm, port } = await boot();
  try {
    await vm.waitFor(readyRe('1.0.0', 'a'), BOOT_TIMEOUT);
    await vm.waitFor(/kiln: blessed slot a/, 120_000);
    assert.match(await ssh(port, me.key, 'kiln upgrade --check'), /1\.1\.0/);
    await ssh(port, me.key, 'kiln upgrade');
    // Drained (k3s stand-in) before the reboot, then into slot b, judged healthy and blessed.
    const drained = await vm.waitFor(/kiln: update: drained node (\S+)/, 300_000);
    await vm.waitFor(readyRe('1.1.0', 'b'), BOOT_TIMEOUT);
    await vm.waitFor(/kiln: update to 1\.1\.0 succeeded: slot b blessed/, 300_000);
    await vm.waitFor(new RegExp(`kiln: uncordoned node ${drained[1]}`), 120_000, drained.index);
    assert.ok(http.hits.some((h) => h.includes('/stable/manifest.json')), 'the manifest was fetched');
    assert.equal(await espList(disk, 'EFI/Linux'), ['kiln-a.efi', 'kiln-b.efi']);

    // v3: signed and well-formed, but its root image is junk, so stage 1 cannot mount it.
    const bad = join(work, 'out-1.2.0');
    mkdirSync(bad, { recursive: true });
    const rec = JSON.parse(readFileSync(join(updateOut('1.1.0'), 'build.json'), 'utf8'));
    const junk = randomBytes(4 << 20);
    writeFileSync(join(bad, 'kiln-1.2.0-x86_64.root.squashfs'), junk);
    // Its UKI must say 1.2.0 (systemd-boot prefers the newest version), with v2's kernel and stage 1.
    const profile = loadProfile();
    const al = readLock(profile)!.arches.x86_64!;
    const cache = new Cache();
    const kernel = await kernelFromLock(al, cache);
    const efiDir = join(await unpackedDeb(al.packages.find((p) => p.package === 'systemd-boot-efi')!, cache), 'usr/lib/systemd/boot/efi');
    await buildUki({ arch: 'x86_64', stub: join(efiDir, ARCH.x86_64.stub), kernel: kernel.vmlinuz, initrd: join(updateOut('1.1.0'), '.work', 'x86_64', 'stage1.cpio.zst'),
      cmdline: ukiCmdline('x86_64', profile), osRelease: ukiOsRelease('1.2.0'), out: join(bad, 'kiln-1.2.0-x86_64.efi') });
    const { createHash } = await import('node:crypto');
    const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
    const uki = readFileSync(join(bad, 'kiln-1.2.0-x86_64.efi'));
    writeFileSync(join(bad, 'build.json'), JSON.stringify({ ...rec, version: '1.2.0', outputs: [
      { file: 'kiln-1.2.0-x86_64.root.squashfs', arch: 'x86_64', kind: 'root', size: junk.length, sha256: sha(junk) },
      { file: 'kiln-1.2.0-x86_64.efi', arch: 'x86_64', kind: 'uki', size: uki.length, sha256: sha(uki) },
    ] }));
    await publishStable(bad, channels);
    const from = vm.output.length;
    await ssh(port, me.key, 'kiln upgrade');
    // Three failed tries of slot a, then systemd-boot picks b (1.1.0) on its own.
    await vm.waitFor(readyRe('1.1.0', 'b'), BOOT_TIMEOUT * 3, from);
    // Each try ends in stage 1 (no hash tree where the root hash says) or in dm-verity
    // rebooting at the first bad block: count the tries, not how each ended.
    const tries = vm.output.slice(from).match(/kiln-stage1: slot a \(boot entry/g) ?? [];
    assert.is(tries.length, 3, 'the broken slot is tried exactly three times');
    await vm.waitFor(/update to 1\.2\.0 failed to boot; running 1\.1\.0 from slot b; 1\.2\.0 will not be retried/, 120_000, from);
    const again = await ssh(port, me.key, 'kiln upgrade --check');
    assert.match(again, /1\.1\.0 is the newest release this node may install/, `1.2.0 must not be offered again: ${again}`);
    assert.match(await ssh(port, me.key, 'kiln status'), /1\.2\.0/);
  } finally { await vm.kill(); http.server.close(); }
});

test.run();
