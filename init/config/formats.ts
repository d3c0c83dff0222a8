// The string formats the config schema names (`format: ip`, ...). A module of its own: the
// validators compiled to code at build time (builder/validators.ts) refer to it by path.
import { isIP } from 'node:net';

const isCidr = (v: string) => {
  const m = /^(.+)\/(\d{1,3})$/.exec(v);
  if (!m) return false;
  const fam = isIP(m[1]);
  return fam !== 0 && Number(m[2]) <= (fam === 4 ? 32 : 128);
};

export const CONFIG_FORMATS: Record<string, (v: string) => boolean> = {
  ip: (v) => isIP(v) !== 0,
  'ip-or-empty': (v) => v === '' || isIP(v) !== 0,
  cidr: isCidr,
};
