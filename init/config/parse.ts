// Parsing and validating one config text. Every problem carries the file, line and column
// of the YAML node it is about (yaml's LineCounter + the ajv instancePath), so a user can
// jump straight to it. Aliases are renamed in the YAML tree first, keeping positions.
import type { ErrorObject } from 'ajv';
import { configValidator } from './ajv.ts';
import { fillDefaults } from './defaults.ts';
import { nodeZlib } from '../lazy.ts';
import { parseWindows } from '../update/window.ts';
import { isAlias, isMap, isPair, isScalar, isSeq, Lexer, LineCounter, parseDocument, type Node, type Scalar } from 'yaml';
import { applyCompat } from './compat.ts';
import { ENCODINGS, aliasesOf, warnAliasesOf, childSchema, CONFIG_SCHEMA, schemaAt, type KilnConfig, type KilnConfigInput, type SchemaNode, type WriteFile } from './schema.ts';
import { clip, MAX_SOURCE_BYTES, urlProblem } from './url.ts';

export { MAX_SOURCE_BYTES } from './url.ts';
/** YAML tokens (keys, values, punctuation) one text may hold: parsing costs about 0.1 ms and
 *  1 KiB of memory per node, so a 1 MiB list of one-letter items (500 000 nodes) took 17 s and
 *  more than 256 MiB of heap. Counted with yaml's lexer before anything is built. */
export const MAX_TOKENS = 100_000;
/** Values a config may hold once its aliases are expanded: an alias bomb (each level
 *  repeating the one before) stops here. */
export const MAX_VALUES = 200_000;
/** Decoded size of one write_files entry, and of all of one source's entries together. */
export const MAX_WRITE_FILE_BYTES = 16 << 20;
export const MAX_WRITE_FILES_BYTES = 64 << 20;
/** Problems reported per source; the rest are counted. */
export const MAX_PROBLEMS = 50;
/** Names that would reach Object.prototype when used as object keys. */
export const RESERVED_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

export interface ParseOptions {
  /** http:// config and key service URLs without a pin are allowed (kiln.allow_insecure_http of
   *  the image's config). Undefined: the text's own kiln.allow_insecure_http decides (kiln
   *  config validate, kiln build); at boot the caller passes the image's setting. */
  allowInsecureHttp?: boolean;
  /** false: the text is not the image's config, so kiln.allow_insecure_http in it is an error */
  imageConfig?: boolean;
  /** size limit of the text; default MAX_SOURCE_BYTES */
  maxBytes?: number;
}

export interface ConfigProblem {
  file: string;
  line: number;
  col: number;
  /** dotted path of the key, e.g. kiln.sysctls or write_files[0].path */
  key: string;
  message: string;
  fix: string;
  /** 'warning': accepted as it is (an alias, a form kiln maps or ignores); the config is still
   *  used. Absent: an error, and the source is not used. */
  severity?: 'warning';
}

/** An error (the source is refused), as opposed to a warning. */
export const isError = (p: ConfigProblem) => p.severity !== 'warning';

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
  return `${p.file}:${p.line}:${p.col} ${p.severity === 'warning' ? 'warning: ' : ''}${clip(p.key || '(top)', 160)}: ${p.message}${p.fix ? ` (${p.fix})` : ''}`;
}

export function keyPath(path: Seg[]): string {
  let out = '';
  for (const s of path) out += typeof s === 'number' ? `[${s}]` : out ? `.${s}` : s;
  return out;
}

// ---- ajv: the validator (ajv.ts); defaults are filled from the schema (defaults.ts) ----

const checker = () => configValidator();

// ---- the YAML side ----

const originals = new WeakMap<object, string>();

/** Renames alias keys to their canonical names in place; reports a key given twice. */
function renameAliases(node: unknown, schema: SchemaNode | undefined, path: Seg[], loc: (n: Node) => { line: number; col: number }, file: string, problems: ConfigProblem[], spelled: Seg[] = path) {
  if (!schema) return;
  if (isMap(node)) {
    const aliases = aliasesOf(schema);
    const warned = warnAliasesOf(schema);
    const seen = new Map<string, string>();
    for (const pair of node.items) {
      if (!isScalar(pair.key)) continue;
      const written = String(pair.key.value);
      const name = aliases.get(written) ?? written;
      if (name !== written) {
        originals.set(pair.key, written);
        (pair.key as Scalar).value = name;
        if (warned.has(written)) problems.push({ file, ...loc(pair.key as Node), key: keyPath([...spelled, written]), message: `k3os's spelling of '${name}'`, fix: `write '${name}'`, severity: 'warning' });
      }
      const before = seen.get(name);
      if (before !== undefined && before !== written) {
        problems.push({ file, ...loc(pair.key as Node), key: keyPath([...spelled, written]), message: `'${written}' and '${before}' are the same key`, fix: `keep only one of them, spelled '${name}'` });
      }
      seen.set(name, written);
      renameAliases(pair.value, childSchema(schema, name), [...path, name], loc, file, problems, [...spelled, written]);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => renameAliases(item, childSchema(schema, i), [...path, i], loc, file, problems, [...spelled, i]));
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
 *  text sets (no defaults: merge first, then applyDefaults); it is undefined if there is any
 *  problem. Never throws: whatever goes wrong becomes a problem with a position. */
export function parseConfig(text: string, file: string, opts: ParseOptions = {}): { config: KilnConfigInput | undefined; problems: ConfigProblem[] } {
  try {
    const r = parseUnchecked(text, file, opts);
    return { config: r.problems.some(isError) ? undefined : r.config, problems: capProblems(r.problems, file) };
  } catch (e) {
    return { config: undefined, problems: [failure(file, e)] };
  }
}

/** A problem for an unexpected failure (an exception from a library, an I/O error). */
export function failure(file: string, e: unknown, at: { line: number; col: number } = { line: 1, col: 1 }): ConfigProblem {
  const err = e as NodeJS.ErrnoException;
  const why = err?.code && /^E[A-Z]+$/.test(err.code) ? `${err.code}: ${err.message}` : String(err?.message ?? e);
  return { file, ...at, key: '(file)', message: `cannot be read: ${clip(why.split('\n')[0], 200)}`, fix: `check it with 'kiln config validate'; the node keeps its last good config meanwhile` };
}

/** At most MAX_PROBLEMS, and a line saying how many more there were. */
export function capProblems(problems: ConfigProblem[], file: string): ConfigProblem[] {
  if (problems.length <= MAX_PROBLEMS) return problems;
  const last = problems[MAX_PROBLEMS - 1];
  return [...problems.slice(0, MAX_PROBLEMS), { file, line: last.line, col: last.col, key: '(file)', message: `more problems follow (only the first ${MAX_PROBLEMS} are shown)`, fix: 'fix the ones above first' }];
}

function parseUnchecked(text: string, file: string, opts: ParseOptions): { config: KilnConfigInput | undefined; problems: ConfigProblem[] } {
  const bytes = Buffer.byteLength(text);
  const max = opts.maxBytes ?? MAX_SOURCE_BYTES;
  if (bytes > max) {
    return { config: undefined, problems: [{ file, line: 1, col: 1, key: '(file)', message: `${bytes} bytes, more than the limit of ${max}`, fix: 'split it into several files in config.d, or fetch large file contents with a command instead of write_files' }] };
  }
  const tokens = countTokens(text, MAX_TOKENS);
  if (tokens > MAX_TOKENS) {
    return { config: undefined, problems: [{ file, line: 1, col: 1, key: '(file)', message: `more than ${MAX_TOKENS} YAML tokens (keys, values and punctuation)`, fix: 'split it into several files in config.d' }] };
  }
  const lc = new LineCounter();
  // uniqueKeys off: yaml compares every key with every other (10 000 keys took seconds); see duplicateKey
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: false });
  const problems: ConfigProblem[] = [];
  for (const e of [...doc.errors, ...doc.warnings]) {
    const { line, col } = lc.linePos(e.pos[0]);
    problems.push({ file, line, col, key: '(yaml)', message: `${e.name === 'YAMLWarning' ? 'warning' : 'syntax error'}: ${clip(e.message.split('\n')[0], 200)}`, fix: yamlFix(e.code) });
  }
  const loc = (n: Node) => lc.linePos(n.range?.[0] ?? 0);
  const dup = duplicateKey(doc.contents);
  if (dup) problems.push({ file, ...loc(dup), key: '(yaml)', message: 'syntax error: Map keys must be unique', fix: yamlFix('DUPLICATE_KEY') });
  if (problems.length) return { config: undefined, problems };
  const bomb = aliasProblem(doc.contents, file, loc);
  if (bomb) return { config: undefined, problems: [bomb] };
  renameAliases(doc.contents, CONFIG_SCHEMA, [], loc, file, problems);
  if (problems.some(isError)) return { config: undefined, problems }; // a key given twice: positions would be ambiguous
  let value: unknown;
  try {
    value = doc.contents === null ? {} : toValue(doc.contents);
  } catch (e) {
    let first: Node | undefined;
    visitNodes(doc.contents, (n) => { if (!first && isAlias(n)) first = n; });
    return { config: undefined, problems: [failure(file, e, first ? loc(first) : undefined)] };
  }
  problems.push(...foldedItems(doc.contents, text, lc, file));
  const locator = yamlLocator(doc.contents, text, lc);
  problems.push(...applyCompat(value, file, locator));
  const r = validateValue(value, file, locator, opts);
  const all = [...problems, ...r.problems].sort((a, b) => a.line - b.line || a.col - b.col);
  return { config: r.config, problems: all };
}

/** A '- item' line indented deeper than the item above it is not a new item: YAML reads it
 *  as more text of that item ('server - --cluster-init'). Valid YAML, rarely meant. */
function foldedItems(contents: unknown, text: string, lc: LineCounter, file: string): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  visitNodes(contents, (n) => {
    if (!isScalar(n) || n.type !== 'PLAIN' || !n.range || typeof n.value !== 'string') return;
    const src = text.slice(n.range[0], n.range[1]);
    const m = /\n[ \t]*(- )/.exec(src);
    if (!m) return;
    const { line, col } = lc.linePos(n.range[0] + m.index + m[0].length - 2);
    out.push({ file, line, col, key: '(yaml)', message: `this '- ' is read as more text of the item above ('${clip(n.value, 60)}'), not as a new item`, fix: "indent every '- ' of the list to the same column", severity: 'warning' });
  });
  return out;
}

/** Why a YAML text is too large to parse (bytes or tokens), or undefined. For other YAML
 *  inputs (meta-data) that do not go through parseConfig. */
export function yamlTooLarge(text: string, maxBytes = MAX_SOURCE_BYTES): string | undefined {
  const bytes = Buffer.byteLength(text);
  if (bytes > maxBytes) return `${bytes} bytes, more than the limit of ${maxBytes}`;
  if (countTokens(text, MAX_TOKENS) > MAX_TOKENS) return `more than ${MAX_TOKENS} YAML tokens (keys, values and punctuation)`;
  return undefined;
}

/** Tokens of the text that are not space, line breaks or comments; stops counting past max. */
function countTokens(text: string, max: number): number {
  let n = 0;
  for (const t of new Lexer().lex(text)) {
    if (t[0] === ' ' || t[0] === '\n' || t[0] === '\r' || t[0] === '#') continue;
    if (++n > max) break;
  }
  return n;
}

/** The first key given twice in one map (scalar keys; a linear pass). */
function duplicateKey(contents: unknown): Node | undefined {
  let found: Node | undefined;
  visitNodes(contents, (n) => {
    if (found || !isMap(n)) return;
    const seen = new Set<string>();
    for (const p of n.items) {
      if (!isScalar(p.key)) continue;
      const k = `${typeof p.key.value}:${String(p.key.value)}`;
      if (seen.has(k)) { found = p.key; return; }
      seen.add(k);
    }
  });
  return found;
}

function visitNodes(n: unknown, f: (n: Node) => void) {
  if (!n || typeof n !== 'object') return;
  f(n as Node);
  if (isMap(n)) for (const p of n.items) { visitNodes(p.key, f); visitNodes(p.value, f); }
  else if (isSeq(n)) for (const i of n.items) visitNodes(i, f);
}

/**
 * The document as plain data. yaml's own toJS resolves each alias by scanning every node
 * before it (20 000 aliases took 20 s) and stops at 100 uses; this resolves each in one
 * step, after aliasProblem has bounded the expansion. An alias gives the same object as its
 * anchor, as yaml does. Keys are own properties, even '__proto__' (validation refuses it).
 */
function toValue(contents: unknown): unknown {
  const source = aliasSources(contents);
  const done = new Map<object, unknown>();
  const conv = (n: unknown): unknown => {
    if (isAlias(n)) {
      const s = source.get(n);
      if (!s) throw new Error(`the alias *${clip(n.source, 40)} has no anchor before it`);
      return conv(s);
    }
    if (n === null || n === undefined) return null;
    if (isScalar(n)) return n.value;
    if (done.has(n)) return done.get(n);
    if (isMap(n)) {
      const o: Record<string, unknown> = {};
      done.set(n, o);
      for (const p of n.items) {
        const k = conv(p.key);
        const key = k === null ? '' : typeof k === 'object' ? JSON.stringify(k) : String(k);
        Object.defineProperty(o, key, { value: conv(p.value), enumerable: true, writable: true, configurable: true });
      }
      return o;
    }
    if (isSeq(n)) {
      const a: unknown[] = [];
      done.set(n, a);
      for (const i of n.items) a.push(conv(i));
      return a;
    }
    return null;
  };
  return conv(contents);
}

/** Each alias's node: the last one with its anchor before it (an enclosing one included). */
function aliasSources(contents: unknown): Map<object, Node | undefined> {
  const source = new Map<object, Node | undefined>();
  const anchors = new Map<string, Node>();
  visitNodes(contents, (n) => {
    if (isAlias(n)) source.set(n, anchors.get(n.source));
    else if ((n as Scalar).anchor) anchors.set((n as Scalar).anchor!, n);
  });
  return source;
}

/**
 * Counts the values the document holds once every alias is expanded, and points at the
 * alias (or value) that takes it past MAX_VALUES. Many aliases are fine (yaml's default stops
 * at 100 uses); aliases of aliases that multiply (an alias bomb) are not.
 */
function aliasProblem(contents: unknown, file: string, loc: (n: Node) => { line: number; col: number }): ConfigProblem | undefined {
  const source = aliasSources(contents);
  if (!source.size) return undefined;
  const cap = MAX_VALUES + 1;
  const memo = new Map<object, number>();
  const busy = new Set<object>();
  const sizeOf = (n: unknown): number => {
    if (isAlias(n)) { const s = source.get(n); return s ? sizeOf(s) : 1; }
    if (!n || typeof n !== 'object' || !(isMap(n) || isSeq(n))) return 1;
    const known = memo.get(n);
    if (known !== undefined) return known;
    if (busy.has(n)) return cap; // an alias inside the node it refers to
    busy.add(n);
    let total = 1;
    const items: unknown[] = isMap(n) ? n.items.flatMap((p) => [p.key, p.value]) : n.items;
    for (const i of items) { total = Math.min(cap, total + sizeOf(i)); if (total >= cap) break; }
    busy.delete(n);
    memo.set(n, total);
    return total;
  };
  let total = 0;
  let culprit: Node | undefined;
  let dangling: Node | undefined;
  const walk = (n: unknown) => {
    if (culprit || !n || typeof n !== 'object') return;
    if (isAlias(n)) { if (!source.get(n)) dangling ??= n; total += sizeOf(n); if (total > MAX_VALUES) culprit = n; return; }
    total += 1;
    if (total > MAX_VALUES) { culprit = n as Node; return; }
    if (isMap(n)) for (const p of n.items) { walk(p.key); walk(p.value); }
    else if (isSeq(n)) for (const i of n.items) walk(i);
  };
  walk(contents);
  if (!culprit && dangling && isAlias(dangling)) return { file, ...loc(dangling), key: '(yaml)', message: `the alias *${clip(dangling.source, 40)} has no anchor &${clip(dangling.source, 40)} before it`, fix: 'define the anchor first, or write the value out' };
  if (!culprit) return undefined;
  return {
    file, ...loc(culprit), key: '(yaml)',
    message: isAlias(culprit) ? `the alias *${clip(culprit.source, 40)} takes the config past ${MAX_VALUES} values once expanded (aliases that repeat aliases multiply)` : `more than ${MAX_VALUES} values`,
    fix: isAlias(culprit) ? 'write the repeated part out, or use fewer levels of aliases' : 'split the config into smaller files',
  };
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
export function validateValue(value: unknown, file: string, locator: Locator, opts: ParseOptions = {}): { config: KilnConfigInput | undefined; problems: ConfigProblem[] } {
  const problems: ConfigProblem[] = reservedKeys(value, file, locator);
  if (problems.length) return { config: undefined, problems };
  const validate = checker();
  if (!validate(value)) {
    for (const e of validate.errors ?? []) {
      if (problems.length > MAX_PROBLEMS) break; // capProblems says how many more; each costs a lookup
      const p = toProblem(e, value, file, locator);
      if (p && !problems.some((q) => q.line === p.line && q.col === p.col && q.message === p.message)) problems.push(p);
    }
  }
  // content checks too, so every problem shows in one pass (checkContents skips values of the wrong type)
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) problems.push(...checkContents(value as KilnConfigInput, file, locator, opts));
  problems.sort((a, b) => a.line - b.line || a.col - b.col); // in reading order
  if (problems.length) return { config: undefined, problems };
  return { config: normalise(structuredClone(value) as any), problems };
}

/** `__proto__`, `constructor` and `prototype` as keys: refused wherever a map takes any name. */
function reservedKeys(value: unknown, file: string, loc: Locator): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  const seen = new Set<object>();
  const walk = (v: unknown, path: Seg[]) => {
    if (v === null || typeof v !== 'object' || seen.has(v)) return;
    seen.add(v);
    if (Array.isArray(v)) { v.forEach((x, i) => walk(x, [...path, i])); return; }
    for (const k of Object.keys(v)) {
      if (RESERVED_KEYS.has(k)) out.push({ file, ...loc.pos([...path, k], true), key: clip(keyPath([...path, k]), 160), message: `'${k}' is not allowed as a name`, fix: 'rename this key' });
      else walk((v as Record<string, unknown>)[k], [...path, k]);
    }
  };
  walk(value, []);
  return out;
}

// ---- ajv errors -> problems ----

const NOT_SUPPORTED: Record<string, string> = {
  packages: 'the root is read-only and has no package manager; run software as containers',
  package_update: 'the root is read-only; updates come through kiln.channel',
  package_upgrade: 'the root is read-only; updates come through kiln.channel',
  apt: 'the root is read-only and has no package manager',
  snap: 'the root is read-only and has no package manager',
  mounts: 'kiln manages its own mounts; use write_files and boot_cmd for extra ones',
  package_reboot_if_required: 'the root is read-only; updates come through kiln.channel',
  yum_repos: 'the root is read-only and has no package manager',
  apk_repos: 'the root is read-only and has no package manager',
  disk_setup: 'kiln lays out its own disk; use boot_cmd for extra disks',
  fs_setup: 'kiln lays out its own disk; use boot_cmd to format extra disks',
  swap: 'kiln sets up no swap, as Kubernetes expects',
  power_state: 'kiln reboots itself for updates; use run_cmd to power off or reboot',
  phone_home: 'kiln has no phone-home; use run_cmd with curl or wget',
  ca_certs: 'write the certificate with write_files and reference it where it is used',
  bootcmd_once: 'no such key; use boot_cmd',
  puppet: 'kiln runs no configuration agents on the host; run them as containers',
  chef: 'kiln runs no configuration agents on the host; run them as containers',
  salt_minion: 'kiln runs no configuration agents on the host; run them as containers',
  ansible: 'kiln runs no configuration agents on the host; run them as containers',
  lxd: 'kiln runs k3s, not lxd',
  rsyslog: 'kiln writes its own logs under /var/log/kiln; ship logs with a DaemonSet',
  ssh_keys: 'the SSH host keys are made on first start; kiln does not take them from config',
  keyboard: 'kiln has no keyboard layout setting',
  ubuntu_advantage: 'kiln is not Ubuntu',
};

/** An error's path as keys, and the value found there. */
function toSegs(instancePath: string, value: unknown): { segs: Seg[]; data: unknown } {
  const segs: Seg[] = [];
  let v: any = value;
  for (const raw of instancePath.split('/').slice(1)) {
    const s = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    const seg: Seg = Array.isArray(v) ? Number(s) : s;
    segs.push(seg);
    v = v?.[seg];
  }
  return { segs, data: v };
}

const TYPE_NAMES: Record<string, string> = { string: 'a string', array: 'a list', object: 'a map of keys', boolean: 'true or false', integer: 'a whole number', number: 'a number', null: 'nothing' };
const describe = (v: unknown) => v === null ? 'nothing' : Array.isArray(v) ? 'a list' : typeof v === 'object' ? 'a map' : typeof v === 'string' ? `the string '${clip(v)}'` : `${typeof v} ${clip(JSON.stringify(v))}`;
const orList = (xs: string[]) => xs.length <= 1 ? xs.join('') : `${xs.slice(0, -1).join(', ')} or ${xs[xs.length - 1]}`;
const show = (v: unknown) => (typeof v === 'string' ? `'${clip(v)}'` : clip(JSON.stringify(v) ?? String(v)));

function toProblem(e: ErrorObject, value: unknown, file: string, loc: Locator): ConfigProblem | undefined {
  if (e.keyword === 'propertyNames') return undefined; // its inner error carries the key
  // The schema has no anyOf, oneOf or allOf (test/unit/validators.test.ts holds it), so the
  // node at the error's path is the one whose keyword failed (ajv's verbose `parentSchema`).
  const { segs: path, data } = toSegs(e.instancePath, value);
  const schema = schemaAt(path);
  const at = (p: Seg[], atKey: boolean) => ({ file, ...loc.pos(p, atKey), key: clip(keyPath(loc.spelling(p)), 160) });
  if (e.propertyName !== undefined) {
    const p = [...path, e.propertyName];
    const hint = schema?.propertyNames?.['x-hint'];
    return { ...at(p, true), message: `'${clip(e.propertyName)}' is not a valid name here`, fix: hint ? `use ${hint}` : 'rename this key' };
  }
  switch (e.keyword) {
    case 'additionalProperties': {
      const name = String(e.params.additionalProperty);
      const p = [...path, name];
      const valid = Object.keys(schema?.properties ?? {});
      const known = [...valid, ...aliasesOf(schema).keys()];
      const near = closest(name, known);
      const fix = path.length === 0 && NOT_SUPPORTED[name] ? NOT_SUPPORTED[name]
        : near ? `did you mean '${aliasesOf(schema).get(near) ?? near}'?`
        : path.length === 0 && schemaAt(['kiln'])!.properties[name] ? `it belongs under kiln: (kiln.${name})`
        : `valid keys: ${valid.join(', ')}`;
      return { ...at(p, true), message: `unknown key '${clip(name)}'`, fix };
    }
    case 'type': {
      const want = ([] as string[]).concat(e.params.type).filter((t) => t !== 'integer' || !([] as string[]).concat(e.params.type).includes('number'));
      const src = loc.source(path);
      let fix = `write ${orList(want.map((t) => TYPE_NAMES[t] ?? t))}`;
      if (want.includes('string') && data !== null && typeof data !== 'object') fix = `put the value in quotes: '${clip(src ?? String(data))}'`;
      else if (want.includes('array') && data !== null && typeof data !== 'object') fix = `make it a list: [${clip(src ?? String(data))}]`;
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
    case 'maximum':
      return { ...at(path, false), message: `${show(data)} is out of range`, fix: `use a number from ${schema?.minimum ?? '-∞'} to ${schema?.maximum ?? '∞'}` };
    default:
      return { ...at(path, false), message: clip(e.message ?? `fails ${e.keyword}`, 200), fix: 'see docs/config.md' };
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

function checkContents(c: KilnConfigInput, file: string, loc: Locator, opts: ParseOptions): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  // Decoded sizes: a small gzip can expand to gigabytes.
  let total = 0;
  for (const [i, f] of (Array.isArray(c.write_files) ? c.write_files : []).entries()) {
    const p = ['write_files', i, 'content'];
    if (f === null || typeof f !== 'object' || (f.content !== undefined && typeof f.content !== 'string') || (f.encoding !== undefined && !(ENCODINGS as readonly unknown[]).includes(f.encoding))) continue; // a type problem, reported already
    try {
      total += decodeContent(f as WriteFile).length;
    } catch (e) {
      out.push({ file, ...loc.pos(p, false), key: keyPath(p), message: (e as Error).message, fix: (e as Error).message.includes('limit') ? 'write large files with a command (run_cmd) instead' : `encode the content as ${f.encoding} says, or change encoding` });
      continue;
    }
    if (total > MAX_WRITE_FILES_BYTES) {
      out.push({ file, ...loc.pos(p, false), key: keyPath(p), message: `write_files of this config decode to more than ${MAX_WRITE_FILES_BYTES >> 20} MiB together`, fix: 'write large files with a command (run_cmd) instead' });
      break;
    }
  }
  if (opts.imageConfig === false && c.kiln?.allow_insecure_http !== undefined) {
    const p = ['kiln', 'allow_insecure_http'];
    out.push({ file, ...loc.pos(p, true), key: keyPath(loc.spelling(p)), message: "is only honoured in the image's own config (/usr/lib/kiln/config.yaml)", fix: 'remove it here, and set it in the config given to kiln build if plain http is wanted' });
  }
  // URLs whose answer is config or keys (root on the node): https, a pin, or the image's opt-in.
  const allow = opts.allowInsecureHttp ?? c.kiln?.allow_insecure_http === true;
  const urls: [Seg[], { pinnable?: boolean; fileOk?: boolean }][] = [
    [['kiln', 'install', 'config_url'], { fileOk: true }],
    [['kiln', 'key_services', 'github'], { pinnable: false }],
    [['kiln', 'key_services', 'gitlab'], { pinnable: false }],
    [['kiln', 'key_services', 'launchpad'], { pinnable: false }],
  ];
  for (const [path, o] of urls) {
    const url = path.reduce<any>((v, k) => v?.[k], c);
    if (typeof url !== 'string' || !url) continue;
    const why = urlProblem(url, { allowInsecureHttp: allow, ...o });
    if (why) out.push({ file, ...loc.pos(path, false), key: keyPath(loc.spelling(path)), ...why });
  }
  // The updater's own parser: a window that passes here is one the updater accepts at start-up.
  const window = c.kiln?.updates?.window;
  if (typeof window === 'string' && window) {
    try { parseWindows(window); } catch (e) {
      const p = ['kiln', 'updates', 'window'];
      out.push({ file, ...loc.pos(p, false), key: keyPath(loc.spelling(p)), message: (e as Error).message, fix: `use ${schemaAt(p)?.['x-hint']}` });
    }
  }
  return out;
}

const canonicalEncoding = (e: string | undefined): WriteFile['encoding'] =>
  !e || e === 'text' || e === 'text/plain' ? 'text' : e === 'b64' || e === 'base64' ? 'base64' : 'gzip+base64';

/** The bytes of a write_files entry (at most maxBytes). Throws with a readable message on bad content. */
export function decodeContent(f: Pick<WriteFile, 'content'> & { encoding?: string }, maxBytes = MAX_WRITE_FILE_BYTES): Buffer {
  const enc = canonicalEncoding(f.encoding);
  const content = f.content ?? '';
  const tooBig = `content is more than ${maxBytes >> 20} MiB once decoded (the limit for one file)`;
  if (enc === 'text') { if (Buffer.byteLength(content) > maxBytes) throw new Error(tooBig); return Buffer.from(content); }
  const compact = content.replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(compact) || compact.length % 4 !== 0) throw new Error('content is not valid base64');
  const raw = Buffer.from(compact, 'base64');
  if (enc === 'base64') { if (raw.length > maxBytes) throw new Error(tooBig); return raw; }
  try { return nodeZlib().gunzipSync(raw, { maxOutputLength: maxBytes }); } catch (e) {
    throw new Error((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' ? tooBig : 'content is base64 but not gzip data');
  }
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
      if (typeof u.inactive === 'number') u.inactive = String(u.inactive);
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
  fillDefaults(CONFIG_SCHEMA, c);
  const check = checker();
  if (!check(c)) throw new Error(`applyDefaults: invalid config: ${check.errors?.[0]?.instancePath} ${check.errors?.[0]?.message}`);
  return normalise(c) as KilnConfig;
}

/** A locator for values without a source text: every problem points at one position. */
export function fixedLocator(line = 1, col = 1): Locator {
  return { pos: () => ({ line, col }), source: () => undefined, spelling: (p) => p };
}

