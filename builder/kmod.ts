// Kernel module selection without depmod: Debian's kernel packages ship no modules.dep
// (depmod runs in postinst), so dependencies are read from each module's .modinfo
// strings and a modules.dep for the chosen subset is written for busybox modprobe.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';

export interface ModuleTree {
  dir: string;
  /** normalised module name -> path relative to dir (kernel/...ko) */
  byName: Map<string, string>;
  builtin: Set<string>;
}

export const normalise = (name: string) => name.replace(/-/g, '_');
export { formatModulesAlias } from '../init/modalias.ts';
const moduleName = (file: string) => normalise(basename(file).replace(/\.ko(\.(xz|zst|gz))?$/, ''));

export function indexModules(dir: string): ModuleTree {
  const byName = new Map<string, string>();
  const walk = (rel: string) => {
    for (const e of readdirSync(join(dir, rel), { withFileTypes: true })) {
      const r = `${rel}/${e.name}`;
      if (e.isDirectory()) walk(r);
      else if (/\.ko(\.(xz|zst|gz))?$/.test(e.name)) byName.set(moduleName(e.name), r);
    }
  };
  walk('kernel');
  const builtinFile = join(dir, 'modules.builtin');
  const builtin = new Set(existsSync(builtinFile)
    ? readFileSync(builtinFile, 'utf8').split('\n').filter(Boolean).map(moduleName) : []);
  return { dir, byName, builtin };
}

/** Reads `key=value` strings from a module's .modinfo section (all values for a key). */
export function modinfo(ko: Buffer, key: string): string[] {
  const text = ko.toString('latin1');
  const out: string[] = [];
  const re = new RegExp(`(?:^|\\0)${key}=([^\\0]*)`, 'g');
  for (let m; (m = re.exec(text));) out.push(m[1]);
  return out;
}

/** Module names a module needs loaded first: hard `depends=` plus `softdep=` "pre:" names. */
export function moduleDeps(ko: Buffer): { depends: string[]; softPre: string[] } {
  const depends = modinfo(ko, 'depends').flatMap((d) => d.split(',')).filter(Boolean).map(normalise);
  const softPre = modinfo(ko, 'softdep').flatMap((s) => /pre:\s*(.*?)(?:\s+post:|$)/.exec(s)?.[1]?.split(/\s+/) ?? [])
    .filter(Boolean).map(normalise);
  return { depends, softPre };
}

export interface Resolution {
  /** Module files (relative) in load order: dependencies first. */
  order: string[];
  /** file -> the files it depends on (hard dependencies only, for modules.dep) */
  deps: Map<string, string[]>;
  builtin: string[];
}

export class ModuleError extends Error {}

/**
 * Resolves requested modules plus their dependencies. A name the kernel has built in is
 * fine; a name it lacks entirely is an error naming the kernel. Soft dependencies that
 * cannot be found are skipped (they are often aliases such as crypto-crc32c).
 */
export function resolveModules(tree: ModuleTree, names: string[], what = 'modules'): Resolution {
  const order: string[] = [];
  const deps = new Map<string, string[]>();
  const builtin: string[] = [];
  const seen = new Set<string>();
  const visit = (name: string, required: boolean) => {
    const n = normalise(name);
    const file = tree.byName.get(n);
    if (!file) {
      if (tree.builtin.has(n)) { if (!builtin.includes(n)) builtin.push(n); return; }
      if (required) throw new ModuleError(`${what}: module '${name}' is neither built into nor shipped with the kernel in ${tree.dir}; remove it from the profile or pick another kernel flavour`);
      return;
    }
    if (seen.has(file)) return;
    seen.add(file);
    const info = moduleDeps(readFileSync(join(tree.dir, file)));
    for (const s of info.softPre) visit(s, false);
    for (const d of info.depends) visit(d, true);
    deps.set(file, info.depends.map((d) => tree.byName.get(d)).filter((f): f is string => !!f));
    order.push(file);
  };
  for (const n of names) visit(n, true);
  return { order, deps, builtin };
}

/**
 * modules.dep text for a set of module files. Like depmod's, each line lists the whole
 * dependency closure with the module loaded first at the end: modprobe loads the list
 * back to front.
 */
export function modulesDep(files: string[], deps: Map<string, string[]>): string {
  const included = new Set(files);
  const closure = (f: string): string[] => {
    const order: string[] = [];
    const visit = (x: string) => {
      for (const d of deps.get(x) ?? []) if (included.has(d) && !order.includes(d)) { visit(d); order.push(d); }
    };
    visit(f);
    return order.filter((x) => x !== f).reverse();
  };
  return [...files].sort().map((f) => `${f}: ${closure(f).join(' ')}`.trimEnd()).join('\n') + '\n';
}

/** The requested names that are real module files (built-in ones need no loading). */
export function loadableNames(tree: ModuleTree, names: string[]): string[] {
  return names.filter((n) => tree.byName.has(normalise(n)));
}

/** Merges resolutions keeping the first-seen load order. */
export function mergeResolutions(...rs: Resolution[]): Resolution {
  const order: string[] = [];
  const deps = new Map<string, string[]>();
  const builtin = new Set<string>();
  for (const r of rs) {
    for (const f of r.order) if (!order.includes(f)) order.push(f);
    for (const [k, v] of r.deps) deps.set(k, v);
    r.builtin.forEach((b) => builtin.add(b));
  }
  return { order, deps, builtin: [...builtin] };
}

/**
 * Module names of every module file under the given folders of the kernel's kernel/ tree
 * (profile modules.coldplug*): these are loaded by modalias, so the profile names folders of
 * drivers rather than each driver. A folder with no modules is an error naming the key.
 */
export function modulesUnder(tree: ModuleTree, dirs: string[], what = 'modules.coldplug'): string[] {
  const names: string[] = [];
  for (const d of dirs) {
    const prefix = `kernel/${d.replace(/^kernel\//, '').replace(/\/+$/, '')}/`;
    const found = [...tree.byName].filter(([, f]) => f.startsWith(prefix)).map(([n]) => n);
    if (!found.length) throw new ModuleError(`${what}: '${d}' holds no modules in ${tree.dir}; check the folder name (under kernel/) or remove it from the profile`);
    names.push(...found.filter((n) => !names.includes(n)));
  }
  return names.sort();
}

/** The modules.alias entries (device aliases and others) of the given module files. */
export function aliasEntries(tree: ModuleTree, files: string[]): { pattern: string; module: string }[] {
  return files.flatMap((f) => {
    const module = moduleName(f);
    return modinfo(readFileSync(join(tree.dir, f)), 'alias').filter((a) => a && !/\s/.test(a)).map((pattern) => ({ pattern, module }));
  });
}

/** Firmware files the given modules ask the kernel for (modinfo `firmware=`), sorted. */
export function firmwareNames(tree: ModuleTree, files: string[]): string[] {
  const names = new Set<string>();
  for (const f of files) for (const fw of modinfo(readFileSync(join(tree.dir, f)), 'firmware')) if (fw) names.add(fw);
  return [...names].sort();
}

// Linux's sign-file appends to a module: the PKCS#7 signature, a 12-byte description of it
// (its length big-endian in the last 4 bytes), then this line.
const SIGNED_MAGIC = Buffer.from('~Module signature appended~\n');

/** A module file without its appended signature; one without a signature comes back as it is. */
export function withoutSignature(ko: Buffer, name = 'module'): Buffer {
  if (ko.length < SIGNED_MAGIC.length + 12 || !ko.subarray(ko.length - SIGNED_MAGIC.length).equals(SIGNED_MAGIC)) return ko;
  const sigLen = ko.readUInt32BE(ko.length - SIGNED_MAGIC.length - 4);
  const end = ko.length - SIGNED_MAGIC.length - 12 - sigLen;
  if (end < 0) throw new Error(`${name}: its signature trailer claims ${sigLen} bytes, more than the file holds; the kernel package is damaged`);
  return ko.subarray(0, end);
}

/** Kernel command-line words that make the kernel refuse a module without a valid signature. */
const ENFORCING = /(^|\s)(module\.sig_enforce=(1|y|Y)|lockdown=\S+)(\s|$)/;

/**
 * Whether an image's modules keep Debian's signatures. The kernel checks a signed module at
 * every load (a SHA-256 of the file and an RSA check, about as much guest work under emulation
 * as loading it), but it only refuses an unsigned one when locked down: under UEFI Secure Boot,
 * or when the command line enforces signatures. So they are kept for an image signed for
 * Secure Boot or with such a command line, and otherwise removed: the modules come from the
 * verified root or the initramfs inside the UKI, which already vouch for them.
 */
export function moduleSignatures(o: { setting: 'auto' | 'keep'; secureBoot: boolean; cmdline: string }): { keep: boolean; why: string } {
  if (o.setting === 'keep') return { keep: true, why: 'kernel.module_signatures is keep' };
  if (o.secureBoot) return { keep: true, why: 'the image is signed for Secure Boot, where the kernel locks down and refuses unsigned modules' };
  const m = ENFORCING.exec(o.cmdline);
  if (m) return { keep: true, why: `the kernel command line has ${m[2]}, so the kernel refuses unsigned modules` };
  return { keep: false, why: 'no Secure Boot signing and no enforcing command line: the kernel would check each signature at load for nothing' };
}

/** A module file's bytes as an image carries them. */
export function moduleBytes(tree: ModuleTree, rel: string, keepSignatures: boolean): Buffer {
  const b = readFileSync(join(tree.dir, rel));
  return keepSignatures ? b : withoutSignature(b, rel);
}
