// dm-verity: the hash tree appended to a real squashfs by veritysetup (reproducible, checked by
// veritysetup itself), the kiln.verity= parameter, stage 1's dmsetup files, and the boot-chain
// facts init reports.
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, statSync, writeFileSync, writeSync, closeSync, copyFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { $ } from 'zx';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { appendVerity, hasVeritySuperblock, verifyVerity } from '../../builder/verity.ts';
import { stage1VerityFiles } from '../../builder/stage1.ts';
import { formatVerityParam, parseVerityParam, verityTable, VERITY_BLOCK } from '../../init/disk/verity.ts';
import { bootChain, bootChainLine } from '../../init/boot.ts';
import { world } from './updater-harness.ts';

const tmp = () => mkdtempSync(join(tmpdir(), 'kiln-verity-'));

async function squashfs(dir: string): Promise<string> {
  const src = join(dir, 'src');
  mkdirSync(join(src, 'usr/bin'), { recursive: true });
  writeFileSync(join(src, 'usr/bin/hello'), 'echo hello\n'.repeat(5000));
  writeFileSync(join(src, 'data.bin'), randomBytes(300_000));
  const out = join(dir, 'root.squashfs');
  await $({ quiet: true })`mksquashfs ${src} ${out} -noappend -all-root -mkfs-time 0 -all-time 0 -quiet -no-progress`;
  return out;
}

test('the tree is appended after the data, pins the image, and is the same for the same image', async () => {
  const d = tmp();
  const img = await squashfs(d);
  const copy = join(d, 'copy.squashfs');
  copyFileSync(img, copy);
  const a = await appendVerity(img);
  const b = await appendVerity(copy);
  assert.equal(readFileSync(img), readFileSync(copy), 'byte-identical trees');
  assert.is(a.rootHash, b.rootHash);
  assert.is(a.dataBlocks * VERITY_BLOCK + a.treeBytes, statSync(img).size);
  assert.ok(hasVeritySuperblock(img, a));
  assert.ok(await verifyVerity(img, a), 'veritysetup verifies the tree');
  assert.is(a.param, formatVerityParam(a));
  assert.equal(parseVerityParam(a.param.replace('kiln.verity=', '')), { algorithm: 'sha256', dataBlocks: a.dataBlocks, salt: a.salt, rootHash: a.rootHash });
});

test('one flipped byte in the data fails verification', async () => {
  const d = tmp();
  const img = await squashfs(d);
  const v = await appendVerity(img);
  const fd = openSync(img, 'r+');
  const b = Buffer.alloc(1);
  const off = 5 * 1024;
  b[0] = readFileSync(img)[off]! ^ 0x01;
  writeSync(fd, b, 0, 1, off);
  closeSync(fd);
  assert.not.ok(await verifyVerity(img, v));
});

test('malformed kiln.verity values are refused', () => {
  const h = 'ab'.repeat(32);
  assert.ok(parseVerityParam(`sha256:10:00ff:${h}`));
  for (const bad of ['', 'sha1:10:00:' + h, `sha256:0:00:${h}`, `sha256:10:zz:${h}`, `sha256:10:00:${h.slice(2)}`, `sha256:10:00:${h};reboot`]) {
    assert.is(parseVerityParam(bad), undefined, bad);
  }
});

test('the device-mapper table names data, tree start after the superblock, and restart_on_corruption', () => {
  const p = { algorithm: 'sha256' as const, dataBlocks: 100, salt: '00ff', rootHash: 'cd'.repeat(32) };
  assert.is(verityTable('/dev/vda2', p), `0 800 verity 1 /dev/vda2 /dev/vda2 4096 4096 100 101 sha256 ${'cd'.repeat(32)} 00ff 1 restart_on_corruption`);
  // Stage 1 builds the same line in shell.
  const sh = readFileSync(new URL('../../builder/stage1/init.sh', import.meta.url), 'utf8');
  assert.match(sh, '"0 $(($3 * 8)) verity 1 /dev/$1 /dev/$1 4096 4096 $3 $(($3 + 1)) sha256 $5 $4 1 restart_on_corruption"');
});

test('stage 1 takes dmsetup with every library it needs and the root hash', async () => {
  // The build host's own Debian root stands in for an assembled image root (same packages).
  const files = await stage1VerityFiles('/', 'x86_64-linux-gnu', { path: '/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', link: '/lib64/ld-linux-x86-64.so.2' }, 'kiln.verity=sha256:1:00:' + 'ab'.repeat(32));
  const paths = files.map((f) => f.path);
  assert.ok(paths.includes('bin/dmsetup'));
  assert.ok(paths.some((p) => /libdevmapper\.so/.test(p)), paths.join(' '));
  assert.ok(paths.includes('lib/x86_64-linux-gnu/libc.so.6') || paths.includes('usr/lib/x86_64-linux-gnu/libc.so.6'), paths.join(' '));
  // The loader once, at its own path, and a link where dmsetup names it.
  assert.ok(files.find((f) => f.path === 'lib/x86_64-linux-gnu/ld-linux-x86-64.so.2')!.data!.length > 0);
  assert.equal(files.find((f) => f.path === 'lib64/ld-linux-x86-64.so.2'), { path: 'lib64/ld-linux-x86-64.so.2', target: '/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', mode: 0o777 });
  assert.is(files.find((f) => f.path === 'etc/kiln/verity')!.data!.toString(), `sha256:1:00:${'ab'.repeat(32)}\n`);
  // Library files are copied as files (symlinks resolved inside the root), never empty.
  for (const f of files) if (!f.target) assert.ok(f.data!.length > 0, f.path);
});

test('boot chain: Secure Boot from the EFI variable, the root from stage 1 and the live mapping', () => {
  const d = tmp();
  const efi = join(d, 'efi');
  mkdirSync(join(efi, 'efivars'), { recursive: true });
  const sys = join(d, 'block');
  mkdirSync(join(sys, 'dm-0/dm'), { recursive: true });
  writeFileSync(join(sys, 'dm-0/dm/name'), 'kiln-root\n');
  const hash = 'ef'.repeat(32);
  const sb = join(efi, 'efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c');
  writeFileSync(sb, Buffer.from([6, 0, 0, 0, 1]));
  assert.equal(bootChain({ env: { KILN_VERITY: hash }, efiDir: efi, sysBlock: sys }), { secureBoot: 'on', root: 'verified', rootHash: hash });
  writeFileSync(sb, Buffer.from([6, 0, 0, 0, 0]));
  assert.is(bootChainLine(bootChain({ env: { KILN_VERITY: hash }, efiDir: efi, sysBlock: sys })), 'boot chain: secure-boot=off root=verified');
  assert.is(bootChainLine(bootChain({ env: {}, efiDir: join(d, 'none'), sysBlock: sys })), 'boot chain: secure-boot=unsupported root=unverified');
  // A hash passed on without a live mapping is not trusted.
  writeFileSync(join(sys, 'dm-0/dm/name'), 'other\n');
  assert.is(bootChain({ env: { KILN_VERITY: hash }, efiDir: efi, sysBlock: sys }).root, 'unverified');
});

// The updater writes a release's root image and its tree as one file, checked against the signed
// manifest's sha256 before anything is staged: a changed tree, or a whole root swapped for one
// with a tree (and root hash) of its own, never reaches a boot entry.
test('a download whose hash tree or root hash is not the release one is refused before staging', async () => {
  const d = tmp();
  const img = await squashfs(d);
  const v = await appendVerity(img);
  const genuine = readFileSync(img);
  const other = await squashfs(join(d, 'other'));
  const ov = await appendVerity(other);
  assert.ok(await verifyVerity(other, ov), 'the swapped root is consistent with its own root hash');
  assert.is.not(ov.rootHash, v.rootHash);
  const tree = Buffer.from(genuine);
  const at = v.dataBlocks * VERITY_BLOCK + VERITY_BLOCK + 7; // a hash in the tree's first block, after the superblock
  tree[at] = tree[at]! ^ 0x01;
  writeFileSync(join(d, 'tree.img'), tree);
  assert.not.ok(await verifyVerity(join(d, 'tree.img'), v), 'the changed tree no longer verifies the data');
  for (const [what, served] of [['changed hash tree', tree], ['another root with its own tree', readFileSync(other)]] as const) {
    const w = await world();
    try {
      await w.publish('2.0.0', { root: genuine });
      writeFileSync(join(w.pub, 'stable/2.0.0/x86_64/fixture-kiln-2.0.0-x86_64.root.squashfs'), served);
      const r = await w.updater({ delta: false }).apply();
      assert.is(!r.ok && r.stage, 'verify', `${what}: ${JSON.stringify(r)}`);
      assert.match(!r.ok ? r.message : '', /sha256/, what);
      assert.equal(w.entries(), ['kiln-a.efi'], `${what}: no boot entry for slot b`);
      assert.not.ok(existsSync(join(w.stateBase, 'stable/pending.json')), `${what}: nothing pending`);
      assert.is(w.reboots, 0, what);
      // Nothing of the refused file is kept to resume from: the genuine release then installs.
      writeFileSync(join(w.pub, 'stable/2.0.0/x86_64/fixture-kiln-2.0.0-x86_64.root.squashfs'), genuine);
      const ok = await w.updater({ delta: false }).apply();
      assert.ok(ok.ok, `${what}: then the genuine release installs: ${JSON.stringify(ok)}`);
      assert.ok(readFileSync(w.slots.b).subarray(0, genuine.length).equals(genuine));
    } finally { await w.close(); }
  }
});

test.run();
