// k3s as the supervised main service, exercised with the k3s TEST DOUBLE
// (test/standins/k3s; real k3s cannot be downloaded here): started after the network with
// arguments from config, its readiness gating the slot's blessing, restarted after being
// killed, stopped with SIGTERM on power-off.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Vm } from '../../builder/qemu.ts';
import { cidataImage, freePort, ssh, sshKeypair } from './helpers.ts';
import { BOOT_TIMEOUT, READY, scratchCopy, testImage } from './image.ts';

test('k3s: config to flags, health gates blessing, restart after a kill, clean stop', async () => {
  const img = await testImage('x86_64');
  const disk = await scratchCopy(img.raw);
  const me = sshKeypair();
  const cidata = await cidataImage(`#cloud-config
ssh_authorized_keys: ['${me.pub}']
kiln:
  labels: {role: e2e}
  taints: ['dedicated=test:NoSchedule']
  k3s_args: [server, --disable, traefik]
boot_cmd: ['cat /sys/fs/cgroup/kiln/ssh/cpu.weight /sys/fs/cgroup/kiln/dhcp-eth0/cpu.weight > /run/e2e-weights-at-boot']
`);
  const port = await freePort();
  const vm = await Vm.start({ arch: 'x86_64', disk, memMiB: 384, hostfwd: [[port, 22]], extraDrives: [`file=${cidata},format=raw,if=virtio,readonly=on`] });
  try {
    await vm.waitFor(READY, BOOT_TIMEOUT);
    const healthyAt = (await vm.waitFor(/kiln: service k3s healthy/, 120_000)).index;
    const network = vm.output.search(/kiln: network eth0 /);
    const started = vm.output.search(/kiln: service k3s running/);
    assert.ok(network >= 0 && started > network, 'k3s starts after the network is up');
    const blessed = (await vm.waitFor(/kiln: blessed slot a/, 60_000)).index;
    assert.ok(blessed > healthyAt, 'the slot is blessed only after k3s is ready');
    const args = JSON.parse(await ssh(port, me.key, 'cat /var/lib/rancher/k3s/standin/args'));
    assert.equal(args.args, ['--disable', 'traefik', '--node-label', 'role=e2e', '--node-taint', 'dedicated=test:NoSchedule', '--write-kubeconfig-mode', '0600']);
    assert.is(args.role, 'server');
    // The data lives on the data partition, not on the /var overlay.
    assert.match(await ssh(port, me.key, 'grep " /var/lib/rancher " /proc/mounts'), /\/var\/lib\/rancher ext4/);
    // The base mounts kubelet and containerd rely on (made by stage 1): the root shared for mount
    // propagation, the mounts made under it later shared too, and the pseudo filesystems.
    const info = (await ssh(port, me.key, 'cat /proc/self/mountinfo')).split('\n').map((l) => l.split(' '));
    const at = (dir: string) => info.filter((f) => f[4] === dir).pop();
    for (const dir of ['/', '/var/lib/rancher']) assert.ok(at(dir)?.some((f) => f.startsWith('shared:')), `${dir} is shared: ${at(dir)?.join(' ')}`);
    for (const [dir, type] of [['/dev/pts', 'devpts'], ['/dev/shm', 'tmpfs'], ['/sys/fs/cgroup', 'cgroup2'], ['/tmp', 'tmpfs'], ['/run', 'tmpfs']]) {
      const f = at(dir!);
      assert.is(f?.[f.indexOf('-') + 1], type, `${dir} is ${type}`);
    }
    assert.is((await ssh(port, me.key, 'readlink /dev/fd; readlink /dev/stdin')).trim(), '/proc/self/fd\n/proc/self/fd/0');
    // Until ready, SSH (nothing on the way waits for it) had a tenth of init's CPU weight and
    // DHCP (network/links waits for its lease) the default; from ready on, the default for all.
    assert.is((await ssh(port, me.key, 'cat /run/e2e-weights-at-boot')).trim(), '10\n100');
    assert.is((await ssh(port, me.key, 'cat /sys/fs/cgroup/kiln/init/cpu.weight /sys/fs/cgroup/kiln/ssh/cpu.weight /sys/fs/cgroup/kiln/ntp/cpu.weight /sys/fs/cgroup/kiln/k3s/cpu.weight')).trim(), '100\n100\n100\n100');
    // k3s's modules (their own list, loaded by modules/k3s) are in, and the settings they bring.
    const mods = (await ssh(port, me.key, 'cut -d" " -f1 /proc/modules')).split('\n');
    for (const m of ['br_netfilter', 'vxlan', 'nf_conntrack', 'iptable_nat', 'xt_conntrack']) assert.ok(mods.includes(m), `${m} is loaded`);
    assert.is((await ssh(port, me.key, 'cat /proc/sys/net/bridge/bridge-nf-call-iptables')).trim(), '1');
    // Add-ons: applied as HelmChart objects only after k3s was ready, carrying the seal.
    const addonAt = (await vm.waitFor(/kiln: addon headlamp: installed/, 60_000)).index;
    assert.ok(addonAt > healthyAt, 'add-ons are installed after k3s is ready, not during its start');
    await vm.waitFor(/kiln: addon kiln-system: installed/, 60_000);
    const obj = JSON.parse(await ssh(port, me.key, 'cat /var/lib/rancher/k3s/standin/objects/helmchart.kube-system.headlamp.json'));
    assert.is(obj.apiVersion, 'helm.cattle.io/v1');
    assert.match(obj.metadata.annotations['kiln.io/seal'], /^[0-9a-f]{64}$/);
    assert.ok(obj.spec.chartContent.length > 1000, 'the chart travels inside the HelmChart');
    const ui = await ssh(port, me.key, 'kiln ui');
    assert.match(ui, /Open https:\/\/10\.0\.2\.15\/headlamp\//);
    assert.match(ui, /standin-token-[0-9a-f]{16}/);
    assert.match(await ssh(port, me.key, 'kiln addons'), /headlamp\s+installed/);
    const from = vm.output.length;
    await ssh(port, me.key, 'kill -9 $(cat /var/lib/rancher/k3s/standin/pid)');
    await vm.waitFor(/kiln: service k3s backoff: killed by SIGKILL; restart in/, 30_000, from);
    await vm.waitFor(/kiln: service k3s running/, 30_000, from);
    await vm.waitFor(/kiln: service k3s healthy/, 60_000, from);
    const status = await ssh(port, me.key, 'kiln status');
    assert.match(status, /k3s\s+running\s+ok\s+1\s/);
    await vm.qmp('system_powerdown');
    await vm.waitFor(/kiln: power off/, 120_000);
    assert.match(vm.output, /kiln: service k3s stopped \(exited with code 0\)/);
  } finally { await vm.kill(); }
});

test.run();
