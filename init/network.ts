// Links and addresses. Without config, the first ethernet link gets DHCP.
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { runOk, sleep } from './exec.ts';
import { LEASE_DIR } from './services/dhcp.ts';
import { read } from './system.ts';

/**
 * Ethernet links (ARPHRD_ETHER, backed by a device), sorted by name. Wireless links have the
 * same type but need association first: kiln.wifi brings them up (services/wifi.ts).
 */
export function ethernetLinks(sysNet = '/sys/class/net'): string[] {
  return readdirSync(sysNet)
    .filter((n) => n !== 'lo' && read(`${sysNet}/${n}/type`).trim() === '1' && existsSync(`${sysNet}/${n}/device`)
      && !existsSync(`${sysNet}/${n}/wireless`) && !existsSync(`${sysNet}/${n}/phy80211`))
    .sort();
}

/** The link is administratively up (IFF_UP in its sysfs flags). */
export function isUp(iface: string, sysNet = '/sys/class/net'): boolean {
  return (Number.parseInt(read(`${sysNet}/${iface}/flags`).trim(), 16) & 1) === 1;
}

/** Sets a link up; one that is up already (stage 1 brings up lo) costs no spawn. */
export async function linkUp(iface: string, sysNet = '/sys/class/net'): Promise<void> {
  if (isUp(iface, sysNet)) return;
  const err = await runOk('ip', ['link', 'set', iface, 'up']);
  if (err) throw new Error(err);
}

/** The lease recorded by the udhcpc hook, once there is one. */
export function lease(iface: string): Record<string, string> | undefined {
  const text = read(`${LEASE_DIR}/${iface}`);
  if (!text) return undefined;
  return Object.fromEntries(text.split('\n').filter(Boolean).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

export async function waitForLease(iface: string, timeoutMs: number): Promise<Record<string, string> | undefined> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const l = lease(iface);
    if (l?.ip) return l;
    await sleep(100);
  }
  return undefined;
}

/** Static name servers win over DHCP's: the marker tells the udhcpc hook to leave resolv.conf alone. */
export function writeStaticDns(servers: string[]): void {
  if (!servers.length) return;
  mkdirSync('/run/kiln', { recursive: true });
  writeFileSync('/run/kiln/dns-static', '');
  writeFileSync('/etc/resolv.conf', servers.map((d) => `nameserver ${d}`).join('\n') + '\n');
}

/** Static addresses, gateway and DNS for one interface; returns a summary. */
export async function configureStatic(iface: string, c: { addresses: string[]; gateway: string; dns: string[]; mtu: number }): Promise<string> {
  await linkUp(iface);
  if (c.mtu) { const e = await runOk('ip', ['link', 'set', iface, 'mtu', String(c.mtu)]); if (e) throw new Error(e); }
  for (const a of c.addresses) { const e = await runOk('ip', ['addr', 'add', a, 'dev', iface]); if (e && !/File exists/.test(e)) throw new Error(e); }
  if (c.gateway) { const e = await runOk('ip', ['route', 'replace', 'default', 'via', c.gateway, 'dev', iface]); if (e) throw new Error(e); }
  writeStaticDns(c.dns);
  return `${c.addresses.join(' ')}${c.gateway ? ` gateway ${c.gateway}` : ''}`;
}
