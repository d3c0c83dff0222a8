// Laying packages, overlay/ and our own files into the root tree on the build host: no
// write may leave the root, whatever symlinks an earlier package left (an absolute one
// points at the build host). The packages are real .debs built here with dpkg-deb.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { layDebs, layOverlay } from '../../builder/rootfs.ts';
import { copyIntoRoot, existsInRoot, removeInRoot, symlinkInRoot, writeInRoot } from '../../builder/inroot.ts';

const made: string[] = [];
const tmp = (what: string) => { const d = mkdtempSync(join(tmpdir(), `kiln-layer-${what}-`)); made.push(d); return d; };
test.after(() => { for (const d of made) rmSync(d, { recursive: true, force: true }); });

type Entry = { file: string; body: string; mode?: number } | { link: string; to: string } | { dir: string };

/** A real .deb with these entries (dpkg-deb, root-owned). */
function makeDeb(name: string, entries: Entry[]): { name: string; file: string } {
  const src = tmp(`src-${name}`);
  mkdirSync(join(src, 'DEBIAN'));
  writeFileSync(join(src, 'DEBIAN/control'), `Package: ${name}\nVersion: 1.0\nArchitecture: all\nMaintainer: kiln <kiln@example.org>\nDescription: test fixture\n`);
  for (const e of entries) {
    if ('dir' in e) { mkdirSync(join(src, e.dir), { recursive: true }); continue; }
    const p = join(src, 'file' in e ? e.file : e.link);
    mkdirSync(dirname(p), { recursive: true });
    if ('file' in e) { writeFileSync(p, e.body); chmodSync(p, e.mode ?? 0o644); } else symlinkSync(e.to, p);
  }
  const deb = join(tmp(`deb-${name}`), `${name}_1.0_all.deb`);
  execFileSync('dpkg-deb', ['--root-owner-group', '-Zgzip', '--build', src, deb], { stdio: 'pipe' });
  return { name: `${name} 1.0 (all)`, file: deb };
}

test('packages layer into the root in order: files, modes and relative symlinks kept', async () => {
  const root = tmp('root');
  await layDebs(root, [
    makeDeb('first', [{ file: 'usr/bin/tool', body: 'tool\n', mode: 0o755 }, { link: 'usr/bin/alias', to: 'tool' }]),
    makeDeb('second', [{ file: 'usr/lib/x/lib.so', body: 'lib' }, { file: 'usr/bin/other', body: 'o', mode: 0o4755 }]),
  ]);
  assert.is(readFileSync(join(root, 'usr/bin/tool'), 'utf8'), 'tool\n');
  assert.is(statSync(join(root, 'usr/bin/tool')).mode & 0o7777, 0o755);
  assert.is(statSync(join(root, 'usr/bin/other')).mode & 0o7777, 0o4755);
  assert.is(readlinkSync(join(root, 'usr/bin/alias')), 'tool');
  assert.is(readFileSync(join(root, 'usr/lib/x/lib.so'), 'utf8'), 'lib');
});

test("a later package cannot write through an earlier package's absolute symlink onto the host", async () => {
  const host = tmp('host');
  const root = tmp('root');
  const err = await layDebs(root, [
    makeDeb('linker', [{ link: 'etc/escape', to: host }]),
    makeDeb('writer', [{ file: 'etc/escape/pwned', body: 'outside the root' }]),
  ]).then(() => undefined, (e: Error) => e);
  assert.ok(err, 'the second package must be refused');
  assert.match(err!.message, /^writer 1\.0 \(all\): cannot be laid into the root: .*'etc\/escape' is not a directory \(a symlink or file\), refusing to write through it \(an earlier package in debian.packages put a symlink, file or directory there: the packages conflict\)$/);
  assert.equal(readdirSync(host), [], 'nothing written on the host');
  assert.is(readlinkSync(join(root, 'etc/escape')), host, "the first package's link stays as it was");
});

test("a later package's file replaces an earlier package's symlink instead of writing through it", async () => {
  const host = tmp('host');
  writeFileSync(join(host, 'victim'), 'safe');
  const root = tmp('root');
  await layDebs(root, [
    makeDeb('linker', [{ link: 'etc/conf', to: join(host, 'victim') }]),
    makeDeb('writer', [{ file: 'etc/conf', body: 'new' }]),
  ]);
  assert.is(readFileSync(join(host, 'victim'), 'utf8'), 'safe');
  assert.ok(lstatSync(join(root, 'etc/conf')).isFile());
  assert.is(readFileSync(join(root, 'etc/conf'), 'utf8'), 'new');
});

test("the builder's own writes, removals and existence checks stay inside the root", async () => {
  const host = tmp('host');
  mkdirSync(join(host, 'doc'));
  writeFileSync(join(host, 'doc/keep'), 'host file');
  writeFileSync(join(host, 'node'), 'host node');
  const root = tmp('root');
  await layDebs(root, [makeDeb('links', [
    { link: 'usr/share', to: host }, // a whole directory redirected to the host
    { link: 'usr/bin/node', to: join(host, 'node') },
    { link: 'etc/hostname', to: join(host, 'hostname') }, // dangling on the host
  ])]);
  // Pruning usr/share/doc must not delete the host's folder.
  assert.throws(() => removeInRoot(root, 'usr/share/doc'), /'usr\/share\/doc': 'usr\/share' in the root is a symlink; refusing to go through it/);
  assert.ok(existsSync(join(host, 'doc/keep')));
  assert.throws(() => writeInRoot(root, 'usr/share/kiln/x', 'x'), /'usr\/share' in the root is a symlink/);
  assert.throws(() => existsInRoot(root, 'usr/share/doc'), /'usr\/share' in the root is a symlink/);
  // Our node replaces the package's link; the host file is untouched.
  const node = join(tmp('src'), 'node');
  writeFileSync(node, 'our node');
  copyIntoRoot(root, 'usr/bin/node', node, 0o755);
  assert.is(readFileSync(join(host, 'node'), 'utf8'), 'host node');
  assert.ok(lstatSync(join(root, 'usr/bin/node')).isFile());
  assert.is(statSync(join(root, 'usr/bin/node')).mode & 0o7777, 0o755);
  // A package's dangling link counts as present (so /etc defaults leave it), and is never followed.
  assert.ok(existsInRoot(root, 'etc/hostname'));
  assert.not.ok(existsInRoot(root, 'etc/hosts'));
  assert.not.ok(existsSync(join(host, 'hostname')));
  symlinkInRoot(root, 'etc/hostname', 'other');
  assert.is(readlinkSync(join(root, 'etc/hostname')), 'other');
  assert.throws(() => writeInRoot(root, '../outside', 'x'), /climbs out of the root/);
  assert.throws(() => removeInRoot(root, ''), /the root itself/);
});

test("overlay/ is laid with git's modes and its symlinks, never changes the root's directories, and never goes through a symlink", async () => {
  const overlay = tmp('overlay');
  mkdirSync(join(overlay, 'usr/bin'), { recursive: true });
  writeFileSync(join(overlay, 'usr/bin/kiln'), '#!/bin/sh\n');
  chmodSync(join(overlay, 'usr/bin/kiln'), 0o755);
  symlinkSync('kiln', join(overlay, 'usr/bin/k'));
  writeFileSync(join(overlay, 'usr/bin/data'), 'x');
  mkdirSync(join(overlay, 'usr/lib/kiln'), { recursive: true });
  // A checkout made under umask 002: group-writable directories and files.
  for (const d of ['', 'usr', 'usr/bin', 'usr/lib', 'usr/lib/kiln']) chmodSync(join(overlay, d), 0o775);
  chmodSync(join(overlay, 'usr/bin/kiln'), 0o775);
  chmodSync(join(overlay, 'usr/bin/data'), 0o664);
  const root = tmp('root');
  chmodSync(root, 0o755);
  mkdirSync(join(root, 'usr/bin'), { recursive: true });
  layOverlay(root, overlay);
  assert.is(statSync(join(root, 'usr/bin/kiln')).mode & 0o7777, 0o755);
  assert.is(statSync(join(root, 'usr/bin/data')).mode & 0o7777, 0o644);
  assert.is(readlinkSync(join(root, 'usr/bin/k')), 'kiln');
  for (const d of ['', 'usr', 'usr/bin', 'usr/lib', 'usr/lib/kiln']) assert.is(statSync(join(root, d)).mode & 0o7777, 0o755, `/${d} keeps 0755`);

  const host = tmp('host');
  const bad = tmp('root');
  await layDebs(bad, [makeDeb('linker', [{ link: 'usr', to: host }])]);
  assert.throws(() => layOverlay(bad, overlay), /'usr': 'usr' in the root is a symlink; refusing to go through it/);
  assert.equal(readdirSync(host), []);
});

test.run();
