// Configuration end to end: a NoCloud CIDATA volume in cloud-init's and k3os's forms sets the
// host name (fqdn), makes a user with groups, shell, comment and key, writes files (base64,
// and gzip given as !!binary, owned by that user), points chronyd at NTP, runs run_cmd (every
// boot) and runcmd (once per instance), and authorises github:alice, whose keys come from a
// loopback stand-in for GitHub. We log in over SSH as root with alice's key and as the new
// user with its own, and `kiln config validate` passes the same user-data on the host. Then a
// broken user-data: the node still boots, says where the error is, SSH still works with the
// last good config, run_cmd ran again and runcmd did not (same instance).
// The first boot also checks the clock: the RTC starts in 2001, boot floors the clock at the
// build time, and chronyd steps it to the time of an NTP test double on the host loopback
// (10.0.2.2 from the guest); `kiln status` then says synced. Across the reboot, /etc starts
// again from the root while the machine id and the SSH host keys stay.
import { test } from 'uvu';
import { $ } from 'zx';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { Vm } from '../../builder/qemu.ts';
import { REPO } from '../../builder/build.ts';
import { cidataImage, freePort, keyServiceStandIn, ssh, sshKeypair } from './helpers.ts';
import { ntpDouble, type NtpDouble } from './ntp-double.ts';
import { BOOT_TIMEOUT, READY, scratchCopy, testImage } from './image.ts';

const alice = sshKeypair();
const carol = sshKeypair();
let disk = '';
let gh: Awaited<ReturnType<typeof keyServiceStandIn>>;
let ntp: NtpDouble;
let identity = '';
let hostKey = '';

/** The node's ed25519 host key as ssh-keyscan sees it (type and key; the port differs per boot). */
async function hostKeys(port: number): Promise<string> {
  for (let i = 0; i < 5; i++) {
    const r = await $({ quiet: true, nothrow: true, timeout: '90s' })`ssh-keyscan -T 30 -t ed25519 -p ${port} 127.0.0.1`;
    const key = r.stdout.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => l.split(' ').slice(1).join(' ')).join('\n');
    if (key) return key;
  }
  return '';
}

test.before(async () => {
  const img = await testImage('x86_64');
  disk = await scratchCopy(img.raw);
  gh = await keyServiceStandIn({ alice: [alice.pub] });
  ntp = await ntpDouble();
});
test.after(async () => { gh.server.close(); await ntp.close(); });

/** The config of the first boot as its owner would paste it: cloud-init's forms, then k3os's. */
const pasted = () => `#cloud-config
fqdn: e2e-node.example.test
ntp:
  servers: [10.0.2.2]
groups:
  - e2e-ops: [carol]
users:
  - name: carol
    gecos: Carol E2E
    shell: /bin/ash
    groups: wheel, e2e-ops
    ssh_authorized_keys:
      - ${carol.pub}
write_files:
  - path: /etc/e2e/hello.txt
    content: aGVsbG8gZnJvbSB1c2VyLWRhdGEK
    encoding: b64
    permissions: '0640'
  - path: /etc/e2e/zipped.txt
    encoding: gzip
    owner: carol:carol
    permissions: '0600'
    content: !!binary |
      ${gzipSync(Buffer.from('zipped, given as binary\n')).toString('base64')}
runcmd:
  - echo "runcmd as $(id -u)" >> /var/tmp/runcmd.count
ssh_authorized_keys:
  - github:alice
run_cmd:
  - echo "ran as $(id -u)" > /var/tmp/run_cmd.out
  - echo boot >> /var/tmp/run_cmd.count
  # leaves an orphan behind: the reaper must collect it
  - sh -c 'sleep 2 &'
k3os:
  sysctl:
    vm.swappiness: 13
`;

/**
 * The user-data: the pasted config, and a second part that points github: at the loopback
 * stand-in (plain http, which only the test image's own config allows, so it is not part of
 * what validate is given on the workstation).
 */
const userData = (config: string) => `Content-Type: multipart/mixed; boundary="E2E-PART"
MIME-Version: 1.0

--E2E-PART
Content-Type: text/cloud-config

${config}
--E2E-PART
Content-Type: text/cloud-config

#cloud-config
kiln:
  key_services:
    github: http://10.0.2.2:${gh.port}
--E2E-PART--
`;

test('cloud-init and k3os user-data: host name, user, files, NTP, run_cmd, runcmd and github: keys, checked over SSH; the clock from 2001 to NTP time', async () => {
  const text = pasted();
  // The same text passes `kiln config validate` on the workstation: warnings only (mapped forms).
  const file = join(mkdtempSync(join(tmpdir(), 'kiln-ud-')), 'user-data');
  writeFileSync(file, text);
  const v = spawnSync(process.execPath, [join(REPO, 'bin/kiln.js'), 'config', 'validate', file], { encoding: 'utf8' });
  assert.is(v.status, 0, v.stdout + v.stderr);
  assert.match(v.stdout, `${file}: note: runcmd runs once per instance; run_cmd runs every boot`);
  assert.match(v.stdout, new RegExp(`${file}: ok \\(\\d+ warnings?\\)`));
  const cidata = await cidataImage(userData(text));
  const port = await freePort();
  const vm = await Vm.start({ arch: 'x86_64', disk, memMiB: 384, hostfwd: [[port, 22]], extraDrives: [`file=${cidata},format=raw,if=virtio,readonly=on`], extraArgs: ['-rtc', 'base=2001-01-01'] });
  try {
    await vm.waitFor(READY, BOOT_TIMEOUT);
    // The floor: from the RTC's 2001 to the image's build time, before the network.
    assert.match(vm.output, /kiln: clock set to \d{4}-\d\d-\d\dT[\d:]+Z \(build\)/);
    await vm.waitFor(/kiln: clock synced by NTP \(10\.0\.2\.2, stratum 2\)/, 180_000);
    assert.ok(ntp.requests > 0, 'the node should have asked the NTP test double');
    const clock = await ssh(port, alice.key, 'date +%s; kiln status | grep "^clock:"');
    const [guestS, line] = clock.split('\n');
    assert.ok(Math.abs(Number(guestS) - Date.now() / 1000) < 120, `guest clock ${guestS}, host ${Math.round(Date.now() / 1000)}`);
    assert.match(line!, /^clock: synced \S+ \(NTP 10\.0\.2\.2, stratum 2/);
    assert.ok(gh.hits.includes('/alice.keys'), `the node should have fetched alice's keys; requests seen: ${gh.hits.join(', ')}`);
    // ready is said once every task has ended, runcmd (after run_cmd) included
    const out = await ssh(port, alice.key, 'hostname; grep -c "e2e-node" /etc/hosts; cat /etc/e2e/hello.txt; stat -c %a /etc/e2e/hello.txt; cat /var/tmp/run_cmd.out; cat /var/tmp/runcmd.count; grep "^server" /run/kiln/chrony.conf; cat /proc/sys/vm/swappiness; kiln status');
    const lines = out.split('\n');
    assert.is(lines[0], 'e2e-node');
    assert.ok(Number(lines[1]) >= 1, '/etc/hosts names the host');
    assert.is(lines[2], 'hello from user-data');
    assert.is(lines[3], '640');
    assert.is(lines[4], 'ran as 0');
    assert.is(lines[5], 'runcmd as 0');
    assert.match(lines[6]!, /^server 10\.0\.2\.2\b/);
    assert.is(lines[7], '13');
    assert.match(out, /ssh\s+running/);
    // /etc starts from the root every boot: a stray file and an edit to a root file are gone
    // after the reboot (the second test), the machine id and the SSH host key are not.
    // ssh-keyscan before listing the key files: dropbear makes a type's key when a client first asks for it.
    hostKey = await hostKeys(port);
    assert.ok(hostKey, 'ssh-keyscan should see a host key');
    identity = await ssh(port, alice.key, 'cat /etc/machine-id; sha256sum /etc/dropbear/*_host_key');
    assert.match(identity, /^[0-9a-f]{32}\n[0-9a-f]{64} /);
    await ssh(port, alice.key, 'echo stray > /etc/e2e-stray; echo E2E_EDIT=1 >> /etc/os-release');
    assert.match(await ssh(port, alice.key, 'cat /etc/e2e-stray; tail -n 1 /etc/os-release'), /^stray\nE2E_EDIT=1\n/);
    // The user, as cloud-init would make it: passwd entry, groups, home; its own key logs in.
    const u = await ssh(port, alice.key, 'grep "^carol:" /etc/passwd; id -Gn carol; stat -c "%U %a" /home/carol; stat -c "%U:%G %a" /etc/e2e/zipped.txt; grep "^e2e-ops:" /etc/group');
    const [pw, groups, home, zipped, opsGroup] = u.split('\n');
    assert.match(pw!, /^carol:x:\d+:\d+:Carol E2E:\/home\/carol:\/bin\/ash$/);
    assert.equal(groups!.trim().split(/\s+/).sort(), ['carol', 'e2e-ops', 'wheel']);
    assert.is(home, 'carol 750');
    assert.is(zipped, 'carol:carol 600');
    assert.match(opsGroup!, /^e2e-ops:x:\d+:carol$/);
    const me = await ssh(port, carol.key, 'id -un; echo "$HOME"; cat /etc/e2e/zipped.txt; cat /etc/e2e/hello.txt 2>/dev/null || echo denied', 10, 'carol');
    assert.equal(me.trim().split('\n'), ['carol', '/home/carol', 'zipped, given as binary', 'denied']);
    await new Promise((r) => setTimeout(r, 3000));
    const z = await ssh(port, alice.key, "grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l");
    assert.is(z.trim(), '0', 'no zombie may be left');
    await vm.qmp('system_powerdown');
    await vm.waitFor(/kiln: power off/, 120_000);
    assert.match(vm.output, /kiln: zombies 0/);
  } finally { await vm.kill(); }
});

test('a broken user-data is reported with its line and column; the last good config keeps SSH working', async () => {
  const broken = `#cloud-config
hostname: e2e-node
ssh_authorized_keys: {github: alice}
kiln:
  sysctls: {net.ipv4.ip_forward: 1}
`;
  const cidata = await cidataImage(broken);
  const port = await freePort();
  gh.server.close(); // GitHub is "down": the cached keys must be enough
  const vm = await Vm.start({ arch: 'x86_64', disk, memMiB: 384, hostfwd: [[port, 22]], extraDrives: [`file=${cidata},format=raw,if=virtio,readonly=on`] });
  try {
    await vm.waitFor(READY, BOOT_TIMEOUT);
    assert.match(vm.output, /kiln: config: CIDATA:user-data:3:22 ssh_authorized_keys: /);
    assert.match(vm.output, /running with the last good config/);
    const out = await ssh(port, alice.key, 'hostname; cat /etc/e2e/hello.txt');
    assert.is(out.split('\n')[0], 'e2e-node');
    // write_files wrote it again into this boot's /etc, from the last good config.
    assert.is(out.split('\n')[1], 'hello from user-data');
    const etc = await ssh(port, alice.key, 'test -e /etc/e2e-stray && echo stray-kept; grep -c E2E_EDIT /etc/os-release; cat /etc/machine-id; sha256sum /etc/dropbear/*_host_key');
    assert.ok(!etc.includes('stray-kept'), 'a file written to /etc must not outlive the boot');
    assert.is(etc.split('\n')[0], '0', "/etc/os-release must be the root's again");
    assert.is(etc.split('\n').slice(1).join('\n'), identity, 'the machine id and the SSH host keys must survive the reboot');
    assert.is(await hostKeys(port), hostKey);
    // The second boot of the same instance (meta-data's instance-id: e2e): run_cmd ran again,
    // runcmd did not, and init.log says why.
    const runs = await ssh(port, alice.key, 'hostname; cat /etc/e2e/hello.txt; cat /var/tmp/run_cmd.count; echo --; cat /var/tmp/runcmd.count; grep -o "runcmd: already ran for instance e2e" /var/log/kiln/init.log | tail -1');
    const why = async () => ssh(port, alice.key, 'cat /proc/uptime; grep -h runcmd /var/log/kiln/init.log*; echo "-- record:"; cat /data/kiln/runcmd-instances');
    const got = runs.trim().split('\n');
    const want = ['e2e-node', 'hello from user-data', 'boot', 'boot', '--', 'runcmd as 0', 'runcmd: already ran for instance e2e'];
    if (got.join('\n') !== want.join('\n')) assert.equal(got, want, `init.log and the record say:\n${await why()}`);
    // the user is still there, and its key still logs in
    assert.is((await ssh(port, carol.key, 'id -un', 10, 'carol')).trim(), 'carol');
  } finally { await vm.kill(); }
});

test.run();
