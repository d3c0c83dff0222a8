import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cpioFromDir, writeCpio, type CpioEntry } from '../../builder/formats/cpio.ts';

const hdr = (f: number[]) => '070701' + f.map((n) => n.toString(16).toUpperCase().padStart(8, '0')).join('');

test('a one-file archive matches the hand-computed bytes', () => {
  const out = writeCpio([{ path: 'hello.txt', type: 'file', mode: 0o644, data: Buffer.from('hi\n') }]);
  // ino, mode, uid, gid, nlink, mtime, filesize, devmaj, devmin, rdevmaj, rdevmin, namesize, check
  const fileHdr = '070701' + '00000001' + '000081A4' + '00000000' + '00000000' + '00000001' + '00000000' +
    '00000003' + '00000000' + '00000000' + '00000000' + '00000000' + '0000000A' + '00000000';
  const trailerHdr = '070701' + '00000000' + '00000000' + '00000000' + '00000000' + '00000001' + '00000000' +
    '00000000' + '00000000' + '00000000' + '00000000' + '00000000' + '0000000B' + '00000000';
  const expected = Buffer.concat([
    Buffer.from(fileHdr, 'ascii'), Buffer.from('hello.txt\0'), // 110 + 10 = 120: already aligned
    Buffer.from('hi\n'), Buffer.alloc(1), // data 3 + 1 pad = 124
    Buffer.from(trailerHdr, 'ascii'), Buffer.from('TRAILER!!!\0'), Buffer.alloc(3), // 124 + 124 = 248
    Buffer.alloc(512 - 248),
  ]);
  assert.is(fileHdr.length, 110);
  assert.is(out.length, 512);
  assert.ok(out.equals(expected), 'archive bytes differ from the expected layout');
});

test('mtime, uid, gid and device numbers land in their fields', () => {
  const out = writeCpio([
    { path: 'dev', type: 'dir' },
    { path: 'dev/sda', type: 'block', mode: 0o660, uid: 7, gid: 6, major: 8, minor: 0 },
  ], { mtime: 1700000000 });
  const at = 116; // 110-byte header + 'dev\0' = 114, padded to 116
  assert.is(out.subarray(at, at + 110).toString('ascii'), hdr([2, 0o060660, 7, 6, 1, 1700000000, 0, 0, 0, 8, 0, 8, 0]));
  assert.is(out.subarray(0, 110).toString('ascii'), hdr([1, 0o040755, 0, 0, 2, 1700000000, 0, 0, 0, 0, 0, 4, 0]));
});

test('output is sorted parents-first with sequential inodes, and is deterministic', () => {
  const entries: CpioEntry[] = [
    { path: 'b/x', type: 'file', data: Buffer.from('1') },
    { path: 'a-b', type: 'file', data: Buffer.from('2') },
    { path: 'b', type: 'dir' },
    { path: 'a', type: 'dir' },
    { path: 'a/y', type: 'symlink', target: '../b/x' },
  ];
  const one = writeCpio(entries);
  const two = writeCpio([...entries].reverse());
  assert.ok(one.equals(two));
  const names: string[] = [];
  const inos: number[] = [];
  for (let off = 0; ;) {
    const h = one.subarray(off, off + 110).toString('ascii');
    const f = (i: number) => parseInt(h.slice(6 + i * 8, 14 + i * 8), 16);
    const nsz = f(11);
    const name = one.subarray(off + 110, off + 110 + nsz - 1).toString();
    if (name === 'TRAILER!!!') break;
    names.push(name); inos.push(f(0));
    off += 110 + nsz; off += (4 - (off % 4)) % 4;
    off += f(6); off += (4 - (off % 4)) % 4;
  }
  // byte order: '-' (0x2d) sorts before '/' (0x2f); a parent always precedes its children
  assert.equal(names, ['a', 'a-b', 'a/y', 'b', 'b/x']);
  assert.equal(inos, [1, 2, 3, 4, 5]);
});

test('bad input is refused with the path named', () => {
  assert.throws(() => writeCpio([{ path: 'x/y', type: 'file' }]), /'x\/y' has no parent directory entry 'x'/);
  assert.throws(() => writeCpio([{ path: 'a', type: 'dir' }, { path: '/a', type: 'dir' }]), /listed twice/);
  assert.throws(() => writeCpio([{ path: '../etc', type: 'dir' }]), /not a clean relative path/);
  assert.throws(() => writeCpio([{ path: 'l', type: 'symlink' }]), /symlink 'l' has no target/);
  assert.throws(() => writeCpio([{ path: 'c', type: 'char' }]), /major and minor/);
});

test('GNU cpio lists names, modes, link targets, device numbers and sizes', () => {
  const big = Buffer.alloc(5001, 7);
  const archive = writeCpio([
    { path: 'bin', type: 'dir', mode: 0o755 },
    { path: 'bin/tool', type: 'file', mode: 0o4755, data: big },
    { path: 'bin/sh', type: 'symlink', target: 'tool' },
    { path: 'dev', type: 'dir', mode: 0o755 },
    { path: 'dev/console', type: 'char', mode: 0o600, major: 5, minor: 1 },
    { path: 'init', type: 'file', mode: 0o700, data: Buffer.from('#!/bin/sh\n') },
    { path: 'empty', type: 'file' },
  ]);
  const listing = execFileSync('cpio', ['-itv', '--quiet'], { input: archive, env: { ...process.env, TZ: 'UTC', LC_ALL: 'C' } }).toString().trim().split('\n');
  const rows = listing.map((l) => l.split(/\s+/));
  assert.equal(rows.map((r) => `${r[0]} ${r.slice(r.indexOf('1970') + 1).join(' ')}`), [
    'drwxr-xr-x bin', 'lrwxrwxrwx bin/sh -> tool', '-rwsr-xr-x bin/tool', 'drwxr-xr-x dev', 'crw------- dev/console', '-rw-r--r-- empty', '-rwx------ init',
  ]);
  const line = (name: string) => listing.find((l) => l.includes(` ${name}`))!;
  assert.match(line('bin/tool'), / 5001 Jan  1  1970 bin\/tool$/);
  assert.match(line('dev/console'), / 5,\s+1 Jan  1  1970 dev\/console$/);
  assert.match(line('init'), / 10 Jan  1  1970 init$/);
  assert.match(line('bin/sh'), / 4 Jan  1  1970 bin\/sh -> tool$/);
});

test('cpioFromDir walks a tree sorted, keeps modes and symlinks, and cpio extracts it identically', () => {
  const src = mkdtempSync(join(tmpdir(), 'kiln-cpio-src-'));
  const dst = mkdtempSync(join(tmpdir(), 'kiln-cpio-dst-'));
  try {
    mkdirSync(join(src, 'z/deep'), { recursive: true });
    mkdirSync(join(src, 'a'));
    writeFileSync(join(src, 'a/run'), 'echo\n'); chmodSync(join(src, 'a/run'), 0o750);
    writeFileSync(join(src, 'z/deep/data'), Buffer.alloc(1234, 1)); chmodSync(join(src, 'z/deep/data'), 0o640);
    symlinkSync('../a/run', join(src, 'z/link'));
    chmodSync(join(src, 'z'), 0o711); chmodSync(src, 0o700); chmodSync(join(src, 'a'), 0o755); chmodSync(join(src, 'z/deep'), 0o755);
    const entries = cpioFromDir(src, 'root');
    assert.equal(entries.map((e) => `${e.path} ${e.type} ${e.type === 'symlink' ? e.target : (e.mode! & 0o7777).toString(8)}`), [
      'root dir 700', 'root/a dir 755', 'root/a/run file 750', 'root/z dir 711', 'root/z/deep dir 755', 'root/z/deep/data file 640', 'root/z/link symlink ../a/run',
    ]);
    assert.equal(cpioFromDir(src, '').map((e) => e.path)[0], 'a');
    execFileSync('cpio', ['-idm', '--quiet', '--no-absolute-filenames'], { cwd: dst, input: writeCpio(cpioFromDir(src, 'root')) });
    assert.is(readFileSync(join(dst, 'root/a/run'), 'utf8'), 'echo\n');
    assert.is(lstatSync(join(dst, 'root/a/run')).mode & 0o7777, 0o750);
    assert.is(lstatSync(join(dst, 'root/z/deep/data')).mode & 0o7777, 0o640);
    assert.is(lstatSync(join(dst, 'root/z/deep/data')).size, 1234);
    assert.is(readlinkSync(join(dst, 'root/z/link')), '../a/run');
  } finally {
    rmSync(src, { recursive: true, force: true });
    rmSync(dst, { recursive: true, force: true });
  }
});

test.run();
