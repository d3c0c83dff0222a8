// The node's memory of its release channel: the newest manifest it accepted (serial, issued,
// digest), and the versions that failed their health check here. Lives on the data partition
// under the channel's space: beta has its own (/var/lib/kiln/beta/) so leaving beta returns a
// clean stable state; rc shares stable's (/var/lib/kiln/stable/).
//
// Rule for callers: load -> verifyChannel -> pickRelease -> acceptManifest -> saveState. Persist
// only after every check passed; saving anything learnt from a manifest that was then refused
// would let a forged or stale one move the replay and clock floors.
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeFileSync, unlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import semver from 'semver';
import { CHANNELS, MAX_ROOT_BYTES, parseTrustRoot, type Channel, type ChannelStateView, type Manifest, type TrustRoot } from '../../channels/manifest.ts';

export const DEFAULT_STATE_BASE = '/var/lib/kiln';
export const STATE_FILE = 'channel-state.json';
/** A rotated trust root the node accepted (and its signatures), shared by every channel. */
export const ROOT_FILE = 'trust.json';

export type Space = 'stable' | 'beta';

/** Where a channel keeps config and state: beta alone, rc with stable. */
export function channelSpace(channel: Channel): Space {
  switch (channel) {
    case 'beta': return 'beta';
    case 'rc': case 'stable': return 'stable';
    default: throw new Error(`unknown channel '${channel as string}' (valid: ${CHANNELS.join(', ')})`);
  }
}

export function spaceDir(baseDir: string, channel: Channel): string { return join(baseDir, channelSpace(channel)); }
export function stateFile(baseDir: string, channel: Channel): string { return join(spaceDir(baseDir, channel), STATE_FILE); }

export interface ChannelState extends ChannelStateView {
  /** The channel this state was loaded for; lastSerial/lastDigest are that channel's. */
  channel: Channel;
  lastSerial: number;
  lastIssued: string | null;
  lastDigest: string | null;
  /** Versions that fell back after an update: never tried again (fedora-coreos-tracker#1938). */
  badVersions: string[];
}

/**
 * On disk, serials are kept per channel: rc and stable share a space but number their
 * manifests independently, and switching rc -> stable -> rc must not reopen a replay window.
 */
interface StateFile {
  schema: 'kiln-channel-state/1';
  channel: Channel;
  lastIssued: string | null;
  badVersions: string[];
  serials: Partial<Record<Channel, { serial: number; digest: string | null }>>;
}

export function emptyState(channel: Channel): ChannelState {
  channelSpace(channel);
  return { channel, lastSerial: 0, lastIssued: null, lastDigest: null, badVersions: [] };
}

function readFile(path: string): StateFile | undefined {
  let text: string;
  try { text = readFileSync(path, 'utf8'); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  let f: StateFile;
  try { f = JSON.parse(text); } catch (e) { throw new Error(`${path}: not JSON (${(e as Error).message})`); }
  if (f?.schema !== 'kiln-channel-state/1' || typeof f.serials !== 'object' || !Array.isArray(f.badVersions)) {
    throw new Error(`${path}: not a kiln channel state file`);
  }
  return f;
}

/**
 * The state for `channel` under baseDir (default /var/lib/kiln). A missing file is a fresh
 * node. A damaged one throws: the caller decides (saves are atomic, so damage means a disk
 * problem, and quietly starting from zero would reopen the replay window).
 */
export function loadState(baseDir: string, channel: Channel): ChannelState {
  const f = readFile(stateFile(baseDir, channel));
  if (!f) return emptyState(channel);
  const s = f.serials[channel];
  return {
    channel,
    lastSerial: Number.isSafeInteger(s?.serial) ? s!.serial : 0,
    lastIssued: typeof f.lastIssued === 'string' ? f.lastIssued : null,
    lastDigest: typeof s?.digest === 'string' ? s.digest : null,
    badVersions: f.badVersions.filter((v) => typeof v === 'string'),
  };
}

/** Writes temp + fsync + rename + fsync(dir), merging this channel's serial into the file. */
export function saveState(baseDir: string, state: ChannelState): void {
  const path = stateFile(baseDir, state.channel);
  mkdirSync(dirname(path), { recursive: true });
  let prev: StateFile | undefined;
  try { prev = readFile(path); } catch { prev = undefined; } // a damaged file is replaced by a good one
  const next: StateFile = {
    schema: 'kiln-channel-state/1',
    channel: state.channel,
    lastIssued: state.lastIssued,
    badVersions: [...new Set(state.badVersions)],
    serials: { ...(prev?.serials ?? {}), [state.channel]: { serial: state.lastSerial, digest: state.lastDigest } },
  };
  writeDurably(path, JSON.stringify(next, null, 2) + '\n');
}

/** temp + fsync + rename + fsync(dir): a crash leaves the old file or the new one. */
function writeDurably(path: string, data: string | Uint8Array): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', 0o600);
  try {
    writeFileSync(fd, data);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    try { unlinkSync(tmp); } catch { /* already gone */ }
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
  // The rename is only durable once the directory entry is on disk.
  const dfd = openSync(dirname(path), 'r');
  try { fsyncSync(dfd); } finally { closeSync(dfd); }
}

// ---------------------------------------------------------------------------------------------
// The trust root. The image's baked-in root is where every node starts; a rotation the node
// verified (verifyRootRotation) is stored here, on the data partition, and used from then on.

export function rootFile(baseDir: string): string { return join(baseDir, ROOT_FILE); }

export interface EffectiveRoot { root: TrustRoot; rotated: boolean; problem?: string }

/**
 * The root to verify with: the stored rotated one when its version is above the baked-in
 * one's (a newer image may bake in a newer root still). A stored root that does not parse is
 * reported and the baked-in one used: manifests signed by rotated keys are then refused, which
 * stops updates but never trusts anything new.
 */
export function loadTrustRoot(baseDir: string, baked: TrustRoot): EffectiveRoot {
  const path = rootFile(baseDir);
  let bytes: Buffer;
  try { bytes = readFileSync(path); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { root: baked, rotated: false };
    return { root: baked, rotated: false, problem: `cannot read the rotated trust root ${path}: ${(e as Error).message}` };
  }
  let stored: TrustRoot;
  try {
    if (bytes.length > MAX_ROOT_BYTES) throw new Error(`${bytes.length} bytes, more than ${MAX_ROOT_BYTES}`);
    stored = parseTrustRoot(bytes);
  } catch (e) { return { root: baked, rotated: false, problem: `rotated trust root ${path} is unusable (${(e as Error).message}); using the image's` }; }
  return (stored.version ?? 1) > (baked.version ?? 1) ? { root: stored, rotated: true } : { root: baked, rotated: false };
}

/** Stores a verified rotated root: the exact bytes, and the signatures that authorised it. */
export function saveTrustRoot(baseDir: string, rootBytes: Uint8Array, sigBytes: Uint8Array): void {
  mkdirSync(baseDir, { recursive: true });
  writeDurably(`${rootFile(baseDir)}.sig`, sigBytes);
  writeDurably(rootFile(baseDir), rootBytes);
}

/**
 * The state after accepting a verified manifest (pure; save it afterwards). `raiseFloor` is
 * verifyChannel's verdict on whether its `issued` may become the clock floor: false for a
 * manifest seen with an untrusted clock and dated too far past the build time, which must not
 * make every later manifest look expired.
 */
export function acceptManifest(state: ChannelState, manifest: Manifest, digest: string, opts: { raiseFloor?: boolean } = {}): ChannelState {
  if (manifest.channel !== state.channel) throw new Error(`manifest for '${manifest.channel}' given to '${state.channel}' state`);
  const issued = Date.parse(manifest.issued);
  const floor = state.lastIssued ? Date.parse(state.lastIssued) : -Infinity;
  return {
    ...state,
    lastSerial: Math.max(state.lastSerial, manifest.serial),
    lastDigest: manifest.serial >= state.lastSerial ? digest : state.lastDigest,
    lastIssued: opts.raiseFloor !== false && issued > floor ? manifest.issued : state.lastIssued,
  };
}

/** The state after `version` fell back: it will be skipped from now on (pure). */
export function recordBadVersion(state: ChannelState, version: string): ChannelState {
  const v = semver.valid(version) ?? version;
  return state.badVersions.includes(v) ? state : { ...state, badVersions: [...state.badVersions, v] };
}
