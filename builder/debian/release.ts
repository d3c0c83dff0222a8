// Debian's signed InRelease: verify the clearsigned text against pinned archive keys,
// then parse the verified text (never the raw file) for the index checksums.
import { readFileSync } from 'node:fs';
import * as openpgp from 'openpgp';

/**
 * Primary-key fingerprints we accept signatures from (bookworm and trixie archive,
 * security and stable-release keys, as shipped in debian-archive-keyring). A key that is
 * merely present in the host keyring is not enough.
 */
export const DEBIAN_ARCHIVE_FINGERPRINTS: readonly string[] = [
  'B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8', // Archive Automatic Signing Key (12/bookworm)
  '05AB90340C0C5E797F44A8C8254CF3B5AEC0A8F0', // Security Archive Automatic Signing Key (12/bookworm)
  '4D64FEC119C2029067D6E791F8D2585B8783D481', // Stable Release Key (12/bookworm)
  '04B54C3CDCA79751B16BC6B5225629DF75B188BD', // Archive Automatic Signing Key (13/trixie)
  '5E04A1E3223A19A20706E20F9904613D4CCE68C6', // Security Archive Automatic Signing Key (13/trixie)
  '41587F7DB8C774BCCF131416762F67A0B2C39DE4', // Stable Release Key (13/trixie)
];

export class SignatureError extends Error {}
export class ReleaseError extends Error {}

export interface ReleaseFile { path: string; size: number; sha256: string }
export interface Release {
  origin?: string;
  suite?: string;
  codename?: string;
  date?: Date;
  validUntil?: Date;
  acquireByHash: boolean;
  architectures: string[];
  components: string[];
  /** SHA256 section, by path relative to dists/<suite>/. */
  files: Map<string, ReleaseFile>;
}

export interface VerifyOptions {
  /** Binary keyring bytes (debian-archive-keyring.gpg) or already parsed keys. */
  keyring: Uint8Array | openpgp.Key[];
  fingerprints?: readonly string[];
  /** Name of the file for messages (URL or path). */
  file: string;
  /** Clock for key validity; defaults to now. */
  date?: Date;
}

const keyringCache = new Map<string, openpgp.Key[]>();

export async function readKeyring(path: string): Promise<openpgp.Key[]> {
  let keys = keyringCache.get(path);
  if (!keys) {
    keys = await openpgp.readKeys({ binaryKeys: readFileSync(path) });
    keyringCache.set(path, keys);
  }
  return keys;
}

/**
 * Returns the signed text of a clearsigned file, only if at least one signature verifies
 * against a pinned key. openpgp's verify() hands back the text even when signatures are
 * bad, so each signature's `verified` promise is awaited here.
 */
export async function verifyInRelease(armored: string, o: VerifyOptions): Promise<{ text: string; signers: string[] }> {
  const pinned = new Set((o.fingerprints ?? DEBIAN_ARCHIVE_FINGERPRINTS).map((f) => f.toLowerCase()));
  const all = o.keyring instanceof Uint8Array ? await openpgp.readKeys({ binaryKeys: o.keyring }) : o.keyring;
  // Only pinned keys take part, so a valid signature implies a pinned signer.
  const keys = all.filter((k) => pinned.has(k.getFingerprint().toLowerCase()));
  if (!keys.length) throw new SignatureError(`${o.file}: the keyring holds none of the pinned Debian archive keys; install a current debian-archive-keyring`);
  let message: openpgp.CleartextMessage;
  try {
    message = await openpgp.readCleartextMessage({ cleartextMessage: armored });
  } catch (e) {
    throw new SignatureError(`${o.file}: not a clearsigned OpenPGP message (${(e as Error).message}); refusing it`);
  }
  const result = await openpgp.verify({ message, verificationKeys: keys, date: o.date ?? new Date() });
  const signers: string[] = [];
  const problems: string[] = [];
  for (const s of result.signatures) {
    const id = s.keyID.toHex();
    try {
      if (await s.verified !== true) { problems.push(`${id}: not verified`); continue; }
      const key = keys.find((k) => k.getKeys(s.keyID).length > 0);
      if (!key) { problems.push(`${id}: not a pinned key`); continue; }
      signers.push(key.getFingerprint().toUpperCase());
    } catch (e) {
      problems.push(`${id}: ${(e as Error).message}`);
    }
  }
  if (!signers.length) {
    throw new SignatureError(`${o.file}: no valid signature from a pinned Debian archive key (${problems.join('; ') || 'no signatures'}); refusing it`);
  }
  return { text: result.data as string, signers };
}

/** Parses a Release file (the verified text of InRelease). */
export function parseRelease(text: string, file = 'Release'): Release {
  const fields = new Map<string, string>();
  let last: string | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (!line.trim()) continue;
    if (line[0] === ' ' || line[0] === '\t') {
      if (last === undefined) throw new ReleaseError(`${file}: continuation line before any field`);
      fields.set(last, fields.get(last) + '\n' + line.trim());
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) throw new ReleaseError(`${file}: malformed line '${line.slice(0, 80)}'`);
    last = line.slice(0, colon).toLowerCase();
    fields.set(last, line.slice(colon + 1).trim());
  }
  const files = new Map<string, ReleaseFile>();
  for (const l of (fields.get('sha256') ?? '').split('\n')) {
    if (!l.trim()) continue;
    const m = /^([0-9a-f]{64})\s+(\d+)\s+(\S+)$/.exec(l.trim());
    if (!m) throw new ReleaseError(`${file}: malformed SHA256 line '${l.trim().slice(0, 100)}'`);
    files.set(m[3], { path: m[3], size: Number(m[2]), sha256: m[1] });
  }
  if (!files.size) throw new ReleaseError(`${file}: no SHA256 file list`);
  const date = (k: string) => {
    const v = fields.get(k);
    if (v === undefined) return undefined;
    const t = Date.parse(v.replace(/\bUTC$/, '+0000'));
    if (Number.isNaN(t)) throw new ReleaseError(`${file}: cannot read ${k} '${v}'`);
    return new Date(t);
  };
  const words = (k: string) => (fields.get(k) ?? '').split(/\s+/).filter(Boolean);
  return {
    origin: fields.get('origin'),
    suite: fields.get('suite'),
    codename: fields.get('codename'),
    date: date('date'),
    validUntil: date('valid-until'),
    acquireByHash: fields.get('acquire-by-hash')?.toLowerCase() === 'yes',
    architectures: words('architectures'),
    components: words('components'),
    files,
  };
}

/** Refuses a Release for another suite (a swapped file) or past its Valid-Until. */
export function checkRelease(rel: Release, o: { suite: string; file: string; now?: Date }): void {
  const now = o.now ?? new Date();
  if (rel.suite !== o.suite && rel.codename !== o.suite) {
    throw new ReleaseError(`${o.file}: is for suite '${rel.suite}' (codename '${rel.codename}'), not '${o.suite}'; refusing it`);
  }
  if (rel.validUntil && rel.validUntil.getTime() < now.getTime()) {
    throw new ReleaseError(`${o.file}: expired: Valid-Until ${rel.validUntil.toISOString()} is in the past (now ${now.toISOString()}); ` +
      `the mirror is stale or the clock is wrong; try another mirror or check the system time`);
  }
  if (rel.date && rel.date.getTime() > now.getTime() + 24 * 3600e3) {
    throw new ReleaseError(`${o.file}: Date ${rel.date.toISOString()} is in the future; check the system time`);
  }
}
