// Debian version comparison, as dpkg does it (deb-version(7)): epoch, then upstream,
// then revision, each compared in alternating non-digit / digit runs.

export interface DebVersion { epoch: number; upstream: string; revision: string }

export function parseVersion(v: string): DebVersion {
  const s = v.trim();
  if (!s || /\s/.test(s)) throw new Error(`invalid Debian version '${v}'`);
  let epoch = 0;
  let rest = s;
  const colon = s.indexOf(':');
  if (colon >= 0) {
    const e = s.slice(0, colon);
    if (!/^\d+$/.test(e)) throw new Error(`invalid epoch in Debian version '${v}'`);
    epoch = Number(e);
    rest = s.slice(colon + 1);
  }
  // The revision is everything after the last hyphen; upstream may contain hyphens.
  const dash = rest.lastIndexOf('-');
  const upstream = dash >= 0 ? rest.slice(0, dash) : rest;
  const revision = dash >= 0 ? rest.slice(dash + 1) : '';
  if (!upstream) throw new Error(`empty upstream version in '${v}'`);
  return { epoch, upstream, revision };
}

const isDigit = (c: number) => c >= 48 && c <= 57;
const isAlpha = (c: number) => (c >= 65 && c <= 90) || (c >= 97 && c <= 122);

/** Sort weight of one character in a non-digit run: '~' before end, letters before the rest. */
function order(s: string, i: number): number {
  if (i >= s.length) return 0;
  const c = s.charCodeAt(i);
  if (isDigit(c)) return 0;
  if (isAlpha(c)) return c;
  if (c === 126 /* ~ */) return -1;
  return c + 256;
}

function compareRun(a: string, b: string): number {
  let i = 0, j = 0;
  while (i < a.length || j < b.length) {
    while ((i < a.length && !isDigit(a.charCodeAt(i))) || (j < b.length && !isDigit(b.charCodeAt(j)))) {
      const d = order(a, i) - order(b, j);
      if (d) return d < 0 ? -1 : 1;
      i++; j++;
    }
    // Digit runs compare as numbers of any length: drop leading zeros, then length, then text.
    while (a.charCodeAt(i) === 48) i++;
    while (b.charCodeAt(j) === 48) j++;
    let ei = i, ej = j;
    while (ei < a.length && isDigit(a.charCodeAt(ei))) ei++;
    while (ej < b.length && isDigit(b.charCodeAt(ej))) ej++;
    const na = a.slice(i, ei), nb = b.slice(j, ej);
    if (na.length !== nb.length) return na.length < nb.length ? -1 : 1;
    if (na !== nb) return na < nb ? -1 : 1;
    i = ei; j = ej;
  }
  return 0;
}

/** Negative, zero or positive, like dpkg --compare-versions. */
export function compareVersions(a: string, b: string): number {
  const va = parseVersion(a), vb = parseVersion(b);
  if (va.epoch !== vb.epoch) return va.epoch < vb.epoch ? -1 : 1;
  return compareRun(va.upstream, vb.upstream) || compareRun(va.revision, vb.revision);
}

/** Checks a Depends-style relation (`<<`, `<=`, `=`, `>=`, `>>`). */
export function satisfies(version: string, op: string, want: string): boolean {
  const c = compareVersions(version, want);
  switch (op) {
    case '<<': return c < 0;
    case '<=': case '<': return c <= 0;
    case '=': return c === 0;
    case '>=': case '>': return c >= 0;
    case '>>': return c > 0;
    default: throw new Error(`unknown version relation '${op}'`);
  }
}
