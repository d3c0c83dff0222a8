// Boot runs as a plan: a list of named tasks, each saying what it needs done before it.
// The tasks run one after another in list order; a plan is valid only when every need is
// met by a task earlier in the list (checkPlan), so list order is always one that respects
// the needs. A failing task is logged and boot goes on: a node that comes up degraded can
// still be reached and repaired, one that stops cannot.
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
export interface TaskResult { phase: string; task: string; ok: boolean; ms: number; error?: string; /** ms since init started, when the task ended */ at: number }

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

export async function runPlan(tasks: BootTask[]): Promise<TaskResult[]> {
  const results: TaskResult[] = [];
  let t0 = 0;
  for (const [i, task] of tasks.entries()) {
    const phase = task.phase;
    if (phase !== tasks[i - 1]?.phase) { t0 = performance.now(); debug(`phase ${phase}: start`); }
    const t = performance.now();
    try {
      const note = await task.run();
      results.push({ phase, task: task.name, ok: true, ms: performance.now() - t, at: performance.now() });
      if (note) debug(`${phase}/${task.name}: ${note}`);
    } catch (e) {
      const error = (e as Error)?.message ?? String(e);
      results.push({ phase, task: task.name, ok: false, ms: performance.now() - t, error, at: performance.now() });
      say(`${phase}/${task.name} failed: ${error}`);
    }
    if (phase !== tasks[i + 1]?.phase) debug(`phase ${phase}: done in ${(performance.now() - t0).toFixed(0)} ms`);
  }
  return results;
}
