// Time: an ntpd (busybox-style flags) in the foreground against the configured servers (or
// pool.ntp.org). Debian's busybox leaves ntpd out, so the service runs only when the
// image carries one; `kiln status` shows it skipped otherwise.
// TLS certificates, k3s tokens and update expiry checks all need a sane clock.
import { existsSync } from 'node:fs';
import type { ServiceSpec } from './service.ts';

const NTPD = ['/usr/sbin/ntpd', '/sbin/ntpd', '/bin/ntpd'];

export function ntpArgs(servers: string[]): string[] {
  const peers = servers.length ? servers : ['pool.ntp.org'];
  return ['-n', ...peers.flatMap((p) => ['-p', p])];
}

export function ntpService(servers: () => string[]): ServiceSpec {
  return {
    id: 'ntp',
    description: 'time synchronisation (ntpd)',
    condition: () => NTPD.some((p) => existsSync(p)),
    run: () => ({ cmd: NTPD.find((p) => existsSync(p))!, args: ntpArgs(servers()) }),
    restart: 'always',
    backoff: { initialMs: 5000, maxMs: 300_000, resetAfterMs: 600_000 },
    stopTimeoutMs: 3000,
  };
}
