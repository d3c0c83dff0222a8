// The clock. A board without a battery (the Pi) boots in 1970 and a machine with a flat
// battery somewhere in the past; certificates (github: keys, HTTPS channels, config_url, the
// k3s join) then all fail. Before anything uses TLS, boot sets the clock to a floor: the
// newest of the RTC, the image's build time and a timestamp saved on /data (refreshed while
// the node runs and at shutdown). That floor is a lower bound of the true time, nothing more:
// the clock is "synced" only once chronyd says so (services/ntp.ts). The updater's rollout,
// expiry and future-dated checks go by that difference (update/updater.ts).
import { mkdirSync, openSync, readSync, closeSync, renameSync, writeFileSync, fsyncSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { isoUtcS } from './utc.ts';

/** Where the running clock is saved, on the data partition. */
export const SAVED_CLOCK_FILE = '/var/lib/kiln/clock';
/** How often the saved clock is refreshed while the node runs. */
export const SAVE_INTERVAL_MS = 15 * 60_000;
/** A saved value or RTC past this is garbage (a corrupt file, an RTC that lost its mind): ignored. */
export const MAX_PLAUSIBLE_S = Date.UTC(2200, 0, 1) / 1000;
/** Files read here are a number and a newline; anything longer is not ours. */
const MAX_FILE_BYTES = 64;

export type FloorSource = 'rtc' | 'build' | 'saved';

export interface FloorInput {
  /** The system clock now (seconds since the epoch). */
  nowS: number;
  /** The RTC (/sys/class/rtc/rtc0/since_epoch), when there is one. */
  rtcS?: number;
  /** When the running image was built (build.json `built`, the updater's buildTime). */
  buildS?: number;
  /** The timestamp saved on /data by an earlier boot. */
  savedS?: number;
}

export interface Floor {
  /** The newest of the sources (seconds); undefined when none was usable. */
  floorS?: number;
  /** Which source gave it. */
  from?: FloorSource;
  /** True when the clock is more than a second below the floor and must be stepped to floorS. */
  step: boolean;
  /** Sources that were ignored, and why. */
  ignored: string[];
}

const usable = (v: number | undefined): v is number => v !== undefined && Number.isFinite(v) && v > 0;

/**
 * The clock floor: the newest of the RTC, the build time and the saved time. Values that are
 * not numbers, not positive or past MAX_PLAUSIBLE_S are ignored (and named), so a corrupt
 * saved file cannot throw the clock into the next century. The clock is never moved back.
 */
export function clockFloor(i: FloorInput): Floor {
  const ignored: string[] = [];
  let best: { s: number; from: FloorSource } | undefined;
  for (const [from, v] of [['rtc', i.rtcS], ['build', i.buildS], ['saved', i.savedS]] as const) {
    if (v === undefined) continue;
    if (!usable(v) || v > MAX_PLAUSIBLE_S) { ignored.push(`${from} time ${v} is not a plausible time`); continue; }
    const s = Math.floor(v);
    if (!best || s > best.s) best = { s, from };
  }
  if (!best) return { step: false, ignored };
  // The sources count whole seconds, and the kernel sets the clock from the RTC's whole second,
  // dropping the fraction: an RTC read a moment later is then often a second ahead of a clock
  // that is right. Only a floor more than a second ahead moves the clock.
  return { floorS: best.s, from: best.from, step: best.s > i.nowS + 1, ignored };
}

/** Seconds since the epoch from a file holding one integer (build time, RTC, saved clock). */
export function parseEpoch(text: string): number | undefined {
  const t = text.trim();
  return /^\d{1,12}$/.test(t) ? Number(t) : undefined;
}

/** The build time from build.json's `built` (ISO date), in seconds; the updater reads the same. */
export function parseBuildJson(text: string): number | undefined {
  try {
    const built = (JSON.parse(text) as { built?: unknown }).built;
    if (typeof built !== 'string') return undefined;
    const ms = Date.parse(built);
    return Number.isNaN(ms) ? undefined : Math.floor(ms / 1000);
  } catch { return undefined; }
}

// ---- what `kiln status` says

export interface Tracking {
  synced: boolean;
  /** The reference: the server's name or address. */
  server?: string;
  stratum?: number;
  /** System time minus true time, seconds (chronyc's "System time"). */
  offsetS?: number;
}

/**
 * `chronyc -n -c tracking` (one CSV line): reference ID, name or address, stratum, reference
 * time, system time offset, …, leap status last. chronyd reports "Not synchronised" until it
 * has set the clock from a server; any other leap status (Normal, Insert/Delete second) means
 * it has.
 */
export function parseTracking(text: string): Tracking {
  const line = text.slice(0, 4096).split('\n').find((l) => l.includes(','));
  if (!line) return { synced: false };
  const f = line.split(',');
  const leap = f[f.length - 1]!.trim();
  const stratum = Number(f[2]);
  const synced = f.length >= 14 && leap !== 'Not synchronised' && Number.isInteger(stratum) && stratum > 0 && stratum < 16 && f[0] !== '00000000';
  return synced ? { synced, server: f[1], stratum, offsetS: Number(f[4]) } : { synced: false };
}

export interface ClockState {
  floor?: { atS: number; from: FloorSource; stepped: boolean };
  tracking?: Tracking;
}

/** This node's clock as boot set it and chronyd last reported it (init's own state). */
export const clockState: ClockState = {};

/** Whether the clock is synced: the updater's trusted-clock notion. */
export const clockSynced = (): boolean => clockState.tracking?.synced === true;

/** The clock line of `kiln status`: synced, or floor only (and from what). */
export function clockLine(s: ClockState, nowS: number): string {
  if (s.tracking?.synced) {
    const off = s.tracking.offsetS !== undefined && Number.isFinite(s.tracking.offsetS) ? `, offset ${s.tracking.offsetS.toFixed(6)} s` : '';
    return `clock: synced ${isoUtcS(nowS)} (NTP ${s.tracking.server ?? '?'}, stratum ${s.tracking.stratum}${off})`;
  }
  const fl = s.floor;
  if (!fl) return `clock: not synced ${isoUtcS(nowS)} (no floor known)`;
  const what = { rtc: 'the RTC', build: 'the image build time', saved: 'the time saved on /data' }[fl.from];
  return `clock: floor only ${isoUtcS(nowS)}, not synced (${fl.stepped ? 'set' : 'at or above'} ${isoUtcS(fl.atS)} from ${what})`;
}

// ---- the edges: reading the sources, setting and saving the clock

/** Reads a small file, or undefined when it is missing, unreadable or larger than max. */
function readSmall(file: string, max = MAX_FILE_BYTES): string | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const b = Buffer.alloc(max + 1);
    const n = readSync(fd, b, 0, b.length, 0);
    return n > max ? undefined : b.subarray(0, n).toString();
  } catch { return undefined; } finally { if (fd !== undefined) closeSync(fd); }
}

/** The floor's sources on this node (root: the file system they are read from). */
export function readFloorSources(root = '/', nowS = Date.now() / 1000): FloorInput {
  const p = (f: string) => join(root, f);
  const rtc = readSmall(p('sys/class/rtc/rtc0/since_epoch'));
  const build = readSmall(p('usr/lib/kiln/build.json'), 16 << 10);
  const saved = readSmall(p(SAVED_CLOCK_FILE));
  return {
    nowS,
    rtcS: rtc === undefined ? undefined : parseEpoch(rtc),
    buildS: build === undefined ? undefined : parseBuildJson(build),
    savedS: saved === undefined ? undefined : parseEpoch(saved),
  };
}

/** Saves the clock on /data (atomically: a torn write must not become a bogus floor). */
export function saveClock(nowS = Date.now() / 1000, file = SAVED_CLOCK_FILE): void {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, `${Math.floor(nowS)}\n`);
  const fd = openSync(tmp, 'r');
  try { fsyncSync(fd); } finally { closeSync(fd); }
  renameSync(tmp, file);
}
