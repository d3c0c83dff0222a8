// What k3s needs from the kernel, after k3s's own check-config.sh ("generally necessary"
// plus flannel's VXLAN and containerd's overlay). Checked against the kernel package's
// /boot/config-*: built-in options must be there, modular ones bring their module into
// the image and onto the list PID 1 loads at boot.
import { readFileSync } from 'node:fs';

/** [CONFIG option, module that provides it when it is =m (undefined: must be built in)] */
export const K3S_KERNEL: [string, string | undefined][] = [
  ['NAMESPACES', undefined], ['NET_NS', undefined], ['PID_NS', undefined], ['IPC_NS', undefined], ['UTS_NS', undefined],
  ['CGROUPS', undefined], ['CGROUP_CPUACCT', undefined], ['CGROUP_DEVICE', undefined], ['CGROUP_FREEZER', undefined],
  ['CGROUP_SCHED', undefined], ['CPUSETS', undefined], ['MEMCG', undefined], ['CGROUP_PIDS', undefined], ['CGROUP_BPF', undefined],
  ['KEYS', undefined], ['POSIX_MQUEUE', undefined],
  ['VETH', 'veth'], ['BRIDGE', 'bridge'], ['BRIDGE_NETFILTER', 'br_netfilter'],
  ['NF_CONNTRACK', 'nf_conntrack'], ['NF_NAT', 'nf_nat'],
  ['IP_NF_IPTABLES', 'ip_tables'], ['IP_NF_FILTER', 'iptable_filter'], ['IP_NF_MANGLE', 'iptable_mangle'], ['IP_NF_NAT', 'iptable_nat'],
  ['IP_NF_TARGET_MASQUERADE', 'xt_MASQUERADE'], ['IP_NF_TARGET_REJECT', 'ipt_REJECT'],
  ['NETFILTER_XT_MATCH_ADDRTYPE', 'xt_addrtype'], ['NETFILTER_XT_MATCH_CONNTRACK', 'xt_conntrack'], ['NETFILTER_XT_MATCH_IPVS', 'xt_ipvs'],
  ['NETFILTER_XT_MATCH_COMMENT', 'xt_comment'], ['NETFILTER_XT_MATCH_MULTIPORT', 'xt_multiport'], ['NETFILTER_XT_MARK', 'xt_mark'],
  ['NETFILTER_XT_MATCH_STATISTIC', 'xt_statistic'], ['NETFILTER_XT_MATCH_PHYSDEV', 'xt_physdev'], ['NETFILTER_XT_NAT', 'xt_nat'],
  ['NETFILTER_XT_TARGET_REDIRECT', 'xt_REDIRECT'], ['NF_TABLES', 'nf_tables'], ['NFT_COMPAT', 'nft_compat'],
  ['VXLAN', 'vxlan'], ['OVERLAY_FS', 'overlay'],
];

export function parseKernelConfig(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split('\n')) {
    const x = /^CONFIG_([A-Z0-9_]+)=(.*)$/.exec(line);
    if (x) m.set(x[1], x[2]);
  }
  return m;
}

/** The modules k3s needs loaded; throws naming every option the kernel lacks. */
export function k3sKernelModules(configText: string, configFile = 'kernel config'): string[] {
  const cfg = parseKernelConfig(configText);
  const missing: string[] = [];
  const modules: string[] = [];
  for (const [opt, mod] of K3S_KERNEL) {
    const v = cfg.get(opt);
    if (v === 'y') continue;
    if (v === 'm' && mod) { modules.push(mod); continue; }
    missing.push(v === 'm' ? `CONFIG_${opt} is a module but must be built in` : `CONFIG_${opt} is not set`);
  }
  if (missing.length) throw new Error(`${configFile}: the kernel cannot run k3s:\n  ${missing.join('\n  ')}\npick another kernel.flavour, or set k3s.version: none for an image without k3s`);
  return modules;
}

export function k3sKernelModulesFromFile(file: string): string[] {
  return k3sKernelModules(readFileSync(file, 'utf8'), file);
}
