import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import * as tar from 'tar-stream';
import { extractDeb, readArMembers } from '../../builder/debian/deb.ts';
import { findTool } from '../../builder/tools.ts';

type E = tar.Header extends infer H ? Partial<H> & { name: string; body?: string } : never;

async function makeTar(entries: E[]): Promise<Buffer> {
  const p = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => { for await (const c of p) chunks.push(c as Buffer); })();
  for (const { body, ...h } of entries) {
    await new Promise<void>((res, rej) => p.entry({ mtime: new Date(1700000000000), uid: 0, gid: 0, ...h }, body ?? '', (e) => e ? rej(e) : res()));
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

// ar: global magic, then 60-byte headers; members padded to even length.
function makeAr(members: [string, Buffer][]): Buffer {
  const parts: Buffer[] = [Buffer.from('!<arch>\n')];
  for (const [name, data] of members) {
    const h = name.padEnd(16) + '1700000000'.padEnd(12) + '0'.padEnd(6) + '0'.padEnd(6) + '100644'.padEnd(8) + String(data.length).padEnd(10) + '`\n';
    parts.push(Buffer.from(h, 'latin1'), data);
    if (data.length % 2) parts.push(Buffer.from('\n'));
  }
  return Buffer.concat(parts);
}

const made: string[] = [];
const tmp = () => { const d = mkdtempSync(join(tmpdir(), 'kiln-deb-')); made.push(d); return d; };
test.after(() => {
  for (const d of made) {
    // read-only dirs from the fixtures must be writable again to be removed
    spawnSync('chmod', ['-R', 'u+w', d]);
    rmSync(d, { recursive: true, force: true });
  }
});

async function makeDeb(entries: E[], compress: 'gz' | 'xz' | 'zst' | 'none' = 'gz'): Promise<string> {
  const raw = await makeTar(entries);
  let data: Buffer;
  if (compress === 'gz') data = gzipSync(raw);
  else if (compress === 'none') data = raw;
  else data = spawnSync(compress === 'xz' ? 'xz' : 'zstd', ['-c', '-q'], { input: raw, maxBuffer: 1 << 26 }).stdout;
  const file = join(tmp(), 'p.deb');
  writeFileSync(file, makeAr([
    ['debian-binary', Buffer.from('2.0\n')],
    ['control.tar.gz', gzipSync(await makeTar([{ name: './control', body: 'Package: p\n' }]))],
    [compress === 'none' ? 'data.tar' : `data.tar.${compress}`, data],
  ]));
  return file;
}

const GOOD: E[] = [
  { name: './', type: 'directory', mode: 0o755 },
  { name: './usr/', type: 'directory', mode: 0o755 },
  { name: './usr/bin/', type: 'directory', mode: 0o755 },
  { name: './usr/bin/tool', type: 'file', mode: 0o755, body: '#!/bin/sh\necho tool\n' },
  { name: './usr/bin/suid', type: 'file', mode: 0o4755, body: 'setuid program' },
  { name: './usr/bin/alias', type: 'symlink', linkname: 'tool' },
  { name: './usr/lib/abs-link', type: 'symlink', linkname: '/usr/bin/tool' }, // parent dir not listed
  { name: './usr/bin/hard', type: 'link', linkname: './usr/bin/tool' },
  { name: './etc/', type: 'directory', mode: 0o755 },
  { name: './etc/ro/', type: 'directory', mode: 0o555 },
  { name: './etc/ro/conf', type: 'file', mode: 0o640, body: 'x=1\n' },
];

function checkGood(dir: string) {
  assert.is(readFileSync(join(dir, 'usr/bin/tool'), 'utf8'), '#!/bin/sh\necho tool\n');
  assert.is(statSync(join(dir, 'usr/bin/tool')).mode & 0o7777, 0o755);
  assert.is(statSync(join(dir, 'usr/bin/suid')).mode & 0o7777, 0o4755, 'setuid bit kept');
  assert.ok(lstatSync(join(dir, 'usr/bin/alias')).isSymbolicLink());
  assert.is(readlinkSync(join(dir, 'usr/bin/alias')), 'tool');
  assert.is(readlinkSync(join(dir, 'usr/lib/abs-link')), '/usr/bin/tool');
  assert.is(statSync(join(dir, 'usr/bin/hard')).ino, statSync(join(dir, 'usr/bin/tool')).ino, 'hardlink shares the inode');
  assert.is(statSync(join(dir, 'usr/bin/tool')).nlink, 2);
  assert.is(statSync(join(dir, 'etc/ro')).mode & 0o7777, 0o555, 'read-only dir mode applied after its children');
  assert.is(statSync(join(dir, 'etc/ro/conf')).mode & 0o7777, 0o640);
  assert.is(statSync(join(dir, 'usr/bin/tool')).mtimeMs, 1700000000000);
  assert.not.ok(existsSync(join(dir, 'control')), 'control.tar is not extracted');
}

test('ar reader lists members with offsets', async () => {
  const deb = await makeDeb(GOOD);
  const m = readArMembers(deb);
  assert.equal(m.map((x) => x.name), ['debian-binary', 'control.tar.gz', 'data.tar.gz']);
  assert.is(readFileSync(deb).subarray(m[0].offset, m[0].offset + m[0].size).toString(), '2.0\n');
});

for (const c of ['gz', 'xz', 'zst', 'none'] as const) {
  test(`extracts data.tar${c === 'none' ? '' : '.' + c}: modes, setuid, symlinks, hardlinks`, async () => {
    if ((c === 'xz' && !findTool('xz')) || (c === 'zst' && !findTool('zstd'))) return;
    const dir = tmp();
    await extractDeb(await makeDeb(GOOD, c), dir);
    checkGood(dir);
  });
}

async function refuses(entries: E[], re: RegExp, compress: 'gz' | 'xz' = 'gz') {
  const outer = tmp();
  const dir = join(outer, 'root');
  mkdirSync(dir);
  try {
    await extractDeb(await makeDeb(entries, compress), dir);
    assert.unreachable('should refuse');
  } catch (e) {
    assert.match((e as Error).message, re);
  }
  assert.equal(readdirSync(outer), ['root'], 'nothing written next to the destination');
  return outer;
}

test("refuses '../' paths and absolute paths", async () => {
  await refuses([{ name: './ok', body: 'x' }, { name: './a/../../evil', body: 'x' }], /refusing path '.\/a\/..\/..\/evil'/);
  await refuses([{ name: '../evil', body: 'x' }], /climbs out/, 'xz');
  await refuses([{ name: '/etc/evil', body: 'x' }], /refusing absolute path/);
  await refuses([{ name: './ok', body: 'x' }, { name: './h', type: 'link', linkname: '../ok' }], /climbs out/);
});

test('refuses to write through a symlink from the same archive', async () => {
  const outer = await refuses([
    { name: './esc', type: 'symlink', linkname: '..' },
    { name: './esc/pwn', body: 'x' },
  ], /'esc' is not a directory/);
  assert.not.ok(existsSync(join(outer, 'pwn')));
  // A file entry over an existing symlink replaces the link instead of following it.
  const dir = tmp();
  const target = join(tmp(), 'victim');
  writeFileSync(target, 'safe');
  await extractDeb(await makeDeb([{ name: './f', type: 'symlink', linkname: target }, { name: './f', body: 'new' }]), dir);
  assert.is(readFileSync(target, 'utf8'), 'safe');
  assert.is(readFileSync(join(dir, 'f'), 'utf8'), 'new');
});

test('refuses a hardlink to a missing file, device nodes, and non-debs', async () => {
  await refuses([{ name: './h', type: 'link', linkname: './missing' }], /not an earlier file/);
  await refuses([{ name: './dev/null', type: 'character-device', devmajor: 1, devminor: 3 }], /unsupported entry type/);
  const notDeb = join(tmp(), 'x.deb');
  writeFileSync(notDeb, 'hello world');
  try { await extractDeb(notDeb, tmp()); assert.unreachable(); } catch (e) { assert.match((e as Error).message, /not an ar archive/); }
});

test('a corrupt xz member is an error, not a hang', async () => {
  if (!findTool('xz')) return;
  const deb = await makeDeb(GOOD, 'xz');
  const buf = readFileSync(deb);
  const m = readArMembers(deb).find((x) => x.name === 'data.tar.xz')!;
  buf[m.offset + Math.floor(m.size / 2)] ^= 0xff;
  writeFileSync(deb, buf);
  // Depending on timing, tar-stream may see the truncated stream before xz exits with its error.
  try { await extractDeb(deb, tmp()); assert.unreachable(); } catch (e) { assert.match((e as Error).message, /xz -dc failed|corrupt|invalid|checksum|unexpected end|tar/i); }
});

test.run();
