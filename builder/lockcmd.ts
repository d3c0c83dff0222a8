// `kiln lock`: resolve the profile's inputs against Debian's signed indexes and the npm
// registry, and pin them (url, size, sha256) in images/<profile>.lock.json.
import { ARCH, type Arch } from './arch.ts';
import { Cache } from './cache.ts';
import { resolvePackages } from './debian/index.ts';
import { kernelPackage, lockRequest, readLock, writeLock, type ArchLock, type Lock, type LockedDeb } from './lock.ts';
import type { Logger } from './log.ts';
import { resolveNodeRuntime } from './node-runtime.ts';
import { resolveK3s } from './k3s.ts';
import type { Profile } from './profile.ts';

export async function lockProfile(profile: Profile, o: { arches?: Arch[]; cacheDir?: string; log: Logger }): Promise<Lock> {
  const arches = o.arches?.length ? o.arches : profile.arches;
  const cache = new Cache(o.cacheDir);
  const log = o.log;
  // Keep pins for arches not being refreshed, if the request is unchanged.
  const prev = readLock(profile);
  const request = lockRequest(profile);
  const lock: Lock = { schema: 1, profile: profile.name, request, arches: JSON.stringify(prev?.request) === JSON.stringify(request) ? { ...prev!.arches } : {} };
  const nodes = await log.stage(`node ${profile.node.version}`, () => resolveNodeRuntime(arches, profile.node.version, cache, log));
  for (const arch of arches) {
    const debArch = ARCH[arch].debian;
    const kname = kernelPackage(profile, debArch);
    const pins = await log.stage(`${arch}: Debian packages`, () => resolvePackages({
      sources: profile.debian.sources.map((s) => ({ ...s, components: s.components ?? ['main'] })),
      arch: debArch, names: [kname, ...profile.debian.packages, ...profile.firmware.packages], cache, log,
    }));
    const kernel = pins.find((p) => p.package.startsWith('linux-image-')) as LockedDeb;
    const packages = pins.filter((p) => p !== kernel) as LockedDeb[];
    const entry: ArchLock = { kernel, packages, node: nodes[arch] };
    if (profile.k3s.version !== 'none') entry.k3s = await log.stage(`${arch}: k3s ${profile.k3s.version}`, () => resolveK3s(profile.k3s.version, arch, prev?.arches[arch]?.k3s, log));
    lock.arches[arch] = entry;
    log.info(`${arch}: kernel ${kernel.package} ${kernel.version}, node ${entry.node.version}, ${packages.map((p) => `${p.package} ${p.version}`).join(', ')}`);
  }
  writeLock(profile.lockFile, lock);
  log.info(`wrote ${profile.lockFile}`);
  return lock;
}
