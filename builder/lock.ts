// images/<profile>.lock.json: every upstream input pinned (name, version, url, sha256).
// `kiln lock` writes it; `kiln build` only reads it, so builds never float.
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { Arch } from './arch.ts';
import type { Pin } from './cache.ts';
import type { K3sPin } from './k3s.ts';
import type { Profile } from './profile.ts';

export interface LockedDeb extends Pin { package: string; version: string; arch: string; suite: string }
export interface LockedNode extends Pin { package: string; version: string }
export interface ArchLock { kernel: LockedDeb; packages: LockedDeb[]; node: LockedNode; k3s?: K3sPin }
export interface Lock {
  schema: 1;
  profile: string;
  /** What was asked for, so a changed profile is noticed. */
  request: { kernel: string; packages: string[]; node: string; sources: string[]; k3s: string };
  arches: Partial<Record<Arch, ArchLock>>;
}

export class LockError extends Error {}

export function kernelPackage(profile: Profile, debArch: string): string {
  return profile.kernel.flavour === 'cloud' ? `linux-image-cloud-${debArch}` : `linux-image-${debArch}`;
}

export function lockRequest(profile: Profile): Lock['request'] {
  return {
    kernel: profile.kernel.flavour,
    packages: [...profile.debian.packages, ...profile.firmware.packages].sort(),
    node: profile.node.version,
    k3s: profile.k3s.version,
    sources: profile.debian.sources.map((s) => `${s.mirror} ${s.suite} ${(s.components ?? ['main']).join(',')}`),
  };
}

export function readLock(profile: Profile): Lock | undefined {
  if (!existsSync(profile.lockFile)) return undefined;
  try {
    return JSON.parse(readFileSync(profile.lockFile, 'utf8')) as Lock;
  } catch (e) {
    throw new LockError(`${profile.lockFile}: not valid JSON (${(e as Error).message}); run 'kiln lock' to rewrite it`);
  }
}

/** Checks a lock covers what the profile asks for; says what differs and how to fix it. */
export function checkLock(profile: Profile, lock: Lock | undefined, arches: Arch[]): Lock {
  const fix = `run 'npx kiln lock${profile.name === 'default' ? '' : ` --profile ${profile.file}`}' to pin the inputs`;
  if (!lock) throw new LockError(`${profile.lockFile} does not exist; ${fix}`);
  if (lock.schema !== 1) throw new LockError(`${profile.lockFile}: unknown lock schema ${lock.schema}; ${fix}`);
  const want = lockRequest(profile);
  for (const key of Object.keys(want) as (keyof Lock['request'])[]) {
    if (JSON.stringify(want[key]) !== JSON.stringify(lock.request?.[key])) {
      throw new LockError(`${profile.lockFile}: the profile's ${key} changed since the lock was written; ${fix}`);
    }
  }
  for (const a of arches) if (!lock.arches[a]) throw new LockError(`${profile.lockFile} has no inputs for ${a}; ${fix}`);
  return lock;
}

export function writeLock(file: string, lock: Lock): void {
  writeFileSync(`${file}.tmp`, JSON.stringify(lock, null, 2) + '\n');
  renameSync(`${file}.tmp`, file);
}
