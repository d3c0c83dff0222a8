// A/B update end to end, under Secure Boot (OVMF's Secure Boot firmware, Debian's snakeoil keys
// enrolled, the images signed with them): a v1 node follows a channel served from loopback,
// installs v2 into slot B, reboots into it and blesses it once healthy; v2 runs with Secure
// Boot on and its root verified, from the signed UKI the release carries, staged unchanged.
// Then a v3 is published that is signed and well-formed, whose root verifies at download; the
// node stages it, and before it boots its root is changed on the disk. dm-verity catches that
// at the first read and restarts, the tries run out, the boot loader falls back to v2 by
// itself, and v3 is recorded as bad and not taken again.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { closeSync, copyFileSync, fsyncSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { $ } from 'zx';
import { ARCH } from '../../builder/arch.ts';
import { ukiOsRelease } from '../../builder/build.ts';
import { Cache } from '../../builder/cache.ts';
import { readLock } from '../../builder/lock.ts';
import { loadProfile } from '../../builder/profile.ts';
import type { Vm } from '../../builder/qemu.ts';
import { kernelFromLock, unpackedDeb } from '../../builder/rootfs.ts';
import { signEfi } from '../../builder/secureboot.ts';
import { buildUki, readPe } from '../../builder/uki.ts';
import { readGpt } from '../../init/disk/gpt.ts';
import { ssh, sshRebooting } from './helpers.ts';
import { BOOT_TIMEOUT, espList } from './image.ts';
import { publishStable, readyRe, snakeoilSigner, updateOut, x86UpdateSetup } from './update-fixture.ts';

const CHAIN = /kiln: boot chain: secure-boot=(\S+) root=(\S+)[\r\n]/;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const mtools = $({ quiet: true, env: { ...process.env, MTOOLS_SKIP_CHECK: '1' } });

/** A file from the disk's ESP (mtools reads the FAT at the partition's offset). */
async function espFile(disk: string, path: string): Promise<Buffer> {
  const tmp = join(mkdtempSync(join(tmpdir(), 'kiln-esp-')), 'f');
  await mtools`mcopy -i ${`${disk}@@1M`} ${`::/${path}`} ${tmp}`;
  return readFileSync(tmp);
}

/** Waits until QEMU has stopped the guest (a guest reboot made a pause by set-action). */
async function stopped(vm: Vm, timeoutMs: number) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const s = await vm.qmp('query-status');
    if (!s.running) return s.status as string;
    if (Date.now() > end) throw new Error(`the guest did not reboot within ${timeoutMs / 1000} s; last output:\n${vm.output.slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** Restarts a stopped guest from its firmware, with guest reboots resetting again. */
async function resume(vm: Vm) {
  await vm.qmp('set-action', { reboot: 'reset', shutdown: 'poweroff' });
  await vm.qmp('system_reset');
  // The reset is carried out by QEMU's main loop: until then `cont` is refused.
  for (let i = 0; ; i++) {
    try { await vm.qmp('cont'); return; } catch (e) { if (i > 50) throw e; await new Promise((r) => setTimeout(r, 200)); }
  }
}

/** Flips one bit of a partition's byte `at` in a disk image; returns the partition's first byte. */
function flipInPartition(disk: string, name: string, at: number): number {
  const fd = openSync(disk, 'r+');
  try {
    const head = Buffer.alloc(1 << 20);
    readSync(fd, head, 0, head.length, 0);
    const p = readGpt(head).partitions.find((x) => x.name === name);
    assert.ok(p, `no partition ${name} on ${disk}`);
    const off = Number(p.firstLba) * 512 + at;
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, off);
    b[0] = b[0]! ^ 0x01;
    writeSync(fd, b, 0, 1, off);
    fsyncSync(fd);
    return Number(p.firstLba) * 512;
  } finally { closeSync(fd); }
}

test('v1 -> v2 under Secure Boot, signed UKI staged unchanged; a v3 root changed on disk after staging falls back to v2 and is never retried', async () => {
  const { work, channels, http, me, disk, boot } = await x86UpdateSetup('update', {}, '', true);
  const { vm, port } = await boot();
  try {
    await vm.waitFor(readyRe('1.0.0', 'a'), BOOT_TIMEOUT);
    const chain1 = await vm.waitFor(CHAIN, 30_000);
    assert.equal([chain1[1], chain1[2]], ['on', 'verified'], 'v1 boots with Secure Boot enforcing and a verified root');
    await vm.waitFor(/kiln: blessed slot a/, 120_000);
    assert.match(await ssh(port, me.key, 'kiln upgrade --check'), /1\.1\.0/);
    const v2From = vm.output.length;
    await sshRebooting(port, me.key, 'kiln upgrade');
    // Drained (k3s stand-in) before the reboot, then into slot b, judged healthy and blessed.
    const drained = await vm.waitFor(/kiln: update: drained node (\S+)/, 300_000);
    await vm.waitFor(readyRe('1.1.0', 'b'), BOOT_TIMEOUT);
    await vm.waitFor(/kiln: update to 1\.1\.0 succeeded: slot b blessed/, 300_000);
    await vm.waitFor(new RegExp(`kiln: uncordoned node ${drained[1]}`), 120_000, drained.index);
    const chain2 = CHAIN.exec(vm.output.slice(v2From));
    assert.equal([chain2?.[1], chain2?.[2]], ['on', 'verified'], 'v2 boots with Secure Boot enforcing and a verified root');
    assert.ok(http.hits.some((h) => h.includes('/stable/manifest.json')), 'the manifest was fetched');
    assert.equal(await espList(disk, 'EFI/Linux'), ['kiln-a.efi', 'kiln-b.efi']);
    // The release carries the signed UKI, and the updater staged exactly those bytes.
    const released = join(channels, 'stable/1.1.0/x86_64/kiln-1.1.0-x86_64.efi');
    const signer = await snakeoilSigner();
    await $({ quiet: true })`sbverify --cert ${signer.cert} ${released}`;
    assert.is(sha(await espFile(disk, 'EFI/Linux/kiln-b.efi')), sha(readFileSync(released)), 'slot b boots the released UKI byte for byte');

    // v3: v2's root image and hash tree (a real root that verifies at download) under a UKI
    // that says 1.2.0 (systemd-boot prefers the newest version), pins that root by its hash and
    // is signed with the enrolled key: everything about it is genuine until the disk is changed.
    const v3 = join(work, 'out-1.2.0');
    mkdirSync(v3, { recursive: true });
    const rec = JSON.parse(readFileSync(join(updateOut('1.1.0'), 'build.json'), 'utf8'));
    const rootName = 'kiln-1.2.0-x86_64.root.squashfs', ukiName = 'kiln-1.2.0-x86_64.efi';
    copyFileSync(join(updateOut('1.1.0'), 'kiln-1.1.0-x86_64.root.squashfs'), join(v3, rootName));
    const v2Uki = readFileSync(join(updateOut('1.1.0'), 'kiln-1.1.0-x86_64.efi'));
    const cl = readPe(v2Uki).sections.find((s) => s.name === '.cmdline')!;
    const cmdline = v2Uki.subarray(cl.rawOffset, cl.rawOffset + cl.virtualSize).toString('latin1').replace(/\0+$/, '');
    assert.match(cmdline, /kiln\.verity=sha256:/);
    const profile = loadProfile();
    const al = readLock(profile)!.arches.x86_64!;
    const cache = new Cache();
    const kernel = await kernelFromLock(al, cache);
    const efiDir = join(await unpackedDeb(al.packages.find((p) => p.package === 'systemd-boot-efi')!, cache), 'usr/lib/systemd/boot/efi');
    await buildUki({ arch: 'x86_64', stub: join(efiDir, ARCH.x86_64.stub), kernel: kernel.vmlinuz, initrd: join(updateOut('1.1.0'), '.work', 'x86_64', 'stage1.cpio.zst'),
      cmdline, osRelease: ukiOsRelease('1.2.0'), out: join(v3, ukiName) });
    await signEfi(signer, join(v3, ukiName));
    const root = readFileSync(join(v3, rootName)), uki = readFileSync(join(v3, ukiName));
    writeFileSync(join(v3, 'build.json'), JSON.stringify({ ...rec, version: '1.2.0', outputs: [
      { file: rootName, arch: 'x86_64', target: 'x86_64', kind: 'root', size: root.length, sha256: sha(root) },
      { file: ukiName, arch: 'x86_64', target: 'x86_64', kind: 'uki', size: uki.length, sha256: sha(uki) },
    ] }));
    await publishStable(v3, channels);

    // The node's reboot into v3 stops the VM instead, so the disk can be changed between the
    // staging and the first boot of the new slot.
    await vm.qmp('set-action', { reboot: 'shutdown', shutdown: 'pause' });
    const from = vm.output.length;
    await sshRebooting(port, me.key, 'kiln upgrade');
    await stopped(vm, 600_000);
    await vm.waitFor(/kiln: update: 1\.2\.0 staged in slot a/, 1000, from);
    assert.equal(await espList(disk, 'EFI/Linux'), ['kiln-a+3.efi', 'kiln-b.efi']);
    assert.is(sha(await espFile(disk, 'EFI/Linux/kiln-a+3.efi')), sha(uki), 'slot a is staged with the released signed UKI');
    // Byte 100 of the squashfs superblock in slot a: the first block stage 1's mount reads.
    const start = flipInPartition(disk, 'kiln-root-a', 100);
    const staged = Buffer.alloc(4096);
    const fd = openSync(disk, 'r');
    try { readSync(fd, staged, 0, staged.length, start); } finally { closeSync(fd); }
    assert.not.ok(staged.equals(root.subarray(0, 4096)), 'slot a now differs from the release in its first block');
    assert.ok(staged.subarray(101).equals(root.subarray(101, 4096)) && staged.subarray(0, 100).equals(root.subarray(0, 100)), 'and only in byte 100');
    await resume(vm);

    // Three tries of slot a, each ended by dm-verity's restart at the changed block, then
    // systemd-boot picks b (1.1.0) on its own.
    await vm.waitFor(readyRe('1.1.0', 'b'), BOOT_TIMEOUT * 3, from);
    const out = vm.output.slice(from);
    const tries = out.match(/kiln-stage1: slot a \(boot entry/g) ?? [];
    assert.is(tries.length, 3, 'the changed slot is tried exactly three times');
    assert.is((out.match(/device-mapper: verity: [^\r\n]*corrupted/g) ?? []).length >= 3, true, 'each try is ended by dm-verity');
    assert.not.match(out, /kiln: ready version=\S+ slot=a/);
    await vm.waitFor(/update to 1\.2\.0 failed to boot; running 1\.1\.0 from slot b; 1\.2\.0 will not be retried/, 120_000, from);
    const chain3 = CHAIN.exec(vm.output.slice(vm.output.lastIndexOf('kiln-stage1: slot b')));
    assert.equal([chain3?.[1], chain3?.[2]], ['on', 'verified'], 'back on v2, still under Secure Boot with a verified root');
    const again = await ssh(port, me.key, 'kiln upgrade --check');
    assert.match(again, /1\.1\.0 is the newest release this node may install/, `1.2.0 must not be offered again: ${again}`);
    assert.match(await ssh(port, me.key, 'kiln status'), /1\.2\.0/);
  } finally { await vm.kill(); http.server.close(); }
});

test.run();
