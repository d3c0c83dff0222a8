// Boot runs as a plan: a list of named tasks, each saying what it needs done before it.
// A task starts as soon as everything it needs has ended, so independent tasks overlap;
// tasks that become ready together start in list order. A plan is valid only when every
// need is met by a task earlier in the list (checkPlan), so list order is also one that
// respects the needs. A failing task is logged and boot goes on: the tasks that need it
// still run (with whatever it left behind, as when the plan ran in list order), because a
// node that comes up degraded can still be reached and repaired, one that stops cannot.
import { debug, say } from './log.ts';

export interface BootTask {
  /** The phase it belongs to: `phase/name` names the task in needs, results and log lines. */
  phase: string;
  name: string;
  /** Tasks (`phase/name`) or facts (given by a task) that must be done before this one. */
  needs: string[];
  /** Facts this task establishes, for later tasks to name in their needs. */
  gives?: string[];
  run: () => Promise<void | string | undefined> | void | string | undefined;
}
export interface TaskResult {
  phase: string; task: string; ok: boolean; ms: number; error?: string;
  /** ms since init started, when the task started */
  start: number;
  /** ms since init started, when the task ended */
  at: number;
}

export const taskId = (t: Pick<BootTask, 'phase' | 'name'>) => `${t.phase}/${t.name}`;

/**
 * Problems with a plan, empty when it is sound: every need names a task or a fact from
 * earlier in the list (so there are no cycles and nothing unknown), no name is used twice,
 * and each phase is one run of consecutive tasks.
 */
export function checkPlan(tasks: BootTask[]): string[] {
  const problems: string[] = [];
  const done = new Set<string>();
  const phases = new Set<string>();
  const later = new Set(tasks.flatMap((t) => [taskId(t), ...(t.gives ?? [])]));
  tasks.forEach((t, i) => {
    const id = taskId(t);
    if (t.phase !== tasks[i - 1]?.phase) {
      if (phases.has(t.phase)) problems.push(`${id}: phase ${t.phase} is split by other phases`);
      phases.add(t.phase);
    }
    for (const need of t.needs) {
      if (done.has(need)) continue;
      problems.push(`${id} needs '${need}', ${need === id || t.gives?.includes(need) ? 'itself' : later.has(need) ? 'which comes later in the plan' : 'which no task is or gives'}`);
    }
    for (const name of [id, ...(t.gives ?? [])]) {
      if (done.has(name)) problems.push(`${id}: '${name}' is named twice`);
      done.add(name);
    }
  });
  return problems;
}

/**
 * Milliseconds since init started. process.uptime(), not performance.now(): the first use of
 * `performance` loads Node's perf_hooks (about a dozen modules) at the start of boot.
 */
export const sinceStartMs = (): number => process.uptime() * 1000;

/**
 * Runs a plan, each task as soon as what it needs has ended (a failed task counts as ended).
 * Results come in list order. A need that names nothing in the plan is ignored and a plan
 * that cannot go on (a cycle: checkPlan refuses both, so only a plan that skipped it) runs
 * its leftover tasks in list order with a warning: init must not hang at boot.
 * `now`: ms since init started (tests pass a clock).
 */
export async function runPlan(tasks: BootTask[], now: () => number = sinceStartMs): Promise<TaskResult[]> {
  const provider = new Map<string, number>();
  tasks.forEach((t, i) => { for (const n of [taskId(t), ...(t.gives ?? [])]) if (!provider.has(n)) provider.set(n, i); });
  const deps = tasks.map((t, i) => t.needs.map((n) => provider.get(n)).filter((j): j is number => j !== undefined && j !== i));
  const results: (TaskResult | undefined)[] = tasks.map(() => undefined);
  const pending = new Set(tasks.keys());
  const phaseLeft = new Map<string, number>();
  for (const t of tasks) phaseLeft.set(t.phase, (phaseLeft.get(t.phase) ?? 0) + 1);
  const phaseStart = new Map<string, number>();
  let running = 0;
  let warned = false;

  return new Promise((resolve) => {
    const start = (i: number) => {
      const task = tasks[i];
      const { phase } = task;
      const id = taskId(task);
      pending.delete(i);
      running++;
      if (!phaseStart.has(phase)) { phaseStart.set(phase, now()); debug(`phase ${phase}: start`); }
      const t = now();
      debug(`task ${id}: start`);
      const end = (ok: boolean, noteOrError: unknown) => {
        const at = now();
        const error = ok ? undefined : ((noteOrError as Error)?.message ?? String(noteOrError));
        results[i] = { phase, task: task.name, ok, ms: at - t, ...(ok ? {} : { error }), start: t, at };
        if (ok && noteOrError) debug(`${id}: ${noteOrError}`);
        if (!ok) say(`${id} failed: ${error}`);
        debug(`task ${id}: end after ${(at - t).toFixed(0)} ms${ok ? '' : ' (failed)'}`);
        const left = phaseLeft.get(phase)! - 1;
        phaseLeft.set(phase, left);
        if (left === 0) debug(`phase ${phase}: done in ${(at - phaseStart.get(phase)!).toFixed(0)} ms`);
        running--;
        launch();
      };
      // An async wrapper: a task that throws before its first await fails like any other.
      (async () => task.run())().then((note) => end(true, note), (e) => end(false, e));
    };
    const launch = () => {
      for (const i of [...pending]) if (deps[i].every((j) => results[j])) start(i);
      if (running) return;
      if (!pending.size) { resolve(results as TaskResult[]); return; }
      if (!warned) { warned = true; say(`boot plan: ${[...pending].map((i) => taskId(tasks[i])).join(', ')} wait on each other; running them in list order`); }
      start(Math.min(...pending));
    };
    launch();
  });
}

/** One step of a critical path: the task, and how long it waited after its blocker ended. */
export interface PathStep { id: string; start: number; at: number; ok: boolean; /** ms between the blocker's end and this task's start */ waited: number }

/**
 * The chain of tasks that set when boot ended: starting from the task that ended last (or
 * `to`), each step back is the need (task or the giver of a fact) that ended last. Shortening
 * any other task does not make boot end sooner. Pure: needs from the plan, times from results.
 */
export function criticalPath(tasks: Pick<BootTask, 'phase' | 'name' | 'needs' | 'gives'>[], results: Pick<TaskResult, 'phase' | 'task' | 'ok' | 'start' | 'at'>[], to?: string): PathStep[] {
  const byId = new Map(results.map((r) => [`${r.phase}/${r.task}`, r]));
  const provider = new Map<string, string>();
  for (const t of tasks) for (const n of [taskId(t), ...(t.gives ?? [])]) if (!provider.has(n)) provider.set(n, taskId(t));
  const needsOf = new Map(tasks.map((t) => [taskId(t), t.needs]));
  let cur = to ?? [...byId.entries()].sort((a, b) => b[1].at - a[1].at)[0]?.[0];
  const path: PathStep[] = [];
  const seen = new Set<string>();
  while (cur && byId.has(cur) && !seen.has(cur)) {
    seen.add(cur);
    const r = byId.get(cur)!;
    const blockers = (needsOf.get(cur) ?? []).map((n) => provider.get(n)).filter((id): id is string => !!id && byId.has(id) && id !== cur);
    const blocker = blockers.sort((a, b) => byId.get(b)!.at - byId.get(a)!.at)[0];
    path.unshift({ id: cur, start: r.start, at: r.at, ok: r.ok, waited: blocker ? Math.max(0, r.start - byId.get(blocker)!.at) : r.start });
    cur = blocker;
  }
  return path;
}

/**
 * `task times (s since init start): ID START-END, …` for the console: per task, so the
 * critical path can be worked out off the node (parseTaskTimes reads it back).
 */
export function taskTimesLine(results: TaskResult[]): string {
  return `task times (s since init start): ${results.map((r) => `${r.phase}/${r.task} ${(r.start / 1000).toFixed(2)}-${(r.at / 1000).toFixed(2)}${r.ok ? '' : ' failed'}`).join(', ')}`;
}

export function parseTaskTimes(line: string): Pick<TaskResult, 'phase' | 'task' | 'ok' | 'start' | 'at'>[] {
  const body = line.slice(line.indexOf('):') + 2).trim();
  if (!body) return [];
  return body.split(', ').flatMap((item) => {
    const m = /^([^/]+)\/(.+) (\d+\.\d+)-(\d+\.\d+)( failed)?$/.exec(item);
    return m ? [{ phase: m[1], task: m[2], start: Number(m[3]) * 1000, at: Number(m[4]) * 1000, ok: !m[5] }] : [];
  });
}
