// Config sources, their order, how they merge, and the kernel command line scheme.
// Everything but readLocalSources is pure, so PID 1 can test its choices without a disk.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { applyDefaults, closest, keyPath, parseConfig, validateValue, type ConfigProblem, type Locator, type Seg } from './parse.ts';
import { aliasesOf, childSchema, CONFIG_SCHEMA, schemaAt, typesOf, type KilnConfig, type KilnConfigInput, type SchemaNode } from './schema.ts';

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
}

// ---- merging ----

const isMapValue = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

function mergeValue(a: unknown, b: unknown, schema: SchemaNode | undefined): unknown {
  if (b === undefined) return structuredClone(a);
  if (isMapValue(a) && isMapValue(b)) {
    const out: Record<string, unknown> = structuredClone(a);
    for (const [k, v] of Object.entries(b)) out[k] = mergeValue(a[k], v, childSchema(schema, k));
    return out;
  }
  if (Array.isArray(a) && Array.isArray(b) && schema?.['x-merge'] === 'append') {
    const byKey: string | undefined = schema['x-merge-key'];
    const out: unknown[] = [];
    for (const item of [...a, ...b]) {
      const dup = out.findIndex((o) => byKey && isMapValue(o) && isMapValue(item) ? o[byKey] === item[byKey] : JSON.stringify(o) === JSON.stringify(item));
      if (dup < 0) out.push(structuredClone(item));
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
export const BOOT_PARAMS = new Set(['slot', 'live', 'stage1', 'install', 'root', 'data', 'boot']);

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
export function parseCmdline(cmdline: string, file = '/proc/cmdline'): CmdlineConfig {
  const problems: ConfigProblem[] = [];
  const value: Record<string, any> = {};
  const cols = new Map<string, number>();
  let configUrl: string | undefined;
  const top = CONFIG_SCHEMA;
  const kiln = schemaAt(['kiln'])!;
  for (const tok of tokenizeCmdline(cmdline)) {
    const m = /^(kiln|k3os)\.([^=]+)(?:=(.*))?$/s.exec(tok.text);
    if (!m) continue;
    const [, , name, raw] = m;
    if (BOOT_PARAMS.has(name) && (name !== 'install' || raw === undefined)) continue;
    const bad = (message: string, fix: string, key = name) => problems.push({ file, line: 1, col: tok.col, key, message, fix });
    if (name === 'config_url') {
      if (!raw) bad('needs a URL', 'write kiln.config_url=https://host/config.yaml');
      else configUrl = raw;
      continue;
    }
    const segs = name.split('.');
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
      bad(`unknown key '${segs[i] ?? name}'`, near ? `did you mean 'kiln.${[...short, near].join('.')}'?` : `valid keys: ${candidates.join(', ')}`);
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
    if (bool && raw !== undefined && !TRUE.has(raw) && !FALSE.has(raw)) { bad(`'${raw}' is not true or false`, `write kiln.${name}=true or kiln.${name}=false`, where); continue; }
    if (bool) item = TRUE.has(raw ?? '');
    else if (raw === undefined) { bad('needs a value', `write kiln.${name}=VALUE`, where); continue; }
    else if (types.includes('integer') || types.includes('number')) item = /^-?\d+(\.\d+)?$/.test(raw) ? Number(raw) : raw;
    else item = raw;
    setIn(value, path, item);
    cols.set(where, tok.col);
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
  const r = validateValue(value, file, locator);
  return { config: r.config, configUrl, problems: r.problems };
}

function getIn(obj: any, path: Seg[]): any {
  return path.reduce((o, k) => (o == null ? undefined : o[k]), obj);
}
function setIn(obj: any, path: Seg[], v: unknown) {
  let o = obj;
  for (const k of path.slice(0, -1)) o = o[k] ??= {};
  o[path[path.length - 1]] = v;
}

// ---- choosing the config to run with ----

export interface ConfigChoice {
  /** the config to run with, defaults filled in */
  config: KilnConfig;
  /** 'new': every source was good; 'last-good': a source had problems, the stored last good
   *  config is used; 'partial': a source had problems and there is no usable last good config,
   *  so the good sources alone are merged */
  used: 'new' | 'last-good' | 'partial';
  problems: ConfigProblem[];
  /** text to store as the new last good config (only when used === 'new') */
  lastGood?: string;
  configUrl?: string;
}

/** Parses the sources (lowest priority first), merges them, and falls back to the last good
 *  config when any of them has a problem. Pure: the caller reads and writes the files. */
export function chooseConfig(o: { sources: SourceText[]; lastGood?: string }): ConfigChoice {
  const problems: ConfigProblem[] = [];
  const good: KilnConfigInput[] = [];
  let configUrl: string | undefined;
  for (const s of o.sources) {
    const r = s.kind === 'cmdline' ? parseCmdline(s.text, s.file) : parseConfig(s.text, s.file);
    if (s.kind === 'cmdline' && (r as CmdlineConfig).configUrl) configUrl = (r as CmdlineConfig).configUrl;
    problems.push(...r.problems);
    if (r.config) good.push(r.config);
  }
  const merged = mergeConfigs(good);
  if (!problems.length) {
    return { config: applyDefaults(merged), used: 'new', problems, configUrl, lastGood: `# kiln: last good config, merged from ${o.sources.map((s) => s.file).join(', ') || 'nothing'}\n${stringify(merged)}` };
  }
  if (o.lastGood !== undefined) {
    const last = parseConfig(o.lastGood, PATHS.lastGood);
    if (last.config) return { config: applyDefaults(last.config), used: 'last-good', problems, configUrl };
    problems.push(...last.problems);
  }
  return { config: applyDefaults(merged), used: 'partial', problems, configUrl };
}

/** Reads the local sources in merge order (image, data partition, config.d). Missing files are skipped. */
export async function readLocalSources(root = '/', paths: ConfigPaths = configPaths('stable')): Promise<SourceText[]> {
  const read = async (p: string) => { try { return await readFile(join(root, p), 'utf8'); } catch { return undefined; } };
  const out: SourceText[] = [];
  for (const p of [PATHS.image, paths.data]) {
    const text = await read(p);
    if (text !== undefined) out.push({ file: p, text });
  }
  let names: string[] = [];
  try { names = (await readdir(join(root, paths.dropIns))).filter((n) => /\.ya?ml$/.test(n)).sort(); } catch { /* no drop-ins */ }
  for (const n of names) {
    const p = `${paths.dropIns}/${n}`;
    const text = await read(p);
    if (text !== undefined) out.push({ file: p, text });
  }
  return out;
}
