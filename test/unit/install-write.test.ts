// The installer's disk writer against a fake medium (a folder laid out as the ISO) and a
// regular file as the target disk: images hashed while they stream, the table written last.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, ftruncateSync, mkdirSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { buildGpt, readGpt, stableGuid } from '../../init/disk/gpt.ts';
import { layoutFor, minDiskBytes, type IsoManifest } from '../../init/disk/layout.ts';
import { planInstall, readManifest, writeDisk } from '../../init/install.ts';

const MiB = 1024 * 1024;
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const dirs: string[] = [];
test.after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

function medium(o: { corruptRoot?: boolean; corruptEsp?: boolean } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-medium-'));
  dirs.push(dir);
  mkdirSync(join(dir, 'kiln'));
  const root = randomBytes(3 * MiB + 123), esp = Buffer.concat([randomBytes(64 * 1024), Buffer.alloc(2 * MiB)]);
  const m: IsoManifest = {
    version: '1.2.3', arch: 'x86_64', espMiB: 8, rootMiB: 8, minDataMiB: 8,
    root: 'kiln/root.img', rootBytes: root.length, rootSha256: sha(root),
    esp: 'kiln/esp.img.gz', espBytes: esp.length, espSha256: sha(esp),
  };
  const onMedium = Buffer.from(root);
  if (o.corruptRoot) onMedium[2 * MiB + 7] ^= 0x01; // one flipped bit, deep inside
  const espOnMedium = Buffer.from(esp);
  if (o.corruptEsp) espOnMedium[100] ^= 0x80;
  writeFileSync(join(dir, 'kiln/root.img'), onMedium);
  writeFileSync(join(dir, 'kiln/esp.img.gz'), gzipSync(espOnMedium));
  writeFileSync(join(dir, 'kiln/install.json'), JSON.stringify(m));
  return { dir, m, root, esp };
}

/** A sparse file standing for the target disk, holding an old GPT (another system's disk). */
function target(size = minDiskBytes(8, 8, 8) + 3 * MiB) {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-target-'));
  dirs.push(dir);
  const file = join(dir, 'disk.img');
  const old = buildGpt({ diskSizeBytes: size, diskGuid: stableGuid('old'), partitions: layoutFor('x86_64', size, 8, 8).map((p) => ({ ...p, guid: stableGuid(`old:${p.name}`) })) });
  const fd = openSync(file, 'w');
  try { ftruncateSync(fd, size); writeSync(fd, old.primary, 0, old.primary.length, 0); writeSync(fd, old.backup, 0, old.backup.length, old.backupOffset); } finally { closeSync(fd); }
  return { file, size };
}

function readAt(file: string, offset: number, length: number): Buffer {
  const fd = openSync(file, 'r'), b = Buffer.alloc(length);
  try { readSync(fd, b, 0, length, offset); } finally { closeSync(fd); }
  return b;
}

async function install(med: ReturnType<typeof medium>, t: ReturnType<typeof target>) {
  const m = readManifest(med.dir);
  const facts = { name: 'vdb', sizeBytes: t.size, readOnly: false, partitions: ['vdb1'], inUse: [], isMedium: false };
  const layout = planInstall(facts, m, true);
  const log: string[] = [];
  await writeDisk({ target: t.file, sizeBytes: t.size, medium: med.dir, manifest: m, layout, log: (l) => log.push(l) });
  return { layout, log };
}

test('writeDisk: a good medium gives the kiln layout, the images byte for byte, random GUIDs', async () => {
  const med = medium();
  const t1 = target(), t2 = target();
  const { layout } = await install(med, t1);
  await install(med, t2);
  const g1 = readGpt(readAt(t1.file, 0, MiB)), g2 = readGpt(readAt(t2.file, 0, MiB));
  assert.equal(g1.partitions.map((p) => p.name), ['esp', 'kiln-root-a', 'kiln-root-b', 'kiln-data']);
  assert.ok(readAt(t1.file, layout[1]!.firstLba * 512, med.root.length).equals(med.root), 'root slot a');
  assert.ok(readAt(t1.file, layout[0]!.firstLba * 512, med.esp.length).equals(med.esp), 'ESP');
  // Installed disks do not share GUIDs with each other (nor with the old table).
  const ids = (g: typeof g1) => [g.diskGuid, ...g.partitions.map((p) => p.guid)];
  assert.is(new Set([...ids(g1), ...ids(g2), stableGuid('old')]).size, 11);
  assert.is(readAt(t1.file, t1.size - 512, 8).toString('latin1'), 'EFI PART', 'backup header written');
});

for (const [what, o, re] of [
  ['root', { corruptRoot: true }, /the root image read from the medium \(kiln\/root\.img: 3145851 bytes, sha256 [0-9a-f]{64}\) is not the one this ISO was built with .* the medium is damaged; write it again/],
  ['ESP', { corruptEsp: true }, /the ESP image read from the medium \(kiln\/esp\.img\.gz: .*\) is not the one this ISO was built with/],
] as const) {
  test(`writeDisk: a damaged ${what} image is refused and the disk is left without a partition table`, async () => {
    const med = medium(o);
    const t = target();
    let err: Error | undefined;
    try { await install(med, t); } catch (e) { err = e as Error; }
    assert.ok(err, 'the install must fail');
    assert.match(err!.message, re);
    assert.match(err!.message, /left without a partition table/);
    // Neither the new table nor the old one: no firmware boots it, no tool "repairs" it.
    assert.throws(() => readGpt(readAt(t.file, 0, MiB)), /no GPT header/);
    assert.not.ok(readAt(t.file, t.size - 512, 512).includes('EFI PART'), 'old backup header wiped');
  });
}

test('writeDisk: a truncated ESP stream or a missing image is refused the same way', async () => {
  const med = medium();
  const gz = readFileSync(join(med.dir, 'kiln/esp.img.gz'));
  writeFileSync(join(med.dir, 'kiln/esp.img.gz'), gz.subarray(0, gz.length >> 1));
  const t = target();
  const err = await install(med, t).then(() => undefined, (e: Error) => e);
  assert.match(err?.message ?? '', /the ESP image on the medium \(kiln\/esp\.img\.gz\) cannot be read: .*write it again\. The target disk was left without a partition table/);
  assert.throws(() => readGpt(readAt(t.file, 0, MiB)), /no GPT header/);
  const med2 = medium();
  rmSync(join(med2.dir, 'kiln/root.img'));
  const err2 = await install(med2, target()).then(() => undefined, (e: Error) => e);
  assert.match(err2?.message ?? '', /the root image on the medium \(kiln\/root\.img\) cannot be read: ENOENT/);
});

test('readManifest: refuses a manifest without hashes, with a clear message', () => {
  const med = medium();
  const { rootSha256: _r, ...noHash } = med.m;
  writeFileSync(join(med.dir, 'kiln/install.json'), JSON.stringify(noHash));
  assert.throws(() => readManifest(med.dir), /kiln\/install\.json: rootSha256 is missing, expected a sha256 in hex/);
  writeFileSync(join(med.dir, 'kiln/install.json'), JSON.stringify({ ...med.m, root: '../../etc/shadow' }));
  assert.throws(() => readManifest(med.dir), /root is .*expected a path inside the medium/);
  writeFileSync(join(med.dir, 'kiln/install.json'), ' '.repeat(70_000));
  assert.throws(() => readManifest(med.dir), /no usable kiln\/install\.json \(70000 bytes, more than 65536\)/);
});

test.run();
