import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chooseConfig, mergeConfigs, parseCmdline, PATHS, readLocalSources, tokenizeCmdline } from '../../init/config/merge.ts';
import { formatProblem, parseConfig } from '../../init/config/parse.ts';

const cfg = (text: string) => {
  const r = parseConfig(text, 'x.yaml');
  assert.equal(r.problems, [], text);
  return r.config!;
};

test('later sources win; maps merge deeply; lists append or replace as the schema says', () => {
  const image = cfg('hostname: image\nssh_authorized_keys: [github:ops]\nkiln:\n  sysctls: {a.b: 1, c.d: 1}\n  k3s_args: [server]\n  dns_nameservers: [1.1.1.1]\n  modules: [kvm]\n  labels: {tier: base}\n');
  const data = cfg('hostname: data\nssh_authorized_keys: [gh:ops, github:alice]\nkiln:\n  sysctls: {c.d: 2}\n  k3s_args: [agent]\n  modules: [kvm, nvme]\n  network: {interfaces: {eth0: {dhcp: true}}}\n');
  const dropIn = cfg('kiln:\n  dns_nameservers: [9.9.9.9]\n  labels: {zone: a}\n  network: {interfaces: {eth0: {mtu: 9000}}}\n');
  const m = mergeConfigs([image, data, dropIn]) as any;
  assert.is(m.hostname, 'data');
  assert.equal(m.ssh_authorized_keys, ['github:ops', 'github:alice']); // append, de-duplicated after normalising gh:
  assert.equal(m.kiln.sysctls, { 'a.b': '1', 'c.d': '2' });
  assert.equal(m.kiln.k3s_args, ['agent']); // replace
  assert.equal(m.kiln.dns_nameservers, ['9.9.9.9']); // replace
  assert.equal(m.kiln.modules, ['kvm', 'nvme']); // append
  assert.equal(m.kiln.labels, { tier: 'base', zone: 'a' });
  assert.equal(m.kiln.network.interfaces.eth0, { dhcp: true, mtu: 9000 });
  // inputs are not modified
  assert.equal(image.kiln!.k3s_args, ['server']);
});

test('users and wifi entries with the same name replace the earlier one', () => {
  const a = cfg('users: [{name: bob, shell: /bin/sh}, carol]\nkiln: {wifi: [{name: home, passphrase: aaaaaaaa}]}\n');
  const b = cfg('users: [{name: bob, shell: /bin/ash}]\nkiln: {wifi: [{name: home, passphrase: bbbbbbbb}, {name: cafe}]}\n');
  const m = mergeConfigs([a, b]) as any;
  assert.equal(m.users, [{ name: 'bob', shell: '/bin/ash' }, { name: 'carol' }]);
  assert.equal(m.kiln.wifi, [{ name: 'home', passphrase: 'bbbbbbbb' }, { name: 'cafe' }]);
});

test('the kernel command line is split like the kernel does', () => {
  assert.equal(tokenizeCmdline('a  b="c d" "e f"'), [{ text: 'a', col: 1 }, { text: 'b=c d', col: 4 }, { text: 'e f', col: 12 }]);
});

test('kiln.<key>= parameters set keys, sections may be left out, lists append', () => {
  const r = parseCmdline('BOOT_IMAGE=/vmlinuz root=PARTLABEL=x quiet kiln.hostname=n1 kiln.k3s_args=server "kiln.k3s_args=--node-label=a=b,c=d" '
    + 'kiln.sysctls.net.ipv4.ip_forward=1 kiln.sysctl.vm.swappiness=10 kiln.install.silent kiln.install.force=no kiln.config_url=https://10.0.0.1/c.yaml '
    + 'k3os.labels.region=eu "kiln.ssh_authorized_keys=ssh-ed25519 AAAAC3Nza me" kiln.ssh_authorized_keys=gh:alice kiln.network.interfaces.eth0.dhcp '
    + 'kiln.network.interfaces.eth0.mtu=9000 kiln.kiln.channel=beta kiln.users=bob kiln.manifests.auto_apply=true');
  assert.equal(r.problems, []);
  assert.is(r.configUrl, 'https://10.0.0.1/c.yaml');
  assert.equal(r.config, {
    hostname: 'n1',
    kiln: {
      k3s_args: ['server', '--node-label=a=b,c=d'],
      sysctls: { 'net.ipv4.ip_forward': '1', 'vm.swappiness': '10' },
      install: { silent: true, force: false },
      labels: { region: 'eu' },
      network: { interfaces: { eth0: { dhcp: true, mtu: 9000 } } },
      channel: 'beta',
      manifests: { auto_apply: true },
    },
    ssh_authorized_keys: ['ssh-ed25519 AAAAC3Nza me', 'github:alice'],
    users: [{ name: 'bob' }],
  });
  assert.equal(parseCmdline('quiet console=ttyS0'), { config: {}, configUrl: undefined, problems: [] });
  // Stage 1's root hash is a boot parameter, not config.
  assert.equal(parseCmdline(`quiet kiln.slot=a kiln.verity=sha256:12:00ff:${'ab'.repeat(32)}`), { config: {}, configUrl: undefined, problems: [] });
  // So is the bench's floor (stage 1 hands over to it instead of init).
  assert.equal(parseCmdline('quiet kiln.slot=a kiln.floor=node'), { config: {}, configUrl: undefined, problems: [] });
});

test('command line problems name the parameter and its column', () => {
  const p = (c: string) => parseCmdline(c).problems.map(formatProblem);
  assert.equal(p('quiet kiln.hostnam=x'), ["/proc/cmdline:1:7 hostnam: unknown key 'hostnam' (did you mean 'kiln.hostname'?)"]);
  assert.equal(p('kiln.sysctlz.a=1'), ["/proc/cmdline:1:1 sysctlz.a: unknown key 'sysctlz' (did you mean 'kiln.sysctls'?)"]);
  assert.equal(p('kiln.install.devic=/dev/sda'), ["/proc/cmdline:1:1 install.devic: unknown key 'devic' (did you mean 'kiln.install.device'?)"]);
  assert.equal(p('kiln.install=1'), ['/proc/cmdline:1:1 kiln.install: is a section, not a value (set one of its keys, e.g. kiln.install.device=VALUE)']);
  assert.equal(p('kiln.wifi=home'), ['/proc/cmdline:1:1 kiln.wifi: cannot be set on the kernel command line (put it in a config file and pass kiln.config_url=URL)']);
  assert.equal(p('a kiln.channel=nightly'), ["/proc/cmdline:1:3 kiln.channel: 'nightly' is not a valid value (use one of: beta, rc, stable)"]);
  assert.equal(p('kiln.install.silent=maybe'), ["/proc/cmdline:1:1 kiln.install.silent: 'maybe' is not true or false (write kiln.install.silent=true or kiln.install.silent=false)"]);
  assert.equal(p('ab kiln.network.interfaces.eth0.mtu=12'), ['/proc/cmdline:1:4 kiln.network.interfaces.eth0.mtu: 12 is out of range (use a number from 68 to 65535)']);
  assert.equal(p('kiln.hostname'), ['/proc/cmdline:1:1 hostname: needs a value (write kiln.hostname=VALUE)']);
  assert.equal(p('kiln.config_url'), ['/proc/cmdline:1:1 config_url: needs a URL (write kiln.config_url=https://host/config.yaml)']);
  assert.equal(p('x kiln.modules=ok "kiln.modules=a b"'), ["/proc/cmdline:1:19 kiln.modules[1]: 'a b' is not valid here (use a kernel module name such as 'br_netfilter')"]);
});

test('merge order: image < data < config.d < datasource < cmdline', () => {
  const c = chooseConfig({
    sources: [
      { file: PATHS.image, text: 'hostname: image\nkiln: {channel: beta, labels: {from: image}}\n' },
      { file: PATHS.data, text: 'hostname: data\nkiln: {labels: {data: "1"}}\n' },
      { file: `${PATHS.dropIns}/10-a.yaml`, text: 'hostname: dropin\n' },
      { file: 'http://169.254.169.254/user-data', text: '#cloud-config\nhostname: cloud\nkiln: {labels: {from: cloud}}\n' },
      { file: '/proc/cmdline', text: 'kiln.hostname=cmdline kiln.config_url=https://x/y', kind: 'cmdline' },
    ],
  });
  assert.is(c.used, 'new');
  assert.equal(c.problems, []);
  assert.is(c.config.hostname, 'cmdline');
  assert.is(c.config.kiln.channel, 'beta');
  assert.equal(c.config.kiln.labels, { from: 'cloud', data: '1' });
  assert.is(c.configUrl, 'https://x/y');
  assert.ok(c.lastGood?.includes('"hostname": "cmdline"'));
  // the stored text is itself a valid config that gives the same result
  const again = chooseConfig({ sources: [{ file: 'last', text: c.lastGood! }] });
  assert.equal(again.config, c.config);
});

test('the last good config is JSON under a comment line, and reads back as YAML to the same config', () => {
  // Text that YAML would read otherwise if it were written bare: quotes, comments, line breaks
  // of other systems, control characters, a byte order mark, and words YAML gives meaning to.
  const odd = 'a "quoted" # not a comment: -\n  indented\r\n\t\u0001\u007f\u0085\u2028\ufeff😀 ~ null true 0x10 *r &a !t %d';
  const text = `hostname: n1\nwrite_files:\n  - path: /etc/odd\n    content: ${JSON.stringify(odd)}\nrun_cmd: ["null", "~", "- x", ${JSON.stringify(odd)}]\nkiln:\n  sysctls: {vm.swappiness: 10}\n`;
  const c = chooseConfig({ sources: [{ file: '/var/lib/kiln/config.yaml', text }] });
  assert.is(c.used, 'new', JSON.stringify(c.problems));
  const [comment, ...json] = c.lastGood!.split('\n');
  assert.ok(comment.startsWith('# kiln: last good config, merged from /var/lib/kiln/config.yaml'));
  assert.is(JSON.parse(json.join('\n')).write_files[0].content, odd);
  const again = chooseConfig({ sources: [{ file: 'last', text: c.lastGood! }] });
  assert.is(again.used, 'new', JSON.stringify(again.problems));
  assert.equal(again.config, c.config);
  assert.is(again.config.write_files[0].content, odd);
});

test('a bad source keeps the last good config, and says why', () => {
  const last = 'hostname: good\nkiln: {channel: rc}\n';
  const c = chooseConfig({ sources: [{ file: 'a.yaml', text: 'hostname: new\n' }, { file: 'b.yaml', text: 'kiln:\n  channel: nightly\n' }], lastGood: last });
  assert.is(c.used, 'last-good');
  assert.is(c.config.hostname, 'good');
  assert.is(c.config.kiln.channel, 'rc');
  assert.is(c.lastGood, undefined);
  assert.equal(c.problems.map(formatProblem), ["b.yaml:2:12 kiln.channel: 'nightly' is not a valid value (use one of: beta, rc, stable)"]);
  // no last good config: the good sources alone
  const d = chooseConfig({ sources: [{ file: 'a.yaml', text: 'hostname: new\n' }, { file: 'b.yaml', text: 'kiln: [\n' }] });
  assert.is(d.used, 'partial');
  assert.is(d.config.hostname, 'new');
  assert.is(d.config.kiln.channel, 'stable');
  // an unreadable last good config is reported too
  const e = chooseConfig({ sources: [{ file: 'b.yaml', text: 'x: 1\n' }], lastGood: 'hostname: [' });
  assert.is(e.used, 'partial');
  assert.is(e.problems.length, 2);
  // a good new config replaces the last good one
  const f = chooseConfig({ sources: [{ file: 'a.yaml', text: 'hostname: new\n' }], lastGood: last });
  assert.is(f.used, 'new');
  assert.is(f.config.hostname, 'new');
});

test('local sources are read in merge order; config.d sorted by name', async () => {
  const root = mkdtempSync(join(tmpdir(), 'kiln-cfg-'));
  assert.equal(await readLocalSources(root), []);
  mkdirSync(join(root, 'usr/lib/kiln'), { recursive: true });
  mkdirSync(join(root, PATHS.dropIns), { recursive: true });
  writeFileSync(join(root, PATHS.image), 'hostname: image\n');
  writeFileSync(join(root, PATHS.data), 'hostname: data\n');
  for (const n of ['20-b.yaml', '10-a.yml', '05-notes.txt', '30-c.yaml']) writeFileSync(join(root, PATHS.dropIns, n), `hostname: ${n.slice(3, 4)}\n`);
  const s = await readLocalSources(root);
  assert.equal(s.map((x) => x.file), [PATHS.image, PATHS.data, `${PATHS.dropIns}/10-a.yml`, `${PATHS.dropIns}/20-b.yaml`, `${PATHS.dropIns}/30-c.yaml`]);
  assert.is(chooseConfig({ sources: s }).config.hostname, 'c');
});

test('beta keeps its node config in its own space; rc shares stable\'s', async () => {
  const { configPaths, readLocalSources } = await import('../../init/config/merge.ts');
  const { mkdtempSync, mkdirSync, writeFileSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const root = mkdtempSync(join(tmpdir(), 'kiln-space-'));
  mkdirSync(join(root, 'var/lib/kiln/beta'), { recursive: true });
  writeFileSync(join(root, 'var/lib/kiln/config.yaml'), 'hostname: stable-node\n');
  writeFileSync(join(root, 'var/lib/kiln/beta/config.yaml'), 'hostname: beta-node\n');
  const stable = await readLocalSources(root, configPaths('stable'));
  const beta = await readLocalSources(root, configPaths('beta'));
  assert.equal(stable.map((x) => x.text), ['hostname: stable-node\n']);
  assert.equal(beta.map((x) => x.text), ['hostname: beta-node\n']);
  assert.is.not(configPaths('beta').lastGood, configPaths('stable').lastGood);
});

test.run();
