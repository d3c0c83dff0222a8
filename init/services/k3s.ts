// k3s, the node's main service: `k3s server`, or `k3s agent` when a server URL is set,
// with its arguments from config. Its state lives on the data partition, bind-mounted
// (containerd's overlay snapshotter cannot sit on an overlayfs /var). Health is the API
// server's /readyz through k3s's own kubectl, so it works the same for server and agent.
import { existsSync, mkdirSync } from 'node:fs';
import type { KilnConfig } from '../config/schema.ts';
import { run } from '../exec.ts';
import { isMounted, mount, setSysctl } from '../system.ts';
import { STARTUP_CPU_WEIGHT, type RunSpec, type ServiceSpec } from './service.ts';

export const K3S = '/usr/bin/k3s';

/** The k3s command line for a config (pure, for tests). */
export function k3sCommand(c: KilnConfig): RunSpec {
  const k = c.kiln;
  let args = [...k.k3s_args];
  const role = args[0] === 'server' || args[0] === 'agent' ? args.shift()! : k.server_url ? 'agent' : 'server';
  const env: Record<string, string> = { ...k.environment };
  if (k.server_url) env.K3S_URL = k.server_url;
  if (k.token) env.K3S_TOKEN = k.token;
  for (const [key, v] of Object.entries(k.labels)) args.push('--node-label', `${key}=${v}`);
  for (const t of k.taints) args.push('--node-taint', t);
  // Add-ons are ours (charts installed after start); auto-deploy of a folder is opt-in.
  if (role === 'server' && !args.some((a) => a.startsWith('--write-kubeconfig-mode'))) args.push('--write-kubeconfig-mode', '0600');
  args = [role, ...args];
  return { cmd: K3S, args, env };
}

/** Mounts and kernel settings k3s expects; idempotent. */
export async function prepareK3sHost(): Promise<void> {
  for (const [src, dst] of [['/data/rancher', '/var/lib/rancher'], ['/data/kubelet', '/var/lib/kubelet']]) {
    mkdirSync(src, { recursive: true });
    mkdirSync(dst, { recursive: true });
    if (!isMounted(dst) && isMounted('/data')) await mount('none', src, dst, 'bind');
  }
  for (const [k, v] of [['net.ipv4.ip_forward', '1'], ['net.bridge.bridge-nf-call-iptables', '1'], ['net.bridge.bridge-nf-call-ip6tables', '1']]) {
    try { setSysctl(k, v); } catch { /* br_netfilter missing: k3s reports it */ }
  }
}

export async function k3sReady(timeoutMs = 10_000): Promise<boolean> {
  const r = await run(K3S, ['kubectl', 'get', '--raw=/readyz'], { timeoutMs });
  return r.code === 0 && r.stdout.trim() === 'ok';
}

/**
 * Its cgroup: like every service, the leaf kiln/k3s (k3s, containerd and the containerd
 * shims). The pods are not in it: kubelet (inside k3s, cgroupfs driver, cgroup-root /) makes
 * /sys/fs/cgroup/kubepods itself, next to kiln/, with the controllers init enabled in the
 * root (cpu, cpuset, io, memory, pids). No --kubelet-arg is needed for that shape: k3s moves
 * itself to a /k3s group of its own only when PID 1 is outside / (a container) or it runs in
 * a systemd .scope, and tini stays in /. kubelet then sets its own oom_score_adj to -999, as
 * on any Kubernetes node.
 */
export function k3sService(config: () => KilnConfig): ServiceSpec {
  return {
    id: 'k3s',
    description: 'Kubernetes (k3s)',
    condition: () => existsSync(K3S),
    run: async () => { await prepareK3sHost(); return k3sCommand(config()); },
    // Boot waits for the spawn only (run_cmd comes after it); k3s's own start comes after ready.
    startupCpuWeight: STARTUP_CPU_WEIGHT,
    restart: 'always',
    backoff: { initialMs: 2000, maxMs: 60_000, resetAfterMs: 300_000 },
    // Each probe runs k3s's kubectl (a large Go binary): often while waiting, seldom once ready,
    // and not in the first seconds, when the API server cannot answer yet and boot still runs.
    health: { check: () => k3sReady(), intervalMs: 5000, healthyIntervalMs: 30_000, firstCheckAfterMs: 5000 },
    stopTimeoutMs: 30_000,
  };
}
