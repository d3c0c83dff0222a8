import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { K3S_KERNEL, k3sKernelModules } from '../../builder/k3s-kernel.ts';
import { k3sUrl, parseSha256Sums } from '../../builder/k3s.ts';

const full = K3S_KERNEL.map(([o, m]) => `CONFIG_${o}=${m ? 'm' : 'y'}`).join('\n');

test('kernel requirements: modular options become modules to load, built-in ones need nothing', () => {
  const mods = k3sKernelModules(full);
  assert.ok(mods.includes('br_netfilter') && mods.includes('vxlan') && mods.includes('overlay'));
  assert.not.ok(mods.includes(undefined as any));
  assert.equal(k3sKernelModules(full.replace('CONFIG_VXLAN=m', 'CONFIG_VXLAN=y')).includes('vxlan'), false);
});

test('kernel requirements: a missing option or a must-be-built-in module is an error naming each', () => {
  const bad = full.replace('CONFIG_VXLAN=m\n', '').replace('CONFIG_CGROUP_BPF=y', 'CONFIG_CGROUP_BPF=m');
  assert.throws(() => k3sKernelModules(bad, '/boot/config-x'), (e: Error) =>
    /\/boot\/config-x: the kernel cannot run k3s/.test(e.message) && /CONFIG_VXLAN is not set/.test(e.message)
    && /CONFIG_CGROUP_BPF is a module but must be built in/.test(e.message) && /k3s.version: none/.test(e.message));
});

test('release checksums and URLs', () => {
  const sums = 'aa'.repeat(32) + '  k3s\n' + 'bb'.repeat(32) + '  k3s-airgap-images-amd64.tar\n' + 'cc'.repeat(32) + '  k3s-arm64\n';
  assert.is(parseSha256Sums(sums, 'k3s'), 'aa'.repeat(32));
  assert.is(parseSha256Sums(sums, 'k3s-arm64'), 'cc'.repeat(32));
  assert.is(parseSha256Sums(sums, 'k3s-armhf'), undefined);
  assert.is(k3sUrl('v1.34.3+k3s1', 'arm64'), 'https://github.com/k3s-io/k3s/releases/download/v1.34.3%2Bk3s1/k3s-arm64');
});

test.run();
