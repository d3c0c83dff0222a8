// Release-channel manifests: canonical form, Ed25519 signatures, trust roots, and the choice
// of which release a node installs. Pure (no I/O): the workstation's `kiln release` and the
// node's updater both use it, and esbuild bundles it into PID 1, so only node: builtins and
// the project's dependencies. The format and trust model are in channels/README.md.
import { createHash, createPrivateKey, createPublicKey, sign as edSign, verify as edVerify, type KeyObject } from 'node:crypto';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import semver from 'semver';
import MANIFEST_JSON_SCHEMA from './manifest.schema.json' with { type: 'json' };
import { PRECOMPILED } from './precompiled.ts';

export type Channel = 'beta' | 'rc' | 'stable';
export const CHANNELS: readonly Channel[] = ['beta', 'rc', 'stable'];
export const MANIFEST_SCHEMA = 'kiln-channel/1';
export const ROOT_SCHEMA = 'kiln-root/1';

export interface Artifact { url: string; size: number; sha256: string }
export interface ArchArtifacts { root: Artifact; uki?: Artifact; kernel?: Artifact; initrd?: Artifact }
/**
 * The key under which a release lists the chunk index of `target`'s root. A target of its own
 * (holding only `root`), because every manifest object refuses unknown properties: a new field
 * would make nodes that predate delta updates refuse the whole manifest, while a target they do
 * not run is one they never look at.
 */
export const chunkIndexKey = (target: string) => `${target}_chunks`;
export const isChunkIndexKey = (key: string) => key.endsWith('_chunks');
/** The chunk index artifact of `target` in `release`, if it lists one. */
export function chunkIndexOf(release: Release, target: string): Artifact | undefined {
  return release.artifacts[chunkIndexKey(target)]?.root;
}

export interface Rollout { start_value: number; start_epoch: number; duration_s: number }
export interface Release {
  version: string;
  min_from?: string;
  downgrade?: boolean;
  rollout?: Rollout;
  artifacts: Record<string, ArchArtifacts>;
}
export interface Manifest {
  schema: typeof MANIFEST_SCHEMA;
  channel: Channel;
  serial: number;
  issued: string;
  expires: string;
  releases: Release[];
}

/** publicKey: SPKI PEM, or the 32 raw Ed25519 bytes in base64. keyid: sha256 of the raw bytes, hex. */
export interface TrustKey { keyid: string; publicKey: string }
export interface TrustRoot { schema?: string; version?: number; keys: TrustKey[]; threshold: number }
export interface SignatureEntry { keyid: string; sig: string }
export interface SignatureFile { signatures: SignatureEntry[] }

export type Time = Date | number;
const ms = (t: Time) => (typeof t === 'number' ? t : t.getTime());

// ---------------------------------------------------------------------------------------------
// Limits. Everything a node reads from a channel is bounded: the server is not trusted until
// the signature checks out, and an unbounded body or signature list would exhaust PID 1.

/** Largest manifest.json accepted (64 releases with every artifact fit in well under 100 KiB). */
export const MAX_MANIFEST_BYTES = 1 << 20;
/** Largest .sig file (a 64-key root's signatures are about 10 KiB). */
export const MAX_SIG_BYTES = 64 << 10;
/** Largest trust root document. */
export const MAX_ROOT_BYTES = 64 << 10;
/** A manifest issued further ahead of a trusted clock than this is refused (`future`). */
export const MAX_ISSUED_AHEAD_MS = 86400_000;

/** Text shortened to `max` characters, marked; for anything that may echo what a server sent. */
export function clip(text: string, max = 400): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length - max} more characters)`;
}

/** A list for a message: the first `n` items, then how many more. */
function listed(items: string[], n = 4): string {
  return items.length <= n ? items.join(', ') : `${items.slice(0, n).join(', ')} and ${items.length - n} more`;
}

// ---------------------------------------------------------------------------------------------
// Canonical form. Signatures cover exact bytes, but the publisher always writes this form so
// the same content always gives the same bytes (re-signing, promotion and tests rely on it):
// object keys sorted by UTF-16 code units, no whitespace, strings and numbers as JSON.stringify
// writes them, properties whose value is undefined left out.

export function canonicalize(value: unknown): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean': return value ? 'true' : 'false';
    case 'string': return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new TypeError(`canonical JSON cannot hold ${value}`);
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) return `[${value.map((v) => canonicalize(v)).join(',')}]`;
      const proto = Object.getPrototypeOf(value);
      // Dates, Buffers, Maps would serialise through toJSON or not at all: make the caller decide.
      if (proto !== Object.prototype && proto !== null) throw new TypeError(`canonical JSON takes plain objects, not ${proto?.constructor?.name ?? 'this'}`);
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort();
      return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalize(obj[k])}`).join(',')}}`;
    }
    default:
      throw new TypeError(`canonical JSON cannot hold a ${typeof value}`);
  }
}

export function canonicalBytes(value: unknown): Buffer { return Buffer.from(canonicalize(value), 'utf8'); }

export function sha256Hex(bytes: Uint8Array): string { return createHash('sha256').update(bytes).digest('hex'); }

// ---------------------------------------------------------------------------------------------
// Keys

// DER prefix of an Ed25519 SubjectPublicKeyInfo; the raw 32-byte key follows it.
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** A public key from SPKI PEM or base64 raw bytes; throws unless it is Ed25519. */
export function publicKeyFrom(text: string | KeyObject): KeyObject {
  let key: KeyObject;
  if (typeof text !== 'string') key = text.type === 'private' ? createPublicKey(text) : text;
  else if (text.includes('-----BEGIN')) key = createPublicKey(text);
  else {
    const raw = Buffer.from(text.trim(), 'base64');
    if (raw.length !== 32) throw new Error(`public key is ${raw.length} bytes after base64; Ed25519 keys are 32`);
    key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`key is ${key.asymmetricKeyType}, expected ed25519`);
  return key;
}

export function rawPublicKey(key: string | KeyObject): Buffer {
  const der = publicKeyFrom(key).export({ format: 'der', type: 'spki' });
  return der.subarray(ED25519_SPKI_PREFIX.length);
}

/** keyid = sha256(raw public key), hex; derived, so a trust root cannot lie about it. */
export function keyIdOf(key: string | KeyObject): string { return sha256Hex(rawPublicKey(key)); }

export function privateKeyFrom(pem: string | KeyObject): KeyObject {
  const key = typeof pem === 'string' ? createPrivateKey(pem) : pem;
  if (key.type !== 'private' || key.asymmetricKeyType !== 'ed25519') throw new Error('release key must be an Ed25519 private key (PKCS#8 PEM)');
  return key;
}

/** The trust entry for a key: { keyid, publicKey (base64 raw) }. */
export function trustKeyOf(key: string | KeyObject): TrustKey {
  return { keyid: keyIdOf(key), publicKey: rawPublicKey(key).toString('base64') };
}

// ---------------------------------------------------------------------------------------------
// Signatures: a detached JSON file { signatures: [{ keyid, sig }] }, each sig an Ed25519
// signature (base64) over the exact bytes of the signed file. No domain prefix: manifests
// and trust roots cannot be confused because each is validated against its own `schema`.

export function signBytes(bytes: Uint8Array, privateKeys: (string | KeyObject)[]): Buffer {
  const signatures = privateKeys.map((k) => {
    const key = privateKeyFrom(k);
    return { keyid: keyIdOf(key), sig: edSign(null, bytes, key).toString('base64') };
  });
  return Buffer.from(JSON.stringify({ signatures }, null, 2) + '\n');
}

export type SigFailure = 'bad-signature' | 'unknown-key';
export type SigResult = { ok: true; keyids: string[] } | { ok: false; reason: SigFailure; message: string };

/**
 * True when at least `trust.threshold` distinct trusted keys signed `bytes`. Signatures by
 * keys the root does not know are ignored without being checked (they let a publisher sign
 * with old and new keys during a rotation), but if nothing trusted signed, the reason says so.
 * Each trusted key is checked at most once (the first entry naming it counts; later ones are
 * ignored), so however long the unauthenticated .sig file is, verifying costs at most one
 * Ed25519 check per key of the root.
 */
export function verifySignatures(bytes: Uint8Array, sigBytes: Uint8Array, trust: TrustRoot): SigResult {
  if (sigBytes.length > MAX_SIG_BYTES) return { ok: false, reason: 'bad-signature', message: `signature file is ${sigBytes.length} bytes, more than the ${MAX_SIG_BYTES} allowed` };
  let file: unknown;
  try { file = JSON.parse(Buffer.from(sigBytes).toString('utf8')); } catch {
    return { ok: false, reason: 'bad-signature', message: 'signature file is not JSON' };
  }
  const sigs = (file as SignatureFile | null)?.signatures;
  if (!Array.isArray(sigs) || sigs.length === 0) return { ok: false, reason: 'bad-signature', message: 'signature file has no signatures[]' };
  const known = new Map(trust.keys.map((k) => [k.keyid, k]));
  // A threshold below 1 (an unchecked trust object) must never mean "no signature needed".
  const need = Math.max(1, Math.floor(Number(trust.threshold)) || 1);
  const tried = new Set<string>();
  const good = new Set<string>();
  const unknown = new Set<string>();
  const bad: string[] = [];
  let malformed = 0;
  for (const s of sigs) {
    if (good.size >= need) break;
    if (typeof s?.keyid !== 'string' || typeof s?.sig !== 'string') { malformed++; continue; }
    const k = known.get(s.keyid);
    if (!k) { unknown.add(s.keyid); continue; }
    if (tried.has(s.keyid)) continue;
    tried.add(s.keyid);
    const sig = Buffer.from(s.sig, 'base64');
    let ok = false;
    try { ok = sig.length === 64 && edVerify(null, bytes, publicKeyFrom(k.publicKey), sig); } catch { ok = false; }
    if (ok) good.add(s.keyid); else bad.push(s.keyid);
  }
  if (good.size >= need) return { ok: true, keyids: [...good] };
  const short = (id: string) => id.slice(0, 16);
  if (malformed) bad.push(`(${malformed} malformed entr${malformed === 1 ? 'y' : 'ies'})`);
  if (bad.length) return { ok: false, reason: 'bad-signature', message: `signature by ${listed(bad.map(short))} does not match the signed bytes (${good.size} of ${need} required signatures valid)` };
  if (good.size === 0 && unknown.size) return { ok: false, reason: 'unknown-key', message: `signed only by keys the trust root does not know: ${listed([...unknown].map(short))}` };
  return { ok: false, reason: 'bad-signature', message: `${good.size} valid signature(s), ${need} required` };
}

// ---------------------------------------------------------------------------------------------
// Trust roots

export const ROOT_JSON_SCHEMA = {
  type: 'object', additionalProperties: false, required: ['schema', 'version', 'keys', 'threshold'],
  properties: {
    schema: { const: ROOT_SCHEMA },
    version: { type: 'integer', minimum: 1 },
    threshold: { type: 'integer', minimum: 1 },
    keys: {
      type: 'array', minItems: 1, maxItems: 64,
      items: {
        type: 'object', additionalProperties: false, required: ['keyid', 'publicKey'],
        properties: { keyid: { type: 'string', pattern: '^[0-9a-f]{64}$' }, publicKey: { type: 'string', minLength: 1 } },
      },
    },
  },
};

let ajv: Ajv2020 | undefined;
let manifestValidator: ValidateFunction | undefined;
let rootValidator: ValidateFunction | undefined;
/** The options the schemas are compiled with, here and to code by the builder. */
export const MANIFEST_AJV_OPTIONS = { allErrors: true, strict: true } as const;
export { MANIFEST_JSON_SCHEMA };
// Compiled to code in the node's bundle (precompiled.ts), else on first use: PID 1 imports
// this module at boot, and most boots never poll.
function validators() {
  manifestValidator ??= PRECOMPILED.manifest ?? (ajv ??= new Ajv2020(MANIFEST_AJV_OPTIONS)).compile(MANIFEST_JSON_SCHEMA);
  rootValidator ??= PRECOMPILED.root ?? (ajv ??= new Ajv2020(MANIFEST_AJV_OPTIONS)).compile(ROOT_JSON_SCHEMA);
  return { manifest: manifestValidator, root: rootValidator };
}

/** Schema errors for a message; at most 10, each clipped (property names come from the server). */
function ajvErrors(v: ValidateFunction): string[] {
  const all = v.errors ?? [];
  const out = all.slice(0, 10).map((e) => clip(`${e.instancePath || '/'} ${e.message}${e.keyword === 'additionalProperties' ? ` (${(e.params as { additionalProperty: string }).additionalProperty})` : ''}${e.keyword === 'enum' || e.keyword === 'const' ? ` (${JSON.stringify((e.params as { allowedValues?: unknown; allowedValue?: unknown }).allowedValues ?? (e.params as { allowedValue?: unknown }).allowedValue)})` : ''}`, 200));
  if (all.length > 10) out.push(`and ${all.length - 10} more`);
  return out;
}

/** Parses and checks a trust root document (bytes, text or object); throws with every problem. */
export function parseTrustRoot(input: Uint8Array | string | object): TrustRoot {
  const obj = typeof input === 'string' ? JSON.parse(input) : input instanceof Uint8Array ? JSON.parse(Buffer.from(input).toString('utf8')) : input;
  const v = validators().root;
  if (!v(obj)) throw new Error(`trust root: ${ajvErrors(v).join('; ')}`);
  const root = obj as Required<TrustRoot>;
  const seen = new Set<string>();
  for (const k of root.keys) {
    let id: string;
    try { id = keyIdOf(k.publicKey); } catch (e) { throw new Error(`trust root: key ${k.keyid.slice(0, 16)}: ${(e as Error).message}`); }
    if (id !== k.keyid) throw new Error(`trust root: keyid ${k.keyid.slice(0, 16)} does not match its public key (expected ${id.slice(0, 16)})`);
    if (seen.has(id)) throw new Error(`trust root: key ${id.slice(0, 16)} listed twice`);
    seen.add(id);
  }
  if (root.threshold > root.keys.length) throw new Error(`trust root: threshold ${root.threshold} exceeds its ${root.keys.length} key(s)`);
  return root;
}

export function makeTrustRoot(publicKeys: (string | KeyObject)[], threshold = 1, version = 1): TrustRoot {
  return parseTrustRoot({ schema: ROOT_SCHEMA, version, threshold, keys: publicKeys.map(trustKeyOf) });
}

export type RotationResult = { ok: true; root: TrustRoot } | { ok: false; reason: SigFailure | 'schema' | 'rollback'; message: string };

/**
 * Accepts a new trust root only when a threshold of the *old* root's keys signed its exact
 * bytes (the authority to rotate) and a threshold of its *own* keys did too (proof that the
 * new keys exist and work, so a rotation cannot lock everyone out), and its version grows.
 */
export function verifyRootRotation(oldRoot: TrustRoot, newRootBytes: Uint8Array, sigBytes: Uint8Array): RotationResult {
  const byOld = verifySignatures(newRootBytes, sigBytes, oldRoot);
  if (!byOld.ok) return { ok: false, reason: byOld.reason, message: `new trust root not signed by the current one: ${byOld.message}` };
  let root: TrustRoot;
  try { root = parseTrustRoot(newRootBytes); } catch (e) { return { ok: false, reason: 'schema', message: (e as Error).message }; }
  const byNew = verifySignatures(newRootBytes, sigBytes, root);
  if (!byNew.ok) return { ok: false, reason: byNew.reason, message: `new trust root not signed by its own keys: ${byNew.message}` };
  if ((root.version ?? 0) <= (oldRoot.version ?? 0)) {
    return { ok: false, reason: 'rollback', message: `new trust root version ${root.version} is not above the current ${oldRoot.version ?? 0}` };
  }
  return { ok: true, root };
}

// ---------------------------------------------------------------------------------------------
// Manifests

export type ManifestCheck = { ok: true; manifest: Manifest } | { ok: false; errors: string[] };

/** Schema plus what JSON Schema cannot say: real dates, issued <= expires, valid semver, unique versions. */
export function validateManifest(obj: unknown): ManifestCheck {
  const v = validators().manifest;
  if (!v(obj)) return { ok: false, errors: ajvErrors(v) };
  const m = obj as Manifest;
  const errors: string[] = [];
  const issued = Date.parse(m.issued), expires = Date.parse(m.expires);
  if (Number.isNaN(issued)) errors.push(`/issued ${m.issued} is not a date`);
  if (Number.isNaN(expires)) errors.push(`/expires ${m.expires} is not a date`);
  if (issued > expires) errors.push(`/expires ${m.expires} is before /issued ${m.issued}`);
  const versions = new Set<string>();
  m.releases.forEach((r, i) => {
    if (!semver.valid(r.version)) errors.push(`/releases/${i}/version ${r.version} is not semver`);
    if (r.min_from && !semver.valid(r.min_from)) errors.push(`/releases/${i}/min_from ${r.min_from} is not semver`);
    for (const key of Object.keys(r.artifacts)) {
      if (isChunkIndexKey(key) && !r.artifacts[key.slice(0, -'_chunks'.length)]) errors.push(`/releases/${i}/artifacts/${key} is a chunk index for target ${key.slice(0, -'_chunks'.length)}, which this release does not list`);
    }
    const clean = semver.valid(r.version) ?? r.version;
    if (versions.has(clean)) errors.push(`/releases/${i}/version ${r.version} is listed twice`);
    versions.add(clean);
  });
  return errors.length ? { ok: false, errors } : { ok: true, manifest: m };
}

export type RefuseReason = 'bad-signature' | 'unknown-key' | 'schema' | 'wrong-channel' | 'replay' | 'expired' | 'future';

export interface ChannelStateView {
  /** Highest serial accepted on this channel (0 if none). */
  lastSerial: number;
  /** Newest `issued` accepted (ISO), a floor for a clock that may be wrong (no RTC, no NTP yet). */
  lastIssued?: string | null;
  /** sha256 of the manifest bytes accepted at lastSerial; lets a node re-read the same manifest. */
  lastDigest?: string | null;
}

export interface VerifyChannelInput {
  manifestBytes: Uint8Array;
  sigBytes: Uint8Array;
  trust: TrustRoot;
  channel: Channel;
  state: ChannelStateView;
  now: Time;
  /** When the running image was built: the clock can be trusted to be at least this. */
  buildTime?: Time;
  /**
   * false skips the date checks (expiry, issued ahead of the clock): for the publisher, which
   * re-signs a lapsed channel and judges the rest exactly as a node does. Nodes never set it.
   */
  checkDates?: boolean;
  /** Whether the node's clock is trusted (NTP-synced); default clockTrusted(now, buildTime). */
  clockTrusted?: boolean;
}

export type VerifyChannelResult =
  /** raiseFloor: whether the manifest's `issued` may become the node's clock floor (see clockTrusted). */
  | { ok: true; manifest: Manifest; digest: string; unchanged: boolean; keyids: string[]; raiseFloor: boolean }
  | { ok: false; reason: RefuseReason; message: string };

/**
 * The node's clock is trusted when it is not below the running image's build time: a board
 * without a battery-backed clock that boots in 1970 is not, one that has NTP time is. A node
 * that does not know its build time has nothing better than its clock and trusts it.
 */
export function clockTrusted(now: Time, buildTime?: Time): boolean {
  return buildTime === undefined || ms(now) >= ms(buildTime);
}

/**
 * Everything a node checks before it believes a manifest, in this order: size, signature (over
 * the exact bytes, before anything is parsed), schema, channel, serial, expiry, and with a
 * trusted clock, that it was not issued more than a day ahead of now. Pure: the caller
 * persists the new serial/issued (state.ts `acceptManifest`) only after this returns ok.
 *
 * Serial: a lower serial is a replay. The *same* serial is accepted only with the same bytes
 * (digest) — nodes re-read an unchanged manifest on every poll, and a rollout's throttle grows
 * while the manifest stays the same; equal serial with other bytes is refused as a replay.
 *
 * Clock floor: `issued` of an accepted manifest becomes the node's floor for a clock that may
 * be wrong, so a future-dated one would make every later manifest look expired. With a trusted
 * clock, a manifest issued more than MAX_ISSUED_AHEAD_MS ahead is refused (`future`); with an
 * untrusted clock it cannot be judged and is accepted, but `raiseFloor` is then true only when
 * it was issued at most that much after the build time.
 */
export function verifyChannel(input: VerifyChannelInput): VerifyChannelResult {
  const { manifestBytes, sigBytes, trust, channel, state } = input;
  if (manifestBytes.length > MAX_MANIFEST_BYTES) return { ok: false, reason: 'schema', message: `manifest is ${manifestBytes.length} bytes, more than the ${MAX_MANIFEST_BYTES} allowed` };
  const sig = verifySignatures(manifestBytes, sigBytes, trust);
  if (!sig.ok) return { ok: false, reason: sig.reason, message: sig.message };

  let obj: unknown;
  try { obj = JSON.parse(Buffer.from(manifestBytes).toString('utf8')); } catch (e) {
    return { ok: false, reason: 'schema', message: `manifest is not JSON: ${(e as Error).message}` };
  }
  const check = validateManifest(obj);
  if (!check.ok) return { ok: false, reason: 'schema', message: `manifest does not match the schema: ${check.errors.join('; ')}` };
  const m = check.manifest;

  // A manifest signed for beta must not be served to an rc node: the signature alone would pass.
  if (m.channel !== channel) return { ok: false, reason: 'wrong-channel', message: `manifest is for channel '${m.channel}', this node follows '${channel}'` };

  const digest = sha256Hex(manifestBytes);
  const last = state.lastSerial ?? 0;
  if (m.serial < last) return { ok: false, reason: 'replay', message: `serial ${m.serial} is older than ${last}, already seen (replayed manifest)` };
  const unchanged = m.serial === last;
  if (unchanged && state.lastDigest !== digest) {
    return { ok: false, reason: 'replay', message: `serial ${m.serial} was already seen with different content` };
  }

  if (input.checkDates === false) return { ok: true, manifest: m, digest, unchanged, keyids: sig.keyids, raiseFloor: false };

  // A freshly booted board may think it is 1970: never let the clock go below what we know.
  const floor = Math.max(ms(input.now), input.buildTime === undefined ? 0 : ms(input.buildTime), state.lastIssued ? Date.parse(state.lastIssued) || 0 : 0);
  const expires = Date.parse(m.expires);
  if (floor > expires) return { ok: false, reason: 'expired', message: `manifest expired at ${m.expires} (clock floor ${new Date(floor).toISOString()})` };

  const issued = Date.parse(m.issued);
  const trusted = input.clockTrusted ?? clockTrusted(input.now, input.buildTime);
  if (trusted && issued > ms(input.now) + MAX_ISSUED_AHEAD_MS) {
    return { ok: false, reason: 'future', message: `manifest issued ${m.issued}, more than ${MAX_ISSUED_AHEAD_MS / 3600_000} h ahead of this node's clock (${new Date(ms(input.now)).toISOString()}); the publisher's clock is wrong` };
  }
  const raiseFloor = trusted || (input.buildTime !== undefined && issued <= ms(input.buildTime) + MAX_ISSUED_AHEAD_MS);
  return { ok: true, manifest: m, digest, unchanged, keyids: sig.keyids, raiseFloor };
}

/** Manifest bytes as the publisher writes them: canonical form, after a schema check. */
export function serializeManifest(m: Manifest): Buffer {
  const check = validateManifest(JSON.parse(canonicalize(m)));
  if (!check.ok) throw new Error(`manifest does not match the schema: ${check.errors.join('; ')}`);
  return canonicalBytes(m);
}

// ---------------------------------------------------------------------------------------------
// Rollout and release choice

/** FCOS-style rollout fraction at `now`, in [0, 1]. No rollout block means everyone. */
export function rolloutThrottle(rollout: Rollout | undefined, now: Time): number {
  if (!rollout) return 1;
  const t = ms(now) / 1000 - rollout.start_epoch;
  const v = rollout.duration_s > 0
    ? rollout.start_value + (1 - rollout.start_value) * t / rollout.duration_s
    : t >= 0 ? 1 : 0;
  return Math.min(1, Math.max(0, v));
}

/**
 * A node's place in the rollout queue: stable across boots and reinstalls of the same machine,
 * uniform in [0, 1). The prefix keeps it independent of other uses of the machine id.
 */
export function wariness(machineId: string): number {
  const h = createHash('sha256').update(`kiln/wariness/1:${machineId.trim().toLowerCase()}`).digest();
  return h.readUIntBE(0, 6) / 2 ** 48;
}

export interface PickOptions {
  current: string;
  arch: string;
  wariness: number;
  now: Time;
  badVersions?: Iterable<string>;
}

export type PickResult =
  | { ok: true; release: Release; artifacts: ArchArtifacts; throttle: number }
  | { ok: false; reason: 'up-to-date' | 'throttled' | 'none-eligible' | 'no-release-for-arch' | 'bad-current'; message: string; skipped: { version: string; why: string }[] };

/**
 * The release this node should install, newest first. Skipped: versions recorded bad here,
 * older versions unless signed `downgrade` (and only when nothing at or above the current
 * version is offered, so a throttled or bad newer release never turns into a rollback),
 * releases whose min_from is above the current version, and releases whose rollout has not
 * reached this node's wariness (throttle 0 means paused, so wariness 0 waits too).
 */
export function pickRelease(manifest: Manifest, opts: PickOptions): PickResult {
  const current = semver.valid(opts.current);
  const skipped: { version: string; why: string }[] = [];
  if (!current) return { ok: false, reason: 'bad-current', message: `current version '${opts.current}' is not semver`, skipped };
  const bad = new Set([...(opts.badVersions ?? [])].map((v) => semver.valid(v) ?? v));
  const offered = manifest.releases
    .filter((r) => !isChunkIndexKey(opts.arch) && r.artifacts[opts.arch] && semver.valid(r.version))
    .sort((a, b) => semver.rcompare(a.version, b.version));
  if (!offered.length) return { ok: false, reason: 'no-release-for-arch', message: `no release for ${opts.arch} on ${manifest.channel}`, skipped };
  const anyAtOrAbove = offered.some((r) => semver.gte(r.version, current));
  let throttled = false;
  for (const r of offered) {
    const v = semver.valid(r.version)!;
    if (v === current) {
      return throttled
        ? { ok: false, reason: 'throttled', message: 'the rollout of a newer release has not reached this node yet', skipped }
        : { ok: false, reason: 'up-to-date', message: `${current} is the newest release this node may install`, skipped };
    }
    if (bad.has(v)) { skipped.push({ version: v, why: 'recorded bad on this node (it failed its health check here)' }); continue; }
    if (semver.lt(v, current)) {
      if (!r.downgrade) { skipped.push({ version: v, why: `older than ${current} and not flagged downgrade` }); continue; }
      if (anyAtOrAbove) { skipped.push({ version: v, why: `flagged downgrade, but a release at or above ${current} is still offered` }); continue; }
    }
    if (r.min_from && semver.lt(current, r.min_from)) { skipped.push({ version: v, why: `needs ${r.min_from} or later first (min_from)` }); continue; }
    const throttle = rolloutThrottle(r.rollout, opts.now);
    if (throttle <= 0 || opts.wariness > throttle) {
      throttled = true;
      skipped.push({ version: v, why: `rollout at ${(throttle * 100).toFixed(1)}%, this node's wariness ${(opts.wariness * 100).toFixed(1)}%` });
      continue;
    }
    return { ok: true, release: r, artifacts: r.artifacts[opts.arch]!, throttle };
  }
  return throttled
    ? { ok: false, reason: 'throttled', message: 'the rollout has not reached this node yet', skipped }
    : { ok: false, reason: 'none-eligible', message: `nothing to install from ${current}: ${skipped.map((s) => `${s.version}: ${s.why}`).join('; ')}`, skipped };
}
