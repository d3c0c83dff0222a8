import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { configCli } from '../../init/config/cli.ts';
import { decodeContent, parseConfig } from '../../init/config/parse.ts';
import { chooseConfig } from '../../init/config/merge.ts';

// One fixture per documented form (docs/config.md, "Forms from k3os, cloud-init and Kairos"):
// the exact output of `kiln config validate` (warnings at LINE:COL) and its exit code.
const dir = 'test/fixtures/compat';
const validate = (args: string[]) => {
  const lines: string[] = [];
  const code = configCli(['validate', ...args], (s) => lines.push(s), (s) => lines.push(s));
  return { code, lines };
};
const config = (name: string) => parseConfig(readFileSync(join(dir, name), 'utf8'), name).config as any;

const CASES: [string, string[]][] = [
  ['k3os.yaml', [
    ":2:1 warning: sshAuthorizedKeys: k3os's spelling of 'ssh_authorized_keys' (write 'ssh_authorized_keys')",
    ":8:3 warning: k3os.dnsNameservers: k3os's spelling of 'dns_nameservers' (write 'dns_nameservers')",
    ":9:3 warning: k3os.k3sArgs: k3os's spelling of 'k3s_args' (write 'k3s_args')",
    ':9:12 warning: k3os.k3sArgs: one string: read as the list [server, --disable=traefik] (write it as a list: [server, --disable=traefik])',
    ":12:5 warning: k3os.wifi[0].password: k3os's spelling of 'passphrase' (write 'passphrase')",
    ":13:1 warning: runCmd: k3os's spelling of 'run_cmd' (write 'run_cmd')",
    ': ok (6 warnings)']],
  ['k3os-lists.yaml', [":6:3 warning: k3os.k3sArgs: k3os's spelling of 'k3s_args' (write 'k3s_args')", ': ok (1 warning)']],
  ['binary.yaml', [': ok']],
  ['kairos.yaml', [
    ':2:1 warning: k3s: mapped to kiln.k3s_args: [server, --disable=traefik] and kiln.environment (write kiln: {k3s_args: [server, --disable=traefik]} instead)',
    ':8:1 warning: k3s-agent: ignored: enabled is false (remove it)',
    ': ok (2 warnings)']],
  ['chpasswd-list.yaml', [
    ':4:9 warning: chpasswd.list: root: mapped to kiln.password (write kiln: {password: ...} instead)',
    ':4:9 warning: chpasswd.list: bob: mapped to users[].passwd (write passwd: under that user instead)',
    ":4:9 warning: chpasswd.list: carol: ignored: that user is not in users: (give the user passwd: '$6$...' (make one with: openssl passwd -6))",
    ': ok (3 warnings)']],
  ['cloud-init.yaml', [
    ':2:1 warning: fqdn: mapped to hostname: node-1 (write hostname: instead)',
    ':3:1 warning: timezone: ignored: kiln has no time zone setting and the node keeps UTC; give containers TZ in their own spec (remove it)',
    ':4:1 warning: ssh_pwauth: mapped to kiln.ssh.password_login (write kiln: {ssh: {password_login: false}} instead)',
    ':5:1 warning: manage_etc_hosts: ignored: kiln always writes the host name into /etc/hosts itself (remove it)',
    ':6:1 warning: growpart: ignored: kiln always grows its data partition to fill the disk at first boot (remove it)',
    ':7:1 warning: ntp: mapped to kiln.ntp_servers (ntp1.example.com, pool.example.com) (write kiln: {ntp_servers: [...]} instead)',
    ":19:3 warning: users[1].sudo: ignored: the image has no sudo and no setuid program, so no user but root can act as root; give root's ssh_authorized_keys instead (remove it)",
    ':22:3 warning: chpasswd.expire: ignored: kiln has no password expiry (remove it)',
    ':24:5 warning: chpasswd.users[0]: root: mapped to kiln.password (write kiln: {password: ...} instead)',
    ': note: runcmd runs once per instance; run_cmd runs every boot',
    ': ok (9 warnings)']],
];

test('each documented form validates with exit 0, its warnings at LINE:COL', () => {
  for (const [name, want] of CASES) {
    const f = join(dir, name);
    const r = validate([f]);
    assert.equal(r.lines, want.map((l) => `${f}${l}`), name);
    assert.is(r.code, 0, name);
  }
});

test('hints: a folded list item is a warning; a #! script is a script; every problem in one pass', () => {
  const folded = join(dir, 'folded-item.yaml');
  assert.equal(validate([folded]), { code: 0, lines: [
    `${folded}:4:4 warning: (yaml): this '- ' is read as more text of the item above ('server - --cluster-init'), not as a new item (indent every '- ' of the list to the same column)`,
    `${folded}: ok (1 warning)`] });
  const script = join(dir, 'script.sh');
  assert.equal(validate([script]), { code: 0, lines: [`${script}: ok (a #! script, not YAML: as user-data the node runs it at every boot, after run_cmd; its contents are not checked)`] });
  const bad = join(dir, 'one-pass.yaml');
  assert.equal(validate([bad]), { code: 1, lines: [
    `${bad}:1:1 power_state: unknown key 'power_state' (kiln reboots itself for updates; use run_cmd to power off or reboot)`,
    `${bad}:2:11 hostname: expected a string, got number 12 (put the value in quotes: '12')`,
    `${bad}:6:12 write_files[0].content: content is not valid base64 (encode the content as b64 says, or change encoding)`] });
});

test('--strict makes warnings fail; a file without any still passes', () => {
  assert.is(validate(['--strict', join(dir, 'kairos.yaml')]).code, 1);
  assert.is(validate(['--strict', join(dir, 'binary.yaml')]).code, 0);
  // an error still fails without --strict, warnings or not
  const tmp = 'c.yaml';
  const r = parseConfig('sshAuthorizedKeys: [github:a]\nkiln: {chanel: beta}\n', tmp);
  assert.is(r.config, undefined);
  assert.equal(r.problems.map((p) => p.severity), ['warning', undefined]);
});

test('the forms are read as the canonical keys', () => {
  assert.equal(config('k3os.yaml'), {
    ssh_authorized_keys: ['github:example'],
    kiln: { data_sources: ['cdrom'], modules: ['kvm'], ntp_servers: ['time.example.com'], dns_nameservers: ['192.168.1.1'], k3s_args: ['server', '--disable=traefik'], wifi: [{ name: 'home', passphrase: 'correcthorse' }] },
    run_cmd: ['echo hi'],
  });
  assert.equal(config('k3os-lists.yaml').kiln, { data_sources: ['aws', 'gcp'], dns_nameservers: ['1.1.1.1'], taints: ['dedicated=db:NoSchedule'], k3s_args: ['server', '--cluster-init'] });
  assert.equal(config('k3os-lists.yaml').ssh_authorized_keys, ['github:example']);
  assert.equal(config('binary.yaml').write_files.map((w: any) => decodeContent(w).toString()), ['hello\n', 'zipped\n', 'hello\n']);
  assert.equal(config('kairos.yaml').kiln, { k3s_args: ['server', '--disable=traefik'], environment: { HTTP_PROXY: 'http://proxy.example:3128' } });
  assert.equal(config('chpasswd-list.yaml'), { users: [{ name: 'bob', passwd: '$6$salt$hash' }], kiln: { password: 'rootpw' } });
  const c = config('cloud-init.yaml');
  assert.is(c.hostname, 'node-1');
  assert.equal(c.kiln, { ntp_servers: ['ntp1.example.com', 'pool.example.com'], ssh: { password_login: false }, password: 'secret' });
  assert.equal(c.users[1], { name: 'alice', gecos: 'Alice', homedir: '/home/alice', groups: ['users', 'wheel'], lock_passwd: false, passwd: '$6$abc$def', shell: '/bin/sh' });
  assert.equal(c.groups, [{ name: 'admins' }]);
  // runcmd keeps cloud-init's meaning (once per instance): a key of its own, not run_cmd
  assert.equal([c.runcmd, c.run_cmd], [['echo done'], undefined]);
});

test('validate notes runcmd (once per instance) beside run_cmd (every boot); a config without runcmd gets no note', () => {
  const f = join(dir, 'k3os.yaml');
  assert.not.ok(validate([f]).lines.some((l) => l.includes('note:')));
  const both = join(dir, 'cloud-init.yaml');
  const r = validate(['--strict', both]);
  assert.is(r.code, 1); // the warnings, not the note
  assert.ok(r.lines.includes(`${both}: note: runcmd runs once per instance; run_cmd runs every boot`));
});

test('an explicit canonical key wins over a mapped cloud-init key', () => {
  const r = parseConfig('hostname: a\nfqdn: b.example.com\nntp: {servers: [x]}\nkiln: {ntp_servers: [y]}\n', 'c.yaml');
  assert.is(r.config?.hostname, 'a');
  assert.equal(r.config?.kiln?.ntp_servers, ['y']);
  // cloud-init's ssh_pwauth: unchanged has no kiln meaning: ignored, with a warning
  const u = parseConfig('ssh_pwauth: unchanged\n', 'c.yaml');
  assert.equal(u.config, {});
  assert.equal(u.problems.map((p) => [p.line, p.col, p.severity]), [[1, 1, 'warning']]);
});

test('on the node, warnings are reported and the config is used and saved as last good', () => {
  const text = readFileSync(join(dir, 'kairos.yaml'), 'utf8');
  const choice = chooseConfig({ sources: [{ file: '/var/lib/kiln/config.yaml', text }], lastGood: 'hostname: old\n' });
  assert.is(choice.ok, true);
  assert.is(choice.used, 'new');
  assert.is(choice.problems.length, 2);
  assert.equal(choice.config.kiln.k3s_args, ['server', '--disable=traefik']);
  assert.ok(choice.lastGood?.includes('--disable=traefik'));
});

test.run();
