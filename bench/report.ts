// The pure parts of `npm run bench`: reading init's console lines and laying out the table of
// goals, where each measure is now, and the floor that bounds it (measured in the same run).
import { bootPlan } from '../init/boot/plan.ts';
import type { BootContext } from '../init/boot/context.ts';
import { criticalPath, parseTaskTimes, type PathStep } from '../init/sequencer.ts';

/** The fields of `kiln: timings:` that scripts read (a contract), in seconds and MiB. */
export interface Timings { readyS: number; initStartS: number; rssMiB: number; anonMiB?: number; fileMiB?: number }
/** `rss N MiB (anon A, file F)`: the split is optional (older lines have none). */
function rssParts(line: string): { rssMiB?: number; anonMiB?: number; fileMiB?: number } {
  const m = /\brss ([\d.]+) MiB(?: \(anon ([\d.]+), file ([\d.]+)\))?/.exec(line);
  if (!m) return {};
  return { rssMiB: Number(m[1]), ...(m[2] !== undefined ? { anonMiB: Number(m[2]), fileMiB: Number(m[3]) } : {}) };
}
/** `init started S s after the kernel`, in init's timings line and Node's floors' lines. */
const initStarted = (line: string) => /init started ([\d.]+) s after the kernel/.exec(line)?.[1];
export function parseTimings(line: string): Timings | undefined {
  const ready = /\bready ([\d.]+)/.exec(line)?.[1];
  const start = initStarted(line);
  const { rssMiB, ...split } = rssParts(line);
  return ready && start && rssMiB !== undefined ? { readyS: Number(ready), initStartS: Number(start), rssMiB, ...split } : undefined;
}

/** Init's `start` line (plan.ts startLine): seconds from its process's start to its first code and to its modules loaded. */
export interface InitStart { codeS: number; loadedS: number }
export function parseStart(line: string): InitStart | undefined {
  const m = /start \(s since init start\): init's code ([\d.]+), its modules loaded ([\d.]+)/.exec(line);
  return m ? { codeS: Number(m[1]), loadedS: Number(m[2]) } : undefined;
}

/** The boot's critical path from the `task times` line, with the needs of the plan this tree has. */
export function bootCriticalPath(taskTimesLine: string): PathStep[] {
  // Making the plan runs nothing, so a context of nothing will do: only the needs are read.
  return criticalPath(bootPlan({} as BootContext), parseTaskTimes(taskTimesLine));
}
export function formatPath(path: PathStep[]): string {
  return path.map((s) => `${s.id} ${(s.start / 1000).toFixed(2)}-${(s.at / 1000).toFixed(2)}${s.ok ? '' : ' (failed)'}${s.waited > 50 ? ` (+${(s.waited / 1000).toFixed(2)} idle before)` : ''}`).join(' -> ');
}

export interface GoalRow { measure: string; goal: string; now: string; floor: string; note?: string }
/** A plain-text table, one row per measure. */
export function goalTable(rows: GoalRow[]): string {
  const head: GoalRow = { measure: 'measure', goal: 'goal', now: 'now', floor: 'floor', note: 'over the floor / note' };
  const all = [head, ...rows];
  const w = (k: keyof GoalRow) => Math.max(...all.map((r) => (r[k] ?? '').length));
  const line = (r: GoalRow) => [r.measure.padEnd(w('measure')), r.goal.padEnd(w('goal')), r.now.padEnd(w('now')), r.floor.padEnd(w('floor')), r.note ?? ''].join(' | ').trimEnd();
  return [line(head), ['measure', 'goal', 'now', 'floor'].map((k) => '-'.repeat(w(k as keyof GoalRow))).concat('-'.repeat(8)).join('-|-'), ...rows.map(line)].join('\n');
}

/**
 * Seconds measured in several rounds: the median, and each round in order ("-" for one that
 * gave no figure), so a reader sees how far single boots on this machine spread.
 */
export function roundsOf(xs: (number | undefined)[]): { median?: number; text: string } {
  const got = xs.filter((x): x is number => x !== undefined);
  const m = median(got);
  if (m === undefined) return { text: '-' };
  const each = xs.map((x) => (x === undefined ? '-' : x.toFixed(2))).join(' / ');
  return { median: m, text: xs.length > 1 ? `${m.toFixed(2)} s (median of ${got.length}: ${each})` : `${m.toFixed(2)} s` };
}

/** The median of some numbers (undefined for none). */
export function median(xs: number[]): number | undefined {
  if (!xs.length) return undefined;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** The floor's line (builder/stage1/init.sh, kiln.floor=): seconds from the kernel's start, and Node's RSS. */
/**
 * `kernel`: the kernel with a one-line initramfs of its own (no stage 1), the memory floor;
 * `modules`: the node floor after loading the image's module lists; `again`: the modules floor's
 * second Node, its pages then cached. `initStartS`: when Node's own code began (as init's
 * timings line counts it); `processStartS`: when its process did, before Node was loaded.
 */
export interface FloorLine { kind: 'sh' | 'node' | 'modules' | 'again' | 'kernel'; readyS: number; initStartS?: number; processStartS?: number; rssMiB?: number; anonMiB?: number; fileMiB?: number; heapLimitMiB?: number }
export function floorLine(line: string): FloorLine | undefined {
  const m = /kiln-floor: (sh|node|modules|again|kernel) ready ([\d.]+) s after the kernel/.exec(line);
  if (!m) return undefined;
  const heap = /\bheap limit ([\d.]+) MiB/.exec(line)?.[1];
  // Node's floors say when Node's own code began, and when their process did.
  const start = initStarted(line);
  const proc = /process started ([\d.]+) s after the kernel/.exec(line)?.[1];
  return { kind: m[1] as FloorLine['kind'], readyS: Number(m[2]), ...(start ? { initStartS: Number(start) } : {}), ...(proc ? { processStartS: Number(proc) } : {}), ...rssParts(line), ...(heap ? { heapLimitMiB: Number(heap) } : {}) };
}

/**
 * When a floor alone takes longer than the goal allows, no init can meet it on this run's
 * machine: the note naming those floors (seconds), or undefined when none is over.
 */
export function floorsOverGoal(goalS: number, floors: [{ readyS: number } | undefined, string][]): string | undefined {
  const over = floors.filter(([f]) => f !== undefined && f.readyS > goalS).map(([f, what]) => `${what} ${f!.readyS.toFixed(2)} s`);
  return over.length ? `the floor alone is over the goal here: ${over.join(', ')}` : undefined;
}

/**
 * The smallest of `sizes` (ascending) for which `works` holds; `works` is taken to hold for
 * every size above one that works. `first`: the index to try first (the goal's size, so its
 * answer is always measured); from there the search walks one size at a time toward the
 * answer, since the answer is usually beside the goal's size and a size far below it can cost
 * a long timeout to fail (a kernel that never starts in it shows nothing). Without `first`, a
 * bisection. Undefined if none works.
 */
export async function smallestThatWorks(sizes: number[], works: (size: number) => Promise<boolean>, first?: number): Promise<number | undefined> {
  let lo = -1, hi = sizes.length; // sizes[lo] fails (or none), sizes[hi] works (or none known)
  if (first !== undefined && first >= 0 && first < sizes.length) {
    if (await works(sizes[first]!)) {
      hi = first;
      while (hi > 0 && await works(sizes[hi - 1]!)) hi--;
    } else {
      lo = first;
      while (lo + 1 < sizes.length && !(await works(sizes[lo + 1]!))) lo++;
      hi = lo + 1;
    }
    return sizes[hi];
  }
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (await works(sizes[mid]!)) hi = mid; else lo = mid;
  }
  return sizes[hi];
}
