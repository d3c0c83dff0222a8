import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { indexModules, modinfo, moduleBytes, moduleDeps, moduleSignatures, modulesDep, resolveModules, withoutSignature, ModuleError } from '../../builder/kmod.ts';

// Module files are ELF objects whose .modinfo section holds NUL-separated key=value strings;
// the resolver only reads those strings, so a stand-in file carrying them is enough here.
const ko = (...kv: string[]) => Buffer.concat([Buffer.from('\x7fELF-stand-in'), Buffer.from('\0' + kv.join('\0') + '\0')]);

test('modinfo reads every value of a key', () => {
  const b = ko('alias=fs-ext4', 'depends=mbcache,jbd2', 'alias=ext3', 'softdep=pre: crc32c post: foo');
  assert.equal(modinfo(b, 'alias'), ['fs-ext4', 'ext3']);
  assert.equal(moduleDeps(b), { depends: ['mbcache', 'jbd2'], softPre: ['crc32c'] });
  assert.equal(moduleDeps(ko('depends=')), { depends: [], softPre: [] });
});

function tree() {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-kmod-'));
  const put = (rel: string, b: Buffer) => { mkdirSync(join(dir, rel, '..'), { recursive: true }); writeFileSync(join(dir, rel), b); };
  put('kernel/drivers/virtio/virtio.ko', ko('depends='));
  put('kernel/drivers/virtio/virtio_ring.ko', ko('depends='));
  put('kernel/drivers/block/virtio_blk.ko', ko('depends=virtio,virtio_ring'));
  put('kernel/fs/fat/fat.ko', ko('depends='));
  put('kernel/fs/fat/vfat.ko', ko('depends=fat'));
  put('kernel/drivers/char/hw_random/virtio-rng.ko', ko('depends=virtio_ring,virtio', 'softdep=pre: missing_soft'));
  writeFileSync(join(dir, 'modules.builtin'), 'kernel/fs/ext4/ext4.ko\n');
  return dir;
}

test('dependencies load first, built-ins are noted, dashes and underscores are one name', () => {
  const t = indexModules(tree());
  const r = resolveModules(t, ['virtio_blk', 'ext4', 'virtio_rng', 'vfat']);
  assert.equal(r.order, [
    'kernel/drivers/virtio/virtio.ko', 'kernel/drivers/virtio/virtio_ring.ko', 'kernel/drivers/block/virtio_blk.ko',
    'kernel/drivers/char/hw_random/virtio-rng.ko', 'kernel/fs/fat/fat.ko', 'kernel/fs/fat/vfat.ko',
  ]);
  assert.equal(r.builtin, ['ext4']);
  assert.is(modulesDep(r.order, r.deps),
    'kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko\n' +
    'kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n' +
    'kernel/drivers/virtio/virtio.ko:\n' +
    'kernel/drivers/virtio/virtio_ring.ko:\n' +
    'kernel/fs/fat/fat.ko:\n' +
    'kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko\n');
});

test('modules.dep lists the whole closure, loaded back to front (a chain of three)', () => {
  const deps = new Map([['c.ko', ['b.ko', 'x.ko']], ['b.ko', ['a.ko']], ['a.ko', []], ['x.ko', []]]);
  // modprobe loads from the end: a, b, x, then c itself.
  assert.is(modulesDep(['a.ko', 'b.ko', 'c.ko', 'x.ko'], deps), 'a.ko:\nb.ko: a.ko\nc.ko: x.ko b.ko a.ko\nx.ko:\n');
});

test('a module the kernel lacks is an error naming it and the fix', () => {
  const t = indexModules(tree());
  assert.throws(() => resolveModules(t, ['nosuchmod'], 'modules.boot'), (e: Error) =>
    e instanceof ModuleError && /modules.boot: module 'nosuchmod' is neither built into nor shipped/.test(e.message) && /remove it from the profile/.test(e.message));
});

// sign-file's trailer, written out by hand: the signature, its 12-byte description (algorithm,
// hash, id type 2 = PKCS#7, two zero lengths, 3 bytes of padding, the signature's length
// big-endian), then the magic line.
function signed(body: Buffer, sig: Buffer): Buffer {
  const desc = Buffer.alloc(12); desc[2] = 2; desc.writeUInt32BE(sig.length, 8);
  return Buffer.concat([body, sig, desc, Buffer.from('~Module signature appended~\n')]);
}

test('withoutSignature takes off exactly the appended signature and leaves other files alone', () => {
  const body = ko('name=demo', 'depends=');
  const sig = Buffer.from('0\x82\x01\x02 a PKCS#7 blob stand-in ~Module signature appended~\n inside');
  assert.equal(withoutSignature(signed(body, sig)), body);
  assert.equal(withoutSignature(body), body);
  // Signed twice over is not something sign-file makes; one trailer comes off per call.
  assert.equal(withoutSignature(withoutSignature(signed(signed(body, sig), sig))), body);
  const bad = signed(body, sig); bad.writeUInt32BE(1 << 20, bad.length - 28 - 4);
  assert.throws(() => withoutSignature(bad, 'kernel/fs/demo.ko'), /kernel\/fs\/demo\.ko: its signature trailer claims 1048576 bytes/);
});

test('moduleBytes reads a module from the tree with or without its signature', () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-kmod-sig-'));
  const body = ko('name=demo');
  const file = signed(body, Buffer.from('signature'));
  mkdirSync(join(dir, 'kernel'), { recursive: true }); writeFileSync(join(dir, 'kernel/demo.ko'), file);
  const t = { dir, byName: new Map([['demo', 'kernel/demo.ko']]), builtin: new Set<string>() };
  assert.equal(moduleBytes(t, 'kernel/demo.ko', true), file);
  assert.equal(moduleBytes(t, 'kernel/demo.ko', false), body);
});

test('moduleSignatures keeps them where the kernel would refuse unsigned modules', () => {
  const at = (o: Partial<Parameters<typeof moduleSignatures>[0]>) => moduleSignatures({ setting: 'auto', secureBoot: false, cmdline: 'quiet panic=10', ...o }).keep;
  assert.is(at({}), false);
  assert.is(at({ secureBoot: true }), true);
  assert.is(at({ setting: 'keep' }), true);
  assert.is(at({ cmdline: 'quiet module.sig_enforce=1' }), true);
  assert.is(at({ cmdline: 'lockdown=integrity panic=10' }), true);
  assert.is(at({ cmdline: 'module.sig_enforce=0 xlockdown=none' }), false);
  assert.match(moduleSignatures({ setting: 'auto', secureBoot: false, cmdline: 'lockdown=integrity' }).why, /lockdown=integrity/);
});

test.run();
