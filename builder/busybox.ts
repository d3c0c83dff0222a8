// Busybox applet names, read from the binary itself so the target's list is known even
// when the binary cannot run on the build host (arm64 on x86_64). Busybox stores the
// names as one sorted, NUL-separated table that starts with "[" and "[[".
import { readFileSync } from 'node:fs';

export function busyboxApplets(binary: string | Buffer): string[] {
  const buf = typeof binary === 'string' ? readFileSync(binary) : binary;
  const start = buf.indexOf(Buffer.from('[\0[[\0'));
  if (start < 0) throw new Error('busybox: applet table not found (is this a busybox binary?)');
  const names: string[] = [];
  let i = start;
  while (i < buf.length && buf[i] !== 0) {
    const end = buf.indexOf(0, i);
    names.push(buf.toString('latin1', i, end));
    i = end + 1;
  }
  // Sanity: the table is sorted; anything else means we read past it.
  const sorted = [...names].sort();
  if (names.some((n, k) => n !== sorted[k]) || names.length < 20) throw new Error('busybox: applet table looks malformed');
  return names;
}
