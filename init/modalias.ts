// modules.alias: which kernel module drives a device, by the device's modalias
// (/sys/devices/**/modalias, e.g. "pci:v00008086d000010D3sv...bc02sc00i00"). The builder
// writes the table from each module's .modinfo `alias=` strings (Debian's kernel packages ship
// none: depmod runs in their postinst); stage 1's busybox modprobe and init both read it.
// Patterns are shell globs (*, ?, [...]), as depmod and modprobe treat them.

/** `prefix`: the pattern's text before its first wildcard, a cheap test before the RegExp. */
export interface AliasEntry { pattern: string; module: string; prefix: string; re: RegExp }
export type AliasTable = AliasEntry[];

/** Bounds for the file read from the root (the generic kernel's table is ~2 MB). */
export const MAX_ALIAS_BYTES = 16 * 1024 * 1024;

function globToRegExp(glob: string): RegExp {
  let s = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') s += '.*';
    else if (c === '?') s += '.';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 2);
      if (end < 0) { s += '\\['; continue; }
      let body = glob.slice(i + 1, end);
      if (body.startsWith('!')) body = '^' + body.slice(1);
      s += `[${body.replace(/\\/g, '\\\\')}]`;
      i = end;
    } else s += c.replace(/[.+^${}()|\\\]]/g, '\\$&');
  }
  return new RegExp(`^${s}$`, 's');
}

/** Parses `alias PATTERN MODULE` lines; other lines and comments are skipped. */
export function parseModulesAlias(text: string): AliasTable {
  const out: AliasTable = [];
  for (const line of text.split('\n')) {
    const m = /^alias\s+(\S+)\s+(\S+)\s*$/.exec(line);
    if (m) out.push({ pattern: m[1]!, module: m[2]!, prefix: m[1]!.split(/[*?[]/)[0]!, re: globToRegExp(m[1]!) });
  }
  return out;
}

/** Module names whose aliases match `modalias` (several modules may claim one device). */
export function matchModalias(table: AliasTable, modalias: string): string[] {
  const found: string[] = [];
  for (const e of table) if (modalias.startsWith(e.prefix) && e.re.test(modalias) && !found.includes(e.module)) found.push(e.module);
  return found;
}

/** One `alias PATTERN MODULE` line per entry, sorted so the file is reproducible. */
export function formatModulesAlias(entries: { pattern: string; module: string }[]): string {
  const lines = [...new Set(entries.map((e) => `alias ${e.pattern} ${e.module}`))].sort();
  return lines.length ? lines.join('\n') + '\n' : '';
}
