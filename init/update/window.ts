// Maintenance windows: when a node may reboot into a staged update. Local time, because an
// operator writes "Sat 02:00-04:00" meaning their night, not UTC's.
//
// Grammar (case-insensitive), several windows separated by ';':
//   window := [days] HH:MM-HH:MM
//   days   := 'daily' | '*' | day[-day] {',' day[-day]}     (no days = every day)
//   day    := Sun | Mon | Tue | Wed | Thu | Fri | Sat       (full names work too)
// A range may wrap the week (Fri-Mon). An end time before the start time runs past midnight
// and belongs to the start day: "Fri 23:00-01:00" is Friday 23:00 to Saturday 01:00.
// "24:00" is allowed as an end. Start equal to end is refused (empty or 24 h is ambiguous:
// write "daily 00:00-24:00" for always).

export interface MaintenanceWindow {
  /** Start days, 0 = Sunday (Date#getDay). */
  days: number[];
  /** Minutes after local midnight. */
  start: number;
  /** Length in minutes, 1..1440. */
  duration: number;
  /** The text this came from, for status lines. */
  text: string;
}

const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
const FULL_NAMES = ['sunday', 'monday', 'tuesday', 'wednesday', 'thursday', 'friday', 'saturday'];
const WEEK = 7 * 1440;

function parseDay(word: string, spec: string): number {
  const w = word.toLowerCase();
  let i = DAY_NAMES.indexOf(w);
  if (i < 0) i = FULL_NAMES.indexOf(w);
  if (i < 0) throw new Error(`maintenance window '${spec}': '${word}' is not a day (Mon, Tue, … Sun)`);
  return i;
}

function parseTime(t: string, spec: string, allow24: boolean): number {
  const m = /^(\d{1,2}):(\d{2})$/.exec(t);
  if (!m) throw new Error(`maintenance window '${spec}': '${t}' is not a time (HH:MM)`);
  const h = Number(m[1]), min = Number(m[2]);
  if (min > 59 || h > 24 || (h === 24 && (min !== 0 || !allow24))) throw new Error(`maintenance window '${spec}': '${t}' is not a valid time`);
  return h * 60 + min;
}

function parseDays(text: string, spec: string): number[] {
  const t = text.toLowerCase();
  if (t === 'daily' || t === '*' || t === 'every day') return [0, 1, 2, 3, 4, 5, 6];
  const out = new Set<number>();
  for (const part of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const r = part.split('-').map((s) => s.trim());
    if (r.length === 1) { out.add(parseDay(r[0]!, spec)); continue; }
    if (r.length !== 2) throw new Error(`maintenance window '${spec}': '${part}' is not a day or day range`);
    const a = parseDay(r[0]!, spec), b = parseDay(r[1]!, spec);
    // Fri-Mon wraps over the weekend.
    for (let d = a; ; d = (d + 1) % 7) { out.add(d); if (d === b) break; }
  }
  if (!out.size) throw new Error(`maintenance window '${spec}': no days`);
  return [...out].sort((x, y) => x - y);
}

/** Parses one or more windows ("Sat 02:00-04:00; Mon-Fri 22:00-23:30"); throws with the reason. */
export function parseWindows(spec: string): MaintenanceWindow[] {
  if (typeof spec !== 'string' || !spec.trim()) throw new Error('maintenance window is empty');
  return spec.split(';').map((s) => s.trim()).filter(Boolean).map((one) => {
    const m = /^(?:(.*?)\s+)?(\d{1,2}:\d{2})\s*-\s*(\d{1,2}:\d{2})$/.exec(one);
    if (!m) throw new Error(`maintenance window '${one}': expected '[days] HH:MM-HH:MM', e.g. 'Sat 02:00-04:00'`);
    const days = m[1] ? parseDays(m[1].trim(), one) : [0, 1, 2, 3, 4, 5, 6];
    const start = parseTime(m[2]!, one, false);
    const end = parseTime(m[3]!, one, true);
    if (end === start) throw new Error(`maintenance window '${one}': start and end are the same (use 00:00-24:00 for all day)`);
    const duration = end > start ? end - start : end + 1440 - start;
    return { days, start, duration, text: one };
  });
}

const weekMinute = (d: Date) => d.getDay() * 1440 + d.getHours() * 60 + d.getMinutes();

/** True when `at` (local time) lies inside any of the windows. */
export function inWindow(windows: MaintenanceWindow[], at: Date): boolean {
  const m = weekMinute(at);
  return windows.some((w) => w.days.some((d) => (((m - (d * 1440 + w.start)) % WEEK) + WEEK) % WEEK < w.duration));
}

/**
 * The next moment a window opens after `at` (or `at` itself when inside one). Computed in
 * local wall-clock minutes, so across a DST change it may be off by the shift; the poll loop
 * asks again anyway.
 */
export function nextWindowStart(windows: MaintenanceWindow[], at: Date): Date | undefined {
  if (!windows.length) return undefined;
  if (inWindow(windows, at)) return at;
  const m = weekMinute(at);
  let best = Infinity;
  for (const w of windows) for (const d of w.days) best = Math.min(best, (((d * 1440 + w.start - m) % WEEK) + WEEK) % WEEK);
  if (!Number.isFinite(best)) return undefined;
  // Build the date from local fields so the result lands on the wall-clock minute.
  return new Date(at.getFullYear(), at.getMonth(), at.getDate(), at.getHours(), at.getMinutes() + best, 0, 0);
}
