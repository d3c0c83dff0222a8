// SSH: dropbear from Debian, key-only unless kiln.ssh.password_login allows passwords. Host
// keys are made on first start (-R) under /etc/dropbear, a link to /data/state/etc/dropbear (etcstate.ts).
import { existsSync, mkdirSync } from 'node:fs';
import type { KilnConfig } from '../config/schema.ts';
import { STARTUP_CPU_WEIGHT, type ServiceSpec } from './service.ts';

export const DROPBEAR = '/usr/sbin/dropbear';

/**
 * Whether SSH takes passwords. kiln.password (and users[].passwd) are for the console; SSH
 * takes them only when kiln.ssh.password_login says so, as on Fedora CoreOS and Flatcar, so
 * setting a console password does not open the node to password guessing.
 */
export function sshPasswordLogin(c: KilnConfig): boolean {
  return c.kiln.ssh.password_login === true;
}

/** dropbear's arguments: -s refuses password logins for everyone, -g for root. */
export function dropbearArgs(port: number, passwordLogin: boolean): string[] {
  return ['-F', '-E', '-R', '-p', String(port), ...(passwordLogin ? [] : ['-s', '-g'])];
}

/**
 * `config` is read at each (re)start. Without it SSH takes keys only. `passwordLogin` is no
 * longer consulted: it was true whenever kiln.password was set, which is what
 * kiln.ssh.password_login now decides.
 */
export function sshService(o: { port?: number; config?: () => KilnConfig; passwordLogin?: () => boolean }): ServiceSpec {
  return {
    id: 'ssh',
    description: 'SSH server (dropbear)',
    condition: () => existsSync(DROPBEAR),
    run: () => {
      mkdirSync('/etc/dropbear', { recursive: true, mode: 0o700 });
      return { cmd: DROPBEAR, args: dropbearArgs(o.port ?? 22, o.config ? sshPasswordLogin(o.config()) : false) };
    },
    // Nothing on the way to ready waits for SSH: its start yields to boot's tasks.
    startupCpuWeight: STARTUP_CPU_WEIGHT,
    restart: 'always',
    backoff: { initialMs: 1000, maxMs: 30_000, resetAfterMs: 60_000 },
    stopTimeoutMs: 3000,
  };
}
