// Parser for Debian control-style stanza lists (Packages indexes). Pure: no I/O.
// Fed in chunks so a 50 MB index never has to be one string.

export interface PackageEntry {
  package: string;
  version: string;
  architecture: string;
  filename: string;
  size: number;
  sha256: string;
  depends?: string;
  source?: string;
}

/** Fields kept from each stanza; the rest (descriptions, tags...) are dropped while parsing. */
const KEEP = new Set(['package', 'version', 'architecture', 'filename', 'size', 'sha256', 'depends', 'pre-depends', 'source']);

export class StanzaParser {
  private rest = '';
  private fields: Record<string, string> = {};
  private last: string | undefined;
  private count = 0;

  constructor(private readonly onStanza: (fields: Record<string, string>) => void, private readonly keep: Set<string> | undefined = KEEP) {}

  push(chunk: string): void {
    const text = this.rest + chunk;
    let start = 0;
    for (let nl = text.indexOf('\n'); nl >= 0; nl = text.indexOf('\n', start)) {
      this.line(text.slice(start, nl));
      start = nl + 1;
    }
    this.rest = text.slice(start);
  }

  end(): number {
    if (this.rest) this.line(this.rest);
    this.rest = '';
    this.flush();
    return this.count;
  }

  private line(raw: string) {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    if (line.trim() === '') { this.flush(); return; }
    const c = line.charCodeAt(0);
    if (c === 32 || c === 9) {
      // Continuation of the previous field (only kept fields are stored).
      if (this.last !== undefined) this.fields[this.last] += '\n' + line.slice(1);
      return;
    }
    if (c === 35 /* # */) return;
    const colon = line.indexOf(':');
    if (colon <= 0) throw new Error(`malformed line in Debian index: '${line.slice(0, 80)}'`);
    const key = line.slice(0, colon).toLowerCase();
    if (this.keep && !this.keep.has(key)) { this.last = undefined; return; }
    this.fields[key] = line.slice(colon + 1).trim();
    this.last = key;
  }

  private flush() {
    if (Object.keys(this.fields).length) { this.count++; this.onStanza(this.fields); }
    this.fields = {};
    this.last = undefined;
  }
}

/** Turns one stanza into an entry; throws naming the package when a needed field is missing. */
export function toEntry(f: Record<string, string>, where = 'Packages'): PackageEntry {
  for (const k of ['package', 'version', 'architecture', 'filename', 'size', 'sha256']) {
    if (!f[k]) throw new Error(`${where}: stanza for '${f.package ?? '?'}' has no ${k} field`);
  }
  const size = Number(f.size);
  if (!Number.isSafeInteger(size) || size < 0) throw new Error(`${where}: '${f.package}' has a bad Size '${f.size}'`);
  if (!/^[0-9a-f]{64}$/.test(f.sha256)) throw new Error(`${where}: '${f.package}' has a bad SHA256`);
  const e: PackageEntry = { package: f.package, version: f.version, architecture: f.architecture, filename: f.filename, size, sha256: f.sha256 };
  if (f.depends) e.depends = f.depends;
  if (f.source) e.source = f.source;
  return e;
}

export function parsePackages(text: string, where?: string): PackageEntry[] {
  const out: PackageEntry[] = [];
  const p = new StanzaParser((f) => out.push(toEntry(f, where)));
  p.push(text);
  p.end();
  return out;
}

export interface Relation { name: string; arch?: string; op?: string; version?: string }

/** Parses a Depends value into AND-ed groups of OR-ed alternatives. */
export function parseDepends(value: string): Relation[][] {
  return value.split(',').map((g) => g.trim()).filter(Boolean).map((group) => group.split('|').map((alt) => {
    const m = /^([a-z0-9][a-z0-9+.-]*)(?::([a-z0-9-]+))?\s*(?:\(\s*(<<|<=|=|>=|>>|<|>)\s*([^\s)]+)\s*\))?\s*(?:\[.*\])?\s*(?:<.*>)?$/.exec(alt.trim());
    if (!m) throw new Error(`cannot parse dependency '${alt.trim()}'`);
    const r: Relation = { name: m[1] };
    if (m[2]) r.arch = m[2];
    if (m[3]) { r.op = m[3]; r.version = m[4]; }
    return r;
  }));
}
