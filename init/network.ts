// Links and addresses. Without config, the first ethernet link gets DHCP.
import { existsSync, readdirSync } from 'node:fs';
import { runOk, sleep } from './exec.ts';
import { LEASE_DIR } from './services/dhcp.ts';
import { read } from './system.ts';

/** Ethernet links (ARPHRD_ETHER, backed by a device), sorted by name. */
export function ethernetLinks(): string[] {
  return readdirSync('/sys/class/net')
    .filter((n) => n !== 'lo' && read(`/sys/class/net/${n}/type`).trim() === '1' && existsSync(`/sys/class/net/${n}/device`))
    .sort();
}

export async function linkUp(iface: string): Promise<void> {
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
