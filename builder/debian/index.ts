// Debian archive client for `kiln lock` (resolve names to pinned .debs from signed
// indexes) and for the build (unpack a pinned .deb).
import { createReadStream } from 'node:fs';
import { Readable } from 'node:stream';
import { spawn } from 'node:child_process';
import { createGunzip } from 'node:zlib';
import { type Cache, FetchError, type Pin } from '../cache.ts';
import type { LockedDeb } from '../lock.ts';
import type { Logger } from '../log.ts';
import { hostFile, tool } from '../tools.ts';
import { StanzaParser, parseDepends, toEntry, type PackageEntry } from './packages.ts';
import { checkRelease, parseRelease, readKeyring, verifyInRelease, type Release } from './release.ts';
import { compareVersions, satisfies } from './version.ts';

export { extractDeb, DebError } from './deb.ts';
export { compareVersions } from './version.ts';
export { parsePackages } from './packages.ts';
export { parseRelease, verifyInRelease, DEBIAN_ARCHIVE_FINGERPRINTS, SignatureError, ReleaseError } from './release.ts';

export interface Source { mirror: string; suite: string; components: string[] }

export class ResolveError extends Error {}

const OFFLINE_HINT = `'kiln lock' needs the Debian archive; builds from an existing lock work offline (KILN_OFFLINE=1, --artifacts DIR)`;

/** Downloads and verifies dists/<suite>/InRelease; the result is parsed from the signed text only. */
export async function fetchRelease(src: { mirror: string; suite: string }, o: { keyring?: string; fingerprints?: readonly string[]; now?: Date; log?: Logger } = {}): Promise<Release & { url: string }> {
  const url = `${src.mirror.replace(/\/+$/, '')}/dists/${src.suite}/InRelease`;
  let res: Response;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new FetchError(`cannot download ${url} (${(e as Error).cause ?? (e as Error).message}); check the network or the mirror; ${OFFLINE_HINT}`);
  }
  if (!res.ok) throw new FetchError(`${url} answered HTTP ${res.status}; check the mirror and suite in the profile's debian.sources`);
  const armored = await res.text();
  const keys = await readKeyring(o.keyring ?? hostFile('debianKeyring'));
  const { text } = await verifyInRelease(armored, { keyring: keys, fingerprints: o.fingerprints, file: url });
  const rel = parseRelease(text, url);
  checkRelease(rel, { suite: src.suite, file: url, now: o.now });
  return { ...rel, url };
}

/** Streams a decompressed file to `onChunk`. */
async function readDecompressed(path: string, kind: 'xz' | 'gz' | '', onChunk: (s: string) => void): Promise<void> {
  let out: Readable;
  let done: Promise<void> = Promise.resolve();
  if (kind === 'xz') {
    const child = spawn(tool('xz'), ['-dc', '--', path], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d) => { err += d; });
    done = new Promise((res, rej) => {
      child.on('error', rej);
      child.on('close', (code) => code === 0 ? res() : rej(new Error(`xz -dc ${path} failed (exit ${code}): ${err.trim()}`)));
    });
    out = child.stdout;
  } else {
    const file = createReadStream(path);
    out = kind === 'gz' ? file.pipe(createGunzip()) : file;
    if (kind === 'gz') file.on('error', (e) => out.destroy(e));
  }
  out.setEncoding('utf8');
  for await (const chunk of out) onChunk(chunk as string);
  await done;
}

interface Index { suite: string; mirror: string; component: string; byName: Map<string, PackageEntry[]> }

/** Fetches (via the content-addressed cache) and parses one Packages index checked against the Release. */
async function loadIndex(src: Source, rel: Release & { url: string }, component: string, arch: string, cache: Cache, want: (name: string) => boolean, log?: Logger): Promise<Index> {
  const base = `${component}/binary-${arch}/Packages`;
  const mirror = src.mirror.replace(/\/+$/, '');
  const xzOk = !!findXz();
  const pick = [...(xzOk ? ['.xz'] : []), '.gz', ''].map((ext) => rel.files.get(base + ext)).find(Boolean);
  if (!pick) {
    throw new ResolveError(`${rel.url}: lists no ${base}{.xz,.gz} for ${src.suite}; does the suite have component '${component}' and architecture '${arch}'?`);
  }
  const dir = `${mirror}/dists/${src.suite}/${component}/binary-${arch}`;
  // by-hash URLs cannot change under us between reading InRelease and fetching the index.
  const url = rel.acquireByHash ? `${dir}/by-hash/SHA256/${pick.sha256}` : `${mirror}/dists/${src.suite}/${pick.path}`;
  const pin: Pin = { name: `${src.suite} ${pick.path}`, url, sha256: pick.sha256, size: pick.size };
  const path = await cache.fetch(pin, log);
  const byName = new Map<string, PackageEntry[]>();
  const where = `${src.suite} ${pick.path}`;
  const parser = new StanzaParser((f) => {
    // Keep only what can be asked for: ~60k entries would cost ~150 MB.
    if (!want(f.package ?? '')) return;
    const e = toEntry(f, where);
    const list = byName.get(e.package);
    if (list) list.push(e); else byName.set(e.package, [e]);
  });
  const kind = pick.path.endsWith('.xz') ? 'xz' : pick.path.endsWith('.gz') ? 'gz' : '';
  await readDecompressed(path, kind, (s) => parser.push(s));
  const n = parser.end();
  log?.info(`${where}: ${n} packages (${(pick.size / 1048576).toFixed(1)} MiB)`);
  return { suite: src.suite, mirror, component, byName };
}

function findXz(): string | undefined {
  try { return tool('xz'); } catch { return undefined; }
}

interface Candidate { entry: PackageEntry; index: Index }

function candidates(indexes: Index[], name: string, arch: string): Candidate[] {
  const out: Candidate[] = [];
  for (const index of indexes) {
    for (const entry of index.byName.get(name) ?? []) {
      if (entry.architecture === arch || entry.architecture === 'all') out.push({ entry, index });
    }
  }
  return out;
}

/** Highest version wins; on a tie the earlier source in the profile wins. */
function best(cs: Candidate[]): Candidate | undefined {
  let top: Candidate | undefined;
  for (const c of cs) if (!top || compareVersions(c.entry.version, top.entry.version) > 0) top = c;
  return top;
}

function toLocked(c: Candidate): LockedDeb {
  const e = c.entry;
  if (e.filename.startsWith('/') || e.filename.split('/').includes('..')) {
    throw new ResolveError(`${c.index.suite}: package ${e.package} has an unsafe Filename '${e.filename}'`);
  }
  return {
    name: `${e.package} ${e.version} (${e.architecture})`,
    url: `${c.index.mirror}/${e.filename}`,
    sha256: e.sha256,
    size: e.size,
    package: e.package,
    version: e.version,
    arch: e.architecture,
    suite: c.index.suite,
  };
}

/** A kernel meta package (linux-image-cloud-amd64) depends on the real image (linux-image-6.1.0-NN-cloud-amd64). */
function kernelImageDep(e: PackageEntry): { name: string; op?: string; version?: string } | undefined {
  if (!e.package.startsWith('linux-image-') || !e.depends) return undefined;
  for (const group of parseDepends(e.depends)) {
    const r = group.find((a) => /^linux-image-\d/.test(a.name));
    if (r) return r;
  }
  return undefined;
}

/**
 * Resolves each name to one pinned .deb: the highest version across all sources. Kernel
 * meta packages are replaced by the image package they depend on. Dependencies are not
 * followed otherwise: the profile lists everything the image contains.
 */
export async function resolvePackages(o: { sources: Source[]; arch: string; names: string[]; cache: Cache; log?: Logger;
  /** For tests: another keyring file and key pins, and the clock for Valid-Until. */
  keyring?: string; fingerprints?: readonly string[]; now?: Date }): Promise<LockedDeb[]> {
  const indexes: Index[] = [];
  const asked = new Set(o.names);
  const want = (n: string) => asked.has(n) || n.startsWith('linux-image-');
  // Releases in parallel (small), then indexes one by one (memory).
  const releases = await Promise.all(o.sources.map((s) => fetchRelease(s, { keyring: o.keyring, fingerprints: o.fingerprints, now: o.now, log: o.log })));
  for (const [i, src] of o.sources.entries()) {
    const rel = releases[i];
    if (rel.architectures.length && !rel.architectures.includes(o.arch)) {
      throw new ResolveError(`${rel.url}: suite ${src.suite} has no architecture '${o.arch}' (it has ${rel.architectures.join(' ')})`);
    }
    for (const component of src.components) indexes.push(await loadIndex(src, rel, component, o.arch, o.cache, want, o.log));
  }
  const where = o.sources.map((s) => `${s.suite} (${s.components.join(',')})`).join(', ');
  const out: LockedDeb[] = [];
  const seen = new Set<string>();
  for (const name of o.names) {
    let c = best(candidates(indexes, name, o.arch));
    if (!c) {
      throw new ResolveError(`Debian package '${name}' not found for ${o.arch} in ${where}; ` +
        `check the spelling or remove it from debian.packages in the profile`);
    }
    const dep = kernelImageDep(c.entry);
    if (dep) {
      const meta = c.entry;
      const all = candidates(indexes, dep.name, o.arch);
      const fit = dep.op ? all.filter((x) => satisfies(x.entry.version, dep.op!, dep.version!)) : all;
      c = best(fit);
      if (!c) {
        throw new ResolveError(`${meta.package} ${meta.version} depends on ${dep.name}${dep.op ? ` (${dep.op} ${dep.version})` : ''}, ` +
          `which is not in ${where} for ${o.arch}; the mirror may be mid-update, try again later`);
      }
      o.log?.info(`${meta.package} ${meta.version} -> ${c.entry.package} ${c.entry.version} (${c.index.suite})`);
    }
    if (seen.has(c.entry.package)) continue;
    seen.add(c.entry.package);
    out.push(toLocked(c));
  }
  return out;
}
