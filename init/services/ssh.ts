// SSH: dropbear from Debian, key-only unless a password is configured. Host keys are
// made on first start (-R) under /etc/dropbear, which lives on the data partition.
import { existsSync, mkdirSync } from 'node:fs';
import type { ServiceSpec } from './service.ts';

export const DROPBEAR = '/usr/sbin/dropbear';

export function sshService(o: { port?: number; passwordLogin: () => boolean }): ServiceSpec {
  return {
    id: 'ssh',
    description: 'SSH server (dropbear)',
    condition: () => existsSync(DROPBEAR),
    run: () => {
      mkdirSync('/etc/dropbear', { recursive: true, mode: 0o700 });
      return { cmd: DROPBEAR, args: ['-F', '-E', '-R', '-p', String(o.port ?? 22), ...(o.passwordLogin() ? [] : ['-s', '-g'])] };
    },
    restart: 'always',
    backoff: { initialMs: 1000, maxMs: 30_000, resetAfterMs: 60_000 },
    stopTimeoutMs: 3000,
  };
}
