// The node side of updates: poll the signed channel, stream the chosen root image into the
// INACTIVE slot, stage its boot files as "try 3 times" (a UKI for systemd-boot, kernel + initrd
// for U-Boot: loaders.ts), reboot under the fleet lock and inside the
// maintenance window, and after the reboot bless the slot or mark the version bad.
// Design: docs/design.md ("Updates"), channels/README.md. Everything machine-specific (paths,
// block devices, clock, fetch, reboot) is injected so the whole flow runs in unit tests
// against plain files and a local HTTP server.
//
// Files in the channel's state space (/var/lib/kiln/<space>/, state.ts channelSpace):
//   channel-state.json  serial/issued/digest + bad versions (state.ts)
//   pending.json        {version, slot, from, fromSlot, bootId}: an update staged, not yet judged
//   download.json       progress of an interrupted root download (resume with HTTP Range)
//   delta.json          how the last root arrived (delta or full) and the delta fallbacks counted
//   last-check.json     result of the last check, for `kiln upgrade --check`/status
//   last-boot.json      what afterBoot/rollback decided, for status
// and shared by all channels: /var/lib/kiln/trust.json (+ .sig), a rotated trust root (state.ts).
import { createHash, type Hash } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync, existsSync, realpathSync } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import semver from 'semver';
import { run } from '../exec.ts';
import { otherSlot, type Slot } from '../slot.ts';
import {
  chunkIndexOf, clockTrusted, pickRelease, verifyChannel, verifyRootRotation, wariness as warinessOf, parseTrustRoot, clip, MAX_MANIFEST_BYTES, MAX_ROOT_BYTES, MAX_SIG_BYTES,
  type Artifact, type Channel, type RefuseReason, type Time, type TrustRoot,
} from '../../channels/manifest.ts';
import { acceptManifest, loadState, loadTrustRoot, recordBadVersion, rootFile, saveState, saveTrustRoot, spaceDir, type ChannelState } from './state.ts';
import { FleetLockLock, type RebootLock } from './rebootlock.ts';
import { DEFAULT_TRIES, fsyncDir } from './entries.ts';
import { slotLoaderAt, type BootKind, type SlotLoader } from './loaders.ts';
import { channelFetch } from './fetch.ts';
import { MAX_INDEX_BYTES, parseIndex, localMap, planDelta, type Chunk, type ChunkIndex } from '../../channels/chunks.ts';
import { imageLength, scanHandle, scanLimit } from './delta.ts';
import { inWindow, nextWindowStart, parseWindows, type MaintenanceWindow } from './window.ts';

export const PENDING_FILE = 'pending.json';
export const PROGRESS_FILE = 'download.json';
export const LAST_CHECK_FILE = 'last-check.json';
export const LAST_BOOT_FILE = 'last-boot.json';
export const DELTA_FILE = 'delta.json';

/** Why a delta update gave way to the full download; each is counted in delta.json and shown by status(). */
export const DELTA_FALLBACKS = ['no-index', 'no-range', 'bad-chunk', 'bad-image', 'local'] as const;
export type DeltaFallback = typeof DELTA_FALLBACKS[number];
export interface DeltaRecord {
  fallbacks: Record<DeltaFallback, number>;
  last?: { at: string; version: string; mode: 'delta' | 'full'; fetched: number; local: number; total: number; fallback?: DeltaFallback; message?: string };
}
/** Chunks of the slot being overwritten that live elsewhere in it are held in memory up to this before the first write. */
export const DEFAULT_DELTA_SEED_BUFFER_BYTES = 32 << 20;

// Artifact downloads must end: a server that drips a byte a minute never trips the stall
// timeout and would hold the updater (and the reboot it gates) forever.
/** All of one apply()'s downloads (root image and boot files, every resume) must finish within this. */
export const DEFAULT_DOWNLOAD_DEADLINE_MS = 6 * 3600_000;
/** Slower than this over a whole window counts as an interruption (resumed, up to downloadAttempts). */
export const DEFAULT_MIN_RATE_BYTES_PER_S = 4096;
export const DEFAULT_RATE_WINDOW_MS = 60_000;
/** Trust root rotations followed in one check (roots/<v+1>.json, <v+2>, …). */
export const MAX_ROTATIONS_PER_CHECK = 8;

export interface UpdaterOptions {
  /** Base URL of the published tree, e.g. http://host/channels (the channel is appended). */
  channelUrl: string;
  channel: Channel;
  /** Name of this image in manifests: its update target (x86_64, arm64, arm64_rpi). */
  arch: string;
  /** Default /var/lib/kiln. */
  stateBase?: string;
  /** The baked-in trust root; null/undefined disables updates (with a status line saying why). */
  trust?: TrustRoot | null;
  /** Why there is no trust root, for the status line. */
  trustProblem?: string;
  /** VERSION_ID of the running system. */
  currentVersion: string;
  bootedSlot: Slot;
  /** When the running image was built: a floor for the clock. */
  buildTime?: Time;
  /**
   * Whether the clock is synced (NTP): the trusted-clock notion for rollout, expiry and
   * future-dated manifests (clock.ts). Absent: trusted when not below buildTime.
   */
  clockSynced?: () => boolean;
  machineId: string;
  /** Override the rollout position (canary nodes: 0). Default: wariness(machineId). */
  wariness?: number;
  devices: { slotDevice(slot: Slot): string };
  /** ESP (or the Pi's FAT boot partition) mount point, default /efi. */
  esp?: string;
  /** Who keeps the slot state; default: U-Boot when the ESP holds uboot.env/boot.scr, else systemd-boot. */
  loader?: SlotLoader;
  now?: () => Date;
  fetch?: typeof fetch;
  reboot: () => Promise<void> | void;
  /** Runs right before reboot() (drain the node). A throw postpones the reboot. */
  beforeReboot?: () => Promise<void> | void;
  fleetlock?: { base: string; group?: string; id?: string; timeoutMs?: number };
  /** The reboot lock (rebootlock.ts rebootLockFor); when absent, `fleetlock` if given. */
  rebootLock?: RebootLock;
  /** e.g. "Sat 02:00-04:00" (local time), see window.ts. */
  window?: string;
  log?: (line: string) => void;
  /** Identifies this boot (/proc/sys/kernel/random/boot_id): tells "staged, not rebooted yet" from "rebooted". */
  bootId?: string;
  /** Flushes file systems after ESP changes; default runs sync(1). */
  sync?: () => Promise<void>;
  /** Tries a freshly staged slot gets (the boot loader counts them down). Default 3. */
  tries?: number;
  /** Attempts per apply() to finish a root download, each resuming where the last stopped. */
  downloadAttempts?: number;
  /** fsync the slot and record progress every this many bytes (default 8 MiB). */
  progressEveryBytes?: number;
  /** Deadline for manifest requests and for a stalled artifact stream (default 30 s / 60 s). */
  fetchTimeoutMs?: number;
  stallTimeoutMs?: number;
  /** Overall deadline for one apply()'s downloads (default DEFAULT_DOWNLOAD_DEADLINE_MS); what arrived is kept for the next poll. */
  downloadDeadlineMs?: number;
  /** Minimum transfer rate, measured over each rateWindowMs (defaults above); 0 turns the check off. */
  minRateBytesPerSec?: number;
  rateWindowMs?: number;
  /** false: always download the whole root image (no delta from the chunk index). */
  delta?: boolean;
  /** Memory for chunks moved within the target slot (default DEFAULT_DELTA_SEED_BUFFER_BYTES); 0 fetches them instead. */
  deltaSeedBufferBytes?: number;
  /** Pause between health probes in afterBoot (default 5 s). */
  healthIntervalMs?: number;
}

export interface PendingMarker {
  version: string;
  slot: Slot;
  from: string;
  fromSlot: Slot;
  /** Boot in which it was staged; afterBoot in the same boot means "not rebooted yet". */
  bootId: string;
  stagedAt: string;
}

interface Progress { version: string; slot: Slot; device: string; url: string; size: number; sha256: string; written: number }

export type CheckResult =
  | { action: 'install'; version: string; from: string; slot: Slot; serial: number; throttle: number; root: Artifact; rootUrl: string; chunks?: Artifact; chunksUrl?: string; boot: BootFile[]; message: string; skipped: { version: string; why: string }[] }
  | { action: 'none'; reason: 'up-to-date' | 'throttled' | 'clock-not-synced' | 'none-eligible' | 'no-release-for-arch' | 'bad-current' | 'no-boot-files'; serial: number; message: string; skipped: { version: string; why: string }[] }
  | { action: 'refused'; reason: RefuseReason | 'fetch' | 'state'; message: string }
  | { action: 'disabled'; message: string };

/** A boot file of the release (UKI, or kernel and initrd) and where to fetch it. */
export interface BootFile { kind: BootKind; artifact: Artifact; url: string }

export interface RebootResult { rebooted: boolean; waiting?: 'window' | 'lock' | 'drain' | 'nothing-staged'; message: string }

export type ApplyResult =
  | { ok: true; version: string; slot: Slot; reboot: RebootResult; message: string }
  | { ok: false; stage: 'check' | 'busy' | 'pending' | 'safety' | 'download' | 'verify' | 'stage'; message: string; check?: CheckResult };

export type AfterBootResult =
  | { outcome: 'none' | 'not-rebooted'; message: string }
  | { outcome: 'blessed'; version: string; slot: Slot; message: string }
  | { outcome: 'failed'; version: string; slot: Slot; message: string }
  | { outcome: 'fell-back'; version: string; slot: Slot; message: string };

export type RollbackResult =
  | { ok: true; to: Slot; from: Slot; demoted: string[]; reboot?: RebootResult; message: string }
  | { ok: false; message: string };

/** An artifact whose bytes are not what the signed manifest says: never resumed, never retried as is. */
class IntegrityError extends Error { override name = 'IntegrityError'; }
/** The download deadline passed: keep what arrived, stop trying until the next poll. */
class DeadlineError extends Error { override name = 'DeadlineError'; }
/** The server answered, but not with the file (a status other than 200, or too large). */
class HttpError extends Error { override name = 'HttpError'; }
/** The delta path cannot finish: the full download takes over (counted by reason). */
class FallbackError extends Error {
  override name = 'FallbackError';
  constructor(readonly reason: DeltaFallback, message: string) { super(message); }
}

const errText = (e: unknown) => (e as Error)?.message ?? String(e);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function readJson<T>(path: string): T | undefined {
  try { return JSON.parse(readFileSync(path, 'utf8')) as T; } catch { return undefined; }
}

/** temp + fsync + rename + fsync(dir): a crash leaves the old or the new file, never half. */
function writeJsonAtomic(path: string, value: unknown): void {
  const dir = join(path, '..');
  mkdirSync(dir, { recursive: true });
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w', 0o600);
  try { writeSync(fd, JSON.stringify(value, null, 2) + '\n'); fsyncSync(fd); } finally { closeSync(fd); }
  renameSync(tmp, path);
  fsyncDir(dir);
}

/** The id FleetLock sees: stable per machine, but not the raw machine-id (which is a secret-ish identifier). */
export function fleetLockId(machineId: string): string {
  return createHash('sha256').update(`kiln/fleetlock/1:${machineId.trim().toLowerCase()}`).digest('hex').slice(0, 32);
}

export class Updater {
  o: UpdaterOptions;
  private space: string;
  private readonly esp: string;
  private readonly loader: SlotLoader;
  private readonly windows: MaintenanceWindow[] | undefined;
  private readonly bootId: string;
  private readonly log: (line: string) => void;
  private busy = false;
  /** performance.now() by which this apply()'s downloads must be done. */
  private downloadDeadline = Infinity;
  /** The trust root in use and what became of the last rotation attempt, for status. */
  private rootNote: string | undefined;
  private last: { at: string; result: CheckResult } | undefined;
  /** A channel chosen while an update was running: switched to once it is done. */
  private nextChannel: Channel | undefined;
  /** A release of the reboot lock failed: retried at the next poll. */
  private releaseOwed = false;

  constructor(opts: UpdaterOptions) {
    this.o = opts;
    this.space = spaceDir(opts.stateBase ?? '/var/lib/kiln', opts.channel);
    this.esp = opts.esp ?? '/efi';
    this.loader = opts.loader ?? slotLoaderAt(this.esp);
    // A bad window must fail at start-up, not silently allow reboots at any hour.
    this.windows = opts.window ? parseWindows(opts.window) : undefined;
    this.bootId = opts.bootId ?? readBootId();
    this.log = opts.log ?? ((l) => { try { process.stdout.write(`kiln: ${l}\n`); } catch { /* console gone */ } });
    if (opts.bootedSlot !== 'a' && opts.bootedSlot !== 'b') throw new Error(`booted slot '${opts.bootedSlot as string}' is not a or b`);
    this.last = readJson(join(this.space, LAST_CHECK_FILE));
  }

  private now(): Date { return this.o.now ? this.o.now() : new Date(); }
  private get fetchFn(): typeof fetch { return this.o.fetch ?? channelFetch; }
  private file(name: string) { return join(this.space, name); }
  private manifestUrl(): string { return `${this.o.channelUrl.replace(/\/+$/, '')}/${this.o.channel}/manifest.json`; }
  private async syncFs() { if (this.o.sync) await this.o.sync(); else await run('sync', [], { timeoutMs: 60_000 }); }

  readPending(): PendingMarker | undefined { return readJson<PendingMarker>(this.file(PENDING_FILE)); }
  private clearPending() { rmSync(this.file(PENDING_FILE), { force: true }); }

  // -------------------------------------------------------------------------------------------
  // check

  /**
   * A small file (manifest, signatures, trust root) of at most `max` bytes. Read as a stream and
   * dropped the moment it grows past the limit: the server is not trusted yet, and buffering
   * whatever it sends would let it exhaust PID 1's memory.
   */
  private async fetchBytes(url: string, max: number): Promise<Buffer>;
  private async fetchBytes(url: string, max: number, opts: { optional: true }): Promise<Buffer | undefined>;
  private async fetchBytes(url: string, max: number, opts: { optional?: boolean } = {}): Promise<Buffer | undefined> {
    const res = await this.fetchFn(url, { signal: AbortSignal.timeout(this.o.fetchTimeoutMs ?? 30_000), redirect: 'follow' });
    const drop = () => { res.body?.cancel().catch(() => undefined); };
    if (opts.optional && res.status === 404) { drop(); return undefined; }
    if (res.status !== 200) { drop(); throw new HttpError(`GET ${url}: HTTP ${res.status}`); }
    const tooBig = (n: number | string) => new HttpError(`GET ${url}: ${n} bytes, more than the ${max} allowed`);
    const declared = Number(res.headers.get('content-length') ?? NaN);
    if (declared > max) { drop(); throw tooBig(declared); }
    if (!res.body) return Buffer.alloc(0);
    const chunks: Uint8Array[] = [];
    let total = 0;
    const reader = res.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.length;
        if (total > max) throw tooBig(`over ${max}`);
        chunks.push(value);
      }
    } catch (e) {
      reader.cancel().catch(() => undefined);
      throw e;
    }
    return Buffer.concat(chunks, total);
  }

  /**
   * Fetches and verifies the channel's manifest and picks a release, as `kiln upgrade --check`
   * shows it. Channel state (serial, issued floor) is saved only after verifyChannel and
   * pickRelease both ran on a manifest that passed every check.
   */
  async check(): Promise<CheckResult> {
    const result = await this.checkInner();
    this.last = { at: this.now().toISOString(), result };
    try { writeJsonAtomic(this.file(LAST_CHECK_FILE), this.last); } catch { /* status only */ }
    return result;
  }

  private async checkInner(): Promise<CheckResult> {
    const o = this.o;
    if (!o.trust) return { action: 'disabled', message: `updates disabled: ${o.trustProblem ?? 'no trust root in this image (/usr/lib/kiln/trust.json)'}` };
    let state: ChannelState;
    try { state = loadState(o.stateBase ?? '/var/lib/kiln', o.channel); } catch (e) {
      return { action: 'refused', reason: 'state', message: `cannot read channel state: ${errText(e)}` };
    }
    const trust = await this.trustRoot(o.trust);
    const url = this.manifestUrl();
    let manifestBytes: Buffer, sigBytes: Buffer;
    try {
      [manifestBytes, sigBytes] = await Promise.all([this.fetchBytes(url, MAX_MANIFEST_BYTES), this.fetchBytes(`${url}.sig`, MAX_SIG_BYTES)]);
    } catch (e) {
      return { action: 'refused', reason: 'fetch', message: `cannot fetch the ${o.channel} manifest: ${clip(errText(e))}` };
    }
    const now = this.now();
    const synced = o.clockSynced ? o.clockSynced() : clockTrusted(now, o.buildTime);
    const v = verifyChannel({ manifestBytes, sigBytes, trust, channel: o.channel, state, now, buildTime: o.buildTime, clockTrusted: synced });
    if (!v.ok) {
      const message = clip(v.message, 1000);
      this.log(`update check refused the ${o.channel} manifest (${v.reason}): ${message}`);
      return { action: 'refused', reason: v.reason, message };
    }
    // Every check passed: remember the serial/issued floor (skipped when nothing changed, so a
    // poll of an unchanged manifest does not rewrite the file).
    const next = acceptManifest(state, v.manifest, v.digest, { raiseFloor: v.raiseFloor });
    // An unsynced clock is only a floor of the true time. A rollout only grows with time, so
    // what the floor lets through, the true time does too; what it holds back cannot be judged.
    const when = synced ? now : new Date(Math.max(now.getTime(), o.buildTime === undefined ? 0 : new Date(o.buildTime).getTime(), next.lastIssued ? Date.parse(next.lastIssued) || 0 : 0));
    const pick = pickRelease(v.manifest, {
      current: o.currentVersion, arch: o.arch, now: when,
      wariness: o.wariness ?? warinessOf(o.machineId), badVersions: state.badVersions,
    });
    if (next.lastSerial !== state.lastSerial || next.lastDigest !== state.lastDigest || next.lastIssued !== state.lastIssued) {
      try { saveState(o.stateBase ?? '/var/lib/kiln', next); } catch (e) {
        return { action: 'refused', reason: 'state', message: `cannot save channel state: ${errText(e)}` };
      }
    }
    const serial = v.manifest.serial;
    if (!pick.ok && pick.reason === 'throttled' && !synced) {
      return { action: 'none', reason: 'clock-not-synced', serial, skipped: pick.skipped, message: `clock not synced: the rollout cannot be judged until NTP sets the clock (clock floor ${when.toISOString()})` };
    }
    if (!pick.ok) return { action: 'none', reason: pick.reason, serial, message: pick.message, skipped: pick.skipped };
    const { root } = pick.artifacts;
    const missing = this.loader.kinds.filter((k) => !pick.artifacts[k]);
    if (missing.length) {
      return { action: 'none', reason: 'no-boot-files', serial, skipped: [], message: `${pick.release.version} for ${o.arch} has no ${missing.join(' or ')}; this node boots with ${this.loader.name} and needs ${this.loader.kinds.join(' + ')}` };
    }
    const version = semver.valid(pick.release.version)!;
    const slot = otherSlot(o.bootedSlot);
    const boot = this.loader.kinds.map((kind) => ({ kind, artifact: pick.artifacts[kind]!, url: new URL(pick.artifacts[kind]!.url, url).href }));
    const chunks = chunkIndexOf(pick.release, o.arch);
    return {
      action: 'install', version, from: o.currentVersion, slot, serial, throttle: pick.throttle, root, boot,
      rootUrl: new URL(root.url, url).href, chunks, chunksUrl: chunks ? new URL(chunks.url, url).href : undefined, skipped: [],
      message: `${o.currentVersion} -> ${version} into slot ${slot} (${o.channel} serial ${serial}, rollout ${(pick.throttle * 100).toFixed(0)}%)`,
    };
  }

  /**
   * The trust root to verify manifests with. Starts from the image's (or the rotated one stored
   * on the data partition), then follows published rotations: <tree>/roots/<version+1>.json with
   * its .sig, accepted only as verifyRootRotation allows (a threshold of the current keys and of
   * its own, a higher version) and stored before it is used. No such file (404) means no
   * rotation. A rotation that does not verify is reported and the current root kept.
   */
  private async trustRoot(baked: TrustRoot): Promise<TrustRoot> {
    const base = this.o.stateBase ?? '/var/lib/kiln';
    const eff = loadTrustRoot(base, baked);
    if (eff.problem) this.log(`update: ${eff.problem}`);
    let root = eff.root;
    let note = eff.problem ?? (eff.rotated ? `version ${root.version} (rotated, ${rootFile(base)})` : undefined);
    const tree = this.o.channelUrl.replace(/\/+$/, '');
    for (let i = 0; i < MAX_ROTATIONS_PER_CHECK; i++) {
      const next = (root.version ?? 1) + 1;
      const url = `${tree}/roots/${next}.json`;
      let bytes: Buffer | undefined, sig: Buffer;
      try {
        bytes = await this.fetchBytes(url, MAX_ROOT_BYTES, { optional: true });
        if (!bytes) break;
        sig = await this.fetchBytes(`${url}.sig`, MAX_SIG_BYTES);
      } catch (e) {
        // Not logged: the manifest fetch that follows reports an unreachable server.
        note = `version ${root.version}; cannot fetch the rotation to version ${next}: ${clip(errText(e))}`;
        break;
      }
      const r = verifyRootRotation(root, bytes, sig);
      const problem = !r.ok ? `${r.reason}: ${clip(r.message)}`
        : r.root.version !== next ? `${url} holds version ${r.root.version}, not ${next}` : undefined;
      if (problem || !r.ok) {
        note = `version ${root.version}; rotation to version ${next} refused (${problem})`;
        this.log(`update: trust root ${note}`);
        break;
      }
      try { saveTrustRoot(base, bytes, sig); } catch (e) {
        // Not stored, not used: a root the node would forget at the next boot must not sign its updates.
        note = `version ${root.version}; rotation to version ${next} verified but not stored: ${errText(e)}`;
        this.log(`update: trust root ${note}`);
        break;
      }
      root = r.root;
      note = `version ${next} (rotated, ${rootFile(base)})`;
      this.log(`update: trust root rotated to version ${next} (keys ${root.keys.map((k) => k.keyid.slice(0, 16)).join(', ')}, threshold ${root.threshold}); stored in ${rootFile(base)}`);
    }
    this.rootNote = note;
    return root;
  }

  // -------------------------------------------------------------------------------------------
  // apply

  /**
   * check(), then stream the release into the inactive slot, stage its boot files with tries, write
   * the pending marker, and reboot when the window and the fleet lock allow. An update staged
   * earlier in this boot (reboot postponed) goes straight to the reboot step.
   */
  async apply(): Promise<ApplyResult> {
    if (this.busy) return { ok: false, stage: 'busy', message: 'an update is already running' };
    this.busy = true;
    try { return await this.applyInner(); } finally { this.idle(); }
  }

  /** The end of apply() or rollback(): a channel switch asked for meanwhile happens now. */
  private idle() {
    this.busy = false;
    if (this.nextChannel) { const ch = this.nextChannel; this.nextChannel = undefined; this.setChannel(ch); }
  }

  /**
   * Follows another channel from now on (`kiln channel set`): the next check reads its manifest
   * and its state space. An update staged but not yet judged moves along with its marker, so
   * the post-boot check still finds it; a half-done download of the old channel's release is
   * dropped. While an update runs the switch waits for it to end.
   */
  setChannel(channel: Channel): string {
    const base = this.o.stateBase ?? '/var/lib/kiln';
    const to = spaceDir(base, channel); // throws on an unknown channel
    if (this.busy) { this.nextChannel = channel; return `updates follow ${channel} once the running update is done`; }
    if (channel === this.o.channel) return `updates already follow ${channel}`;
    const from = this.space;
    if (to !== from) {
      const p = readJson<PendingMarker>(join(from, PENDING_FILE));
      if (p) { writeJsonAtomic(join(to, PENDING_FILE), p); rmSync(join(from, PENDING_FILE), { force: true }); }
      rmSync(join(from, PROGRESS_FILE), { force: true });
    }
    const was = this.o.channel;
    this.o = { ...this.o, channel };
    this.space = to;
    this.last = readJson(join(to, LAST_CHECK_FILE));
    const message = `updates now follow ${channel} (was ${was})`;
    this.log(`update: ${message}`);
    return message;
  }

  private async applyInner(): Promise<ApplyResult> {
    const staged = this.readPending();
    if (staged && staged.bootId === this.bootId) {
      return { ok: true, version: staged.version, slot: staged.slot, reboot: await this.rebootIfAllowed(), message: `${staged.version} already staged in slot ${staged.slot}` };
    }
    // Staged in an earlier boot and not judged yet: afterBoot must decide first, or a poll
    // could overwrite the slot we may be running from (or lose the fallback record).
    if (staged) return { ok: false, stage: 'pending', message: `${staged.version} in slot ${staged.slot} waits for its post-boot check` };
    const c = await this.check();
    if (c.action !== 'install') return { ok: false, stage: 'check', message: c.message, check: c };

    const target = c.slot;
    try { this.assertNotBooted(target); } catch (e) { return { ok: false, stage: 'safety', message: errText(e), check: c }; }

    // The target stops being bootable first: while its root is half-written it must not be picked.
    try {
      const gone = await this.loader.disable(target);
      if (gone.length) { await this.syncFs(); this.log(`update: slot ${target} made unbootable: ${gone.join(', ')}`); }
    } catch (e) { return { ok: false, stage: 'stage', message: `cannot make slot ${target} unbootable: ${errText(e)}`, check: c }; }

    this.log(`update: writing ${c.version} (${c.root.size} bytes) into slot ${target}`);
    this.downloadDeadline = performance.now() + (this.o.downloadDeadlineMs ?? DEFAULT_DOWNLOAD_DEADLINE_MS);
    try { await this.writeRoot(c, target); } catch (e) {
      const integrity = e instanceof IntegrityError;
      this.log(`update: ${integrity ? 'refused' : 'download failed'}: ${clip(errText(e), 1000)}`);
      return { ok: false, stage: integrity ? 'verify' : 'download', message: errText(e), check: c };
    }
    this.log(`update: staging the boot files of ${c.version} for slot ${target}`);
    try { await this.stageBoot(c, target); } catch (e) {
      const integrity = e instanceof IntegrityError;
      this.log(`update: ${integrity ? 'refused boot files' : 'staging boot files failed'}: ${errText(e)}`);
      return { ok: false, stage: integrity ? 'verify' : 'stage', message: errText(e), check: c };
    }
    const pending: PendingMarker = { version: c.version, slot: target, from: this.o.currentVersion, fromSlot: this.o.bootedSlot, bootId: this.bootId, stagedAt: this.now().toISOString() };
    writeJsonAtomic(this.file(PENDING_FILE), pending);
    rmSync(this.file(PROGRESS_FILE), { force: true });
    this.log(`update: ${c.version} staged in slot ${target} (${this.o.tries ?? DEFAULT_TRIES} tries); rebooting when allowed`);
    return { ok: true, version: c.version, slot: target, reboot: await this.rebootIfAllowed(), message: `staged ${c.version} in slot ${target}` };
  }

  /** Refuses to touch the running root: wrong slot, or both slots naming the same device. */
  private assertNotBooted(target: Slot): void {
    const booted = this.o.bootedSlot;
    if (target === booted) throw new Error(`refusing to write slot ${target}: it is the booted slot`);
    const t = this.o.devices.slotDevice(target), b = this.o.devices.slotDevice(booted);
    const real = (p: string) => { try { return realpathSync(p); } catch { return p; } };
    if (real(t) === real(b)) throw new Error(`refusing to write ${t}: it is the booted slot's device too`);
  }

  private saveProgress(p: Progress) { writeJsonAtomic(this.file(PROGRESS_FILE), p); }

  /** Streams the root image into the slot device while hashing, resuming a recorded partial download. */
  private async writeRoot(c: Extract<CheckResult, { action: 'install' }>, target: Slot): Promise<void> {
    const device = this.o.devices.slotDevice(target);
    const want = c.root;
    const fh = await open(device, 'r+'); // r+: a partition cannot be created or truncated
    try {
      const st = { offset: 0, hash: createHash('sha256') };
      const prev = readJson<Progress>(this.file(PROGRESS_FILE));
      const resumable = prev && prev.version === c.version && prev.slot === target && prev.device === device && prev.sha256 === want.sha256
        && prev.size === want.size && Number.isSafeInteger(prev.written) && prev.written > 0 && prev.written <= want.size;
      // A full download already under way (a delta fell back earlier) goes on as one.
      if (!resumable && this.o.delta !== false) {
        try {
          const r = await this.writeRootDelta(c, target, fh);
          this.recordDelta({ version: c.version, mode: 'delta', ...r });
          return;
        } catch (e) {
          if (!(e instanceof FallbackError)) throw e;
          this.recordDelta({ version: c.version, mode: 'full', fetched: 0, local: 0, total: want.size, fallback: e.reason, message: clip(e.message, 300) });
          this.log(`update: delta of ${c.version} falls back to the full download (${e.reason}): ${clip(e.message, 500)}`);
        }
      }
      if (resumable) {
        // The hash state is not persisted: re-read what is already on the device. Anything wrong
        // in that prefix shows up as a sha256 mismatch at the end, never as a bad slot.
        await hashPrefix(fh, prev.written, st.hash);
        st.offset = prev.written;
        this.log(`update: resuming ${c.version} at byte ${st.offset} of ${want.size}`);
      }
      const progress = (written: number): Progress => ({ version: c.version, slot: target, device, url: c.rootUrl, size: want.size, sha256: want.sha256, written });
      const attempts = Math.max(1, this.o.downloadAttempts ?? 3);
      for (let i = 1; st.offset < want.size; i++) {
        try {
          await this.streamInto(fh, c.rootUrl, want.size, st, (n) => this.saveProgress(progress(n)));
        } catch (e) {
          if (e instanceof IntegrityError) { rmSync(this.file(PROGRESS_FILE), { force: true }); throw e; }
          // Keep what arrived: durable bytes first, then the record that claims them.
          await fh.sync();
          if (st.offset > 0) this.saveProgress(progress(st.offset));
          if (i >= attempts || e instanceof DeadlineError) throw new Error(`${c.rootUrl}: ${errText(e)} (${st.offset} of ${want.size} bytes kept; the next attempt resumes)`);
          this.log(`update: download interrupted at byte ${st.offset} (${errText(e)}); resuming`);
        }
      }
      await fh.sync();
      const got = st.hash.digest('hex');
      if (st.offset !== want.size || got !== want.sha256) {
        rmSync(this.file(PROGRESS_FILE), { force: true });
        throw new IntegrityError(`root image for ${c.version}: ${st.offset} bytes with sha256 ${got}, but the signed manifest says ${want.size} bytes with sha256 ${want.sha256}`);
      }
      this.recordDelta({ version: c.version, mode: 'full', fetched: want.size, local: 0, total: want.size });
    } finally {
      await fh.close();
    }
  }

  private readDelta(): DeltaRecord {
    const r = readJson<DeltaRecord>(this.file(DELTA_FILE));
    const fallbacks = Object.fromEntries(DELTA_FALLBACKS.map((k) => [k, Number.isSafeInteger(r?.fallbacks?.[k]) ? r!.fallbacks[k] : 0])) as Record<DeltaFallback, number>;
    return { fallbacks, last: r?.last };
  }

  /** Records how a root arrived; a fallback adds one to its counter (the full download that follows keeps it). */
  private recordDelta(last: Omit<NonNullable<DeltaRecord['last']>, 'at'>) {
    try {
      const d = this.readDelta();
      if (last.fallback) d.fallbacks[last.fallback]++;
      else if (d.last?.version === last.version && d.last.fallback && last.mode === 'full') { last = { ...last, fallback: d.last.fallback, message: d.last.message }; }
      d.last = { at: this.now().toISOString(), ...last };
      writeJsonAtomic(this.file(DELTA_FILE), d);
    } catch { /* status only */ }
  }

  /**
   * The delta path (channels/README.md, "Delta updates"): fetch and check the chunk index the
   * signed manifest lists, cut the booted slot and the target slot with its parameters, keep the
   * chunks already in place in the target, copy the ones found locally, and fetch the rest by
   * Range requests against the full image, each range verified chunk by chunk before it is
   * written. Then the whole image must hash as the manifest says. A FallbackError hands over to
   * the full download; any other error (network, deadline) keeps what was written, and the next
   * attempt finds those chunks in place.
   */
  private async writeRootDelta(c: Extract<CheckResult, { action: 'install' }>, target: Slot, fh: FileHandle): Promise<{ fetched: number; local: number; total: number }> {
    const want = c.root;
    if (!c.chunks || !c.chunksUrl) throw new FallbackError('no-index', `${c.version} lists no chunk index for ${this.o.arch}`);
    let bytes: Buffer;
    try { bytes = await this.fetchBytes(c.chunksUrl, Math.min(c.chunks.size, MAX_INDEX_BYTES)); } catch (e) {
      if (e instanceof HttpError) throw new FallbackError('no-index', clip(errText(e)));
      throw e;
    }
    const got = createHash('sha256').update(bytes).digest('hex');
    if (bytes.length !== c.chunks.size || got !== c.chunks.sha256) throw new FallbackError('no-index', `${c.chunksUrl}: ${bytes.length} bytes with sha256 ${got}, but the signed manifest says ${c.chunks.size} bytes with sha256 ${c.chunks.sha256}`);
    let index: ChunkIndex;
    try { index = parseIndex(bytes, want); } catch (e) { throw new FallbackError('no-index', `${c.chunksUrl}: ${errText(e)}`); }

    // What this node already has: the running root, and whatever the target slot holds (an
    // older release, or part of this one from an interrupted attempt).
    // Each slot is read as far as the squashfs (and verity tree) it holds reaches, the target at
    // least as far as the new image (its chunks in place); anything else up to scanLimit.
    const booted = this.o.devices.slotDevice(this.o.bootedSlot);
    const limit = scanLimit(want.size);
    let here: Awaited<ReturnType<typeof scanHandle>>, there: Awaited<ReturnType<typeof scanHandle>>;
    try {
      here = await scanHandle(fh, Math.min(limit, Math.max(want.size, (await imageLength(fh)) ?? 0)), index, index);
      const src = await open(booted, 'r');
      try { there = await scanHandle(src, Math.min(limit, (await imageLength(src)) ?? limit), index); } finally { await src.close(); }
    } catch (e) { throw new FallbackError('local', `cannot read the slots: ${errText(e)}`); }
    const needed = new Set(index.chunks.filter((_, i) => !here.inPlace![i]).map((ch) => ch.sha256));
    const fromBooted = localMap([{ source: 'booted', chunks: there.chunks }]);
    // Chunks that moved within the target slot are read into memory before anything is written
    // over them; past the budget they are fetched instead.
    const budget = this.o.deltaSeedBufferBytes ?? DEFAULT_DELTA_SEED_BUFFER_BYTES;
    const held = new Map<string, Buffer>();
    let heldBytes = 0;
    for (const ch of here.chunks) {
      if (!needed.has(ch.sha256) || fromBooted.has(ch.sha256) || held.has(ch.sha256) || heldBytes + ch.length > budget) continue;
      const buf = Buffer.alloc(ch.length);
      await readExactly(fh, buf, ch.offset);
      if (createHash('sha256').update(buf).digest('hex') !== ch.sha256) continue;
      held.set(ch.sha256, buf); heldBytes += ch.length;
    }
    const heldChunks: Chunk[] = here.chunks.filter((ch) => held.has(ch.sha256));
    const plan = planDelta(index, localMap([{ source: 'booted', chunks: there.chunks }, { source: 'target', chunks: heldChunks }]), here.inPlace);
    const pct = (n: number) => `${((100 * n) / Math.max(1, want.size)).toFixed(1)}%`;
    this.log(`update: delta for ${c.version}: ${plan.localBytes} bytes local (${plan.inPlace.length} chunks already in place, ${plan.copies.length} copied), fetching ${plan.fetchBytes} of ${want.size} bytes (${pct(plan.fetchBytes)}) in ${plan.ranges.length} range(s)`);

    const every = this.o.progressEveryBytes ?? 8 << 20;
    let since = 0;
    const wrote = async (n: number) => { since += n; if (since >= every) { since = 0; await fh.sync(); } };
    if (plan.copies.length) {
      const src = await open(booted, 'r');
      try {
        for (const cp of plan.copies) {
          let buf = cp.source === 'target' ? held.get(cp.sha256) : undefined;
          if (!buf) { buf = Buffer.alloc(cp.length); await readExactly(src, buf, cp.from); }
          if (createHash('sha256').update(buf).digest('hex') !== cp.sha256) throw new FallbackError('local', `slot ${this.o.bootedSlot} changed while it was read (chunk at ${cp.from})`);
          await fh.write(buf, 0, buf.length, cp.to);
          await wrote(buf.length);
        }
      } finally { await src.close(); }
    }
    held.clear();

    let fetched = 0;
    const attempts = Math.max(1, this.o.downloadAttempts ?? 3);
    for (const range of plan.ranges) {
      let left = range.chunks.map((i) => index.chunks[i]!);
      for (let i = 1; left.length; i++) {
        try {
          await this.fetchChunks(c.rootUrl, want.size, left, fh, async (ch) => { left = left.filter((x) => x !== ch); await wrote(ch.length); }, (n) => { fetched += n; });
        } catch (e) {
          if (e instanceof FallbackError) throw e;
          await fh.sync();
          const missing = left.reduce((s, ch) => s + ch.length, 0);
          if (i >= attempts || e instanceof DeadlineError) throw new Error(`${c.rootUrl}: ${errText(e)} (delta: ${missing} bytes of this range still missing; the chunks written are kept and the next attempt resumes)`);
          this.log(`update: delta range interrupted (${errText(e)}); resuming`);
        }
      }
      // A delta is a few requests: make each one's chunks durable, so a power cut loses little.
      await fh.sync();
    }
    await fh.sync();
    const h = createHash('sha256');
    await hashPrefix(fh, want.size, h);
    const sum = h.digest('hex');
    if (sum !== want.sha256) throw new FallbackError('bad-image', `the assembled image hashes to ${sum}, the signed manifest says ${want.sha256}`);
    this.log(`update: ${c.version} assembled from ${plan.localBytes} local bytes and ${fetched} fetched (${pct(fetched)} of the image)`);
    return { fetched, local: plan.localBytes, total: want.size };
  }

  /**
   * One Range request for `chunks` (adjacent, in order): each chunk is checked against its
   * sha256 before it is written. A server that answers with the whole file (200) or another
   * range does not support what a delta needs, and a chunk that does not hash is refused:
   * both hand over to the full download.
   */
  private async fetchChunks(url: string, size: number, chunks: Chunk[], fh: FileHandle, done: (c: Chunk) => Promise<void>, received: (n: number) => void): Promise<void> {
    const first = chunks[0]!, last = chunks[chunks.length - 1]!;
    const start = first.offset, end = last.offset + last.length; // [start, end)
    const g = this.transferGuard();
    try {
      const res = await this.fetchFn(url, { headers: { range: `bytes=${start}-${end - 1}` }, signal: g.signal, redirect: 'follow' });
      if (res.status === 200) {
        res.body?.cancel().catch(() => undefined);
        throw new FallbackError('no-range', `${new URL(url).host} answered a Range request with the whole file (HTTP 200)`);
      }
      if (res.status !== 206) { res.body?.cancel().catch(() => undefined); throw new Error(`GET ${url} (Range ${start}-${end - 1}): HTTP ${res.status}`); }
      const cr = res.headers.get('content-range') ?? '';
      if (cr !== `bytes ${start}-${end - 1}/${size}`) {
        res.body?.cancel().catch(() => undefined);
        throw new FallbackError('no-range', `asked for bytes ${start}-${end - 1}, the server answered Content-Range '${clip(cr, 100)}'`);
      }
      if (!res.body) throw new Error(`GET ${url}: empty body`);
      let k = 0, buf = Buffer.alloc(first.length), fill = 0;
      for await (const piece of res.body as unknown as AsyncIterable<Uint8Array>) {
        g.poke(piece.length);
        received(piece.length);
        let pos = 0;
        while (pos < piece.length) {
          if (k >= chunks.length) throw new FallbackError('no-range', `the server sent more than the ${end - start} bytes asked for`);
          const take = Math.min(buf.length - fill, piece.length - pos);
          buf.set(piece.subarray(pos, pos + take), fill);
          fill += take; pos += take;
          if (fill === buf.length) {
            const ch = chunks[k]!;
            const sum = createHash('sha256').update(buf).digest('hex');
            if (sum !== ch.sha256) throw new FallbackError('bad-chunk', `chunk at byte ${ch.offset} (${ch.length} bytes) hashes to ${sum}, the index says ${ch.sha256}`);
            await fh.write(buf, 0, buf.length, ch.offset);
            await done(ch);
            k++; fill = 0;
            if (k < chunks.length) buf = Buffer.alloc(chunks[k]!.length);
          }
        }
      }
      if (k < chunks.length) throw new Error(`connection ended with ${chunks.length - k} chunk(s) of the range missing`);
    } catch (e) {
      if (g.signal.aborted && !(e instanceof FallbackError)) throw g.signal.reason;
      throw e;
    } finally { g.stop(); }
  }

  /** The stall timeout, the download deadline and the minimum rate of one transfer, as an abort signal. */
  private transferGuard(): { signal: AbortSignal; poke(n: number): void; stop(): void } {
    const ctrl = new AbortController();
    const stallMs = this.o.stallTimeoutMs ?? 60_000;
    const stall = () => ctrl.abort(new Error(`no data for ${stallMs} ms`));
    let timer = setTimeout(stall, stallMs);
    const budget = this.o.downloadDeadlineMs ?? DEFAULT_DOWNLOAD_DEADLINE_MS;
    const left = this.downloadDeadline - performance.now();
    const overdue = () => new DeadlineError(`download deadline of ${Math.round(budget / 1000)} s passed`);
    if (left <= 0) throw overdue();
    const deadlineTimer = setTimeout(() => ctrl.abort(overdue()), Math.min(left, 2 ** 31 - 1));
    const minRate = this.o.minRateBytesPerSec ?? DEFAULT_MIN_RATE_BYTES_PER_S;
    const windowMs = this.o.rateWindowMs ?? DEFAULT_RATE_WINDOW_MS;
    let inWindow = 0;
    const rateTimer = minRate > 0 ? setInterval(() => {
      if (inWindow < minRate * windowMs / 1000) ctrl.abort(new Error(`slower than ${minRate} bytes/s (${inWindow} bytes in the last ${Math.round(windowMs / 1000)} s)`));
      inWindow = 0;
    }, windowMs) : undefined;
    return {
      signal: ctrl.signal,
      poke: (n) => { inWindow += n; clearTimeout(timer); timer = setTimeout(stall, stallMs); },
      stop: () => { clearTimeout(timer); clearTimeout(deadlineTimer); clearInterval(rateTimer); },
    };
  }

  /**
   * One HTTP request from st.offset (Range when resuming). Writes each chunk at its offset
   * before hashing it, so st always describes bytes that are really on the device.
   */
  private async streamInto(fh: FileHandle, url: string, size: number, st: { offset: number; hash: Hash }, onProgress: (written: number) => void): Promise<void> {
    // The stall timeout, the deadline and the minimum rate: a trickle keeps poking the stall
    // timer, the other two do not care.
    const g = this.transferGuard();
    const ctrl = { signal: g.signal };
    try {
      const headers: Record<string, string> = st.offset > 0 ? { range: `bytes=${st.offset}-` } : {};
      const res = await this.fetchFn(url, { headers, signal: ctrl.signal, redirect: 'follow' });
      if (st.offset > 0 && res.status === 200) {
        // The server ignored Range: take the whole file again from the start.
        this.log(`update: ${new URL(url).host} does not support resuming; starting over`);
        st.offset = 0; st.hash = createHash('sha256');
      } else if (st.offset > 0 && res.status === 206) {
        const cr = /^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '');
        if (!cr || Number(cr[1]) !== st.offset) throw new Error(`server answered Range ${st.offset}- with Content-Range '${clip(res.headers.get('content-range') ?? '', 100)}'`);
      } else if (res.status !== 200) {
        throw new Error(`GET ${url}: HTTP ${res.status}`);
      }
      if (!res.body) throw new Error(`GET ${url}: empty body`);
      const every = this.o.progressEveryBytes ?? 8 << 20;
      let since = 0;
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        g.poke(chunk.length);
        if (st.offset + chunk.length > size) throw new IntegrityError(`${url} sends more than the ${size} bytes the signed manifest says`);
        await fh.write(chunk, 0, chunk.length, st.offset);
        st.hash.update(chunk);
        st.offset += chunk.length;
        since += chunk.length;
        if (since >= every) { since = 0; await fh.sync(); onProgress(st.offset); }
      }
      if (st.offset < size) throw new Error(`connection ended after ${st.offset} of ${size} bytes`);
    } catch (e) {
      // An abort surfaces as whatever the body stream makes of it; report why we aborted.
      if (ctrl.signal.aborted && !(e instanceof IntegrityError)) throw ctrl.signal.reason;
      throw e;
    } finally {
      g.stop();
    }
  }

  /**
   * Boot files -> next to their place on the ESP/boot partition: temp file, fsync, verify.
   * Only when all are good does the loader rename them in and make the slot bootable.
   */
  private async stageBoot(c: Extract<CheckResult, { action: 'install' }>, target: Slot): Promise<void> {
    const temps: string[] = [];
    try {
      for (const b of c.boot) {
        const tmp = await this.loader.tempPath(target, b.kind);
        temps.push(tmp);
        const fh = await open(tmp, 'w');
        const st = { offset: 0, hash: createHash('sha256') };
        try {
          await this.streamInto(fh, b.url, b.artifact.size, st, () => { /* small: no resume */ });
          await fh.sync();
        } finally { await fh.close(); }
        const got = st.hash.digest('hex');
        if (st.offset !== b.artifact.size || got !== b.artifact.sha256) {
          throw new IntegrityError(`${b.kind} for ${c.version}: ${st.offset} bytes with sha256 ${got}, but the signed manifest says ${b.artifact.size} bytes with sha256 ${b.artifact.sha256}`);
        }
      }
      await this.loader.stage(target, this.o.tries ?? DEFAULT_TRIES);
    } catch (e) {
      for (const t of temps) await rm(t, { force: true });
      throw e;
    }
    await this.syncFs();
  }

  // -------------------------------------------------------------------------------------------
  // reboot

  /** Reboots into the staged update if the maintenance window is open and the fleet lock is ours. */
  async rebootIfAllowed(opts: { ignoreWindow?: boolean } = {}): Promise<RebootResult> {
    const p = this.readPending();
    const what = p ? `${p.version} in slot ${p.slot}` : 'the other slot';
    if (this.windows && !opts.ignoreWindow && !inWindow(this.windows, this.now())) {
      const next = nextWindowStart(this.windows, this.now());
      const message = `reboot into ${what} waits for the maintenance window (${this.windows.map((w) => w.text).join('; ')}; next opens ${next?.toString() ?? 'never'})`;
      this.log(`update: ${message}`);
      return { rebooted: false, waiting: 'window', message };
    }
    const lock = this.lock;
    if (lock) {
      try { await lock.acquire(); } catch (e) {
        const message = `reboot into ${what} waits for ${lock.name}: ${errText(e)}`;
        this.log(`update: ${message}`);
        return { rebooted: false, waiting: 'lock', message };
      }
    }
    if (this.o.beforeReboot) {
      try { await this.o.beforeReboot(); } catch (e) {
        const message = `reboot into ${what} postponed: preparing the node failed: ${errText(e)}`;
        this.log(`update: ${message}`);
        // Not rebooting now: the slot goes back to the fleet until the next try.
        await this.releaseLock();
        return { rebooted: false, waiting: 'drain', message };
      }
    }
    this.log(`update: rebooting into ${what}`);
    await this.o.reboot();
    return { rebooted: true, message: `rebooting into ${what}` };
  }

  // -------------------------------------------------------------------------------------------
  // after boot

  /**
   * Judges a staged update after the reboot. In the expected slot and version: probe health
   * until it passes or `deadlineMs` runs out; pass -> bless, fail -> entry to +0, version bad,
   * reboot (the other slot's entry then sorts first). In the other slot: the boot loader fell
   * back; the version is recorded bad and never retried.
   */
  async afterBoot(health: () => Promise<boolean>, deadlineMs: number): Promise<AfterBootResult> {
    const p = this.readPending();
    if (!p) {
      await this.releaseLock();
      return { outcome: 'none', message: 'no update pending' };
    }
    if (p.bootId === this.bootId) return { outcome: 'not-rebooted', message: `${p.version} is staged in slot ${p.slot}; not rebooted into it yet` };
    const { bootedSlot, currentVersion } = this.o;

    if (bootedSlot !== p.slot) {
      const message = `update to ${p.version} failed to boot; running ${currentVersion} from slot ${bootedSlot}; ${p.version} will not be retried`;
      this.recordBad(p.version);
      // If the loader fell back because someone picked the old entry by hand, the new one may
      // still have tries: take them away so the next reboot does not land in it again.
      await this.loader.demote(p.slot).catch((e) => this.log(`update: cannot demote slot ${p.slot}: ${errText(e)}`));
      await this.syncFs().catch(() => undefined);
      this.clearPending();
      this.recordBoot('fell-back', message);
      this.log(message);
      await this.releaseLock();
      return { outcome: 'fell-back', version: p.version, slot: bootedSlot, message };
    }

    let problem: string | undefined;
    if (semver.valid(currentVersion) !== semver.valid(p.version)) {
      problem = `slot ${p.slot} runs ${currentVersion}, not the staged ${p.version}`;
    } else if (!(await this.probe(health, deadlineMs))) {
      problem = `health check did not pass within ${Math.round(deadlineMs / 1000)} s`;
    }
    if (problem) {
      const message = `update to ${p.version} failed in slot ${p.slot}: ${problem}; returning to ${p.from} in slot ${p.fromSlot}; ${p.version} will not be retried`;
      this.recordBad(p.version);
      await this.loader.demote(p.slot);
      await this.syncFs();
      this.clearPending();
      this.recordBoot('failed', message);
      this.log(message);
      // We still hold the fleet lock from pre-reboot: this reboot is part of the same update.
      await this.o.reboot();
      return { outcome: 'failed', version: p.version, slot: p.slot, message };
    }

    await this.loader.bless(p.slot);
    await this.syncFs();
    this.clearPending();
    const message = `update to ${p.version} succeeded: slot ${p.slot} blessed (was ${p.from} in slot ${p.fromSlot})`;
    this.recordBoot('blessed', message);
    this.log(message);
    await this.releaseLock();
    return { outcome: 'blessed', version: p.version, slot: p.slot, message };
  }

  private async probe(health: () => Promise<boolean>, deadlineMs: number): Promise<boolean> {
    const start = performance.now();
    const interval = this.o.healthIntervalMs ?? 5000;
    for (;;) {
      let ok = false;
      try { ok = await health(); } catch (e) { this.log(`update: health check threw: ${errText(e)}`); }
      if (ok) return true;
      const left = deadlineMs - (performance.now() - start);
      if (left <= 0) return false;
      await sleep(Math.min(interval, left));
    }
  }

  private recordBad(version: string) {
    const base = this.o.stateBase ?? '/var/lib/kiln';
    saveState(base, recordBadVersion(loadState(base, this.o.channel), version));
  }

  private recordBoot(outcome: string, message: string) {
    try { writeJsonAtomic(this.file(LAST_BOOT_FILE), { at: this.now().toISOString(), outcome, message }); } catch { /* status only */ }
  }

  /** The reboot lock: rebootLock, else the FleetLock server of `fleetlock`. */
  private get lock(): RebootLock | undefined {
    const f = this.o.fleetlock;
    return this.o.rebootLock ?? (f ? new FleetLockLock({ base: f.base, id: f.id ?? fleetLockId(this.o.machineId), group: f.group, timeoutMs: f.timeoutMs }) : undefined);
  }

  /** Gives the reboot lock back, best effort: a lock outage must not break a healthy node. */
  private async releaseLock() {
    const lock = this.lock;
    if (!lock) return;
    try { await lock.release(); this.releaseOwed = false; } catch (e) {
      this.releaseOwed = true;
      this.log(`update: could not release ${lock.name} (retried at the next poll): ${errText(e)}`);
    }
  }

  // -------------------------------------------------------------------------------------------
  // rollback

  /**
   * Goes back to the other slot, if it holds a blessed entry. Because the versions in the
   * UKIs outrank file names (entries.ts), the only file-level way to prefer an older slot is
   * to push this slot's entry to +0. By default the running version is recorded bad, so the
   * next poll does not install it straight back; `markBad: false` keeps it eligible.
   * The reboot takes the fleet lock but ignores the maintenance window (an operator asked).
   */
  async rollback(opts: { markBad?: boolean; reboot?: boolean } = {}): Promise<RollbackResult> {
    if (this.busy) return { ok: false, message: 'an update is running; try again when it is done' };
    this.busy = true;
    try {
      const from = this.o.bootedSlot, to = otherSlot(from);
      const problem = await this.loader.rollbackProblem(to, from);
      if (problem) return { ok: false, message: `cannot roll back: ${problem}` };
      const demoted = await this.loader.demote(from);
      await this.syncFs();
      if (opts.markBad !== false) this.recordBad(this.o.currentVersion);
      this.clearPending();
      rmSync(this.file(PROGRESS_FILE), { force: true });
      const message = `rolled back: slot ${to} boots next; slot ${from} running ${this.o.currentVersion} demoted${opts.markBad !== false ? `; ${this.o.currentVersion} will not be reinstalled` : ''}`;
      this.recordBoot('rolled-back', message);
      this.log(message);
      const reboot = opts.reboot === false ? undefined : await this.rebootIfAllowed({ ignoreWindow: true });
      return { ok: true, to, from, demoted, reboot, message };
    } finally { this.idle(); }
  }

  // -------------------------------------------------------------------------------------------
  // status and polling

  status(): string[] {
    const o = this.o;
    const lines: string[] = [];
    lines.push(`channel: ${o.channel} from ${o.channelUrl}`);
    lines.push(`running: ${o.currentVersion} in slot ${o.bootedSlot}`);
    if (!o.trust) lines.push(`updates disabled: ${o.trustProblem ?? 'no trust root in this image (/usr/lib/kiln/trust.json)'}`);
    else {
      const stored = () => {
        const e = loadTrustRoot(o.stateBase ?? '/var/lib/kiln', o.trust!);
        return e.problem ?? (e.rotated ? `version ${e.root.version} (rotated, ${rootFile(o.stateBase ?? '/var/lib/kiln')})` : undefined);
      };
      const note = this.rootNote ?? stored();
      if (note) lines.push(`trust root: ${note}`);
    }
    if (this.last) lines.push(`last check: ${this.last.at}: ${this.last.result.action}${'reason' in this.last.result ? ` (${this.last.result.reason})` : ''}: ${this.last.result.message}`);
    else lines.push('last check: never');
    const p = this.readPending();
    if (p) lines.push(`pending: ${p.version} staged in slot ${p.slot} (from ${p.from})${p.bootId === this.bootId ? ', waiting to reboot' : ''}`);
    const prog = readJson<Progress>(this.file(PROGRESS_FILE));
    if (prog) lines.push(`download: ${prog.version} ${prog.written} of ${prog.size} bytes in slot ${prog.slot} (resumes at the next attempt)`);
    const d = this.readDelta();
    if (d.last || Object.values(d.fallbacks).some((n) => n > 0)) {
      const l = d.last;
      const how = !l ? '' : l.mode === 'delta'
        ? `last root ${l.version} by delta: fetched ${l.fetched} of ${l.total} bytes (${((100 * l.fetched) / Math.max(1, l.total)).toFixed(1)}%); `
        : `last root ${l.version} by full download${l.fallback ? ` (delta fell back: ${l.fallback})` : ''}; `;
      lines.push(`delta: ${how}fallbacks ${DELTA_FALLBACKS.map((k) => `${k} ${d.fallbacks[k]}`).join(', ')}`);
    }
    const boot = readJson<{ at: string; outcome: string; message: string }>(this.file(LAST_BOOT_FILE));
    if (boot) lines.push(`last update: ${boot.at}: ${boot.message}`);
    let bad: string[] = [];
    try { bad = loadState(o.stateBase ?? '/var/lib/kiln', o.channel).badVersions; } catch (e) { lines.push(`channel state unreadable: ${errText(e)}`); }
    lines.push(`bad versions: ${bad.length ? bad.join(', ') : 'none'}`);
    if (this.windows) lines.push(`maintenance window: ${this.windows.map((w) => w.text).join('; ')}`);
    return lines;
  }

  /** One poll: retry a postponed reboot, or check and apply. Never throws. */
  async pollOnce(): Promise<void> {
    try {
      if (this.releaseOwed) await this.releaseLock();
      if (!this.o.trust) return;
      const p = this.readPending();
      if (p && p.bootId === this.bootId) { if (!this.busy) await this.rebootIfAllowed(); return; }
      const r = await this.apply();
      if (!r.ok && r.stage !== 'check') this.log(`update: ${r.message}`);
    } catch (e) {
      this.log(`update: poll failed: ${errText(e)}`);
    }
  }

  /**
   * Polls every intervalMs plus up to jitterMs (so a fleet does not arrive at once), the first
   * time after just the jitter (shortly after boot). Never throws; stop() ends it.
   */
  startPolling(intervalMs: number, jitterMs: number): { stop(): void } {
    let timer: NodeJS.Timeout | undefined;
    let stopped = false;
    const jitter = () => Math.floor(Math.random() * Math.max(0, jitterMs));
    const schedule = (ms: number) => {
      if (stopped) return;
      timer = setTimeout(async () => {
        try { await this.pollOnce(); } catch { /* pollOnce never throws; belt and braces */ }
        schedule(Math.max(1000, intervalMs) + jitter());
      }, ms);
      timer.unref?.();
    };
    schedule(jitter());
    return { stop: () => { stopped = true; if (timer) clearTimeout(timer); } };
  }
}

async function hashPrefix(fh: FileHandle, length: number, h: Hash): Promise<void> {
  const buf = Buffer.alloc(1 << 20);
  let pos = 0;
  while (pos < length) {
    const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, length - pos), pos);
    if (bytesRead === 0) throw new Error(`device ended at byte ${pos} while re-reading ${length} bytes`);
    h.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
}

async function readExactly(fh: FileHandle, buf: Buffer, pos: number): Promise<void> {
  let got = 0;
  while (got < buf.length) {
    const { bytesRead } = await fh.read(buf, got, buf.length - got, pos + got);
    if (bytesRead === 0) throw new Error(`device ended at byte ${pos + got}`);
    got += bytesRead;
  }
}

function readBootId(): string {
  try { return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(); } catch { return `pid-${process.pid}-${Date.now()}`; }
}

// ---------------------------------------------------------------------------------------------
// System facts, for wiring the updater into init.

/** Manifest arch names for Node's process.arch. */
export function manifestArch(arch: string): string {
  return ({ x64: 'x86_64', arm64: 'arm64', aarch64: 'arm64', amd64: 'x86_64' } as Record<string, string>)[arch] ?? arch;
}

export interface SystemFacts {
  currentVersion: string;
  arch: string;
  buildTime?: number;
  machineId: string;
  trust: TrustRoot | null;
  trustProblem?: string;
}

/** Reads VERSION_ID, build time, machine id and the trust root from an image rooted at `root`. */
export function readSystemFacts(root = '/'): SystemFacts {
  const p = (f: string) => join(root, f);
  const text = (f: string) => { try { return readFileSync(p(f), 'utf8'); } catch { return ''; } };
  const os = Object.fromEntries(text('etc/os-release').split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1).replace(/^"|"$/g, '')]));
  let buildTime: number | undefined;
  const built = (readJson<{ built?: string }>(p('usr/lib/kiln/build.json')) ?? {}).built;
  if (typeof built === 'string' && !Number.isNaN(Date.parse(built))) buildTime = Date.parse(built);
  let trust: TrustRoot | null = null, trustProblem: string | undefined;
  const tf = p('usr/lib/kiln/trust.json');
  if (!existsSync(tf)) trustProblem = `this image has no trust root (${tf}); build it with one to enable updates`;
  else {
    try { trust = parseTrustRoot(readFileSync(tf)); } catch (e) { trustProblem = `trust root ${tf} is unusable: ${errText(e)}`; }
  }
  return {
    currentVersion: os.VERSION_ID ?? 'unknown',
    arch: os.KILN_UPDATE_TARGET || manifestArch(os.KILN_ARCH ?? process.arch),
    buildTime,
    machineId: text('etc/machine-id').trim(),
    trust, trustProblem,
  };
}
