// DHCP client for one interface: busybox udhcpc in the foreground, supervised like any
// other service, so a lost lease or a crash is retried. The hook script records the lease
// (with the NTP servers it offers, option 42, which udhcpc asks for with -O ntpsrv).
import { existsSync } from 'node:fs';
import type { ServiceSpec } from './service.ts';

export const LEASE_DIR = '/run/kiln/net';

export function dhcpService(iface: string, hostname: () => string): ServiceSpec {
  return {
    id: `dhcp-${iface}`,
    description: `DHCP client on ${iface}`,
    run: () => ({ cmd: 'udhcpc', args: ['-f', '-i', iface, '-s', '/usr/lib/kiln/udhcpc.script', '-O', 'ntpsrv', '-t', '10', '-T', '2', '-A', '5', '-x', `hostname:${hostname()}`] }),
    restart: 'always',
    backoff: { initialMs: 1000, maxMs: 30_000, resetAfterMs: 60_000 },
    health: { check: async () => existsSync(`${LEASE_DIR}/${iface}`), intervalMs: 1000 },
    stopTimeoutMs: 3000,
  };
}
