// Config sources, their order, how they merge, and the kernel command line scheme.
// Everything but readLocalSources is pure, so PID 1 can test its choices without a disk.
import { close, fstat as fstatCb, open as openCb, read as readCb, readdir as readdirCb } from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { applyDefaults, capProblems, closest, failure, isError, keyPath, MAX_SOURCE_BYTES, parseConfig, RESERVED_KEYS, validateValue, type ConfigProblem, type Locator, type ParseOptions, type Seg } from './parse.ts';
import { clip, urlProblem } from './url.ts';
import { aliasesOf, childSchema, CONFIG_SCHEMA, schemaAt, typesOf, type KilnConfig, type KilnConfigInput, type SchemaNode } from './schema.ts';

// node:fs's callbacks, not node:fs/promises: that module (and the readline it loads) would be
// loaded at boot for these reads alone.
const open = promisify(openCb);
const read = promisify(readCb);
const fstat = promisify(fstatCb);
const readdir = promisify(readdirCb);

/** Where each local source lives, relative to the root of the running system. */
export const PATHS = {
  image: '/usr/lib/kiln/config.yaml',
  data: '/var/lib/kiln/config.yaml',
  dropIns: '/var/lib/kiln/config.d',
  lastGood: '/var/lib/kiln/state/config.last-good.yaml',
  keyCache: '/var/lib/kiln/state/keys',
} as const;

export type ConfigPaths = { data: string; dropIns: string; lastGood: string };

/**
 * Where the node's own config lives for a channel space: `stable` (also rc) uses the paths
 * above; `beta` keeps its own copy, so leaving beta returns to stable's untouched config.
 */
export function configPaths(space: 'stable' | 'beta'): ConfigPaths {
  if (space === 'stable') return { data: PATHS.data, dropIns: PATHS.dropIns, lastGood: PATHS.lastGood };
  return { data: '/var/lib/kiln/beta/config.yaml', dropIns: '/var/lib/kiln/beta/config.d', lastGood: '/var/lib/kiln/beta/state/config.last-good.yaml' };
}

/** The merge order, lowest priority first; also printed in docs/config.md. */
export const MERGE_ORDER = [
  ['image', `the image's built-in config, \`${PATHS.image}\``],
  ['data', `the data partition, \`${PATHS.data}\``],
  ['config.d', `\`${PATHS.dropIns}/*.yaml\`, in file name order`],
  ['datasource', 'cloud data sources: `user-data`/`meta-data` on the boot partition (the Pi card\'s FAT or the ESP), NoCloud (`ds=nocloud;s=URL`, a CIDATA volume), then those in `kiln.data_sources`, then the file at `kiln.config_url=`'],
  ['cmdline', 'the kernel command line (`kiln.<key>=<value>`)'],
] as const;

export interface SourceText {
  /** file name (or URL, or /proc/cmdline) shown in problems */
  file: string;
  text: string;
  /** 'cmdline' texts are kernel command lines; the rest are YAML */
  kind?: 'yaml' | 'cmdline';
  /** the source exists but could not be read (an I/O error, too large): a problem, so the
   *  config falls back to the last good one instead of running without this source */
  error?: string;
  /** what to do about `error`, when known */
  fix?: string;
}

/** Drop-in files read from config.d; more is a problem. */
export const MAX_DROP_INS = 64;
/** All sources of one boot together; also the limit for the stored last good config. */
export const MAX_TOTAL_BYTES = 16 << 20;

// ---- merging ----

const isMapValue = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function mergeValue(a: unknown, b: unknown, schema: SchemaNode | undefined): unknown {
  if (b === undefined) return structuredClone(a);
  if (isMapValue(a) && isMapValue(b)) {
    const out: Record<string, unknown> = structuredClone(a);
    for (const [k, v] of Object.entries(b)) {
      if (RESERVED_KEYS.has(k)) continue; // validation refuses them; never let one reach a prototype
      out[k] = mergeValue(Object.hasOwn(a, k) ? a[k] : undefined, v, childSchema(schema, k));
    }
    return out;
  }
  if (Array.isArray(a) && Array.isArray(b) && schema?.['x-merge'] === 'append') {
    const byKey: string | undefined = schema['x-merge-key'];
    const out: unknown[] = [];
    // index by identity (linear: a list of many thousand items must not take minutes)
    const at = new Map<string, number>();
    for (const item of [...a, ...b]) {
      const id = byKey && isMapValue(item) ? `k:${JSON.stringify(item[byKey])}` : `v:${JSON.stringify(item)}`;
      const dup = at.get(id);
      if (dup === undefined) { at.set(id, out.length); out.push(structuredClone(item)); }
      else if (byKey) out[dup] = structuredClone(item);
    }
    return out;
  }
  return structuredClone(b);
}

/** Merges configs, lowest priority first: maps merge key by key, lists follow their
 *  `x-merge` rule (append + de-duplicate, or replace), other values are replaced. */
export function mergeConfigs(layers: KilnConfigInput[]): KilnConfigInput {
  return layers.reduce<unknown>((acc, l) => mergeValue(acc, l, CONFIG_SCHEMA), {}) as KilnConfigInput;
}

// ---- the kernel command line ----

interface Token { text: string; col: number }

/** Splits a command line like the kernel does: spaces separate, double quotes group. */
export function tokenizeCmdline(cmdline: string): Token[] {
  const out: Token[] = [];
  let cur = '';
  let start = -1;
  let quoted = false;
  for (let i = 0; i <= cmdline.length; i++) {
    const ch = cmdline[i];
    if (ch === undefined || (!quoted && /\s/.test(ch))) {
      if (start >= 0) out.push({ text: cur, col: start + 1 });
      cur = ''; start = -1;
      continue;
    }
    if (start < 0) start = i;
    if (ch === '"') quoted = !quoted; else cur += ch;
  }
  return out;
}

/** Parameters for stage 1 and the boot itself, not config keys (bare `kiln.install`: the ISO's
 *  install entry; `kiln.install=x` stays an error, `kiln.install.<key>=` is config as usual). */
// root/data/boot: partitions the Pi's U-Boot script names (MBR has no partition labels).
// floor: npm run bench's stand-in for init (builder/stage1/init.sh).
export const BOOT_PARAMS = new Set(['slot', 'live', 'stage1', 'install', 'root', 'data', 'boot', 'verity', 'floor']);

const TRUE = new Set(['', 'true', '1', 'yes', 'on']);
const FALSE = new Set(['false', '0', 'no', 'off']);

export interface CmdlineConfig {
  config: KilnConfigInput | undefined;
  /** `kiln.config_url=`: a config to fetch and merge as a data source */
  configUrl?: string;
  problems: ConfigProblem[];
}

/**
 * Reads `kiln.<key>=<value>` (or `k3os.<key>=<value>`) parameters. <key> is a dotted path:
 * top-level keys as they are (`kiln.hostname=n1`), keys of the kiln: section without the
 * section name (`kiln.k3s_args=--disable=traefik`; `kiln.kiln.k3s_args=` works too), map
 * entries by their name (`kiln.sysctls.net.ipv4.ip_forward=1`). Each occurrence of a list key
 * adds one item. A boolean without `=` is true. Other parameters are ignored.
 */
export function parseCmdline(cmdline: string, file = '/proc/cmdline', opts: ParseOptions = {}): CmdlineConfig {
  try {
    const r = parseCmdlineUnchecked(cmdline, file, opts);
    return { ...r, problems: capProblems(r.problems, file) };
  } catch (e) {
    return { config: undefined, problems: [failure(file, e)] };
  }
}

function parseCmdlineUnchecked(cmdline: string, file: string, opts: ParseOptions): CmdlineConfig {
  if (cmdline.length > MAX_SOURCE_BYTES) return { config: undefined, problems: [{ file, line: 1, col: 1, key: '(file)', message: `${cmdline.length} characters, more than the limit of ${MAX_SOURCE_BYTES}`, fix: 'shorten the command line' }] };
  const problems: ConfigProblem[] = [];
  const value: Record<string, any> = {};
  const cols = new Map<string, number>();
  let configUrl: string | undefined;
  let configUrlCol = 1;
  const top = CONFIG_SCHEMA;
  const kiln = schemaAt(['kiln'])!;
  for (const tok of tokenizeCmdline(cmdline)) {
    const m = /^(kiln|k3os)\.([^=]+)(?:=(.*))?$/s.exec(tok.text);
    if (!m) continue;
    const [, , name, raw] = m;
    if (BOOT_PARAMS.has(name) && (name !== 'install' || raw === undefined)) continue;
    const bad = (message: string, fix: string, key = name) => problems.push({ file, line: 1, col: tok.col, key: clip(key), message, fix });
    if (name === 'config_url') {
      if (!raw) bad('needs a URL', 'write kiln.config_url=https://host/config.yaml');
      else { configUrl = raw; configUrlCol = tok.col; }
      continue;
    }
    const segs = name.split('.');
    // Map entries take any name: these three would reach Object.prototype.
    const reserved = segs.find((x) => RESERVED_KEYS.has(x));
    if (reserved) { bad(`'${reserved}' is not allowed as a name`, 'rename this key'); continue; }
    // The first segment picks the top level or the kiln: section.
    const first = aliasesOf(top).get(segs[0]) ?? segs[0];
    const path: Seg[] = top.properties[first] ? [] : kiln.properties[aliasesOf(kiln).get(segs[0]) ?? segs[0]] ? ['kiln'] : [];
    let node: SchemaNode | undefined = path.length ? kiln : top;
    let i = 0;
    for (; i < segs.length && node; i++) {
      const seg: string = aliasesOf(node).get(segs[i]) ?? segs[i];
      if (node.properties && Object.hasOwn(node.properties, seg)) { path.push(seg); node = node.properties[seg]; continue; }
      if (typeof node.additionalProperties === 'object') {
        // map entry: a scalar map takes the rest as its key (sysctl names have dots)
        const scalar = !typesOf(node.additionalProperties).includes('object');
        const key = scalar ? segs.slice(i).join('.') : segs[i];
        path.push(key); node = node.additionalProperties;
        if (scalar) { i = segs.length; break; }
        continue;
      }
      node = undefined;
      break;
    }
    if (!node || i < segs.length) {
      const parent = schemaAt(path);
      const valid = Object.keys(parent?.properties ?? {});
      const candidates = path.length ? valid : [...valid, ...Object.keys(kiln.properties)];
      const near = closest(segs[i] ?? segs[segs.length - 1], candidates);
      const short = path[0] === 'kiln' ? path.slice(1) : path;
      bad(`unknown key '${clip(segs[i] ?? name)}'`, near ? `did you mean 'kiln.${[...short, near].join('.')}'?` : `valid keys: ${candidates.join(', ')}`);
      continue;
    }
    const types = typesOf(node);
    const where = keyPath(path);
    let item: unknown;
    if (types.includes('array')) {
      // one list item per occurrence
      const itemTypes = typesOf(node.items);
      if (!itemTypes.includes('string')) { bad('cannot be set on the kernel command line', 'put it in a config file and pass kiln.config_url=URL', where); continue; }
      if (raw === undefined) { bad('needs a value', `write kiln.${name}=VALUE`, where); continue; }
      const list = getIn(value, path) ?? [];
      setIn(value, path, [...list, raw]);
      cols.set(keyPath([...path, list.length]), tok.col);
      cols.set(where, cols.get(where) ?? tok.col);
      continue;
    }
    if (types.includes('object') && !types.includes('string')) { bad('is a section, not a value', `set one of its keys, e.g. kiln.${name}.${Object.keys(node.properties ?? {})[0] ?? 'NAME'}=VALUE`, where); continue; }
    const bool = types.includes('boolean') && !types.includes('string');
    if (bool && raw !== undefined && !TRUE.has(raw) && !FALSE.has(raw)) { bad(`'${clip(raw)}' is not true or false`, `write kiln.${name}=true or kiln.${name}=false`, where); continue; }
    if (bool) item = TRUE.has(raw ?? '');
    else if (raw === undefined) { bad('needs a value', `write kiln.${name}=VALUE`, where); continue; }
    else if (types.includes('integer') || types.includes('number')) item = /^-?\d+(\.\d+)?$/.test(raw) ? Number(raw) : raw;
    else item = raw;
    setIn(value, path, item);
    cols.set(where, tok.col);
  }
  if (configUrl) {
    const allow = opts.allowInsecureHttp ?? value.kiln?.allow_insecure_http === true;
    const why = urlProblem(configUrl, { allowInsecureHttp: allow });
    if (why) { problems.push({ file, line: 1, col: configUrlCol, key: 'config_url', ...why }); configUrl = undefined; }
  }
  if (problems.length) return { config: undefined, configUrl, problems };
  const locator: Locator = {
    pos(path) {
      // the token that set this path, or the first token under it
      for (let n = path.length; n >= 0; n--) {
        const exact = cols.get(keyPath(path.slice(0, n)));
        if (exact) return { line: 1, col: exact };
      }
      const prefix = keyPath(path);
      const under = [...cols.entries()].find(([k]) => k.startsWith(prefix));
      return { line: 1, col: under?.[1] ?? 1 };
    },
    source: () => undefined,
    spelling: (p) => p,
  };
  const r = validateValue(value, file, locator, opts);
  return { config: r.config, configUrl, problems: r.problems };
}

// Own properties only: a name must never walk into a prototype.
function getIn(obj: any, path: Seg[]): any {
  return path.reduce((o, k) => (o == null || !Object.hasOwn(o, k) ? undefined : o[k]), obj);
}
function setIn(obj: any, path: Seg[], v: unknown) {
  let o = obj;
  for (const k of path) if (RESERVED_KEYS.has(String(k))) throw new Error(`'${k}' is not allowed as a name`);
  for (const k of path.slice(0, -1)) o = Object.hasOwn(o, k) ? o[k] : (o[k] = {});
  o[path[path.length - 1]] = v;
}

// ---- choosing the config to run with ----

export interface ConfigChoice {
  /** the config to run with, defaults filled in */
  config: KilnConfig;
  /** 'new': every source was good; 'last-good': a source had problems, the stored last good
   *  config is used; 'partial': a source had problems and there is no usable last good config,
   *  so the good sources alone are merged; 'defaults': not even that worked */
  used: 'new' | 'last-good' | 'partial' | 'defaults';
  /** true only when every source was read and parsed without a problem (used === 'new').
   *  False means `config` is a fallback: do not rewrite from it what could lock the owner out
   *  (authorized_keys); what the last ok boot wrote is still there. */
  ok: boolean;
  problems: ConfigProblem[];
  /** text to store as the new last good config (only when used === 'new') */
  lastGood?: string;
  configUrl?: string;
  /** kiln.allow_insecure_http of the image's config, the only place it is honoured */
  allowInsecureHttp: boolean;
}

/** kiln.allow_insecure_http as the image's config (/usr/lib/kiln/config.yaml) sets it. */
export function imageAllowsInsecureHttp(sources: SourceText[]): boolean {
  const image = sources.find((s) => s.file === PATHS.image && s.kind !== 'cmdline' && s.error === undefined);
  return image ? parseConfig(image.text, image.file).config?.kiln?.allow_insecure_http === true : false;
}

/** The problem for a source that could not be read. */
export function sourceProblem(s: SourceText): ConfigProblem {
  const e = s.error ?? 'cannot be read';
  const fix = / files, more than/.test(e) ? 'merge some of the files' : /bytes/.test(e) ? 'make it smaller: split it into files in config.d' : 'check the disk or the file; the node keeps its last good config meanwhile';
  return { file: s.file, line: 1, col: 1, key: '(file)', message: clip(e, 200), fix: s.fix ?? fix };
}

/** Parses the sources (lowest priority first), merges them, and falls back to the last good
 *  config when any of them has a problem. Pure: the caller reads and writes the files.
 *  Never throws: an unexpected failure is one more problem, and the fallback is used. */
export function chooseConfig(o: { sources: SourceText[]; lastGood?: string; lastGoodFile?: string }): ConfigChoice {
  const problems: ConfigProblem[] = [];
  const good: KilnConfigInput[] = [];
  let configUrl: string | undefined;
  let allow = false;
  try {
    allow = imageAllowsInsecureHttp(o.sources);
    let total = 0;
    for (const s of o.sources) {
      try {
        if (s.error !== undefined) { problems.push(sourceProblem(s)); continue; }
        total += Buffer.byteLength(s.text);
        if (total > MAX_TOTAL_BYTES) { problems.push({ file: s.file, line: 1, col: 1, key: '(file)', message: `the config sources up to this one hold more than ${MAX_TOTAL_BYTES >> 20} MiB together`, fix: 'use fewer or smaller config files' }); continue; }
        const opts = { allowInsecureHttp: allow, imageConfig: s.file === PATHS.image && s.kind !== 'cmdline' };
        const r = s.kind === 'cmdline' ? parseCmdline(s.text, s.file, opts) : parseConfig(s.text, s.file, opts);
        if (s.kind === 'cmdline' && (r as CmdlineConfig).configUrl) configUrl = (r as CmdlineConfig).configUrl;
        problems.push(...r.problems);
        if (r.config) good.push(r.config);
      } catch (e) { problems.push(failure(s.file, e)); }
    }
    if (!problems.some(isError)) { // warnings are reported, and the config is used
      const merged = mergeConfigs(good);
      // Written as JSON, which is YAML too: JSON.stringify is V8's own, where yaml's stringifier
      // was compiled and run on the way to ready. The schema admits no value JSON cannot hold
      // (ajv refuses NaN and the infinities).
      return { config: applyDefaults(merged), used: 'new', ok: true, problems, configUrl, allowInsecureHttp: allow, lastGood: `# kiln: last good config, merged from ${o.sources.map((s) => s.file).join(', ') || 'nothing'}\n${JSON.stringify(merged, null, 2)}\n` };
    }
  } catch (e) { problems.push(failure('(config)', e)); }
  const fallback = { ok: false, problems, configUrl, allowInsecureHttp: allow } as const;
  if (o.lastGood !== undefined) {
    const file = o.lastGoodFile ?? PATHS.lastGood;
    try {
      const last = parseConfig(o.lastGood, file, { allowInsecureHttp: allow, maxBytes: MAX_TOTAL_BYTES * 2 });
      if (last.config) {
        const config = applyDefaults(last.config);
        config.kiln.allow_insecure_http = allow; // the image decides, not an older image's copy
        return { ...fallback, config, used: 'last-good' };
      }
      problems.push(...last.problems);
    } catch (e) { problems.push(failure(file, e)); }
  }
  try { return { ...fallback, config: applyDefaults(mergeConfigs(good)), used: 'partial' }; } catch (e) { problems.push(failure('(config)', e)); }
  return { ...fallback, config: applyDefaults({}), used: 'defaults' };
}

/**
 * A source file: its text, or why it cannot be used. A missing file is neither (undefined):
 * only that means "not configured". Reads at most MAX_SOURCE_BYTES.
 */
export async function readSource(path: string, max = MAX_SOURCE_BYTES): Promise<{ data: Buffer; error?: undefined } | { data?: undefined; error: string } | undefined> {
  let fd: number;
  try { fd = await open(path, 'r'); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    return { error: `cannot be read: ${clip((e as Error).message, 200)}` };
  }
  try {
    // A buffer of the file's size (and one byte to see it grow), not of the limit: the last
    // good config's limit is 32 MiB, and V8 counts a buffer that size as memory to collect.
    let buf = Buffer.alloc(Math.min((await fstat(fd)).size, max) + 1);
    let n = 0;
    for (;;) {
      if (n === buf.length) { const more = Buffer.alloc(Math.min(max + 1, n * 2 + 4096)); buf.copy(more, 0, 0, n); buf = more; }
      const r = await read(fd, buf, n, buf.length - n, n);
      if (r.bytesRead === 0) break;
      n += r.bytesRead;
      if (n > max) return { error: `more than the limit of ${max} bytes${max && !(max % 1048576) ? ` (${max / 1048576} MiB)` : ''}` };
    }
    return { data: buf.subarray(0, n) };
  } catch (e) {
    return { error: `cannot be read: ${clip((e as Error).message, 200)}` };
  } finally { close(fd, () => { /* nothing to do about a failed close of a read */ }); }
}

/** Reads the local sources in merge order (image, data partition, config.d). Missing files are
 *  skipped; a file that exists but cannot be read is kept with its error. */
export async function readLocalSources(root = '/', paths: ConfigPaths = configPaths('stable')): Promise<SourceText[]> {
  const out: SourceText[] = [];
  const add = async (p: string) => {
    const r = await readSource(join(root, p));
    if (!r) return;
    out.push(r.error !== undefined ? { file: p, text: '', error: r.error } : { file: p, text: r.data.toString('utf8') });
  };
  for (const p of [PATHS.image, paths.data]) await add(p);
  let names: string[] = [];
  try { names = (await readdir(join(root, paths.dropIns))).filter((n) => /\.ya?ml$/.test(n)).sort(); } catch (e) {
    // no drop-ins is normal; a folder that cannot be listed is not
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') out.push({ file: paths.dropIns, text: '', error: `cannot be listed: ${clip((e as Error).message, 200)}` });
  }
  if (names.length > MAX_DROP_INS) {
    out.push({ file: paths.dropIns, text: '', error: `holds ${names.length} files, more than the limit of ${MAX_DROP_INS}` });
    names = names.slice(0, MAX_DROP_INS);
  }
  for (const n of names) await add(`${paths.dropIns}/${n}`);
  return out;
}
