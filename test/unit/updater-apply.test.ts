import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sha, world, type World } from './updater-harness.ts';
import { nextBootSlot } from '../../init/update/entries.ts';

const ROOT_URL = (v: string) => `/stable/${v}/x86_64/fixture-kiln-${v}-x86_64.root.squashfs`;
const prefixOf = (file: string, n: number) => readFileSync(file).subarray(0, n);

let w: World;
test.after.each(async () => { await w?.close(); });

test('v1 -> v2: writes only the inactive slot, stages kiln-b+3.efi, marks pending, reboots', async () => {
  w = await world();
  const v2 = await w.publish('2.0.0');
  const slotA = readFileSync(w.slots.a);
  const u = w.updater();

  const c = await u.check();
  assert.is(c.action, 'install', JSON.stringify(c));
  if (c.action === 'install') { assert.is(c.version, '2.0.0'); assert.is(c.slot, 'b'); }
  assert.is(w.reboots, 0, 'check never reboots');

  const r = await u.apply();
  assert.ok(r.ok, JSON.stringify(r));
  assert.ok(readFileSync(w.slots.a).equals(slotA), 'the booted slot is byte-for-byte untouched');
  assert.ok(prefixOf(w.slots.b, v2.root.length).equals(v2.root), 'slot b holds the v2 root image');
  assert.equal(w.entries(), ['kiln-a.efi', 'kiln-b+3.efi']);
  assert.ok(readFileSync(join(w.esp, 'EFI/Linux/kiln-b+3.efi')).equals(v2.uki));
  const pending = JSON.parse(readFileSync(join(w.stateBase, 'stable/pending.json'), 'utf8'));
  assert.equal({ version: pending.version, slot: pending.slot, from: pending.from, fromSlot: pending.fromSlot }, { version: '2.0.0', slot: 'b', from: '1.0.0', fromSlot: 'a' });
  assert.is(w.reboots, 1);
  assert.ok(r.ok && r.reboot.rebooted);
  // systemd-boot's rule: the newer version with tries left sorts first.
  assert.is(nextBootSlot([{ file: 'kiln-a.efi', version: '1.0.0' }, { file: 'kiln-b+3.efi', version: '2.0.0' }]), 'b');
  assert.not.ok(existsSync(join(w.stateBase, 'stable/download.json')), 'no progress file left behind');
  assert.ok(u.status().some((l) => /pending: 2\.0\.0 staged in slot b/.test(l)), u.status().join('\n'));
});

test('an older entry of the target slot (blessed or counting) is replaced, not kept next to the new one', async () => {
  w = await world();
  await w.publish('2.0.0');
  writeFileSync(join(w.esp, 'EFI/Linux/kiln-b.efi'), 'old blessed b');
  writeFileSync(join(w.esp, 'EFI/Linux/kiln-b+0-3.efi'), 'old bad b');
  const r = await w.updater().apply();
  assert.ok(r.ok, JSON.stringify(r));
  assert.equal(w.entries(), ['kiln-a.efi', 'kiln-b+3.efi']);
});

// The full download's resume (delta: false; updater-delta.test.ts covers the delta path's).
test('resume: a connection dropped mid-download continues with a Range request, bytes are not fetched twice', async () => {
  w = await world();
  const v2 = await w.publish('2.0.0', { rootSize: 400_000 });
  w.server.cutNext(ROOT_URL('2.0.0'), 150_000);
  const r = await w.updater({ delta: false }).apply();
  assert.ok(r.ok, JSON.stringify(r));
  const gets = w.server.requests.filter((q) => q.url === ROOT_URL('2.0.0'));
  assert.is(gets.length, 2, JSON.stringify(gets));
  assert.is(gets[0]!.range, undefined);
  const start = Number(/^bytes=(\d+)-$/.exec(gets[1]!.range ?? '')?.[1]);
  assert.ok(start > 0 && start <= 150_000, `resumed at ${gets[1]!.range}`);
  assert.is(gets[1]!.status, 206);
  assert.ok(prefixOf(w.slots.b, v2.root.length).equals(v2.root));
  assert.ok(w.logs.some((l) => /interrupted at byte/.test(l)));
});

test('resume across restarts: the progress file survives, the prefix is re-hashed from the device', async () => {
  w = await world();
  const v2 = await w.publish('2.0.0', { rootSize: 400_000 });
  w.server.cutNext(ROOT_URL('2.0.0'), 200_000);
  const first = await w.updater({ downloadAttempts: 1, delta: false }).apply();
  assert.is(first.ok, false);
  assert.is(!first.ok && first.stage, 'download');
  assert.is(w.reboots, 0);
  assert.equal(w.entries(), ['kiln-a.efi'], 'nothing staged while the download is incomplete');
  const prog = JSON.parse(readFileSync(join(w.stateBase, 'stable/download.json'), 'utf8'));
  assert.is(prog.version, '2.0.0');
  assert.ok(prog.written > 0 && prog.written <= 200_000);
  assert.ok(w.updater({ delta: false }).status().some((l) => /download: 2\.0\.0 \d+ of 400000 bytes/.test(l)), 'status shows the partial download');

  // "Reboot" of the updater process: a fresh instance picks up the progress file.
  const second = await w.updater({ bootId: 'boot-1', delta: false }).apply();
  assert.ok(second.ok, JSON.stringify(second));
  const last = w.server.requests.filter((q) => q.url === ROOT_URL('2.0.0')).at(-1)!;
  assert.is(last.range, `bytes=${prog.written}-`);
  assert.ok(prefixOf(w.slots.b, v2.root.length).equals(v2.root));
  assert.is(w.reboots, 1);
});

test('resume with a corrupted prefix on the device is caught by the final sha256', async () => {
  w = await world();
  await w.publish('2.0.0', { rootSize: 400_000 });
  w.server.cutNext(ROOT_URL('2.0.0'), 200_000);
  await w.updater({ downloadAttempts: 1, delta: false }).apply();
  const dev = readFileSync(w.slots.b);
  dev[10] ^= 0xff; // bit rot / someone wrote the partition between attempts
  writeFileSync(w.slots.b, dev);
  const r = await w.updater({ delta: false }).apply();
  assert.is(r.ok, false);
  assert.is(!r.ok && r.stage, 'verify');
  assert.equal(w.entries(), ['kiln-a.efi']);
  assert.not.ok(existsSync(join(w.stateBase, 'stable/download.json')), 'a failed verification starts over next time');
  // And the next attempt starts from zero and succeeds.
  const again = await w.updater({ delta: false }).apply();
  assert.ok(again.ok, JSON.stringify(again));
});

test('a server without Range support: the download starts over instead of splicing', async () => {
  w = await world();
  const v2 = await w.publish('2.0.0', { rootSize: 300_000 });
  w.server.cutNext(ROOT_URL('2.0.0'), 100_000);
  w.server.ignoreRange = true;
  const r = await w.updater().apply();
  assert.ok(r.ok, JSON.stringify(r));
  assert.ok(prefixOf(w.slots.b, v2.root.length).equals(v2.root));
});

test('tampered artifact: refused, nothing staged, channel state untouched', async () => {
  w = await world();
  await w.publish('2.0.0');
  const u = w.updater();
  assert.is((await u.check()).action, 'install');
  const stateBefore = readFileSync(w.stateFile());
  const served = join(w.pub, 'stable/2.0.0/x86_64/fixture-kiln-2.0.0-x86_64.root.squashfs');
  const bytes = readFileSync(served);
  bytes[12345] ^= 0x01;
  writeFileSync(served, bytes);

  const r = await u.apply();
  assert.is(r.ok, false);
  assert.is(!r.ok && r.stage, 'verify');
  assert.match(!r.ok ? r.message : '', /sha256/);
  assert.equal(w.entries(), ['kiln-a.efi'], 'no entry for slot b');
  assert.not.ok(existsSync(join(w.stateBase, 'stable/pending.json')));
  assert.ok(readFileSync(w.stateFile()).equals(stateBefore), 'channel state file unchanged');
  assert.is(w.reboots, 0);
});

test('a longer artifact than signed is cut off as soon as it passes the size', async () => {
  w = await world();
  const v2 = await w.publish('2.0.0');
  const served = join(w.pub, 'stable/2.0.0/x86_64/fixture-kiln-2.0.0-x86_64.root.squashfs');
  writeFileSync(served, Buffer.concat([v2.root, Buffer.alloc(70_000, 1)]));
  const r = await w.updater().apply();
  assert.is(!r.ok && r.stage, 'verify');
  assert.match(!r.ok ? r.message : '', /more than the \d+ bytes/);
  assert.is(readFileSync(w.slots.b).length <= v2.root.length + 4096, true, 'never wrote past the signed size');
});

test('tampered UKI: refused, no entry, no temp file left on the ESP', async () => {
  w = await world();
  await w.publish('2.0.0');
  const served = join(w.pub, 'stable/2.0.0/x86_64/fixture-kiln-2.0.0-x86_64.efi');
  const b = readFileSync(served); b[3] ^= 1; writeFileSync(served, b);
  const r = await w.updater().apply();
  assert.is(!r.ok && r.stage, 'verify');
  assert.equal(w.entries(), ['kiln-a.efi']);
  assert.not.ok(existsSync(join(w.stateBase, 'stable/pending.json')));
});

test('safety: never writes a slot device that is the booted one', async () => {
  w = await world();
  await w.publish('2.0.0');
  const before = readFileSync(w.slots.a);
  const r = await w.updater({ devices: { slotDevice: () => w.slots.a } }).apply();
  assert.is(!r.ok && r.stage, 'safety');
  assert.ok(readFileSync(w.slots.a).equals(before));
  assert.equal(w.entries(), ['kiln-a.efi']);
});

test('up to date: apply does nothing', async () => {
  w = await world();
  const r = await w.updater().apply();
  assert.is(r.ok, false);
  assert.is(!r.ok && r.check?.action, 'none');
  assert.is(w.reboots, 0);
  assert.equal(w.entries(), ['kiln-a.efi']);
  assert.is(sha(readFileSync(w.slots.b)), sha(Buffer.alloc(4096, 0x5a)));
});

test.run();
