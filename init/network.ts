// Links and addresses. Without config, the first ethernet link gets DHCP.
import { existsSync, mkdirSync, readdirSync, watch, writeFileSync, type FSWatcher } from 'node:fs';
import { runOk } from './exec.ts';
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
export function lease(iface: string, dir = LEASE_DIR): Record<string, string> | undefined {
  const text = read(`${dir}/${iface}`);
  if (!text) return undefined;
  return Object.fromEntries(text.split('\n').filter(Boolean).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
}

/**
 * Waits for the hook to record a lease. The hook's rename into the folder wakes the wait at
 * once (inotify), so boot does not sit out a polling interval on its critical path; a slow
 * poll stays behind it, and is all there is where no watch could be set.
 */
export async function waitForLease(iface: string, timeoutMs: number, dir = LEASE_DIR, slowPollMs = 1000): Promise<Record<string, string> | undefined> {
  const end = Date.now() + timeoutMs;
  let wake = () => { /* set below */ };
  let watcher: FSWatcher | undefined;
  try {
    mkdirSync(dir, { recursive: true });
    watcher = watch(dir, () => wake());
    watcher.on('error', () => { watcher?.close(); watcher = undefined; });
  } catch { watcher = undefined; }
  try {
    for (;;) {
      const l = lease(iface, dir);
      if (l?.ip) return l;
      const left = end - Date.now();
      if (left <= 0) return undefined;
      await new Promise<void>((r) => {
        const t = setTimeout(r, Math.min(watcher ? slowPollMs : 100, left));
        wake = () => { clearTimeout(t); r(); };
      });
    }
  } finally { watcher?.close(); }
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
