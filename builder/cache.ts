// Content-addressed download cache (~/.cache/kiln/sha256/<hex>) plus an optional
// artifacts folder for offline builds. Nothing unverified ever enters the cache:
// downloads go to a temp file, are hashed while streaming, and are renamed into place
// only when the digest matches the pin.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from './log.ts';

export interface Pin {
  /** Human name for messages, e.g. "linux-image-6.1.0-28-cloud-amd64 6.1.119-1 (amd64)". */
  name: string;
  url: string;
  sha256: string;
  size?: number;
  /** Extra digest to check, e.g. npm's sha512 integrity ("sha512-<base64>"). */
  integrity?: string;
}

export class ChecksumError extends Error {}
export class FetchError extends Error {}

export function defaultCacheDir(): string {
  return process.env.KILN_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'kiln');
}

export async function hashFile(path: string, algo = 'sha256', encoding: 'hex' | 'base64' = 'hex'): Promise<string> {
  const h = createHash(algo);
  await pipeline(createReadStream(path), h);
  return h.digest(encoding);
}

export class Cache {
  constructor(readonly dir: string = defaultCacheDir(), readonly artifacts?: string) {}

  blobPath(sha256: string): string {
    return join(this.dir, 'sha256', sha256.slice(0, 2), sha256);
  }

  /** A scratch directory keyed by a content hash, for derived results (extracted packages...). */
  derivedDir(kind: string, key: string): string {
    return join(this.dir, kind, key);
  }

  has(sha256: string): boolean {
    return existsSync(this.blobPath(sha256));
  }

  /** Returns the path of a verified copy of `pin`, downloading it only when no copy exists. */
  async fetch(pin: Pin, log?: Logger): Promise<string> {
    const dest = this.blobPath(pin.sha256);
    if (existsSync(dest)) return dest;
    mkdirSync(join(dest, '..'), { recursive: true });
    const fromArtifacts = this.findInArtifacts(pin);
    if (fromArtifacts) {
      await this.importFile(fromArtifacts, pin);
      return dest;
    }
    if (process.env.KILN_OFFLINE === '1') {
      throw new FetchError(`${pin.name}: not in the cache and offline; put ${basename(new URL(pin.url).pathname)} in the --artifacts folder`);
    }
    const tmp = `${dest}.part-${process.pid}`;
    try {
      let res: Response;
      try {
        res = await fetch(pin.url);
      } catch (e) {
        throw new FetchError(`${pin.name}: cannot download ${pin.url} (${(e as Error).cause ?? (e as Error).message}); ` +
          `check the network or supply the file with --artifacts DIR`);
      }
      if (!res.ok || !res.body) throw new FetchError(`${pin.name}: ${pin.url} answered HTTP ${res.status}; supply the file with --artifacts DIR`);
      const total = Number(res.headers.get('content-length')) || pin.size;
      const sha256 = createHash('sha256');
      const extra = pin.integrity ? createHash(pin.integrity.split('-')[0]) : undefined;
      let done = 0;
      const body = Readable.fromWeb(res.body as any);
      body.on('data', (chunk: Buffer) => {
        sha256.update(chunk); extra?.update(chunk);
        done += chunk.length;
        log?.progress(`download ${pin.name}`, done, total);
      });
      await pipeline(body, createWriteStream(tmp));
      this.check(pin, sha256.digest('hex'), extra?.digest('base64'), done);
      renameSync(tmp, dest);
      return dest;
    } finally {
      rmSync(tmp, { force: true });
    }
  }

  /**
   * Downloads a file whose sha256 is not yet known (lock time), checking the digest the
   * publisher gives (`integrity`, e.g. npm's sha512), and returns the pin to record.
   */
  async fetchForLock(name: string, url: string, integrity: string, log?: Logger): Promise<Pin> {
    const tmpDir = join(this.dir, 'tmp');
    mkdirSync(tmpDir, { recursive: true });
    const tmp = join(tmpDir, `lock-${process.pid}-${Date.now()}`);
    try {
      let res: Response;
      try { res = await fetch(url); } catch (e) {
        throw new FetchError(`${name}: cannot download ${url} (${(e as Error).cause ?? (e as Error).message})`);
      }
      if (!res.ok || !res.body) throw new FetchError(`${name}: ${url} answered HTTP ${res.status}`);
      const sha256 = createHash('sha256');
      const extra = createHash(integrity.split('-')[0]);
      let size = 0;
      const total = Number(res.headers.get('content-length')) || undefined;
      const body = Readable.fromWeb(res.body as any);
      body.on('data', (c: Buffer) => { sha256.update(c); extra.update(c); size += c.length; log?.progress(`download ${name}`, size, total); });
      await pipeline(body, createWriteStream(tmp));
      const pin: Pin = { name, url, sha256: sha256.digest('hex'), size, integrity };
      this.check(pin, pin.sha256, extra.digest('base64'), size);
      mkdirSync(join(this.blobPath(pin.sha256), '..'), { recursive: true });
      renameSync(tmp, this.blobPath(pin.sha256));
      return pin;
    } finally {
      rmSync(tmp, { force: true });
    }
  }

  /** Adds a local file after checking it against the pin (artifacts folder, `kiln lock`). */
  async importFile(path: string, pin: Pin): Promise<string> {
    const dest = this.blobPath(pin.sha256);
    mkdirSync(join(dest, '..'), { recursive: true });
    const tmp = `${dest}.part-${process.pid}`;
    try {
      const sha256 = createHash('sha256');
      const extra = pin.integrity ? createHash(pin.integrity.split('-')[0]) : undefined;
      let size = 0;
      const src = createReadStream(path);
      src.on('data', (c) => { const b = c as Buffer; sha256.update(b); extra?.update(b); size += b.length; });
      await pipeline(src, createWriteStream(tmp));
      this.check(pin, sha256.digest('hex'), extra?.digest('base64'), size, path);
      renameSync(tmp, dest);
      return dest;
    } finally {
      rmSync(tmp, { force: true });
    }
  }

  private check(pin: Pin, sha256: string, extra: string | undefined, size: number, from = pin.url) {
    if (pin.size !== undefined && size !== pin.size) {
      throw new ChecksumError(`${pin.name}: ${from} is ${size} bytes, the lock says ${pin.size}; refusing it (nothing was cached)`);
    }
    if (sha256 !== pin.sha256) {
      throw new ChecksumError(`${pin.name}: sha256 of ${from} is ${sha256}, the lock says ${pin.sha256}; refusing it (nothing was cached)`);
    }
    if (pin.integrity && extra !== pin.integrity.slice(pin.integrity.indexOf('-') + 1)) {
      throw new ChecksumError(`${pin.name}: ${pin.integrity.split('-')[0]} of ${from} does not match the lock's integrity; refusing it`);
    }
  }

  private findInArtifacts(pin: Pin): string | undefined {
    if (!this.artifacts) return undefined;
    const want = basename(new URL(pin.url).pathname);
    for (const candidate of [join(this.artifacts, want), join(this.artifacts, pin.sha256)]) {
      if (existsSync(candidate) && statSync(candidate).isFile()) return candidate;
    }
    // A folder tree (e.g. a copy of pool/) is searched one level deep by file name.
    for (const e of readdirSync(this.artifacts, { withFileTypes: true })) {
      if (e.isDirectory() && existsSync(join(this.artifacts, e.name, want))) return join(this.artifacts, e.name, want);
    }
    return undefined;
  }
}
