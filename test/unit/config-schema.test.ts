import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { gzipSync } from 'node:zlib';
import { applyDefaults, decodeContent, formatProblem, parseConfig } from '../../init/config/parse.ts';
import { CONFIG_SCHEMA, type SchemaNode } from '../../init/config/schema.ts';

const GZ = gzipSync(Buffer.from('hi')).toString('base64');
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHBvbGljeQ alice@laptop';
const ok = (text: string) => {
  const r = parseConfig(text, 'c.yaml');
  assert.equal(r.problems.map(formatProblem), [], text);
  return r.config as any;
};
const problems = (text: string) => parseConfig(text, 'c.yaml').problems.map(formatProblem);

// Every key of the schema with a valid value; aliases in the second table.
const ACCEPT: [string, (c: any) => unknown, unknown][] = [
  ['#cloud-config\nhostname: node-1\n', (c) => c.hostname, 'node-1'],
  [`ssh_authorized_keys:\n  - ${KEY}\n  - github:alice\n  - gitlab:bob\n  - launchpad:carol\n  - gh:dave\n`, (c) => c.ssh_authorized_keys, [KEY, 'github:alice', 'gitlab:bob', 'launchpad:carol', 'github:dave']],
  [`ssh_authorized_keys: ['command="x" ${KEY}']\n`, (c) => c.ssh_authorized_keys.length, 1],
  ['ssh_import_id: [gh:alice, lp:bob, gl:carol, dave]\n', (c) => c.ssh_import_id, ['github:alice', 'launchpad:bob', 'gitlab:carol', 'launchpad:dave']],
  ['users:\n  - default\n  - name: bob\n    gecos: Bob B\n    homedir: /srv/bob\n    primary_group: staff\n    groups: [wheel, docker]\n    system: true\n    uid: 2001\n    no_create_home: true\n    expiredate: "2031-12-31"\n    inactive: 30\n    shell: /bin/ash\n    lock_passwd: false\n    passwd: $6$x$y\n    ssh_authorized_keys: [github:bob]\n    ssh_import_id: [gh:bob]\n',
    (c) => c.users, [{ name: 'kiln' }, { name: 'bob', gecos: 'Bob B', homedir: '/srv/bob', primary_group: 'staff', groups: ['wheel', 'docker'], system: true, uid: 2001, no_create_home: true, expiredate: '2031-12-31', inactive: '30', shell: '/bin/ash', lock_passwd: false, passwd: '$6$x$y', ssh_authorized_keys: ['github:bob'], ssh_import_id: ['github:bob'] }]],
  ['users: [{name: a, groups: "x, y", sudo: false}, {name: b, sudo: null, inactive: "7"}]\n', (c) => c.users, [{ name: 'a', groups: ['x', 'y'] }, { name: 'b', inactive: '7' }]],
  ['groups: [admins, {name: ops, members: [a, b]}]\n', (c) => c.groups, [{ name: 'admins' }, { name: 'ops', members: ['a', 'b'] }]],
  ["groups:\n  - admins: [root, sys]\n  - cloud-users\n", (c) => c.groups, [{ name: 'admins', members: ['root', 'sys'] }, { name: 'cloud-users' }]],
  ['groups: "a, b"\n', (c) => c.groups, [{ name: 'a' }, { name: 'b' }]],
  ['groups: {a: "x, y", b: null}\n', (c) => c.groups, [{ name: 'a', members: ['x', 'y'] }, { name: 'b', members: [] }]],
  ['write_files:\n  - path: /etc/motd\n    content: hi\n    encoding: text\n    owner: root:root\n    permissions: "0644"\n    append: true\n', (c) => c.write_files[0], { path: '/etc/motd', content: 'hi', encoding: 'text', owner: 'root:root', permissions: '0644', append: true }],
  [`write_files: [{path: /a, encoding: b64, content: aGk=}, {path: /b, encoding: "", content: x}, {path: /c, encoding: gz+b64, content: ${GZ}}, {path: /d, encoding: text/plain}, {path: /e, encoding: gzip+base64, content: ${GZ}}, {path: /f, encoding: gzip, content: ${GZ}}, {path: /g, encoding: base64, content: ""}, {path: /h, encoding: gz, content: ${GZ}}, {path: /i, encoding: gzip+b64, content: ${GZ}}, {path: /j, encoding: gz+base64, content: ${GZ}}]\n`,
    (c) => c.write_files.map((f: any) => f.encoding), ['base64', 'text', 'gzip+base64', 'text', 'gzip+base64', 'gzip+base64', 'base64', 'gzip+base64', 'gzip+base64', 'gzip+base64']],
  ['init_cmd: ["echo a", [echo, b]]\nboot_cmd: [date]\nrun_cmd: [[sh, -c, "echo c"]]\nruncmd: [once, [touch, /x]]\n', (c) => [c.init_cmd, c.boot_cmd, c.run_cmd, c.runcmd], [['echo a', ['echo', 'b']], ['date'], [['sh', '-c', 'echo c']], ['once', ['touch', '/x']]]],
  ['kiln:\n  data_sources: [nocloud, cdrom, ec2, aws, openstack, gcp, hetzner, digitalocean, vultr, scaleway, packet]\n', (c) => c.kiln.data_sources.length, 11],
  ['kiln:\n  modules: [kvm, br_netfilter]\n', (c) => c.kiln.modules, ['kvm', 'br_netfilter']],
  ['kiln:\n  sysctls:\n    net.ipv4.ip_forward: 1\n    kernel.printk: 4 4 1 7\n    net.ipv4.conf.all.rp_filter: true\n', (c) => c.kiln.sysctls, { 'net.ipv4.ip_forward': '1', 'kernel.printk': '4 4 1 7', 'net.ipv4.conf.all.rp_filter': 'true' }],
  ['kiln:\n  dns_nameservers: [1.1.1.1, "2606:4700::1111"]\n  ntp_servers: [0.pool.ntp.org]\n', (c) => [c.kiln.dns_nameservers.length, c.kiln.ntp_servers], [2, ['0.pool.ntp.org']]],
  ['kiln:\n  wifi:\n    - name: home\n      passphrase: secret123\n    - name: cafe\n', (c) => c.kiln.wifi, [{ name: 'home', passphrase: 'secret123' }, { name: 'cafe' }]],
  ['kiln:\n  allow_insecure_http: true\n  key_services:\n    github: https://ghe.example.com\n    gitlab: https://gl.example.com\n    launchpad: http://lp.example.com\n', (c) => c.kiln.key_services, { github: 'https://ghe.example.com', gitlab: 'https://gl.example.com', launchpad: 'http://lp.example.com' }],
  ['kiln:\n  updates:\n    url: https://r.example.com/kiln\n    poll_minutes: 30\n    window: Sat 02:00-04:00\n    reboot_lock: lease\n    fleetlock_url: http://lock:8080\n    fleetlock_group: workers\n    canary: true\n    drain: false\n    drain_timeout_s: 60\n', (c) => c.kiln.updates, { url: 'https://r.example.com/kiln', poll_minutes: 30, window: 'Sat 02:00-04:00', reboot_lock: 'lease', fleetlock_url: 'http://lock:8080', fleetlock_group: 'workers', canary: true, drain: false, drain_timeout_s: 60 }],
  ['kiln:\n  password: rancher\n  token: K10abc\n  server_url: https://10.0.0.1:6443\n', (c) => [c.kiln.password, c.kiln.token, c.kiln.server_url], ['rancher', 'K10abc', 'https://10.0.0.1:6443']],
  ['kiln:\n  ssh:\n    password_login: true\n', (c) => c.kiln.ssh.password_login, true],
  ['kiln:\n  environment:\n    http_proxy: http://proxy:3128\n    RETRIES: 3\n', (c) => c.kiln.environment, { http_proxy: 'http://proxy:3128', RETRIES: '3' }],
  ['kiln:\n  labels:\n    region: eu\n    example.com/tier: db\n  taints: ["dedicated=db:NoSchedule", "gpu:NoExecute"]\n', (c) => [c.kiln.labels, c.kiln.taints], [{ region: 'eu', 'example.com/tier': 'db' }, ['dedicated=db:NoSchedule', 'gpu:NoExecute']]],
  ['kiln:\n  k3s_args: [server, --disable=traefik]\n  channel: beta\n', (c) => [c.kiln.k3s_args, c.kiln.channel], [['server', '--disable=traefik'], 'beta']],
  ['kiln:\n  manifests:\n    auto_apply: true\n', (c) => c.kiln.manifests.auto_apply, true],
  ['kiln:\n  network:\n    interfaces:\n      eth0: {dhcp: true}\n      eth1:\n        addresses: [192.168.1.10/24, fd00::10/64]\n        gateway: 192.168.1.1\n        dns: [192.168.1.1]\n        mtu: 9000\n',
    (c) => c.kiln.network.interfaces, { eth0: { dhcp: true }, eth1: { addresses: ['192.168.1.10/24', 'fd00::10/64'], gateway: '192.168.1.1', dns: ['192.168.1.1'], mtu: 9000 } }],
  ['kiln:\n  install:\n    device: /dev/sda\n    config_url: https://x/c.yaml\n    iso_url: https://x/k.iso\n    silent: true\n    force: true\n    force_efi: true\n    no_format: false\n    power_off: true\n    reboot: false\n    debug: true\n    tty: ttyS0\n    server_url: https://s:6443\n    token: t\n    password: p\n',
    (c) => Object.keys(c.kiln.install).length, 14],
  ['', (c) => c, {}],
  ['#cloud-config\n', (c) => c, {}],
];

const ALIASES: [string, (c: any) => unknown, unknown][] = [
  ['k3os:\n  password: rancher\n', (c) => c.kiln.password, 'rancher'],
  [`ssh_authorized_key: [${JSON.stringify(KEY)}]\n`, (c) => c.ssh_authorized_keys, [KEY]],
  ['users: [{name: a, ssh_authorized_key: [github:a]}]\n', (c) => c.users[0].ssh_authorized_keys, ['github:a']],
  ['users: [{name: a, hashed_passwd: $6$s$h}]\n', (c) => c.users[0].passwd, '$6$s$h'],
  ['bootcmd: [b]\n', (c) => c.boot_cmd, ['b']],
  ['k3os:\n  datasource: [gcp]\n', (c) => c.kiln.data_sources, ['gcp']],
  ['k3os:\n  sysctl: {vm.swappiness: 10}\n  module: [kvm]\n  dns_nameserver: [8.8.8.8]\n  ntp_server: [ntp.example]\n  label: {a: b}\n  taint: ["a:NoSchedule"]\n  k3s_arg: [agent]\n  data_source: [aws]\n',
    (c) => c.kiln, { sysctls: { 'vm.swappiness': '10' }, modules: ['kvm'], dns_nameservers: ['8.8.8.8'], ntp_servers: ['ntp.example'], labels: { a: 'b' }, taints: ['a:NoSchedule'], k3s_args: ['agent'], data_sources: ['aws'] }],
];

test('accepts every key with a valid value, normalised', () => {
  for (const [text, get, want] of [...ACCEPT, ...ALIASES]) assert.equal(get(ok(text)), want, text);
});

test('the accept table covers every key of the schema, and every alias', () => {
  const schemaKeys = new Set<string>();
  const aliases = new Set<string>();
  const walk = (n: SchemaNode, p: string) => {
    for (const [k, c] of Object.entries<SchemaNode>(n.properties ?? {})) {
      schemaKeys.add(`${p}${k}`);
      for (const a of c['x-aliases'] ?? []) aliases.add(a);
      walk(c, `${p}${k}.`);
      if (c.items) walk(c.items, `${p}${k}[].`);
      if (typeof c.additionalProperties === 'object') walk(c.additionalProperties, `${p}${k}.*.`);
    }
  };
  walk(CONFIG_SCHEMA, '');
  const seen = new Set<string>();
  const visit = (v: any, p: string, n: SchemaNode | undefined) => {
    if (!v || typeof v !== 'object' || !n) return;
    if (Array.isArray(v)) { for (const x of v) visit(x, `${p}[]`, n.items); return; }
    for (const [k, x] of Object.entries(v)) {
      if (n.properties?.[k]) { seen.add(`${p ? `${p}.` : ''}${k}`); visit(x, `${p ? `${p}.` : ''}${k}`, n.properties[k]); }
      else if (typeof n.additionalProperties === 'object') visit(x, `${p}.*`, n.additionalProperties);
    }
  };
  for (const [text] of ACCEPT) visit(parseConfig(text, 'c').config, '', CONFIG_SCHEMA);
  assert.equal([...schemaKeys].filter((k) => !seen.has(k)), [], 'keys without an accept case');
  const aliasText = ALIASES.map(([t]) => t).join('\n');
  assert.equal([...aliases].filter((a) => !new RegExp(`\\b${a}:`).test(aliasText)), [], 'aliases without a case');
});

// Each case: the text and the exact problems, as `kiln config validate` prints them.
const REJECT: [string, string[]][] = [
  ['kiln:\n  updates:\n    reboot_lock: kured\n', ["c.yaml:3:18 kiln.updates.reboot_lock: 'kured' is not a valid value (use one of: auto, lease, fleetlock, none)"]],
  ['hostnme: x\n', ["c.yaml:1:1 hostnme: unknown key 'hostnme' (did you mean 'hostname'?)"]],
  ['kiln:\n  sysctlz: {}\n', ["c.yaml:2:3 kiln.sysctlz: unknown key 'sysctlz' (did you mean 'sysctls'?)"]],
  ['k3os:\n  chanel: beta\n', ["c.yaml:2:3 k3os.chanel: unknown key 'chanel' (did you mean 'channel'?)"]],
  ['kiln:\n  sysctl:\n    a.b: 1\n  zzzzzzzz: 1\n', [`c.yaml:4:3 kiln.zzzzzzzz: unknown key 'zzzzzzzz' (valid keys: ${Object.keys(CONFIG_SCHEMA.properties.kiln.properties).join(', ')})`]],
  ['k3s_args: [server]\n', ["c.yaml:1:1 k3s_args: unknown key 'k3s_args' (it belongs under kiln: (kiln.k3s_args))"]],
  ['packages: [vim]\n', ["c.yaml:1:1 packages: unknown key 'packages' (the root is read-only and has no package manager; run software as containers)"]],
  ['hostname: 1234\n', ["c.yaml:1:11 hostname: expected a string, got number 1234 (put the value in quotes: '1234')"]],
  ['write_files:\n  - path: /x\n    permissions: 0644\n', ["c.yaml:3:18 write_files[0].permissions: expected a string, got number 644 (put the value in quotes: '0644')"]],
  ['kiln:\n  modules: 3\n', ["c.yaml:2:12 kiln.modules: expected a list, got number 3 (make it a list: [3])"]],
  ['kiln:\n  sysctls: [a]\n', ['c.yaml:2:12 kiln.sysctls: expected a map of keys, got a list (write it as indented key: value lines)']],
  ['kiln:\n  manifests:\n    auto_apply: yes please\n', ["c.yaml:3:17 kiln.manifests.auto_apply: expected true or false, got the string 'yes please' (write true or false)"]],
  ['- a\n', ["c.yaml:1:1 (top): expected a map of keys, got a list (write the config as 'key: value' lines, e.g. hostname: node-1)"]],
  ['kiln:\n  channel: stabel\n', ["c.yaml:2:12 kiln.channel: 'stabel' is not a valid value (did you mean 'stable'? use one of: beta, rc, stable)"]],
  ['kiln:\n  data_sources: [foo]\n', [`c.yaml:2:18 kiln.data_sources[0]: 'foo' is not a valid value (use one of: nocloud, cdrom, ec2, aws, openstack, gcp, hetzner, digitalocean, vultr, scaleway, packet)`]],
  ['write_files: [{path: /x, encoding: rot13}]\n', ['c.yaml:1:36 write_files[0].encoding: \'rot13\' is not a valid value (use one of: text, text/plain, b64, base64, gz, gzip, gz+base64, gzip+base64, gz+b64, gzip+b64)']],
  ['write_files: [{content: x}]\n', ["c.yaml:1:15 write_files[0]: missing the required key 'path' (add 'path: ...' to this entry)"]],
  ['write_files: [{path: etc/x}]\n', ["c.yaml:1:22 write_files[0].path: 'etc/x' is not valid here (use an absolute path such as '/etc/motd')"]],
  ['write_files: [{path: /x, owner: "a b"}]\n', ["c.yaml:1:33 write_files[0].owner: 'a b' is not valid here (use USER or USER:GROUP, e.g. 'root:root')"]],
  ['write_files: [{path: /x, permissions: "999"}]\n', ["c.yaml:1:39 write_files[0].permissions: '999' is not valid here (use an octal string in quotes, e.g. '0644' (unquoted 0644 is read as the number 644))"]],
  ['write_files:\n  - path: /x\n    encoding: b64\n    content: "!!"\n', ['c.yaml:4:14 write_files[0].content: content is not valid base64 (encode the content as b64 says, or change encoding)']],
  ['write_files:\n  - path: /x\n    encoding: gzip+base64\n    content: aGk=\n', ['c.yaml:4:14 write_files[0].content: content is base64 but not gzip data (encode the content as gzip+base64 says, or change encoding)']],
  ['ssh_authorized_keys: [not-a-key]\n', ["c.yaml:1:23 ssh_authorized_keys[0]: 'not-a-key' is not valid here (use a public key line like 'ssh-ed25519 AAAA... me@laptop', or github:USER, gitlab:USER, launchpad:USER)"]],
  ['ssh_import_id: ["gh:"]\n', ["c.yaml:1:17 ssh_import_id[0]: 'gh:' is not valid here (use gh:USER (GitHub), gl:USER (GitLab) or lp:USER (Launchpad; a bare USER means Launchpad too))"]],
  ['users: [{name: Bob}]\n', ["c.yaml:1:16 users[0].name: 'Bob' is not valid here (use lower case letters, digits, _ and -, starting with a letter or _)"]],
  ['users: [{name: bob, passwrd: x}]\n', ["c.yaml:1:21 users[0].passwrd: unknown key 'passwrd' (did you mean 'passwd'?)"]],
  ['users: [7]\n', ['c.yaml:1:9 users[0]: expected a string or a map of keys, got number 7 (put the value in quotes: \'7\')']],
  ['run_cmd: [[]]\n', ["c.yaml:1:11 run_cmd[0]: an empty list is not allowed here (use a shell command line such as 'echo hi', or an argv list such as [echo, hi])"]],
  ['run_cmd: [{a: b}]\n', ["c.yaml:1:11 run_cmd[0]: expected a string or a list, got a map (use a shell command line such as 'echo hi', or an argv list such as [echo, hi])"]],
  ['hostname: -bad-\n', ["c.yaml:1:11 hostname: '-bad-' is not valid here (use letters, digits and '-' (dots between labels), at most 64 characters, e.g. 'node-1')"]],
  ['kiln:\n  sysctls:\n    "bad name": 1\n', ["c.yaml:3:5 kiln.sysctls.bad name: 'bad name' is not a valid name here (use a sysctl name such as 'net.ipv4.ip_forward')"]],
  ['kiln:\n  environment: {1X: a}\n', ["c.yaml:2:17 kiln.environment.1X: '1X' is not a valid name here (use letters, digits and _, not starting with a digit)"]],
  ['kiln:\n  labels: {a: [b]}\n', ['c.yaml:2:15 kiln.labels.a: expected a string, a number or true or false, got a list (write a string, a number or true or false)']],
  ['kiln:\n  dns_nameservers: [1.1.1.300]\n', ["c.yaml:2:21 kiln.dns_nameservers[0]: '1.1.1.300' is not valid here (use an IPv4 or IPv6 address, e.g. '192.168.1.1' or 'fd00::1')"]],
  ['kiln:\n  ntp_servers: [""]\n', ["c.yaml:2:17 kiln.ntp_servers[0]: '' is too short (use at least 1 characters)"]],
  ['kiln:\n  wifi: [{name: home, passphrase: short}]\n', ["c.yaml:2:35 kiln.wifi[0].passphrase: 'short' is not valid here (use 8 to 63 characters, or 64 hex digits; empty for an open network)"]],
  ['kiln:\n  wifi: [{passphrase: longenough}]\n', ["c.yaml:2:10 kiln.wifi[0]: missing the required key 'name' (add 'name: ...' to this entry)"]],
  ['kiln:\n  server_url: http://x:6443\n', ["c.yaml:2:15 kiln.server_url: 'http://x:6443' is not valid here (use an https URL such as 'https://10.0.0.1:6443')"]],
  ['kiln:\n  taints: [dedicated]\n', ["c.yaml:2:12 kiln.taints[0]: 'dedicated' is not valid here (use KEY[=VALUE]:EFFECT with EFFECT one of NoSchedule, PreferNoSchedule, NoExecute, e.g. 'dedicated=db:NoSchedule')"]],
  ['kiln:\n  modules: ["a b"]\n', ["c.yaml:2:13 kiln.modules[0]: 'a b' is not valid here (use a kernel module name such as 'br_netfilter')"]],
  ['kiln:\n  network:\n    interfaces:\n      eth0:\n        addresses: [10.0.0.1]\n        gateway: nope\n        mtu: 10\n        dchp: true\n',
    ["c.yaml:5:21 kiln.network.interfaces.eth0.addresses[0]: '10.0.0.1' is not valid here (use an address with its prefix length, e.g. '192.168.1.10/24' or 'fd00::10/64')",
      "c.yaml:6:18 kiln.network.interfaces.eth0.gateway: 'nope' is not valid here (use an IPv4 or IPv6 address, e.g. '192.168.1.1' or 'fd00::1')",
      'c.yaml:7:14 kiln.network.interfaces.eth0.mtu: 10 is out of range (use a number from 68 to 65535)',
      "c.yaml:8:9 kiln.network.interfaces.eth0.dchp: unknown key 'dchp' (did you mean 'dhcp'?)"]],
  ['kiln:\n  network:\n    interfaces:\n      this-name-is-too-long: {dhcp: true}\n', ["c.yaml:4:7 kiln.network.interfaces.this-name-is-too-long: 'this-name-is-too-long' is not a valid name here (use an interface name of at most 15 characters, e.g. eth0)"]],
  ['kiln:\n  install:\n    device: sda\n    silent: 1\n', [
    "c.yaml:3:13 kiln.install.device: 'sda' is not valid here (use a block device path such as '/dev/sda', or 'auto')",
    'c.yaml:4:13 kiln.install.silent: expected true or false, got number 1 (write true or false)']],
  ['kiln: {password: a}\nk3os: {token: b}\n', ["c.yaml:2:1 k3os: 'k3os' and 'kiln' are the same key (keep only one of them, spelled 'kiln')"]],
  ['kiln:\n  sysctl: {a.b: 1}\n  sysctls: {c.d: 1}\n', ["c.yaml:3:3 kiln.sysctls: 'sysctls' and 'sysctl' are the same key (keep only one of them, spelled 'sysctls')"]],
  // The maintenance window goes through the updater's parser (update/window.ts), which would
  // otherwise refuse it only when the node starts its updater.
  ['kiln:\n  updates:\n    window: Saturdays 2am-4am\n', ["c.yaml:3:13 kiln.updates.window: maintenance window 'Saturdays 2am-4am': expected '[days] HH:MM-HH:MM', e.g. 'Sat 02:00-04:00' (use [DAYS] HH:MM-HH:MM in local time, several joined with ';', e.g. 'Sat 02:00-04:00' or 'Mon-Fri 22:00-23:30; Sun 00:00-24:00'; empty for any time)"]],
  ['k3os:\n  updates: {window: "Sat 02:00-04:00; Mon 25:00-01:00"}\n', ["c.yaml:2:21 k3os.updates.window: maintenance window 'Mon 25:00-01:00': '25:00' is not a valid time (use [DAYS] HH:MM-HH:MM in local time, several joined with ';', e.g. 'Sat 02:00-04:00' or 'Mon-Fri 22:00-23:30; Sun 00:00-24:00'; empty for any time)"]],
  ['kiln:\n  updates:\n    window: "Sun-Mon 03:00-03:00"\n', ["c.yaml:3:13 kiln.updates.window: maintenance window 'Sun-Mon 03:00-03:00': start and end are the same (use 00:00-24:00 for all day) (use [DAYS] HH:MM-HH:MM in local time, several joined with ';', e.g. 'Sat 02:00-04:00' or 'Mon-Fri 22:00-23:30; Sun 00:00-24:00'; empty for any time)"]],
  ['kiln:\n  updates:\n    window: " "\n', ["c.yaml:3:13 kiln.updates.window: maintenance window is empty (use [DAYS] HH:MM-HH:MM in local time, several joined with ';', e.g. 'Sat 02:00-04:00' or 'Mon-Fri 22:00-23:30; Sun 00:00-24:00'; empty for any time)"]],
  // YAML syntax
  ['hostname: a\nhostname: b\n', ['c.yaml:2:1 (yaml): syntax error: Map keys must be unique (remove one of the two keys, or merge their values)']],
  ['kiln:\n  modules: [kvm\n', ['c.yaml:3:1 (yaml): syntax error: Flow sequence in block collection must be sufficiently indented and end with a ] (check the indentation and the closing bracket or quote)']],
  ['kiln:\n\tmodules: []\n', ['c.yaml:2:1 (yaml): syntax error: Tabs are not allowed as indentation (indent with spaces, not tabs)']],
];

test('rejects bad values with the exact position, key, message and fix', () => {
  for (const [text, want] of REJECT) {
    const r = parseConfig(text, 'c.yaml');
    assert.is(r.config, undefined, text);
    assert.equal(r.problems.map(formatProblem), want, text);
  }
});

test('reports every problem at once, each at its own line', () => {
  const p = problems('hostname: 12\nkiln:\n  channel: x\n  modules: 3\nfoo: 1\n');
  assert.equal(p.map((x) => x.split(' ')[0]), ['c.yaml:1:11', 'c.yaml:3:12', 'c.yaml:4:12', 'c.yaml:5:1']);
});

test('problems have the documented shape', () => {
  const [p] = parseConfig('kiln:\n  sysctls: 3\n', 'node.yaml').problems;
  assert.equal(p, { file: 'node.yaml', line: 2, col: 12, key: 'kiln.sysctls', message: 'expected a map of keys, got number 3', fix: 'write it as indented key: value lines' });
});

test('applyDefaults fills every default and keeps given values', () => {
  const c = applyDefaults(ok('kiln:\n  channel: rc\nwrite_files: [{path: /x}]\nusers: [bob]\n'));
  assert.is(c.hostname, '');
  assert.is(c.kiln.channel, 'rc');
  assert.is(c.kiln.manifests.auto_apply, false);
  assert.is(c.kiln.install.silent, false);
  assert.equal(c.ssh_authorized_keys, []);
  assert.equal(c.write_files[0], { path: '/x', content: '', encoding: 'text', owner: 'root:root', permissions: '0644', append: false });
  assert.equal(c.users[0], { name: 'bob', gecos: '', homedir: '', primary_group: '', groups: [], uid: 0, system: false, no_create_home: false, expiredate: '', inactive: '', shell: '', lock_passwd: true, passwd: '', ssh_authorized_keys: [], ssh_import_id: [] });
  assert.equal([c.groups, c.runcmd], [[], []]);
  assert.is(applyDefaults({}).kiln.channel, 'stable');
});

test('decodeContent decodes every encoding', () => {
  const gz = gzipSync(Buffer.from('hello')).toString('base64');
  assert.is(decodeContent({ content: 'hi', encoding: 'text' }).toString(), 'hi');
  assert.is(decodeContent({ content: 'aGk=', encoding: 'b64' }).toString(), 'hi');
  assert.is(decodeContent({ content: gz, encoding: 'gz+b64' }).toString(), 'hello');
  assert.is(decodeContent({ content: gz, encoding: 'gzip' }).toString(), 'hello');
  assert.throws(() => decodeContent({ content: 'a', encoding: 'base64' }), /not valid base64/);
});

test.run();
