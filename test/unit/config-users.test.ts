// cloud-init's users and groups, applied to a root in a temp directory as the node applies
// them at every boot: /etc/passwd, /etc/group, /etc/shadow, /etc/shells, homes and keys.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig, applyDefaults } from '../../init/config/parse.ts';
import { applySshKeys, applyUsers } from '../../init/configure.ts';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyOfAlice alice@laptop';
const BASE = { passwd: 'root:x:0:0:root:/root:/bin/sh\n', group: 'root:x:0:\n', shadow: 'root:*:1::::::\n' };

/** The image's /etc, as rebuilt at every boot, in a temp root with /bin/ash. */
function fakeRoot(): string {
  const r = mkdtempSync(join(tmpdir(), 'kiln-users-'));
  chmodSync(r, 0o755);
  mkdirSync(join(r, 'etc'), { mode: 0o755 });
  mkdirSync(join(r, 'root'), { mode: 0o700 });
  mkdirSync(join(r, 'bin'));
  writeFileSync(join(r, 'bin/busybox'), '', { mode: 0o755 });
  resetEtc(r);
  return r;
}
function resetEtc(r: string) {
  writeFileSync(join(r, 'etc/passwd'), BASE.passwd);
  writeFileSync(join(r, 'etc/group'), BASE.group);
  writeFileSync(join(r, 'etc/shadow'), BASE.shadow, { mode: 0o600 });
}
/** A config as the node has it: parsed (cloud-init forms mapped), defaults filled. */
const config = (yaml: string) => {
  const p = parseConfig(yaml, 'user-data');
  assert.equal(p.problems.filter((x) => x.severity !== 'warning'), [], yaml);
  return applyDefaults(p.config!);
};
const etc = (r: string, f: string) => readFileSync(join(r, 'etc', f), 'utf8');
const entry = (r: string, f: string, name: string) => etc(r, f).split('\n').find((l) => l.startsWith(`${name}:`));

const CLOUD = `#cloud-config
groups:
  - admins: [alice]
  - cloud-users
users:
  - name: alice
    gecos: Alice Liddell
    homedir: /srv/alice
    primary_group: staff
    groups: [cloud-users, wheel]
    shell: /bin/ash
    lock_passwd: true
    passwd: $6$salt$hash
    inactive: '30'
    ssh_authorized_keys: [${JSON.stringify(KEY)}]
  - name: bob
    groups: "admins, video"
    lock_passwd: false
    passwd: $6$bsalt$bhash
  - name: svc
    system: true
`;

test('users: home, shell, gecos, primary group, supplementary groups (made when missing), shadow, system users', () => {
  const r = fakeRoot();
  assert.equal(applyUsers(config(CLOUD), { root: r }), []);
  assert.is(entry(r, 'passwd', 'alice'), 'alice:x:1000:1002:Alice Liddell:/srv/alice:/bin/ash');
  assert.is(entry(r, 'passwd', 'bob'), 'bob:x:1001:1004::/home/bob:/bin/sh');
  assert.is(entry(r, 'passwd', 'svc'), 'svc:x:999:999::/home/svc:/bin/sh');
  // top-level groups first, then each user's primary group and the supplementary ones
  const groups = Object.fromEntries(etc(r, 'group').trim().split('\n').map((l) => { const f = l.split(':'); return [f[0], { gid: Number(f[2]), members: f[3] ? f[3].split(',') : [] }]; }));
  assert.equal(Object.keys(groups).sort(), ['admins', 'bob', 'cloud-users', 'root', 'staff', 'svc', 'video', 'wheel']);
  assert.equal(groups.admins.members, ['bob', 'alice']);
  assert.equal(groups['cloud-users'].members, ['alice']);
  assert.equal(groups.wheel.members, ['alice']);
  assert.equal(groups.video.members, ['bob']);
  // gid = uid where free; else the first free gid (admins and cloud-users took 1000 and 1001)
  assert.equal([groups.staff.gid, groups.wheel.gid, groups.bob.gid, groups.svc.gid], [1002, 1003, 1004, 999]);
  // gids are unique
  assert.is(new Set(Object.values(groups).map((g) => g.gid)).size, Object.keys(groups).length);
  // locked: the hash behind '!'; the inactive field; no password is '*'
  assert.is(entry(r, 'shadow', 'alice'), 'alice:!$6$salt$hash:1::::30::');
  assert.is(entry(r, 'shadow', 'bob'), 'bob:$6$bsalt$bhash:1::::::');
  assert.is(entry(r, 'shadow', 'svc'), 'svc:*:1::::::');
  assert.is(statSync(join(r, 'etc/shadow')).mode & 0o777, 0o600);
  // homes: made for login users (the user's, 0750), not for system users
  const home = statSync(join(r, 'srv/alice'));
  assert.equal([home.uid, home.gid, home.mode & 0o777], [1000, 1002, 0o750]);
  assert.ok(statSync(join(r, 'home/bob')).isDirectory());
  assert.throws(() => statSync(join(r, 'home/svc')));
  // dropbear refuses a shell /etc/shells does not list
  assert.is(etc(r, 'shells'), '/bin/sh\n/bin/ash\n');
});

test('users are applied at every boot with the same result: twice on one /etc, and on an /etc rebuilt from the image', () => {
  const r = fakeRoot();
  const c = config(CLOUD);
  applyUsers(c, { root: r });
  const first = ['passwd', 'group', 'shadow', 'shells'].map((f) => etc(r, f));
  assert.equal(applyUsers(c, { root: r }), []);
  assert.equal(['passwd', 'group', 'shadow', 'shells'].map((f) => etc(r, f)), first);
  resetEtc(r);
  assert.equal(applyUsers(c, { root: r }), []);
  assert.equal(['passwd', 'group', 'shadow', 'shells'].map((f) => etc(r, f)), first);
});

test('on a rebuilt /etc, a user whose home exists keeps the uid that owns it, whatever the order of users', () => {
  const r = fakeRoot();
  applyUsers(config('users: [{name: carol}, {name: dave}]\n'), { root: r });
  assert.is(statSync(join(r, 'home/dave')).uid, 1001);
  resetEtc(r);
  // carol left the config: dave would be 1000 by order, but his home says 1001; erin, new,
  // gets neither 1000 (carol's home, and her .ssh, are still there) nor 1001
  assert.equal(applyUsers(config('users: [{name: dave}, {name: erin}]\n'), { root: r }), []);
  assert.is(entry(r, 'passwd', 'dave'), 'dave:x:1001:1001::/home/dave:/bin/sh');
  assert.is(entry(r, 'passwd', 'erin'), 'erin:x:1002:1002::/home/erin:/bin/sh');
});

test('what cannot be applied is reported and the rest applied: a missing shell, a plain-text passwd, a member that is no user', () => {
  const r = fakeRoot();
  const c = config('groups: [{ops: [frank, nobody-here]}]\nusers:\n  - name: frank\n    shell: /bin/bash\n    passwd: hunter2\n    lock_passwd: false\n');
  assert.equal(applyUsers(c, { root: r }), [
    'users frank: shell /bin/bash is not on this node; /bin/sh is used instead',
    "users frank: passwd is not a crypt(3) hash ('$6$...'); the user has no password (make one with: openssl passwd -6)",
    'groups ops: member nobody-here is not a user on this node; left out',
  ]);
  assert.is(entry(r, 'passwd', 'frank'), 'frank:x:1000:1001::/home/frank:/bin/sh');
  assert.is(entry(r, 'shadow', 'frank'), 'frank:*:1::::::');
  assert.is(entry(r, 'group', 'ops'), 'ops:x:1000:frank');
  // a shell the node has is listed for dropbear
  mkdirSync(join(r, 'usr/bin'), { recursive: true });
  writeFileSync(join(r, 'usr/bin/fish'), '#!/bin/sh\n', { mode: 0o755 });
  applyUsers(config('users: [{name: gina, shell: /usr/bin/fish}]\n'), { root: r });
  assert.is(etc(r, 'shells'), '/bin/sh\n/bin/ash\n/usr/bin/fish\n');
});

test('a homedir that exists keeps its owner; one that is not a plain path is refused for that user alone', () => {
  const r = fakeRoot();
  mkdirSync(join(r, 'srv/shared'), { recursive: true });
  const c = config('users: [{name: jo, homedir: /srv/shared}, {name: kim, homedir: /home/../etc}, {name: lee}]\n');
  assert.equal(applyUsers(c, { root: r }), ["users kim: homedir /home/../etc is not a plain absolute path (no '.', '..', '//' or trailing '/')"]);
  assert.is(statSync(join(r, 'srv/shared')).uid, 0);
  assert.is(statSync(join(r, 'etc')).uid, 0);
  assert.is(entry(r, 'passwd', 'kim'), undefined);
  assert.ok(entry(r, 'passwd', 'lee'));
});

test('uid, no_create_home and expiredate as useradd sets them; a uid another user has is reported', () => {
  const r = fakeRoot();
  const c = config("users:\n  - {name: mia, uid: 1500, no_create_home: true, expiredate: '2031-12-31', hashed_passwd: $6$m$h}\n  - {name: ned, uid: 1500}\n");
  assert.equal(applyUsers(c, { root: r }), ["users ned: uid 1500 is mia's; a free one is used"]);
  assert.is(entry(r, 'passwd', 'mia'), 'mia:x:1500:1500::/home/mia:/bin/sh');
  assert.is(entry(r, 'shadow', 'mia'), `mia:!$6$m$h:1:::::${Date.UTC(2031, 11, 31) / 86_400_000}:`);
  assert.throws(() => statSync(join(r, 'home/mia')));
  assert.is(entry(r, 'passwd', 'ned'), 'ned:x:1000:1000::/home/ned:/bin/sh');
  // cloud-init keys kiln cannot apply: accepted, with why
  const w = parseConfig('users: [{name: a, plain_text_passwd: x, doas: [permit a]}]\n', 'u.yaml').problems.map((p) => p.message);
  assert.equal(w, ["ignored: kiln takes a user's password only as a crypt(3) hash; give passwd: '$6$...' (make one with: openssl passwd -6)", 'ignored: the image has no doas and no setuid program, so no user but root can act as root']);
});

test('keys go to the home the user has (homedir), owned by the user', async () => {
  const r = fakeRoot();
  const c = config(CLOUD);
  applyUsers(c, { root: r });
  const k = await applySshKeys(c, { root: r, offline: true });
  assert.equal(k.problems, []);
  const f = join(r, 'srv/alice/.ssh/authorized_keys');
  assert.is(readFileSync(f, 'utf8'), `${KEY}\n`);
  assert.equal([statSync(f).uid, statSync(f).mode & 0o777], [1000, 0o600]);
});

test('sudo is accepted with a warning that says why it is ignored; sudo: false says nothing', () => {
  const w = parseConfig('users: [{name: a, sudo: ALL=(ALL) NOPASSWD:ALL}, {name: b, sudo: false}]\n', 'u.yaml').problems;
  assert.equal(w.map((p) => `${p.line}:${p.col} ${p.severity} ${p.key}: ${p.message}`), [
    "1:19 warning users[0].sudo: ignored: the image has no sudo and no setuid program, so no user but root can act as root; give root's ssh_authorized_keys instead",
  ]);
});

// the owner of an existing home is read through lstat: make one owned by another uid
test('an existing home owned by a uid another user has is not taken over by uid', () => {
  const r = fakeRoot();
  mkdirSync(join(r, 'home/hank'), { recursive: true });
  chownSync(join(r, 'home/hank'), 1000, 1000);
  applyUsers(config('users: [{name: ivy, uid: 1000}, {name: hank}]\n'), { root: r });
  // ivy holds 1000: hank's home's uid is taken, so hank gets a free one and his home
  assert.is(entry(r, 'passwd', 'ivy')!.split(':')[2], '1000');
  const hank = Number(entry(r, 'passwd', 'hank')!.split(':')[2]);
  assert.is.not(hank, 1000);
  assert.is(statSync(join(r, 'home/hank')).uid, hank);
});

test.run();
