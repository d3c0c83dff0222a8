// Host names from config, meta-data, IMDS and `ds=...;h=` end up in /etc/hostname, /etc/hosts
// and the kernel: each is checked as an RFC 1123 name before it is used.
import { clip } from './url.ts';

/** The kernel keeps at most 64 bytes of host name (HOST_NAME_MAX). */
export const HOSTNAME_MAX = 64;
const LABEL = '[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
export const HOSTNAME_PATTERN = `^(?=.{1,${HOSTNAME_MAX}}$)${LABEL}(\\.${LABEL})*$`;
const RE = new RegExp(HOSTNAME_PATTERN);

/** Why `name` cannot be a host name, or undefined when it can. */
export function hostnameProblem(name: string): string | undefined {
  if (name.length > HOSTNAME_MAX) return `host name '${clip(name, 80)}' is longer than ${HOSTNAME_MAX} characters`;
  if (!RE.test(name)) return `'${clip(name, 80)}' is not a valid host name (letters, digits and '-', labels of 1 to 63 characters separated by dots, not starting or ending with '-')`;
  return undefined;
}
