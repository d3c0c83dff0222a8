// Files init writes as root into places users own: authorized_keys, write_files, users'
// homes. Each test builds a small root in a temp directory, with real links, directories
// and files, and hands parts of it to an unprivileged uid (4242) to play the user.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, chownSync, existsSync, lchownSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { applyDefaults } from '../../init/config/parse.ts';
import type { KilnConfigInput } from '../../init/config/schema.ts';
import { applySshKeys, applyUsers, writeFiles } from '../../init/configure.ts';
import { openDir, closeDir } from '../../init/safefs.ts';

const ALICE = 4242;
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyOfAlice alice@laptop';
const ROOT_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyOfRoot root@laptop';

/** A root with /etc (passwd, group, shadow), /root, and alice's home owned by alice. */
function fakeRoot(): string {
  const r = mkdtempSync(join(tmpdir(), 'kiln-safe-'));
  chmodSync(r, 0o755);
  mkdirSync(join(r, 'etc'), { mode: 0o755 });
  writeFileSync(join(r, 'etc/passwd'), `root:x:0:0::/root:/bin/sh\nalice:x:${ALICE}:${ALICE}::/home/alice:/bin/sh\n`);
  writeFileSync(join(r, 'etc/group'), `root:x:0:\nalice:x:${ALICE}:\n`);
  writeFileSync(join(r, 'etc/shadow'), 'root:*:1::::::\nalice:*:1::::::\n', { mode: 0o600 });
  mkdirSync(join(r, 'root'), { mode: 0o700 });
  mkdirSync(join(r, 'home/alice'), { recursive: true, mode: 0o750 });
  chownSync(join(r, 'home/alice'), ALICE, ALICE);
  return r;
}
const cfg = (c: KilnConfigInput) => applyDefaults(c);
const aliceKeys = cfg({ users: [{ name: 'alice', ssh_authorized_keys: [KEY] }] });
const owner = (p: string) => lstatSync(p).uid;
const mode = (p: string) => lstatSync(p).mode & 0o7777;

// ---- authorized_keys ----

test('a ~/.ssh that links to /etc is refused and reported: /etc keeps its owner and gets no file', async () => {
  const r = fakeRoot();
  symlinkSync(join(r, 'etc'), join(r, 'home/alice/.ssh'));
  lchown(join(r, 'home/alice/.ssh'));
  const res = await applySshKeys(aliceKeys, { root: r, offline: true });
  assert.is(owner(join(r, 'etc')), 0);
  assert.is(existsSync(join(r, 'etc/authorized_keys')), false);
  assert.ok(res.problems.some((p) => p.includes('users alice') && p.includes('.ssh is not a directory')), res.problems.join('\n'));
});

test('a ~/.ssh owned by someone else is left alone', async () => {
  const r = fakeRoot();
  mkdirSync(join(r, 'home/alice/.ssh'), { mode: 0o755 });
  const res = await applySshKeys(aliceKeys, { root: r, offline: true });
  assert.is(owner(join(r, 'home/alice/.ssh')), 0);
  assert.is(existsSync(join(r, 'home/alice/.ssh/authorized_keys')), false);
  assert.ok(res.problems.some((p) => p.includes('owned by uid 0, not 4242')), res.problems.join('\n'));
});

test('authorized_keys that links to a root file is replaced, not written through', async () => {
  const r = fakeRoot();
  mkdirSync(join(r, 'home/alice/.ssh'), { mode: 0o700 });
  chownSync(join(r, 'home/alice/.ssh'), ALICE, ALICE);
  symlinkSync(join(r, 'etc/shadow'), join(r, 'home/alice/.ssh/authorized_keys'));
  // the old fixed temp name, planted too
  symlinkSync(join(r, 'etc/passwd'), join(r, 'home/alice/.ssh/authorized_keys.tmp'));
  const res = await applySshKeys(aliceKeys, { root: r, offline: true });
  assert.equal(res.problems, []);
  assert.is(readFileSync(join(r, 'etc/shadow'), 'utf8'), 'root:*:1::::::\nalice:*:1::::::\n');
  assert.ok(readFileSync(join(r, 'etc/passwd'), 'utf8').startsWith('root:x:0:0:'));
  assert.is(owner(join(r, 'etc/shadow')), 0);
  assert.is(owner(join(r, 'etc/passwd')), 0);
  const ak = join(r, 'home/alice/.ssh/authorized_keys');
  assert.ok(lstatSync(ak).isFile());
  assert.is(readFileSync(ak, 'utf8'), `${KEY}\n`);
  assert.is(owner(ak), ALICE);
  assert.is(mode(ak), 0o600);
});

test('a missing ~/.ssh is made 0700 and the user\'s; root\'s keys go to /root/.ssh; no temp file is left', async () => {
  const r = fakeRoot();
  const res = await applySshKeys(cfg({ ssh_authorized_keys: [ROOT_KEY], users: [{ name: 'alice', ssh_authorized_keys: [KEY] }] }), { root: r, offline: true });
  assert.equal(res.problems, []);
  assert.is(res.count, 2);
  for (const [home, uid, key] of [['home/alice', ALICE, KEY], ['root', 0, ROOT_KEY]] as const) {
    const ssh = join(r, home, '.ssh');
    assert.is(owner(ssh), uid);
    assert.is(mode(ssh), 0o700);
    assert.is(readFileSync(join(ssh, 'authorized_keys'), 'utf8'), `${key}\n`);
    assert.is(owner(join(ssh, 'authorized_keys')), uid);
    assert.equal(readdirSync(ssh), ['authorized_keys']);
  }
});

test('a home an administrator moved behind a link in root-only /home is followed', async () => {
  const r = fakeRoot();
  mkdirSync(join(r, 'data/alice'), { recursive: true, mode: 0o750 });
  chownSync(join(r, 'data/alice'), ALICE, ALICE);
  rmSync(join(r, 'home/alice'), { recursive: true });
  symlinkSync('../data/alice', join(r, 'home/alice'));
  const res = await applySshKeys(aliceKeys, { root: r, offline: true });
  assert.equal(res.problems, []);
  assert.is(readFileSync(join(r, 'data/alice/.ssh/authorized_keys'), 'utf8'), `${KEY}\n`);
  assert.is(owner(join(r, 'data/alice/.ssh')), ALICE);
});

test('chosenOk: false leaves root\'s authorized_keys as it is and says why', async () => {
  const r = fakeRoot();
  mkdirSync(join(r, 'root/.ssh'), { mode: 0o700 });
  writeFileSync(join(r, 'root/.ssh/authorized_keys'), `${ROOT_KEY}\n`, { mode: 0o600 });
  // a stand-in config (the defaults) has no keys: writing it would lock root out
  const res = await applySshKeys(applyDefaults({}), { root: r, offline: true, chosenOk: false });
  assert.is(readFileSync(join(r, 'root/.ssh/authorized_keys'), 'utf8'), `${ROOT_KEY}\n`);
  assert.is(res.count, 0);
  assert.ok(res.problems.length === 1 && /not|no config/.test(res.problems[0]) && res.problems[0].includes('left as it is'), res.problems.join('\n'));
  // and with chosenOk true the config is applied
  await applySshKeys(applyDefaults({}), { root: r, offline: true, chosenOk: true });
  assert.is(readFileSync(join(r, 'root/.ssh/authorized_keys'), 'utf8'), '');
});

// ---- write_files ----

test('write_files: a planted <path>.kiln-tmp link does not make root overwrite its target', () => {
  const r = fakeRoot();
  symlinkSync(join(r, 'etc/shadow'), join(r, 'home/alice/notes.kiln-tmp'));
  const problems = writeFiles(cfg({ write_files: [{ path: '/home/alice/notes', content: 'hello\n', owner: 'alice:alice', permissions: '0640' }] }), { root: r });
  assert.equal(problems, []);
  assert.is(readFileSync(join(r, 'etc/shadow'), 'utf8'), 'root:*:1::::::\nalice:*:1::::::\n');
  assert.is(readFileSync(join(r, 'home/alice/notes'), 'utf8'), 'hello\n');
  assert.is(owner(join(r, 'home/alice/notes')), ALICE);
  assert.is(mode(join(r, 'home/alice/notes')), 0o640);
});

test('write_files: a link the user put in the path is not followed, and neither its target nor its owner changes', () => {
  const r = fakeRoot();
  mkdirSync(join(r, 'secret'), { mode: 0o700 });
  symlinkSync(join(r, 'secret'), join(r, 'home/alice/conf'));
  symlinkSync(join(r, 'etc/shadow'), join(r, 'home/alice/log'));
  const problems = writeFiles(cfg({
    write_files: [
      { path: '/home/alice/conf/app.conf', content: 'x', owner: 'alice' },
      { path: '/home/alice/log', content: 'appended\n', append: true, owner: 'alice' },
    ],
  }), { root: r });
  assert.is(problems.length, 2);
  assert.ok(problems[0].startsWith('write_files[0] /home/alice/conf/app.conf: ') && problems[0].includes('not followed'), problems[0]);
  assert.ok(problems[1].startsWith('write_files[1] /home/alice/log: ') && problems[1].includes('not followed'), problems[1]);
  assert.equal(readdirSync(join(r, 'secret')), []);
  assert.is(owner(join(r, 'secret')), 0);
  assert.is(readFileSync(join(r, 'etc/shadow'), 'utf8'), 'root:*:1::::::\nalice:*:1::::::\n');
  assert.is(owner(join(r, 'etc/shadow')), 0);
  assert.is(mode(join(r, 'etc/shadow')), 0o600);
});

test('write_files: append refuses a hard link in a user\'s directory, follows a link root made in its own', () => {
  const r = fakeRoot();
  linkSync(join(r, 'etc/shadow'), join(r, 'home/alice/hard'));
  writeFileSync(join(r, 'etc/real.conf'), 'a\n');
  symlinkSync('real.conf', join(r, 'etc/alias.conf'));
  const problems = writeFiles(cfg({
    write_files: [
      { path: '/home/alice/hard', content: 'evil::0:0::/:/bin/sh\n', append: true, owner: 'alice' },
      { path: '/etc/alias.conf', content: 'b\n', append: true },
    ],
  }), { root: r });
  assert.is(problems.length, 1);
  assert.ok(problems[0].includes('hard links'), problems[0]);
  assert.is(readFileSync(join(r, 'etc/shadow'), 'utf8'), 'root:*:1::::::\nalice:*:1::::::\n');
  assert.is(owner(join(r, 'etc/shadow')), 0);
  assert.is(readFileSync(join(r, 'etc/real.conf'), 'utf8'), 'a\nb\n');
});

test('write_files: set-id modes survive the owner change; an unknown owner writes nothing', () => {
  const r = fakeRoot();
  const problems = writeFiles(cfg({
    write_files: [
      { path: '/usr/local/bin/tool', content: '#!/bin/sh\n', owner: 'alice', permissions: '4755' },
      { path: '/etc/nobody.conf', content: 'x', owner: 'nobody' },
    ],
  }), { root: r });
  assert.equal(problems, ["write_files[1] /etc/nobody.conf: unknown user 'nobody'"]);
  assert.is(mode(join(r, 'usr/local/bin/tool')), 0o4755);
  assert.is(owner(join(r, 'usr/local/bin/tool')), ALICE);
  assert.is(owner(join(r, 'usr/local/bin')), 0);
  assert.is(existsSync(join(r, 'etc/nobody.conf')), false);
});

// ---- users ----

test('applyUsers makes the home 0750 and the new user\'s, through the open directory', () => {
  const r = fakeRoot();
  mkdirSync(join(r, 'home/bob'), { mode: 0o755 }); // left by an earlier user
  const problems = applyUsers(cfg({ users: [{ name: 'bob' }, { name: 'carol' }] }), { root: r });
  assert.equal(problems, []);
  const uidOf = (n: string) => Number(readFileSync(join(r, 'etc/passwd'), 'utf8').split('\n').find((l) => l.startsWith(`${n}:`))!.split(':')[2]);
  assert.is(owner(join(r, 'home/bob')), uidOf('bob'));
  const carol = join(r, 'home/carol');
  assert.ok(statSync(carol).isDirectory());
  assert.is(mode(carol), 0o750);
  assert.is(owner(carol), uidOf('carol'));
});

test('applyUsers on a fresh /etc gives each user back the uid that owns their home, and a new user none of those', () => {
  // /etc is rebuilt every boot, /home is not: the order of users (or one removed) must not
  // hand a home, and its .ssh, to someone else.
  const r = fakeRoot();
  for (const [n, uid] of [['bob', 1001], ['gone', 1000]] as const) {
    mkdirSync(join(r, `home/${n}/.ssh`), { recursive: true, mode: 0o750 });
    chownSync(join(r, `home/${n}`), uid, uid);
    chownSync(join(r, `home/${n}/.ssh`), uid, uid);
  }
  assert.equal(applyUsers(cfg({ users: [{ name: 'carol' }, { name: 'bob', ssh_authorized_keys: [KEY] }] }), { root: r }), []);
  const uidOf = (n: string) => Number(readFileSync(join(r, 'etc/passwd'), 'utf8').split('\n').find((l) => l.startsWith(`${n}:`))!.split(':')[2]);
  assert.is(uidOf('bob'), 1001);
  assert.is(uidOf('carol'), 1002);
  assert.is(owner(join(r, 'home/carol')), 1002);
});

// ---- the path walk itself ----

test('openDir follows links only where root alone can write, and says which link it refused', () => {
  const r = fakeRoot();
  mkdirSync(join(r, 'a/b'), { recursive: true });
  symlinkSync('a', join(r, 'ln'));                 // in a root-only directory: followed
  symlinkSync(join(r, 'a'), join(r, 'home/alice/x')); // in alice's: refused
  const d = openDir(join(r, 'ln/b'));
  assert.is(d.path, join(r, 'a/b'));
  closeDir(d);
  assert.throws(() => openDir(join(r, 'home/alice/x/b')), (e: Error) => e.message.includes(`${join(r, 'home/alice/x')} is a symbolic link in ${join(r, 'home/alice')}`));
  // world-writable, even if root owns it
  mkdirSync(join(r, 'pub'), { mode: 0o777 }); chmodSync(join(r, 'pub'), 0o1777);
  symlinkSync(join(r, 'a'), join(r, 'pub/ln'));
  assert.throws(() => openDir(join(r, 'pub/ln')), /not followed/);
});

/** The link itself becomes alice's, as if she had made it. */
function lchown(p: string) { lchownSync(p, ALICE, ALICE); }

test.run();
