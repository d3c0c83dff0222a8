// Parsing and validating one config text. Every problem carries the file, line and column
// of the YAML node it is about (yaml's LineCounter + the ajv instancePath), so a user can
// jump straight to it. Aliases are renamed in the YAML tree first, keeping positions.
import type { ErrorObject } from 'ajv';
import { configValidator } from './ajv.ts';
import { gunzipSync } from 'node:zlib';
import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, type Node, type Scalar } from 'yaml';
import { parseWindows } from '../update/window.ts';
import { aliasesOf, childSchema, CONFIG_SCHEMA, schemaAt, type KilnConfig, type KilnConfigInput, type SchemaNode, type WriteFile } from './schema.ts';

export interface ConfigProblem {
  file: string;
  line: number;
  col: number;
  /** dotted path of the key, e.g. kiln.sysctls or write_files[0].path */
  key: string;
  message: string;
  fix: string;
}

export type Seg = string | number;

/** Maps a path in the data to a position and to the spelling the user wrote. */
export interface Locator {
  pos(path: Seg[], atKey: boolean): { line: number; col: number };
  /** source text of the value at path, if known (for "put it in quotes" fixes) */
  source(path: Seg[]): string | undefined;
  /** display name of a key as written (k3os instead of kiln, sysctl instead of sysctls) */
  spelling(path: Seg[]): Seg[];
}

export function formatProblem(p: ConfigProblem): string {
  return `${p.file}:${p.line}:${p.col} ${p.key || '(top)'}: ${p.message}${p.fix ? ` (${p.fix})` : ''}`;
}

export function keyPath(path: Seg[]): string {
  let out = '';
  for (const s of path) out += typeof s === 'number' ? `[${s}]` : out ? `.${s}` : s;
  return out;
}

// ---- ajv: one validator as written, one that fills defaults (ajv.ts) ----

const checker = () => configValidator('check');

// ---- the YAML side ----

const originals = new WeakMap<object, string>();

/** Renames alias keys to their canonical names in place; reports a key given twice. */
function renameAliases(node: unknown, schema: SchemaNode | undefined, path: Seg[], loc: (n: Node) => { line: number; col: number }, file: string, problems: ConfigProblem[]) {
  if (!schema) return;
  if (isMap(node)) {
    const aliases = aliasesOf(schema);
    const seen = new Map<string, string>();
    for (const pair of node.items) {
      if (!isScalar(pair.key)) continue;
      const written = String(pair.key.value);
      const name = aliases.get(written) ?? written;
      if (name !== written) {
        originals.set(pair.key, written);
        (pair.key as Scalar).value = name;
      }
      const before = seen.get(name);
      if (before !== undefined && before !== written) {
        problems.push({ file, ...loc(pair.key as Node), key: keyPath([...path, written]), message: `'${written}' and '${before}' are the same key`, fix: `keep only one of them, spelled '${name}'` });
      }
      seen.set(name, written);
      renameAliases(pair.value, childSchema(schema, name), [...path, name], loc, file, problems);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => renameAliases(item, childSchema(schema, i), [...path, i], loc, file, problems));
  }
}

function yamlLocator(contents: unknown, text: string, lc: LineCounter): Locator {
  // Walks the tree along path; returns the deepest node reached and the pair key if any.
  const walk = (path: Seg[]) => {
    let node: unknown = contents;
    let key: Node | undefined;
    const names: string[] = [];
    let complete = true;
    for (const seg of path) {
      if (isMap(node)) {
        const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
        if (!pair) { complete = false; break; }
        key = pair.key as Node;
        names.push(originals.get(pair.key as object) ?? String(seg));
        node = pair.value;
      } else if (isSeq(node) && typeof seg === 'number' && node.items[seg] !== undefined) {
        key = undefined;
        node = node.items[seg];
      } else { complete = false; break; }
    }
    return { node: node as Node | null, key, names, complete };
  };
  const at = (offset: number | undefined) => (offset === undefined ? { line: 1, col: 1 } : lc.linePos(offset));
  return {
    pos(path, atKey) {
      const w = walk(path);
      if (atKey && w.complete && w.key?.range) return at(w.key.range[0]);
      if (w.node?.range) return at(w.node.range[0]);
      return at(w.key?.range?.[0]);
    },
    source(path) {
      const w = walk(path);
      return w.complete && w.node?.range ? text.slice(w.node.range[0], w.node.range[1]) : undefined;
    },
    spelling(path) {
      const w = walk(path);
      const out: Seg[] = [];
      let n = 0;
      for (const seg of path) out.push(typeof seg === 'number' ? seg : (w.names[n++] ?? seg));
      return out;
    },
  };
}

/** Parses and validates one config text. `config` is normalised and holds only the keys the
 *  text sets (no defaults: merge first, then applyDefaults); it is undefined if there is any problem. */
export function parseConfig(text: string, file: string): { config: KilnConfigInput | undefined; problems: ConfigProblem[] } {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const problems: ConfigProblem[] = [];
  for (const e of [...doc.errors, ...doc.warnings]) {
    const { line, col } = lc.linePos(e.pos[0]);
    problems.push({ file, line, col, key: '(yaml)', message: `${e.name === 'YAMLWarning' ? 'warning' : 'syntax error'}: ${e.message.split('\n')[0]}`, fix: yamlFix(e.code) });
  }
  if (problems.length) return { config: undefined, problems };
  const loc = (n: Node) => lc.linePos(n.range?.[0] ?? 0);
  renameAliases(doc.contents, CONFIG_SCHEMA, [], loc, file, problems);
  if (problems.length) return { config: undefined, problems }; // a key given twice: positions would be ambiguous
  const value = doc.contents === null ? {} : doc.toJS();
  const r = validateValue(value, file, yamlLocator(doc.contents, text, lc));
  return { config: problems.length || r.problems.length ? undefined : r.config, problems: [...problems, ...r.problems] };
}

function yamlFix(code: string): string {
  switch (code) {
    case 'DUPLICATE_KEY': return 'remove one of the two keys, or merge their values';
    case 'BAD_INDENT': case 'MISSING_CHAR': return 'check the indentation and the closing bracket or quote';
    case 'TAB_AS_INDENT': return 'indent with spaces, not tabs';
    case 'MULTIPLE_DOCS': return 'keep one YAML document per file (no ---)';
    default: return 'fix the YAML syntax at this position';
  }
}

/** Validates a plain value (from YAML or the kernel command line) against the schema. */
export function validateValue(value: unknown, file: string, locator: Locator): { config: KilnConfigInput | undefined; problems: ConfigProblem[] } {
  const validate = checker();
  const problems: ConfigProblem[] = [];
  if (!validate(value)) {
    for (const e of validate.errors ?? []) {
      const p = toProblem(e, value, file, locator);
      if (p && !problems.some((q) => q.line === p.line && q.col === p.col && q.message === p.message)) problems.push(p);
    }
  }
  if (!problems.length) problems.push(...checkContents(value as KilnConfigInput, file, locator));
  problems.sort((a, b) => a.line - b.line || a.col - b.col); // in reading order
  if (problems.length) return { config: undefined, problems };
  return { config: normalise(structuredClone(value) as any), problems };
}

// ---- ajv errors -> problems ----

const NOT_SUPPORTED: Record<string, string> = {
  packages: 'the root is read-only and has no package manager; run software as containers',
  package_update: 'the root is read-only; updates come through kiln.channel',
  package_upgrade: 'the root is read-only; updates come through kiln.channel',
  apt: 'the root is read-only and has no package manager',
  snap: 'the root is read-only and has no package manager',
  mounts: 'kiln manages its own mounts; use write_files and boot_cmd for extra ones',
};

function toSegs(instancePath: string, value: unknown): Seg[] {
  const segs: Seg[] = [];
  let v: any = value;
  for (const raw of instancePath.split('/').slice(1)) {
    const s = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    const seg: Seg = Array.isArray(v) ? Number(s) : s;
    segs.push(seg);
    v = v?.[seg];
  }
  return segs;
}

const TYPE_NAMES: Record<string, string> = { string: 'a string', array: 'a list', object: 'a map of keys', boolean: 'true or false', integer: 'a whole number', number: 'a number', null: 'nothing' };
const describe = (v: unknown) => v === null ? 'nothing' : Array.isArray(v) ? 'a list' : typeof v === 'object' ? 'a map' : typeof v === 'string' ? `the string '${v}'` : `${typeof v} ${JSON.stringify(v)}`;
const orList = (xs: string[]) => xs.length <= 1 ? xs.join('') : `${xs.slice(0, -1).join(', ')} or ${xs[xs.length - 1]}`;
const show = (v: unknown) => (typeof v === 'string' ? `'${v}'` : JSON.stringify(v));

function toProblem(e: ErrorObject, value: unknown, file: string, loc: Locator): ConfigProblem | undefined {
  if (e.keyword === 'propertyNames') return undefined; // its inner error carries the key
  const path = toSegs(e.instancePath, value);
  const schema = e.parentSchema as SchemaNode | undefined;
  const at = (p: Seg[], atKey: boolean) => ({ file, ...loc.pos(p, atKey), key: keyPath(loc.spelling(p)) });
  const data = e.data;
  if (e.propertyName !== undefined) {
    const p = [...path, e.propertyName];
    const hint = schemaAt(path)?.propertyNames?.['x-hint'];
    return { ...at(p, true), message: `'${e.propertyName}' is not a valid name here`, fix: hint ? `use ${hint}` : 'rename this key' };
  }
  switch (e.keyword) {
    case 'additionalProperties': {
      const name = String(e.params.additionalProperty);
      const p = [...path, name];
      const node = schemaAt(path);
      const valid = Object.keys(node?.properties ?? {});
      const known = [...valid, ...aliasesOf(node).keys()];
      const near = closest(name, known);
      const fix = path.length === 0 && NOT_SUPPORTED[name] ? NOT_SUPPORTED[name]
        : near ? `did you mean '${aliasesOf(node).get(near) ?? near}'?`
        : path.length === 0 && schemaAt(['kiln'])!.properties[name] ? `it belongs under kiln: (kiln.${name})`
        : `valid keys: ${valid.join(', ')}`;
      return { ...at(p, true), message: `unknown key '${name}'`, fix };
    }
    case 'type': {
      const want = ([] as string[]).concat(e.params.type).filter((t) => t !== 'integer' || !([] as string[]).concat(e.params.type).includes('number'));
      const src = loc.source(path);
      let fix = `write ${orList(want.map((t) => TYPE_NAMES[t] ?? t))}`;
      if (want.includes('string') && data !== null && typeof data !== 'object') fix = `put the value in quotes: '${src ?? String(data)}'`;
      else if (want.includes('array') && data !== null && typeof data !== 'object') fix = `make it a list: [${src ?? String(data)}]`;
      else if (want.includes('object') && !want.includes('string')) fix = 'write it as indented key: value lines';
      if (schema?.['x-hint'] && want.includes('string') && typeof data === 'object') fix = `use ${schema['x-hint']}`;
      if (path.length === 0) fix = "write the config as 'key: value' lines, e.g. hostname: node-1";
      return { ...at(path, false), message: `expected ${orList(want.map((t) => TYPE_NAMES[t] ?? t))}, got ${describe(data)}`, fix };
    }
    case 'enum': {
      const valid = (e.params.allowedValues as unknown[]).filter((v) => v !== '').map(String);
      const near = typeof data === 'string' ? closest(data, valid) : undefined;
      return { ...at(path, false), message: `${show(data)} is not a valid value`, fix: `${near ? `did you mean '${near}'? ` : ''}use one of: ${valid.join(', ')}` };
    }
    case 'pattern':
    case 'format':
      return { ...at(path, false), message: `${show(data)} is not valid here`, fix: schema?.['x-hint'] ? `use ${schema['x-hint']}` : `it must match ${e.params.pattern ?? e.params.format}` };
    case 'required': {
      const missing = String(e.params.missingProperty);
      return { ...at(path, false), message: `missing the required key '${missing}'`, fix: `add '${missing}: ...' to this entry` };
    }
    case 'minItems':
      return { ...at(path, false), message: 'an empty list is not allowed here', fix: schema?.['x-hint'] ? `use ${schema['x-hint']}` : `give at least ${e.params.limit} item(s)` };
    case 'minLength':
    case 'maxLength':
      return { ...at(path, false), message: `${show(data)} is too ${e.keyword === 'minLength' ? 'short' : 'long'}`, fix: `use ${e.keyword === 'minLength' ? 'at least' : 'at most'} ${e.params.limit} characters` };
    case 'minimum':
    case 'maximum': {
      const node = schemaAt(path);
      return { ...at(path, false), message: `${show(data)} is out of range`, fix: `use a number from ${node?.minimum ?? '-∞'} to ${node?.maximum ?? '∞'}` };
    }
    default:
      return { ...at(path, false), message: e.message ?? `fails ${e.keyword}`, fix: 'see docs/config.md' };
  }
}

/** The candidate nearest to `word` by edit distance, if near enough to be a likely typo. */
export function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = distance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) { best = c; bestD = d; }
  }
  return bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length];
}

// ---- checks ajv cannot express, and normalisation ----

function checkContents(c: KilnConfigInput, file: string, loc: Locator): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  (c.write_files ?? []).forEach((f, i) => {
    try { decodeContent(f as WriteFile); } catch (e) {
      const p = ['write_files', i, 'content'];
      out.push({ file, ...loc.pos(p, false), key: keyPath(p), message: (e as Error).message, fix: `encode the content as ${f.encoding} says, or change encoding` });
    }
  });
  // The updater's own parser: a window that passes here is one the updater accepts at start-up.
  const window = c.kiln?.updates?.window;
  if (window) {
    try { parseWindows(window); } catch (e) {
      const p = ['kiln', 'updates', 'window'];
      out.push({ file, ...loc.pos(p, false), key: keyPath(loc.spelling(p)), message: (e as Error).message, fix: `use ${schemaAt(p)?.['x-hint']}` });
    }
  }
  return out;
}

const canonicalEncoding = (e: string | undefined): WriteFile['encoding'] =>
  !e || e === 'text' || e === 'text/plain' ? 'text' : e === 'b64' || e === 'base64' ? 'base64' : 'gzip+base64';

/** The bytes of a write_files entry. Throws with a readable message on bad content. */
export function decodeContent(f: Pick<WriteFile, 'content'> & { encoding?: string }): Buffer {
  const enc = canonicalEncoding(f.encoding);
  const content = f.content ?? '';
  if (enc === 'text') return Buffer.from(content);
  const compact = content.replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(compact) || compact.length % 4 !== 0) throw new Error('content is not valid base64');
  const raw = Buffer.from(compact, 'base64');
  if (enc === 'base64') return raw;
  try { return gunzipSync(raw); } catch { throw new Error('content is base64 but not gzip data'); }
}

const SERVICE: Record<string, string> = { gh: 'github', github: 'github', gl: 'gitlab', gitlab: 'gitlab', lp: 'launchpad', launchpad: 'launchpad' };
const authKey = (k: string) => { const m = /^(gh|gl|lp|github|gitlab|launchpad):(.*)$/.exec(k); return m ? `${SERVICE[m[1]]}:${m[2]}` : k; };
const importId = (k: string) => (k.includes(':') ? authKey(k) : `launchpad:${k}`);
const stringMaps = (c: any, schema: SchemaNode | undefined) => {
  if (!schema || c === null || typeof c !== 'object') return;
  if (schema['x-string']) { for (const k of Object.keys(c)) c[k] = String(c[k]); return; }
  for (const k of Object.keys(c)) stringMaps(c[k], childSchema(schema, Array.isArray(c) ? Number(k) : k));
};

/** Canonical spellings: encodings, key service prefixes, cloud-init user shorthands. Idempotent. */
function normalise(c: any): KilnConfigInput {
  stringMaps(c, CONFIG_SCHEMA);
  for (const f of c.write_files ?? []) if (f.encoding !== undefined) f.encoding = canonicalEncoding(f.encoding);
  if (c.ssh_authorized_keys) c.ssh_authorized_keys = c.ssh_authorized_keys.map(authKey);
  if (c.ssh_import_id) c.ssh_import_id = c.ssh_import_id.map(importId);
  if (c.users) {
    c.users = c.users.map((u: any) => {
      if (typeof u === 'string') return { name: u === 'default' ? 'kiln' : u };
      if (u.name === 'default') u.name = 'kiln';
      if (typeof u.groups === 'string') u.groups = u.groups.split(',').map((g: string) => g.trim()).filter(Boolean);
      if (u.sudo !== undefined) u.sudo = u.sudo === false ? [] : u.sudo === true ? ['ALL=(ALL) NOPASSWD:ALL'] : ([] as string[]).concat(u.sudo);
      if (u.ssh_authorized_keys) u.ssh_authorized_keys = u.ssh_authorized_keys.map(authKey);
      if (u.ssh_import_id) u.ssh_import_id = u.ssh_import_id.map(importId);
      return u;
    });
  }
  return c;
}

/** Fills every default into a (merged) input config. The input must be valid. */
export function applyDefaults(input: KilnConfigInput): KilnConfig {
  const c = structuredClone(input) as any;
  const fill = configValidator('defaults');
  if (!fill(c)) throw new Error(`applyDefaults: invalid config: ${fill.errors?.[0]?.instancePath} ${fill.errors?.[0]?.message}`);
  return normalise(c) as KilnConfig;
}

/** A locator for values without a source text: every problem points at one position. */
export function fixedLocator(line = 1, col = 1): Locator {
  return { pos: () => ({ line, col }), source: () => undefined, spelling: (p) => p };
}

