// Workstation side of release channels: make a signing key, publish a build to a channel,
// promote a release to another channel, and verify a published channel the way a node would.
// Layout (see channels/README.md):  DIR/<channel>/manifest.json, manifest.json.sig,
// DIR/<channel>/<version>/<arch>/<file>; artifact URLs are relative to the manifest.
import { createHash, generateKeyPairSync } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, mkdirSync, copyFileSync, renameSync, statSync, writeFileSync, openSync, fsyncSync, closeSync, rmSync } from 'node:fs';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import semver from 'semver';
import {
  CHANNELS, MANIFEST_SCHEMA, MAX_MANIFEST_BYTES, MAX_SIG_BYTES, canonicalize, keyIdOf, makeTrustRoot, parseTrustRoot, privateKeyFrom,
  serializeManifest, sha256Hex, signBytes, validateManifest, verifyChannel, verifyRootRotation,
  type ArchArtifacts, type Artifact, type Channel, type Manifest, type Release, type TrustRoot,
  chunkIndexKey, chunkIndexOf, isChunkIndexKey,
} from '../channels/manifest.ts';
import { checkNoSecureBootKeys, generateSecureBootKeys, secureBootKeysSummary } from './secureboot.ts';
import { DEFAULT_PARAMS, GEAR_ID, INDEX_SCHEMA, MAX_INDEX_BYTES, makeIndex, parseIndex, planDelta, planSummary, serializeIndex, type DeltaPlan } from '../channels/chunks.ts';
import { planFromSeed, scanFile } from '../init/update/delta.ts';

export const KEY_FILE = 'kiln-release.key';
export const TRUST_FILE = 'trust.json';
/** The publisher's own record of what it last signed, next to the key (see readPublished). */
export const PUBLISHER_STATE_FILE = 'kiln-release-state.json';
/** Releases kept in a manifest (newest first): room for min_from stepping stones, not a history. */
export const KEEP_RELEASES = 5;
const PUBLISHED_KINDS = ['root', 'uki', 'kernel', 'initrd'] as const;
type PublishedKind = typeof PUBLISHED_KINDS[number];

/** `target` names the output in channel manifests (default: arch); the Pi's builds use arm64_rpi. */
export interface BuildOutput { file: string; arch: string; target?: string; kind: string; size: number; sha256: string }
export interface BuildJson { version: string; outputs: BuildOutput[] }

// ---------------------------------------------------------------------------------------------
// keys

export function generateKeys(outDir: string): { keyFile: string; trustFile: string; keyid: string } {
  const keyFile = join(outDir, KEY_FILE), trustFile = join(outDir, TRUST_FILE);
  // Check both first: overwriting either would orphan every node that trusts the old key.
  for (const f of [keyFile, trustFile]) if (existsSync(f)) throw new Error(`${f} already exists; refusing to overwrite a release key (move it away first)`);
  mkdirSync(outDir, { recursive: true });
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const root = makeTrustRoot([publicKey]);
  // 'wx' fails if the file appeared meanwhile; 0600 because this key signs what nodes install.
  writeFileSync(keyFile, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600, flag: 'wx' });
  writeFileSync(trustFile, JSON.stringify(root, null, 2) + '\n', { flag: 'wx' });
  return { keyFile, trustFile, keyid: keyIdOf(publicKey) };
}

export interface RotateOptions {
  /** The current release key; it authorises the rotation. */
  key: string;
  /** The current trust root (default: trust.json next to the key). */
  trust?: string;
  /** Folder for the new kiln-release.key and trust.json (+ trust.json.sig). */
  out: string;
  /** A channel tree to publish the rotation into, as roots/<version>.json (+ .sig). */
  to?: string;
}

/**
 * A new release key and the trust root naming it, one version up, signed by the current key
 * (the authority to rotate) and the new one (proof it works): what verifyRootRotation checks on
 * the nodes. The publisher's record moves to the new key's folder, so the manifests the old key
 * signed are still recognised there. Nodes pick the new root up from <tree>/roots/<version>.json
 * at their next check; publish it before any manifest signed by the new key.
 */
export function rotateKeys(opts: RotateOptions): { keyFile: string; trustFile: string; keyid: string; version: number; published?: string } {
  const oldKey = loadKey(opts.key);
  const oldTrustFile = opts.trust ?? join(dirname(resolve(opts.key)), TRUST_FILE);
  if (!existsSync(oldTrustFile)) throw new Error(`${oldTrustFile} does not exist; pass --trust with the current trust root`);
  let old: TrustRoot;
  try { old = parseTrustRoot(readFileSync(oldTrustFile)); } catch (e) { throw new Error(`trust root ${oldTrustFile}: ${(e as Error).message}`); }
  if (!old.keys.some((k) => k.keyid === keyIdOf(oldKey))) throw new Error(`${opts.key} is not one of the keys of ${oldTrustFile}; it cannot authorise a rotation`);
  if (old.threshold > 1) throw new Error(`${oldTrustFile} needs ${old.threshold} signatures; kiln keys rotate signs with one key (sign the new root with the others too)`);
  const keyFile = join(opts.out, KEY_FILE), trustFile = join(opts.out, TRUST_FILE);
  for (const f of [keyFile, trustFile]) if (existsSync(f)) throw new Error(`${f} already exists; refusing to overwrite a release key (pick an empty --out folder)`);
  const version = (old.version ?? 1) + 1;
  const dst = opts.to ? join(opts.to, 'roots', `${version}.json`) : undefined;
  if (dst && existsSync(dst)) throw new Error(`${dst} already exists; version ${version} of the trust root is published (rotate from the newest root)`);
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const root = makeTrustRoot([publicKey], 1, version);
  const bytes = Buffer.from(JSON.stringify(root, null, 2) + '\n');
  const sig = signBytes(bytes, [oldKey, privateKey]);
  const check = verifyRootRotation(old, bytes, sig);
  if (!check.ok) throw new Error(`the new trust root does not verify: ${check.message}`);
  mkdirSync(opts.out, { recursive: true });
  writeFileSync(keyFile, privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600, flag: 'wx' });
  writeFileSync(trustFile, bytes, { flag: 'wx' });
  writeFileSync(`${trustFile}.sig`, sig, { flag: 'wx' });
  const oldState = publisherStateFile(opts.key);
  if (existsSync(oldState)) copyFileSync(oldState, publisherStateFile(keyFile));
  let published: string | undefined;
  if (dst) {
    mkdirSync(dirname(dst), { recursive: true });
    // The signatures first: a node that sees the root sees its signatures too.
    writeAtomic(`${dst}.sig`, sig);
    writeAtomic(dst, bytes);
    published = dst;
  }
  return { keyFile, trustFile, keyid: keyIdOf(publicKey), version, published };
}

function loadKey(file: string) {
  if (!existsSync(file)) throw new Error(`release key ${file} does not exist (create one with 'kiln keys generate --out DIR')`);
  const mode = statSync(file).mode & 0o077;
  if (mode) console.warn(`warning: ${file} is readable by group/others (mode ${(statSync(file).mode & 0o777).toString(8)}); chmod 600 it`);
  return privateKeyFrom(readFileSync(file, 'utf8'));
}

// ---------------------------------------------------------------------------------------------
// files

export async function hashFile(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** temp + fsync + rename, so a web server never serves half a manifest. */
function writeAtomic(path: string, data: Uint8Array | string) {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', 0o644);
  try { writeFileSync(fd, data); fsyncSync(fd); } finally { closeSync(fd); }
  renameSync(tmp, path);
}

function channelDir(dir: string, channel: Channel) { return join(dir, channel); }

function parseChannel(c: unknown, flag = '--channel'): Channel {
  if (typeof c !== 'string' || !(CHANNELS as readonly string[]).includes(c)) throw new Error(`${flag} must be one of ${CHANNELS.join(', ')} (got ${c === undefined ? 'nothing' : `'${c}'`})`);
  return c as Channel;
}

// ---------------------------------------------------------------------------------------------
// What is already published. The served tree is not trusted: anyone who can write to it could
// add a target to a published release, and the next routine release would sign that with the
// offline key. So the publisher keeps its own record, next to the key, of the exact manifest it
// last signed for each tree and channel, and treats the tree like a node treats a server.

interface PublisherRecord { serial: number; digest: string; issued: string; at: string }
interface PublisherState { schema: 'kiln-publisher-state/1'; trees: Record<string, Partial<Record<Channel, PublisherRecord>>> }

export function publisherStateFile(keyFile: string): string { return join(dirname(resolve(keyFile)), PUBLISHER_STATE_FILE); }

function treeId(dir: string): string { return resolve(dir); }

function readPublisherState(file: string): PublisherState {
  if (!existsSync(file)) return { schema: 'kiln-publisher-state/1', trees: {} };
  let st: PublisherState;
  try { st = JSON.parse(readFileSync(file, 'utf8')); } catch (e) { throw new Error(`${file}: not JSON (${(e as Error).message}); restore it from a backup, or move it away to check the published trees by signature alone`); }
  if (st?.schema !== 'kiln-publisher-state/1' || typeof st.trees !== 'object' || st.trees === null) throw new Error(`${file}: not a kiln publisher state file (schema kiln-publisher-state/1)`);
  return st;
}

function recordPublished(file: string, dir: string, channel: Channel, m: Manifest, bytes: Uint8Array): void {
  const st = readPublisherState(file);
  const tree = (st.trees[treeId(dir)] ??= {});
  tree[channel] = { serial: m.serial, digest: sha256Hex(bytes), issued: m.issued, at: new Date().toISOString() };
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(st, null, 2) + '\n', { mode: 0o600 });
  renameSync(tmp, file);
}

/** How the publisher checks a tree: the trust root and its own record. */
interface PublishContext { trust: TrustRoot; trustFrom: string; stateFile: string; state: PublisherState }

/**
 * The trust root the published manifests are checked against: --trust, else trust.json next to
 * the key (where `kiln keys generate` put it), else the signing key alone.
 */
function publishContext(keyFile: string, key: ReturnType<typeof privateKeyFrom>, trustFile?: string): PublishContext {
  const beside = join(dirname(resolve(keyFile)), TRUST_FILE);
  const file = trustFile ?? (existsSync(beside) ? beside : undefined);
  let trust: TrustRoot;
  if (file) {
    try { trust = parseTrustRoot(readFileSync(file)); } catch (e) { throw new Error(`trust root ${file}: ${(e as Error).message}`); }
  } else trust = makeTrustRoot([key]);
  const stateFile = publisherStateFile(keyFile);
  return { trust, trustFrom: file ?? `the key ${keyFile}`, stateFile, state: readPublisherState(stateFile) };
}

/**
 * The channel's published manifest, believed only if it is exactly what this publisher last
 * signed there (its record), or if it verifies as a node would (verifyChannel: signature by the
 * trust root, schema, channel, and a serial not below the record's; dates are not checked, so a
 * lapsed channel can be re-signed). Anything else is refused: signing on top of it would bless
 * whatever was changed. undefined: nothing published yet.
 */
function readPublished(dir: string, channel: Channel, ctx: PublishContext): Manifest | undefined {
  const file = join(channelDir(dir, channel), 'manifest.json');
  const rec = ctx.state.trees[treeId(dir)]?.[channel];
  if (!existsSync(file)) {
    if (rec) throw new Error(`${file} is missing, but serial ${rec.serial} was signed there (${ctx.stateFile}); restore the published tree (or remove its '${channel}' entry from that file to start the channel over with --serial ${rec.serial + 1})`);
    return undefined;
  }
  const size = statSync(file).size;
  if (size > MAX_MANIFEST_BYTES) throw new Error(`${file} is ${size} bytes, more than a manifest may be (${MAX_MANIFEST_BYTES}); it is not one this publisher signed`);
  const bytes = readFileSync(file);
  if (rec && sha256Hex(bytes) === rec.digest) {
    // Byte for byte what we signed: no signature needed (it may be by a key since rotated away).
    const v = validateManifest(JSON.parse(bytes.toString('utf8')));
    if (!v.ok) throw new Error(`${file} does not match the manifest schema: ${v.errors.join('; ')}`);
    return v.manifest;
  }
  const sigFile = `${file}.sig`;
  if (!existsSync(sigFile)) throw new Error(`${sigFile} does not exist; ${file} is unsigned, refusing to sign on top of it (restore both from a known good copy)`);
  if (statSync(sigFile).size > MAX_SIG_BYTES) throw new Error(`${sigFile} is larger than a signature file may be (${MAX_SIG_BYTES} bytes)`);
  const r = verifyChannel({
    manifestBytes: bytes, sigBytes: readFileSync(sigFile), trust: ctx.trust, channel,
    state: rec ? { lastSerial: rec.serial, lastDigest: rec.digest } : { lastSerial: 0 }, now: new Date(), checkDates: false,
  });
  if (r.ok) return r.manifest;
  const fix: Record<string, string> = {
    'bad-signature': 'it was changed after it was signed: restore manifest.json and its .sig from a known good copy',
    'unknown-key': `it is not signed by ${ctx.trustFrom}: pass --trust with the trust root it was signed under`,
    schema: 'restore manifest.json and its .sig from a known good copy',
    'wrong-channel': `it was signed for another channel: restore ${channel}'s own manifest`,
    replay: `this publisher last signed serial ${rec?.serial} there (${ctx.stateFile}): an older copy was put back; restore the newest`,
  };
  throw new Error(`${file} does not verify as a node would (${r.reason}: ${r.message}); refusing to sign on top of it: ${fix[r.reason] ?? 'check it with kiln release verify'}`);
}

/** A relative artifact URL as a path under the channel folder; undefined for remote URLs. */
function localPath(chDir: string, url: string): string | undefined {
  if (/^[a-z][a-z0-9+.-]*:/i.test(url)) return undefined;
  const base = resolve(chDir);
  const p = resolve(base, decodeURI(url.split(/[?#]/)[0]!));
  if (!p.startsWith(base + sep)) throw new Error(`artifact URL ${url} leaves the channel folder`);
  return p;
}

/** Copies src to dst (temp + rename) and checks the copy; an existing dst must already match. */
async function placeArtifact(src: string, dst: string, want: { size: number; sha256: string }): Promise<void> {
  if (existsSync(dst)) {
    // A version names fixed bytes: republishing different bytes under it would split the fleet.
    if (statSync(dst).size === want.size && await hashFile(dst) === want.sha256) return;
    throw new Error(`${dst} already exists with other content; a published version cannot change (bump the version)`);
  }
  mkdirSync(resolve(dst, '..'), { recursive: true });
  const tmp = `${dst}.tmp-${process.pid}`;
  copyFileSync(src, tmp);
  const size = statSync(tmp).size, sha = await hashFile(tmp);
  if (size !== want.size || sha !== want.sha256) {
    rmSync(tmp, { force: true });
    throw new Error(`${src} is ${size} bytes sha256 ${sha.slice(0, 16)}…, but the record says ${want.size} bytes sha256 ${want.sha256.slice(0, 16)}… (stale build.json? rebuild)`);
  }
  renameSync(tmp, dst);
}

/**
 * Writes `<root>.chunks`, the chunk index of a published root image (channels/chunks.ts), and
 * returns its bytes. Always cut afresh from the published image (deterministic, so a re-sign
 * lists the same bytes): an index already in the tree is not trusted, like the rest of it.
 */
async function placeChunkIndex(root: string, want: { size: number; sha256: string }): Promise<Buffer> {
  const file = `${root}.chunks`;
  const scan = await scanFile(root, want.size, {});
  const bytes = serializeIndex(makeIndex(scan.chunks, want));
  parseIndex(bytes, want); // what every node will check
  if (!existsSync(file) || !readFileSync(file).equals(bytes)) writeAtomic(file, bytes);
  return bytes;
}

// ---------------------------------------------------------------------------------------------
// writing a channel

interface SignOptions { serial?: number; expiresDays?: number; now?: Date }

const isoSeconds = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

/**
 * Adds `release` to the channel's manifest `prev` (from readPublished; replacing an identical-artifacts entry of the same
 * version), bumps the serial, signs and writes. Refuses a downgrade unless it is flagged, and
 * a flagged downgrade drops the newer releases so nodes actually go back.
 */
function writeChannel(dir: string, channel: Channel, prev: Manifest | undefined, newRelease: Release, key: ReturnType<typeof privateKeyFrom>, ctx: PublishContext, opts: SignOptions): { manifest: Manifest; file: string; dropped: string[] } {
  let release = newRelease;
  const serial = opts.serial ?? (prev ? prev.serial + 1 : 1);
  if (!Number.isSafeInteger(serial) || serial < 1) throw new Error(`--serial must be a positive integer (got ${opts.serial})`);
  if (prev && serial <= prev.serial) throw new Error(`serial ${serial} is not above the published ${prev.serial} on ${channel}; nodes would refuse it as a replay`);

  let releases = (prev?.releases ?? []).filter((r) => {
    if (r.version !== release.version) return true;
    // The same version from another profile's build (the Pi's after the cloud images') adds
    // its targets; a target that is already published cannot change.
    for (const [target, a] of Object.entries(release.artifacts)) {
      if (r.artifacts[target] && canonicalize(r.artifacts[target]) !== canonicalize(a)) {
        throw new Error(`${release.version} is already on ${channel} with other ${target} artifacts; a published version cannot change (bump the version)`);
      }
    }
    release = { ...release, artifacts: { ...r.artifacts, ...release.artifacts } };
    return false;
  });
  const dropped: string[] = [];
  const newer = releases.filter((r) => semver.gt(r.version, release.version));
  if (newer.length) {
    if (!release.downgrade) throw new Error(`${release.version} is older than ${newer.map((r) => r.version).join(', ')} on ${channel}; publish a rollback with --downgrade`);
    dropped.push(...newer.map((r) => r.version));
    releases = releases.filter((r) => !newer.includes(r));
  }
  releases = [release, ...releases].sort((a, b) => semver.rcompare(a.version, b.version)).slice(0, KEEP_RELEASES);

  const now = opts.now ?? new Date();
  const days = opts.expiresDays ?? 30;
  if (!(days > 0)) throw new Error(`--expires-days must be above 0 (got ${opts.expiresDays})`);
  const manifest: Manifest = {
    schema: MANIFEST_SCHEMA, channel, serial,
    issued: isoSeconds(now),
    expires: isoSeconds(new Date(now.getTime() + days * 86400_000)),
    releases,
  };
  const bytes = serializeManifest(manifest);
  const chDir = channelDir(dir, channel);
  mkdirSync(chDir, { recursive: true });
  const file = join(chDir, 'manifest.json');
  writeAtomic(`${file}.sig`, signBytes(bytes, [key]));
  writeAtomic(file, bytes);
  try { recordPublished(ctx.stateFile, dir, channel, manifest, bytes); } catch (e) {
    // Published all the same; the next release checks the tree by signature, as a node would.
    console.warn(`warning: could not record serial ${serial} in ${ctx.stateFile}: ${(e as Error).message}`);
  }
  return { manifest, file, dropped };
}

function rolloutFor(hours: number | undefined, now: Date): Release['rollout'] {
  if (hours === undefined) return undefined;
  if (!(hours >= 0)) throw new Error(`--rollout-hours must be 0 or more (got ${hours})`);
  return { start_value: 0, start_epoch: Math.floor(now.getTime() / 1000), duration_s: Math.round(hours * 3600) };
}

// ---------------------------------------------------------------------------------------------
// release

export interface ReleaseOptions extends SignOptions {
  channel: Channel;
  /** The build output folder holding build.json. */
  from: string;
  /** The channel tree. */
  to: string;
  /** Private key file (PKCS#8 PEM). */
  key: string;
  /** Trust root the published manifest is checked against (default: trust.json next to the key, else the key). */
  trust?: string;
  rolloutHours?: number;
  minFrom?: string;
  downgrade?: boolean;
}

export function readBuildJson(from: string): BuildJson {
  const file = join(from, 'build.json');
  if (!existsSync(file)) throw new Error(`${file} does not exist; run 'kiln build' first`);
  const b = JSON.parse(readFileSync(file, 'utf8')) as BuildJson;
  if (typeof b?.version !== 'string' || !semver.valid(b.version)) throw new Error(`${file}: version '${b?.version}' is not semver`);
  if (!Array.isArray(b.outputs)) throw new Error(`${file}: no outputs[]`);
  for (const o of b.outputs) {
    if (typeof o?.file !== 'string' || typeof o.arch !== 'string' || typeof o.kind !== 'string' || !Number.isSafeInteger(o.size) || !/^[0-9a-f]{64}$/.test(o.sha256 ?? '')) {
      throw new Error(`${file}: malformed output ${JSON.stringify(o)}`);
    }
  }
  return b;
}

export async function publishRelease(opts: ReleaseOptions): Promise<{ manifest: Manifest; file: string; version: string; dropped: string[] }> {
  const channel = parseChannel(opts.channel);
  const key = loadKey(opts.key);
  const ctx = publishContext(opts.key, key, opts.trust);
  const build = readBuildJson(opts.from);
  // Before anything is copied into the tree: what is there must be what we (or a trusted key) signed.
  const prev = readPublished(opts.to, channel, ctx);
  const version = semver.valid(build.version)!;
  if (opts.minFrom !== undefined && !semver.valid(opts.minFrom)) throw new Error(`--min-from '${opts.minFrom}' is not semver`);
  const now = opts.now ?? new Date();
  const chDir = channelDir(opts.to, channel);
  const artifacts: Record<string, ArchArtifacts> = {};
  for (const o of build.outputs) {
    if (!(PUBLISHED_KINDS as readonly string[]).includes(o.kind)) continue; // raw/qcow2 are install media, not updates
    const target = o.target ?? o.arch;
    if (!/^[a-z0-9_]{1,25}$/.test(target) || isChunkIndexKey(target)) throw new Error(`build.json: target '${target}' is not a valid name (a-z, 0-9, _; at most 25 characters; not ending in _chunks, which names chunk indexes)`);
    const name = basename(o.file);
    const rel = `${version}/${target}/${name}`;
    await placeArtifact(resolve(opts.from, o.file), join(chDir, rel), o);
    const a = (artifacts[target] ??= {} as ArchArtifacts);
    if (a[o.kind as PublishedKind]) throw new Error(`build.json lists two ${o.kind} outputs for ${target}`);
    a[o.kind as PublishedKind] = { url: rel.split('/').map(encodeURIComponent).join('/'), size: o.size, sha256: o.sha256 };
    if (o.kind === 'root') {
      const ix = await placeChunkIndex(join(chDir, rel), o);
      artifacts[chunkIndexKey(target)] = { root: { url: `${rel}.chunks`.split('/').map(encodeURIComponent).join('/'), size: ix.length, sha256: sha256Hex(ix) } };
    }
  }
  for (const [arch, a] of Object.entries(artifacts)) if (!isChunkIndexKey(arch) && !a.root) throw new Error(`build.json has no root image for ${arch}; nothing a node could install`);
  if (!Object.keys(artifacts).length) throw new Error(`build.json lists no root images; nothing to release`);
  const release: Release = {
    version, artifacts,
    min_from: opts.minFrom ? semver.valid(opts.minFrom)! : undefined,
    downgrade: opts.downgrade ? true : undefined,
    rollout: rolloutFor(opts.rolloutHours, now),
  };
  const { manifest, file, dropped } = writeChannel(opts.to, channel, prev, release, key, ctx, { ...opts, now });
  return { manifest, file, version, dropped };
}

// ---------------------------------------------------------------------------------------------
// promote

export interface PromoteOptions extends SignOptions {
  from: Channel;
  to: Channel;
  /** The channel tree holding both channels. */
  dir: string;
  key: string;
  /** Defaults to the newest release on `from`. */
  version?: string;
  /** A fresh rollout on the target channel; without it the release's bytes are kept as they are. */
  rolloutHours?: number;
  /** Trust root to check the published manifests against (default: trust.json next to the key, else the key). */
  trust?: string;
}

export async function promoteRelease(opts: PromoteOptions): Promise<{ manifest: Manifest; file: string; version: string; dropped: string[] }> {
  const from = parseChannel(opts.from, '--from'), to = parseChannel(opts.to, '--to');
  if (from === to) throw new Error(`--from and --to are both '${from}'`);
  const key = loadKey(opts.key);
  const ctx = publishContext(opts.key, key, opts.trust);
  // Promote only what was really published: check the source as a node would (except expiry:
  // promoting the last beta after its manifest lapsed is legitimate).
  const srcDir = channelDir(opts.dir, from);
  const mf = join(srcDir, 'manifest.json');
  if (!existsSync(mf)) throw new Error(`${mf} does not exist; nothing to promote`);
  const src = readPublished(opts.dir, from, ctx)!;
  const prev = readPublished(opts.dir, to, ctx);
  if (!src.releases.length) throw new Error(`${mf} offers no releases`);
  const want = opts.version ? semver.valid(opts.version) : undefined;
  if (opts.version && !want) throw new Error(`--version '${opts.version}' is not semver`);
  const sorted = [...src.releases].sort((a, b) => semver.rcompare(a.version, b.version));
  const rel = want ? sorted.find((r) => semver.eq(r.version, want)) : sorted[0];
  if (!rel) throw new Error(`${want} is not on ${from} (offered: ${sorted.map((r) => r.version).join(', ')})`);

  const dstDir = channelDir(opts.dir, to);
  for (const arts of Object.values(rel.artifacts)) {
    for (const a of Object.values(arts) as Artifact[]) {
      const s = localPath(srcDir, a.url);
      if (!s) continue; // remote URL: nothing to copy, it resolves the same from any channel
      if (!existsSync(s)) throw new Error(`${s} (from ${from}'s manifest) is missing`);
      await placeArtifact(s, localPath(dstDir, a.url)!, a);
    }
  }
  const now = opts.now ?? new Date();
  // Same release bytes, unless a fresh rollout was asked for.
  const release: Release = JSON.parse(canonicalize(rel));
  if (opts.rolloutHours !== undefined) release.rollout = rolloutFor(opts.rolloutHours, now);
  const { manifest, file, dropped } = writeChannel(opts.dir, to, prev, release, key, ctx, { ...opts, now });
  return { manifest, file, version: rel.version, dropped };
}

// ---------------------------------------------------------------------------------------------
// verify

export interface VerifyOptions {
  dir: string;
  channel: Channel;
  /** Trust root file (trust.json). */
  trust: string;
  now?: Date;
  /** Serial a node has already seen (default 0: a fresh node). */
  lastSerial?: number;
}

export interface VerifyReport { ok: boolean; problems: string[]; warnings: string[]; manifest?: Manifest; checked: number }

/** Checks a published channel as a node would, plus every local artifact's size and sha256. */
export async function verifyPublished(opts: VerifyOptions): Promise<VerifyReport> {
  const problems: string[] = [], warnings: string[] = [];
  const report = (manifest?: Manifest, checked = 0): VerifyReport => ({ ok: problems.length === 0, problems, warnings, manifest, checked });
  const channel = parseChannel(opts.channel);
  let trust: TrustRoot;
  try { trust = parseTrustRoot(readFileSync(opts.trust)); } catch (e) { problems.push(`trust root ${opts.trust}: ${(e as Error).message}`); return report(); }
  const chDir = resolve(channelDir(opts.dir, channel));
  const mf = join(chDir, 'manifest.json');
  for (const f of [mf, `${mf}.sig`]) if (!existsSync(f)) problems.push(`${f} is missing`);
  if (problems.length) return report();
  const now = opts.now ?? new Date();
  const r = verifyChannel({
    manifestBytes: readFileSync(mf), sigBytes: readFileSync(`${mf}.sig`), trust, channel,
    state: { lastSerial: opts.lastSerial ?? 0 }, now,
  });
  if (!r.ok) { problems.push(`${mf}: ${r.reason}: ${r.message}`); return report(); }
  const m = r.manifest;
  const left = Date.parse(m.expires) - now.getTime();
  if (left < 7 * 86400_000) warnings.push(`manifest expires ${m.expires} (in ${(left / 86400_000).toFixed(1)} days): re-sign it before then, or nodes stop updating`);
  if (!m.releases.length) warnings.push('the manifest offers no releases');
  let checked = 0;
  for (const rel of m.releases) {
    for (const [arch, arts] of Object.entries(rel.artifacts)) {
      for (const [kind, a] of Object.entries(arts) as [string, Artifact][]) {
        const what = `${rel.version} ${arch} ${kind} (${a.url})`;
        let p: string | undefined;
        try { p = localPath(chDir, a.url); } catch (e) { problems.push(`${what}: ${(e as Error).message}`); continue; }
        if (!p) { warnings.push(`${what}: remote URL, not checked`); continue; }
        if (!existsSync(p)) { problems.push(`${what}: ${relative(process.cwd(), p) || p} is missing`); continue; }
        const size = statSync(p).size;
        if (size !== a.size) { problems.push(`${what}: ${size} bytes on disk, manifest says ${a.size}`); continue; }
        const sha = await hashFile(p);
        if (sha !== a.sha256) { problems.push(`${what}: sha256 ${sha} on disk, manifest says ${a.sha256}`); continue; }
        checked++;
      }
    }
  }
  return report(m, checked);
}

// ---------------------------------------------------------------------------------------------
// plan

export interface PlanOptions { seed: string; site: string; channel: Channel; target?: string; version?: string }

/**
 * What a node running `seed` would fetch to install the channel's release: the node's own
 * scan and plan (init/update/delta.ts, channels/chunks.ts) against the published index. The
 * manifest is read from the local tree without its signature (a preview, not an install).
 */
export async function planRelease(opts: PlanOptions): Promise<{ lines: string[]; plan: DeltaPlan }> {
  const chDir = resolve(channelDir(opts.site, opts.channel));
  const mf = join(chDir, 'manifest.json');
  if (!existsSync(mf)) throw new Error(`${mf} does not exist; publish with kiln release first`);
  if (!existsSync(opts.seed)) throw new Error(`--seed ${opts.seed} does not exist`);
  let obj: unknown;
  try { obj = JSON.parse(readFileSync(mf, 'utf8')); } catch (e) { throw new Error(`${mf}: not JSON: ${(e as Error).message}`); }
  const check = validateManifest(obj);
  if (!check.ok) throw new Error(`${mf} does not match the schema: ${check.errors.join('; ')}`);
  const sorted = [...check.manifest.releases].sort((a, b) => semver.rcompare(a.version, b.version));
  const rel = opts.version ? sorted.find((r) => semver.eq(r.version, opts.version!)) : sorted[0];
  if (!rel) throw new Error(`${opts.version ?? 'a release'} is not on ${opts.channel} (offered: ${sorted.map((r) => r.version).join(', ') || 'none'})`);
  const targets = Object.keys(rel.artifacts).filter((k) => !isChunkIndexKey(k));
  const target = opts.target ?? (targets.length === 1 ? targets[0]! : undefined);
  if (!target) throw new Error(`${rel.version} has several targets (${targets.join(', ')}); pick one with --target`);
  const root = rel.artifacts[target]?.root;
  if (!root) throw new Error(`${rel.version} has no target ${target} (has ${targets.join(', ')})`);
  const lines = [`${opts.channel} ${rel.version} ${target}: root ${root.size} bytes`];
  const ixArt = chunkIndexOf(rel, target);
  if (!ixArt) {
    lines.push(`no chunk index listed for ${target}: nodes download the whole image`);
    const plan = planDelta({ schema: INDEX_SCHEMA, size: root.size, sha256: root.sha256, params: DEFAULT_PARAMS, gear: GEAR_ID, chunks: [{ offset: 0, length: root.size, sha256: root.sha256 }] }, new Map());
    lines.push(planSummary(plan));
    return { lines, plan };
  }
  const ixPath = localPath(chDir, ixArt.url);
  if (!ixPath || !existsSync(ixPath)) throw new Error(`chunk index ${ixArt.url} is not in ${chDir}`);
  if (statSync(ixPath).size > MAX_INDEX_BYTES) throw new Error(`${ixPath} is larger than the ${MAX_INDEX_BYTES} bytes a node reads`);
  const bytes = readFileSync(ixPath);
  if (bytes.length !== ixArt.size || sha256Hex(bytes) !== ixArt.sha256) throw new Error(`${ixPath} is not the index the manifest lists (${ixArt.size} bytes, sha256 ${ixArt.sha256}); a node would fall back to the full download`);
  const index = parseIndex(bytes, root);
  const plan = await planFromSeed(opts.seed, index);
  lines.push(`index: ${index.chunks.length} chunks (${index.params.min}/${index.params.avg}/${index.params.max} bytes min/avg/max)`);
  lines.push(`seed ${opts.seed}: ${plan.localBytes} bytes found locally (${plan.copies.length} chunks)`);
  lines.push(`fetch: ${plan.ranges.length} range request(s) for ${plan.ranges.reduce((s, r) => s + r.chunks.length, 0)} chunks`);
  lines.push(planSummary(plan));
  return { lines, plan };
}

// ---------------------------------------------------------------------------------------------
// CLI (called from builder/cli.ts)

function num(v: unknown, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || v.trim() === '' || !Number.isFinite(n)) throw new Error(`${flag} wants a number (got '${v}')`);
  return n;
}

function need(v: Record<string, unknown>, flag: string, cmd: string): string {
  const x = v[flag];
  if (typeof x !== 'string' || !x) throw new Error(`${cmd}: --${flag} is required`);
  return x;
}

/** `kiln keys …` and `kiln release …`; returns the exit code. */
export async function releaseCli(cmd: 'keys' | 'release', positionals: string[], v: Record<string, unknown>): Promise<number> {
  const [sub, ...args] = positionals;
  try {
    if (cmd === 'keys') {
      if (sub === 'rotate') {
        const r = rotateKeys({ key: need(v, 'key', 'kiln keys rotate'), out: need(v, 'out', 'kiln keys rotate'), trust: v.trust as string | undefined, to: v.to as string | undefined });
        console.log(`wrote ${r.keyFile} (private, mode 0600: keep it offline) and ${r.trustFile} (trust root version ${r.version}, signed by the old and new keys)\nkeyid ${r.keyid}${r.published ? `\npublished ${r.published}: nodes switch to the new root at their next check` : ''}`);
        return 0;
      }
      if (sub !== 'generate') { console.error(`kiln keys: unknown subcommand '${sub ?? ''}' (valid: generate, rotate)`); return 2; }
      const out = need(v, 'out', 'kiln keys generate');
      checkNoSecureBootKeys(out); // before the release key is written: all or nothing
      const r = generateKeys(out);
      console.log(`wrote ${r.keyFile} (private, mode 0600: keep it offline) and ${r.trustFile} (bake into images)\nkeyid ${r.keyid}`);
      console.log(secureBootKeysSummary(await generateSecureBootKeys(out)));
      return 0;
    }
    if (sub === 'verify') {
      const dir = args[0];
      if (!dir) { console.error('kiln release verify: which folder? e.g. kiln release verify channels-out --channel beta --trust trust.json'); return 2; }
      const r = await verifyPublished({ dir, channel: parseChannel(v.channel), trust: need(v, 'trust', 'kiln release verify'), lastSerial: num(v.serial, '--serial') });
      for (const w of r.warnings) console.log(`warning: ${w}`);
      for (const p of r.problems) console.log(`FAIL: ${p}`);
      if (r.ok) console.log(`ok: ${r.manifest!.channel} serial ${r.manifest!.serial}, ${r.manifest!.releases.map((x) => x.version).join(', ') || 'no releases'}, ${r.checked} artifact(s) checked, expires ${r.manifest!.expires}`);
      return r.ok ? 0 : 1;
    }
    if (sub === 'plan') {
      const r = await planRelease({ seed: need(v, 'seed', 'kiln release plan'), site: need(v, 'site', 'kiln release plan'), channel: parseChannel(v.channel), target: v.target as string | undefined, version: v.version as string | undefined });
      for (const l of r.lines) console.log(l);
      return 0;
    }
    if (sub === 'promote') {
      const r = await promoteRelease({
        from: parseChannel(v.from, '--from'), to: parseChannel(v.to, '--to'), dir: need(v, 'to-dir', 'kiln release promote'), key: need(v, 'key', 'kiln release promote'),
        version: v.version as string | undefined, serial: num(v.serial, '--serial'), expiresDays: num(v['expires-days'], '--expires-days'),
        rolloutHours: num(v['rollout-hours'], '--rollout-hours'), trust: v.trust as string | undefined,
      });
      console.log(`promoted ${r.version} to ${r.manifest.channel}: ${r.file} serial ${r.manifest.serial}, expires ${r.manifest.expires}${r.dropped.length ? `; dropped newer ${r.dropped.join(', ')}` : ''}`);
      return 0;
    }
    if (sub !== undefined) { console.error(`kiln release: unknown subcommand '${sub}' (valid: promote, verify, plan, or none to publish)`); return 2; }
    const r = await publishRelease({
      channel: parseChannel(v.channel), from: (v.from as string | undefined) ?? 'out', to: need(v, 'to', 'kiln release'), key: need(v, 'key', 'kiln release'),
      serial: num(v.serial, '--serial'), expiresDays: num(v['expires-days'], '--expires-days'), rolloutHours: num(v['rollout-hours'], '--rollout-hours'),
      minFrom: v['min-from'] as string | undefined, downgrade: v.downgrade as boolean | undefined, trust: v.trust as string | undefined,
    });
    console.log(`released ${r.version} on ${r.manifest.channel}: ${r.file} serial ${r.manifest.serial}, expires ${r.manifest.expires}${r.dropped.length ? `; dropped newer ${r.dropped.join(', ')}` : ''}`);
    return 0;
  } catch (e) {
    console.error(`kiln ${cmd}${sub ? ` ${sub}` : ''}: ${(e as Error).message}`);
    return 1;
  }
}
