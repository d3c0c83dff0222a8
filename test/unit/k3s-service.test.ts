import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { applyDefaults } from '../../init/config/parse.ts';
import { k3sCommand } from '../../init/services/k3s.ts';

test('a server by default, with the kubeconfig kept private', () => {
  const r = k3sCommand(applyDefaults({}));
  assert.equal(r.args, ['server', '--write-kubeconfig-mode', '0600']);
});

test('server_url makes an agent; token, labels, taints and environment are passed on', () => {
  const r = k3sCommand(applyDefaults({ kiln: { server_url: 'https://10.0.0.1:6443', token: 'K10x', labels: { region: 'lab' }, taints: ['dedicated=db:NoSchedule'], environment: { http_proxy: 'http://p:3128' } } }));
  assert.equal(r.args, ['agent', '--node-label', 'region=lab', '--node-taint', 'dedicated=db:NoSchedule']);
  assert.equal(r.env, { http_proxy: 'http://p:3128', K3S_URL: 'https://10.0.0.1:6443', K3S_TOKEN: 'K10x' });
});

test('k3s_args starting with a role choose it; the rest is kept in order', () => {
  const r = k3sCommand(applyDefaults({ kiln: { k3s_args: ['server', '--disable', 'traefik', '--write-kubeconfig-mode', '0644'] } }));
  assert.equal(r.args, ['server', '--disable', 'traefik', '--write-kubeconfig-mode', '0644']);
});

test.run();
