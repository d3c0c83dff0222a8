// Secrets and logs stay root's: file modes of the last good config, the beta config space and
// the logs; config volumes mounted root-only; the plain-text password kept out of argv;
// SSH password login only when asked for; the image's fs.protected_* settings applied.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { applyDefaults } from '../../init/config/parse.ts';
import { configPaths } from '../../init/config/merge.ts';
import { applyPassword, applySysctls, CONFIG_VOLUME_OPTIONS, mountLabelled, parseSysctlConf, setChannel, SYSCTL_DIR, writePrivateFile } from '../../init/configure.ts';
import type { RunResult } from '../../init/exec.ts';
import { appendRotating, tightenLogDir } from '../../init/log.ts';
import { dropbearArgs, sshPasswordLogin } from '../../init/services/ssh.ts';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const tmp = (p: string) => mkdtempSync(join(tmpdir(), `kiln-${p}-`));
const mode = (p: string) => statSync(p).mode & 0o7777;

test('the last good config is written 0600, also over a file an earlier release left 0644', () => {
  const d = tmp('lg');
  const f = join(d, 'state/config.last-good.yaml');
  mkdirSync(join(d, 'state'));
  writeFileSync(f, 'old', { mode: 0o644 });
  chmodSync(f, 0o644);
  writePrivateFile(f, 'kiln:\n  token: K10secret\n');
  assert.is(readFileSync(f, 'utf8'), 'kiln:\n  token: K10secret\n');
  assert.is(mode(f), 0o600);
  const g = join(d, 'new/dir/last-good.yaml');
  writePrivateFile(g, 'x');
  assert.is(mode(g), 0o600);
});

test('`kiln channel set beta` copies the node config 0600 into a 0700 space', async () => {
  const r = tmp('chan');
  const stable = join(r, configPaths('stable').data);
  mkdirSync(join(stable, '..'), { recursive: true });
  writeFileSync(stable, 'kiln:\n  password: hunter2hunter2\n', { mode: 0o600 });
  const msg = await setChannel('beta', { root: r });
  assert.ok(msg.startsWith('channel beta: node config in /var/lib/kiln/beta/config.yaml'), msg);
  const beta = join(r, configPaths('beta').data);
  assert.is(readFileSync(beta, 'utf8'), 'kiln:\n  password: hunter2hunter2\n');
  assert.is(mode(beta), 0o600);
  assert.is(mode(join(beta, '..')), 0o700);
  assert.is(readFileSync(join(r, '/var/lib/kiln/channel'), 'utf8'), 'beta\n');
});

test('a beta space an earlier release made world-readable is tightened when beta is chosen again', async () => {
  const r = tmp('chan2');
  const beta = join(r, configPaths('beta').data);
  mkdirSync(join(beta, '..'), { recursive: true, mode: 0o755 });
  chmodSync(join(beta, '..'), 0o755);
  writeFileSync(beta, 'x');
  chmodSync(beta, 0o644);
  await setChannel('beta', { root: r });
  assert.is(mode(beta), 0o600);
  assert.is(mode(join(beta, '..')), 0o700);
});

test('config volumes are mounted read-only and root-only, whatever their own modes say', async () => {
  const calls: string[][] = [];
  const fake = async (type: string, dev: string, where: string, opts?: string) => {
    calls.push([type, dev, where, opts ?? '']);
    if (type === 'vfat') throw new Error('wrong fs type');
  };
  const dev = await mountLabelled(['cidata'], '/run/kiln/cidata', Promise.resolve(new Map([['cidata', '/dev/vdb']])), fake);
  assert.is(dev, '/dev/vdb');
  assert.equal(calls.map((c) => c[0]), ['vfat', 'iso9660']);
  const opts = (i: number) => calls[i][3].split(',');
  for (const i of [0, 1]) for (const o of ['ro', 'uid=0', 'gid=0', 'nosuid', 'nodev', 'noexec']) assert.ok(opts(i).includes(o), `${calls[i][0]}: ${o}`);
  assert.ok(opts(0).includes('umask=0077'));
  for (const o of ['mode=0400', 'dmode=0500', 'overriderockperms']) assert.ok(opts(1).includes(o), o);
  assert.is(CONFIG_VOLUME_OPTIONS.vfat, calls[0][3]);
});

test('logs: new files 0600 in a 0700 directory; files an earlier release left 0644 are tightened', () => {
  const d = join(tmp('log'), 'kiln');
  appendRotating(join(d, 'commands.log'), 'run_cmd[0] ["curl","-H","Authorization: x"]\n');
  assert.is(mode(d), 0o700);
  assert.is(mode(join(d, 'commands.log')), 0o600);
  writeFileSync(join(d, 'k3s.log'), 'old\n', { mode: 0o644 });
  chmodSync(join(d, 'k3s.log'), 0o644);
  appendRotating(join(d, 'k3s.log'), 'new\n');
  assert.is(mode(join(d, 'k3s.log')), 0o600);
  assert.is(readFileSync(join(d, 'k3s.log'), 'utf8'), 'old\nnew\n');
  // rotation keeps the mode
  appendRotating(join(d, 'k3s.log'), 'x'.repeat(64), 32);
  assert.is(mode(join(d, 'k3s.log')), 0o600);
  assert.is(mode(join(d, 'k3s.log.1')), 0o600);
  chmodSync(d, 0o755);
  writeFileSync(join(d, 'init.log.2'), '', { mode: 0o644 });
  chmodSync(join(d, 'init.log.2'), 0o644);
  tightenLogDir(d);
  assert.is(mode(d), 0o700);
  assert.is(mode(join(d, 'init.log.2')), 0o600);
});

function fakeEtc(): string {
  const r = tmp('pw');
  mkdirSync(join(r, 'etc'));
  writeFileSync(join(r, 'etc/shadow'), 'root:*:1::::::\nkiln:*:1::::::\n', { mode: 0o640 });
  return r;
}

test('kiln.password: the plain text reaches mkpasswd on stdin, never in argv; /etc/shadow is 0600', async () => {
  const r = fakeEtc();
  const seen: { cmd: string; args: string[]; input?: string }[] = [];
  const exec = async (cmd: string, args: string[] = [], o: { input?: string } = {}): Promise<RunResult> => {
    seen.push({ cmd, args, input: o.input });
    return { code: 0, signal: null, stdout: '$6$saltsalt$hashhashhash\n', stderr: '' };
  };
  const err = await applyPassword(applyDefaults({ kiln: { password: 'correct horse battery' }, ssh_authorized_keys: ['github:alice'] }), { root: r, exec });
  assert.is(err, undefined);
  assert.is(seen.length, 1);
  assert.is(seen[0].cmd, 'mkpasswd');
  assert.equal(seen[0].args, ['-m', 'sha512', '-P', '0']);
  assert.ok(!seen[0].args.join(' ').includes('horse'));
  assert.is(seen[0].input, 'correct horse battery\n');
  assert.is(readFileSync(join(r, 'etc/shadow'), 'utf8'), 'root:$6$saltsalt$hashhashhash:1::::::\nkiln:*:1::::::\n');
  assert.is(mode(join(r, 'etc/shadow')), 0o600);
});

test('kiln.password without any SSH key: set, and the owner is told SSH takes keys only', async () => {
  const exec = async (): Promise<RunResult> => ({ code: 0, signal: null, stdout: '$6$s$h\n', stderr: '' });
  const r = fakeEtc();
  const note = await applyPassword(applyDefaults({ kiln: { password: 'secret' } }), { root: r, exec });
  assert.is(note, 'kiln.password is for the console only and no SSH key is configured: SSH takes keys only unless kiln.ssh.password_login: true');
  assert.ok(readFileSync(join(r, 'etc/shadow'), 'utf8').startsWith('root:$6$s$h:'));
  assert.is(await applyPassword(applyDefaults({ kiln: { password: 'secret', ssh: { password_login: true } } }), { root: r, exec }), undefined);
  assert.is(await applyPassword(applyDefaults({ kiln: { password: 'secret' }, ssh_authorized_keys: ['github:alice'] }), { root: r, exec }), undefined);
});

test('kiln.password: a line break or a hash with \':\' is refused; /etc/shadow is left as it was', async () => {
  const r = fakeEtc();
  const exec = async (): Promise<RunResult> => { throw new Error('must not run'); };
  assert.match((await applyPassword(applyDefaults({ kiln: { password: 'a\nevil::0:0' } }), { root: r, exec }))!, /^kiln\.password: contains a line break/);
  assert.match((await applyPassword(applyDefaults({ kiln: { password: '$6$x$y:0:' } }), { root: r, exec }))!, /^kiln\.password: a crypt\(3\) hash cannot contain ':'/);
  assert.is(readFileSync(join(r, 'etc/shadow'), 'utf8'), 'root:*:1::::::\nkiln:*:1::::::\n');
});

test('kiln.password: mkpasswd that prints no hash is a problem, not an empty password', async () => {
  const r = fakeEtc();
  const exec = async (): Promise<RunResult> => ({ code: 0, signal: null, stdout: '\n', stderr: '' });
  const err = await applyPassword(applyDefaults({ kiln: { password: 'secret' } }), { root: r, exec });
  assert.ok(err?.startsWith('kiln.password: cannot hash it'), err);
  assert.is(readFileSync(join(r, 'etc/shadow'), 'utf8'), 'root:*:1::::::\nkiln:*:1::::::\n');
});

test('SSH: a password is for the console; dropbear takes passwords only with kiln.ssh.password_login', () => {
  const withPassword = applyDefaults({ kiln: { password: 'secret' } });
  assert.is(sshPasswordLogin(withPassword), false);
  assert.equal(dropbearArgs(22, sshPasswordLogin(withPassword)), ['-F', '-E', '-R', '-p', '22', '-s', '-g']);
  const optedIn = applyDefaults({ kiln: { password: 'secret', ssh: { password_login: true } } });
  assert.is(sshPasswordLogin(optedIn), true);
  assert.equal(dropbearArgs(2222, sshPasswordLogin(optedIn)), ['-F', '-E', '-R', '-p', '2222']);
  assert.is(sshPasswordLogin(applyDefaults({})), false);
});

test('the image sets fs.protected_symlinks, _hardlinks, _fifos and _regular at boot; kiln.sysctls may override', () => {
  const file = join(repo, 'overlay', SYSCTL_DIR, '50-kiln-protect.conf');
  const text = readFileSync(file, 'utf8');
  const want = { 'fs.protected_symlinks': '1', 'fs.protected_hardlinks': '1', 'fs.protected_fifos': '1', 'fs.protected_regular': '2' };
  assert.equal(Object.fromEntries(parseSysctlConf(text).map((s) => [s.key, s.value])), want);
  // applied from the image's sysctl.d, before (and under) the config's own
  const r = tmp('sysctl');
  mkdirSync(join(r, SYSCTL_DIR), { recursive: true });
  writeFileSync(join(r, SYSCTL_DIR, '50-kiln-protect.conf'), text);
  writeFileSync(join(r, SYSCTL_DIR, 'README'), 'fs.ignored = 1\n');
  const set: [string, string][] = [];
  const problems = applySysctls(applyDefaults({ kiln: { sysctls: { 'fs.protected_regular': '1', 'vm.swappiness': '10' } } }), { root: r, set: (k, v) => { set.push([k, v]); } });
  assert.equal(problems, []);
  assert.equal(set, [['fs.protected_symlinks', '1'], ['fs.protected_hardlinks', '1'], ['fs.protected_fifos', '1'], ['fs.protected_regular', '1'], ['vm.swappiness', '10']]);
});

test('sysctl.d: comments, blanks and a leading - (failure not reported) are understood', () => {
  assert.equal(parseSysctlConf('# c\n; c\n\n a.b = 1 \n-c.d=2\nnot a setting\n'), [
    { key: 'a.b', value: '1', optional: false },
    { key: 'c.d', value: '2', optional: true },
  ]);
  const r = tmp('sysctl2');
  mkdirSync(join(r, SYSCTL_DIR), { recursive: true });
  writeFileSync(join(r, SYSCTL_DIR, '10-a.conf'), 'fs.x = 1\n-fs.y = 1\n');
  const problems = applySysctls(applyDefaults({}), { root: r, set: () => { throw new Error('no such key'); } });
  assert.equal(problems, [`${SYSCTL_DIR}/10-a.conf fs.x: no such key`]);
  assert.ok(!existsSync(join(r, 'etc')));
});

test.run();
