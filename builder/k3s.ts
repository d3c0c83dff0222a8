// k3s for the image: the upstream release binary per arch, pinned by version + sha256 in
// the lock. `kiln lock` reads the release's sha256sum-<arch>.txt; `kiln build` fetches the
// binary through the cache (or --artifacts for air-gapped builds).
import type { Arch } from './arch.ts';
import type { Cache, Pin } from './cache.ts';
import type { Logger } from './log.ts';

export interface K3sPin extends Pin { version: string }

export const K3S_RELEASES = process.env.KILN_K3S_RELEASES ?? 'https://github.com/k3s-io/k3s/releases/download';
const ASSET: Record<Arch, { file: string; sums: string }> = {
  x86_64: { file: 'k3s', sums: 'sha256sum-amd64.txt' },
  arm64: { file: 'k3s-arm64', sums: 'sha256sum-arm64.txt' },
};

export function k3sUrl(version: string, arch: Arch): string {
  return `${K3S_RELEASES}/${encodeURIComponent(version)}/${ASSET[arch].file}`;
}

/** The sha256 of the binary from a release's sha256sum-<arch>.txt. */
export function parseSha256Sums(text: string, file: string): string | undefined {
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]{64})\s+\*?(\S+)$/.exec(line.trim());
    if (m && m[2] === file) return m[1];
  }
  return undefined;
}

/**
 * Pins k3s for one arch. Without access to the release server an existing pin of the same
 * version is kept (it was checked when it was made); otherwise the error says what to do.
 */
export async function resolveK3s(version: string, arch: Arch, previous: K3sPin | undefined, log?: Logger): Promise<K3sPin> {
  const sumsUrl = `${K3S_RELEASES}/${encodeURIComponent(version)}/${ASSET[arch].sums}`;
  let text: string | undefined;
  let why = '';
  try {
    const res = await fetch(sumsUrl, { signal: AbortSignal.timeout(20_000) });
    if (res.ok) text = await res.text(); else why = `HTTP ${res.status}`;
  } catch (e) { why = String((e as Error).cause ?? (e as Error).message); }
  if (text === undefined) {
    if (previous?.version === version) {
      log?.warn(`k3s ${version} (${arch}): cannot read ${sumsUrl} (${why}); keeping the pin already in the lock`);
      return previous;
    }
    throw new Error(`k3s ${version} (${arch}): cannot read ${sumsUrl} (${why}); run 'kiln lock' where GitHub is reachable, or set k3s.version to the version already locked`);
  }
  const sha256 = parseSha256Sums(text, ASSET[arch].file);
  if (!sha256) throw new Error(`k3s ${version}: ${sumsUrl} lists no ${ASSET[arch].file}`);
  return { name: `k3s ${version} (${arch})`, url: k3sUrl(version, arch), sha256, version };
}

/** The k3s binary for the image: a local override (a test stand-in), or the pinned download. */
export async function k3sBinary(pin: K3sPin, cache: Cache, log?: Logger): Promise<string> {
  return cache.fetch(pin, log);
}
